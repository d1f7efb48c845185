# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled XMPP stream tokenizer, the twin of ``xmppd.xml._tokenizer_pure``.

The pure module (pyexpat) is the specification: same events, same error conditions, for any
split of the input.  This module is a byte-level scanner over ``const unsigned char*`` that
follows expat's tokenizer rules (``xmltok_impl.c``) where they decide *when* an error is
seen: a token is checked as far as the bytes go, an incomplete one waits (so a truncated
multi-byte character or reference is not an error yet), and the namespace and attribute
checks run in expat's order once a start tag is complete.

Speed comes from these choices:

* every byte is looked at once: incomplete start tags, comments, PIs and CDATA sections
  keep a checkpoint, so feeding a large token in small pieces stays linear;
* runs of bytes that need no work (character data, attribute values) are skipped 16 at a
  time (SSE2; 8 at a time with SWAR on other little-endian targets), and the byte a scan
  stops at is judged by the byte-class tables, so the rules live in one place;
* inside a stanza a plain start tag (no prefix, no declaration but a plain default one)
  and the end tag of the open element are checked without touching a Python object;
* inside a stanza nothing is built while validating; the stanza's envelope (name, ns,
  attrs) is built from its start tag, and its children are decoded lazily from the
  validated bytes (``raw_inner``) by an unchecking builder, when the inner content declares
  every prefix it uses (else they are built at once, from the prefixes in scope);
* the builder is lazy at every level: a nested element whose content holds elements (and
  is long enough to pay for it) gets its own lazy children, offsets into the stanza's
  bytes (no copy), built when first touched;
* names and namespaces come from a bounded cache keyed by their bytes, attribute values
  from another (one-off values cannot evict names), so repeated strings are not decoded
  or allocated again;
* idle state is a handful of integers, a namespace scope shared by the streams with the
  same header, and an empty buffer.

The source is one extension module in several files, joined by ``include`` (textual, so
cdef inline functions stay inline; Cython allows it only at module level, so the scanning
methods are module-level functions on ``Tokenizer self``, called directly):

* ``tokenizer.pyx`` (this file): imports, result codes, scanner states, the ``Tokenizer``
  class (``feed``, ``restart``, ``reset``, buffer and offset bookkeeping, the scan loop);
* ``tokenizer_tables.pxi``: byte classes and tables, name-character bitmaps;
* ``tokenizer_scan.pxi``: block scans (SSE2, or SWAR on a uint64) to the next byte that
  needs a look;
* ``tokenizer_chars.pxi``: UTF-8 validation, name characters, character/entity references;
* ``tokenizer_decode.pxi``: decoding validated bytes (the name and value caches,
  attribute values, character data) and namespace scopes;
* ``tokenizer_build.pxi``: Element construction, the lazy children builder (lazy nested
  elements too), the C ``Element.children`` accessor;
* ``tokenizer_prolog.pxi``: prolog and epilog, XML declaration, comments, PIs;
* ``tokenizer_text.pxi``: the content loop, character data, CDATA sections;
* ``tokenizer_tags.pxi``: the start-tag and attribute scanner, stanza envelopes, end tags.
"""

import re

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_SET_ITEM
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    unsigned char* PyUnicode_1BYTE_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    PyObject* PyType_GenericAlloc(PyTypeObject* t, Py_ssize_t n) except NULL
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)

from xmppd.xml.element import Element
from xmppd.xml.events import (
    MAX_ATTRS,
    MAX_DEPTH,
    MAX_STANZA_SIZE,
    StreamClose,
    StreamOpen,
    TokenizerError,
)

cdef str XML_NS = "http://www.w3.org/XML/1998/namespace"
cdef str XMLNS_NS = "http://www.w3.org/2000/xmlns/"
cdef object _WS_IN_NS = re.compile(r"\s").search  # the pure twin's test: Unicode whitespace

# -- result codes ------------------------------------------------------------------------
cdef enum:
    R_OK = 0
    R_PARTIAL = 1
    E_NWF = 2
    E_RESTRICTED = 3
    E_ENCODING = 4
    E_BADNS = 5
    E_PREFIX = 6
    E_POLICY = 7

_CONDITIONS = (
    None, None, "not-well-formed", "restricted-xml", "unsupported-encoding",
    "invalid-namespace", "bad-namespace-prefix", "policy-violation",
)

# Helpers, in the order they build on each other (``include`` is textual: one module).
include "tokenizer_tables.pxi"
include "tokenizer_scan.pxi"
include "tokenizer_chars.pxi"
include "tokenizer_decode.pxi"
include "tokenizer_build.pxi"

# -- scanner states -------------------------------------------------------------------------

cdef enum:
    PH_PROLOG0 = 0   # nothing but a BOM yet: an XML declaration may come
    PH_PROLOG1 = 1
    PH_CONTENT = 2
    PH_EPILOG = 3

cdef enum:
    K_NONE = 0       # what the checkpoint at ``_pos`` resumes
    K_STAG = 1
    K_COMMENT = 2
    K_PI = 3
    K_CDATA = 4

cdef enum:
    P_NAME = 0       # start-tag scanner phases
    P_WS = 1
    P_ANAME = 2
    P_EQ = 3
    P_QUOTE = 4
    P_VAL = 5
    P_AFTERVAL = 6
    P_SOL = 7

cdef enum:
    T_PI = 10
    T_XML_DECL = 11


# -- the tokenizer --------------------------------------------------------------------------

# The pending input of every tokenizer with none: an idle connection holds no bytearray of
# its own (56 bytes each).  Never mutated: input is appended to ``_pend`` only when it is
# not empty (``feed``'s direct path makes a new one otherwise), and one emptied by an
# event is replaced by this again.
cdef bytearray _NO_PEND = bytearray()
# The namespace scope before a stream header: shared, like the scope a header leaves (see
# _own_scope in tokenizer_tags.pxi); a declaration copies it first.
cdef list _NO_SCOPE = []

cdef class Tokenizer:
    """Incremental XMPP stream tokenizer (compiled); see ``xmppd.xml._tokenizer_pure``."""

    cdef public Py_ssize_t max_stanza_size
    cdef public Py_ssize_t max_depth
    cdef public Py_ssize_t max_attrs
    cdef object _error
    cdef str _etext
    cdef bytearray _pend      # unconsumed input, from the end of the last event on
    cdef bytes _head          # a lone first byte, held until the second one arrives
    cdef Py_ssize_t _fed
    cdef Py_ssize_t _pos      # next byte to scan (a token start when a token is pending)
    cdef Py_ssize_t _last     # end of the last event
    cdef int _phase
    cdef bint _bom_ok
    cdef Py_ssize_t _depth    # open elements, the stream element included
    cdef list _scope
    # the shared scope the stream header left (see _own_scope): _scope while it is that
    cdef list _hdr_scope
    cdef object _default      # the default namespace in scope
    cdef str _root_qname       # interned: idle tokenizers share it
    # open elements below the stream element: (qname start, qname length, scope length)
    cdef Py_ssize_t* _fr
    cdef Py_ssize_t _fr_cap
    # attributes of the start tag being scanned: name start/end, colon, value start/end
    cdef Py_ssize_t* _att
    cdef Py_ssize_t _att_cap
    cdef Py_ssize_t _natt
    cdef Py_ssize_t _tag_name_end
    cdef Py_ssize_t _tag_colon
    cdef Py_ssize_t _tag_end
    cdef bint _tag_empty
    cdef bint _tag_refs       # a reference in some attribute value of the tag
    # checkpoint of the pending token at _pos
    cdef int _ck_kind
    cdef int _ck_phase
    cdef Py_ssize_t _ck_pos
    cdef int _ck_aux
    cdef bint _stz_self       # (the stanza being read: here, it fills _ck_aux's padding)
    # where the scan of a partial reference or end tag at _hint_at may resume
    cdef Py_ssize_t _hint_at
    cdef Py_ssize_t _hint
    cdef Py_ssize_t _hint_ne
    # the stanza being read
    cdef Py_ssize_t _stz_inner
    cdef Py_ssize_t _stz_scope
    cdef object _stz_name
    cdef object _stz_ns
    cdef object _stz_attrs
    cdef object _stz_rawns

    def __cinit__(self):
        self._fr = NULL
        self._att = NULL

    def __dealloc__(self):
        PyMem_Free(self._fr)
        PyMem_Free(self._att)

    def __init__(
        self,
        Py_ssize_t max_stanza_size=MAX_STANZA_SIZE,
        Py_ssize_t max_depth=MAX_DEPTH,
        Py_ssize_t max_attrs=MAX_ATTRS,
    ):
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attrs = max_attrs
        self._error = None
        self._new_stream()

    # -- public API ---------------------------------------------------------------------

    @property
    def buffered(self):
        """Bytes held since the last event (an incomplete element and whitespace)."""
        return PyByteArray_GET_SIZE(self._pend) - self._last + PyBytes_GET_SIZE(self._head)

    def feed(self, data) -> list:
        """Tokenize a chunk; return the events it completed."""
        cdef list events = []
        cdef const unsigned char* p
        cdef Py_ssize_t n, last, avail, room
        cdef int r
        cdef bint direct
        if self._error is not None:
            raise self._error
        if not data:
            return events
        if type(data) is not bytes:
            data = bytes(data)
        if self._fed == 0:
            # The first two bytes decide the encoding check: hold a lone first byte back.
            data = self._head + data
            self._head = data[:1] if PyBytes_GET_SIZE(data) < 2 else b""
            p = <const unsigned char*>PyBytes_AS_STRING(data)
            if p[0] == 0x00 or p[0] == 0xFE or p[0] == 0xFF or (PyBytes_GET_SIZE(data) > 1 and p[1] == 0):
                self._fail(E_ENCODING, "the stream is not UTF-8", events)
            if PyBytes_GET_SIZE(self._head):
                return events
        self._fed += PyBytes_GET_SIZE(data)
        direct = PyByteArray_GET_SIZE(self._pend) == 0
        if direct:  # nothing pending: scan the caller's bytes without copying
            p = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            self._pend += data
            p = <const unsigned char*>PyByteArray_AS_STRING(self._pend)
            n = PyByteArray_GET_SIZE(self._pend)
        # Never scan past the byte that exceeds the size limit: errors before it win, the
        # limit wins over anything after it (it moves on with each event), as in the twin.
        avail = n - PyBytes_GET_SIZE(data)  # bytes scanned by earlier calls
        r = R_OK
        while avail < n:
            room = self._last + self.max_stanza_size - avail
            if room <= 0:
                r = self._err(E_POLICY, "stanza size limit exceeded")
                break
            avail = n if n - avail <= room else avail + room
            r = self._run(p, avail, events)
            if r >= E_NWF:
                break
        if r >= E_NWF:
            # keep the bytes after the last event for restart()
            if direct:
                self._pend = bytearray(data[self._last:])
            else:
                del self._pend[:self._last]
            self._last = 0
            self._fail(r, self._etext, events)
        last = self._last
        if direct:
            if last < n:
                self._pend = bytearray(data[last:])
        elif last:
            del self._pend[:last]
            if PyByteArray_GET_SIZE(self._pend) == 0:
                self._pend = _NO_PEND
        if last:
            self._shift(last)
        if self._ck_kind != K_STAG and self._att != NULL:  # idle: keep it small
            PyMem_Free(self._att)
            self._att = NULL
            self._att_cap = 0
        if self._depth <= 1 and self._fr != NULL:
            PyMem_Free(self._fr)
            self._fr = NULL
            self._fr_cap = 0
        return events

    def restart(self) -> list:
        """Expect a new stream header, re-reading the bytes after the last event (also
        after an error: they may have been the new stream's header).  Whitespace directly
        after the last event is the old stream's and is dropped (see the twin)."""
        leftover = self._head + bytes(self._pend[self._last:])
        # _pend holds the bytes from the last event's end on: that end is a stream offset
        # above 0 when the old stream returned an event.
        if self._fed - PyByteArray_GET_SIZE(self._pend) + self._last > 0:
            leftover = leftover.lstrip(b" \t\r\n")
        self._error = None
        self._new_stream()
        return self.feed(leftover)

    def reset(self) -> None:
        """Expect a new stream header and drop anything buffered."""
        self._error = None
        self._new_stream()

    # -- state ----------------------------------------------------------------------------

    cdef void _new_stream(self):
        self._pend = _NO_PEND
        self._head = b""
        self._fed = 0
        self._pos = 0
        self._last = 0
        self._phase = PH_PROLOG0
        self._bom_ok = True
        self._depth = 0
        self._scope = self._hdr_scope = _NO_SCOPE
        self._default = ""
        self._root_qname = None
        self._ck_kind = K_NONE
        self._hint_at = -1
        self._natt = 0
        self._stz_name = self._stz_ns = self._stz_attrs = self._stz_rawns = None
        self._etext = ""

    cdef void _shift(self, Py_ssize_t d):
        """The first ``d`` buffered bytes were dropped: move every offset."""
        cdef Py_ssize_t k
        self._pos -= d
        self._last -= d
        self._ck_pos -= d
        self._hint_at -= d
        self._hint -= d
        if self._hint_ne >= 0:
            self._hint_ne -= d
        self._stz_inner -= d
        self._tag_name_end -= d
        if self._tag_colon >= 0:
            self._tag_colon -= d
        if self._ck_kind == K_STAG:
            for k in range(5 * (self._natt + 1)):
                if self._att[k] >= 0:
                    self._att[k] -= d
        for k in range(self._depth - 1):
            self._fr[3 * k] -= d

    cdef int _fail(self, int code, str text, list events) except -1:
        self._error = TokenizerError(_CONDITIONS[code], text, events)
        self._scope = self._hdr_scope = _NO_SCOPE
        raise self._error

    cdef inline int _err(self, int code, str text):
        self._etext = text
        return code

    # -- scanning ---------------------------------------------------------------------------

    cdef int _run(self, const unsigned char* p, Py_ssize_t n, list events) except -1:
        cdef int r
        while True:
            if self._phase == PH_CONTENT:
                r = _content(self, p, n, events)
            else:
                r = _prolog(self, p, n)
            if r != R_OK or self._pos >= n:
                return r


# The scanner: Tokenizer methods written as functions on ``Tokenizer self`` (an include
# cannot go inside the class body).
include "tokenizer_prolog.pxi"
include "tokenizer_text.pxi"
include "tokenizer_tags.pxi"

_init_tables()
_init_element_slots()
