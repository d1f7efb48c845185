# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled forwarding serializer, the twin of ``xmppd.xml.element.forward_bytes``.

Every routed stanza is written to its recipient (or a peer worker's link) by
``Element.to_bytes``, whose forwarding form is a new start tag (routing rewrote ``from`` and
``to``) followed by the content bytes the tokenizer validated.  In Python that start tag
was a fifth of a routed message's instructions (string concatenations, an escape check per
value, a fragment cache, an encode and two bytes concatenations); here it is one pass to
size the result and one to fill it, on each value's UTF-8 bytes.

Same bytes as the pure function for every input: what this does not handle (a qualified
attribute name ``{uri}local``, anything not a ``str``, more than ``_MAX_ATTRS`` attributes)
is handed to it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from libc.string cimport memcpy

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    Py_ssize_t PyUnicode_GET_LENGTH(object unicode)
    Py_UCS4 PyUnicode_READ_CHAR(object unicode, Py_ssize_t index)

__all__ = ["forward_bytes"]

# What an attribute value's byte becomes (the pure _ATTR_ESCAPES), kept alive here: _ESC
# points into these bytes
_ESCAPES = ((0x26, b"&amp;"), (0x3C, b"&lt;"), (0x3E, b"&gt;"), (0x22, b"&quot;"),
            (0x09, b"&#9;"), (0x0A, b"&#10;"), (0x0D, b"&#13;"))
# _LEN[c]: the length of byte c's escape (0: the byte itself), _ESC[c] the escape
cdef unsigned char _LEN[256]
cdef const char* _ESC[256]


cdef _tables():
    cdef int c
    cdef bytes escape
    for c in range(256):
        _LEN[c] = 0
        _ESC[c] = NULL
    for c, escape in _ESCAPES:
        _ESC[c] = escape
        _LEN[c] = len(escape)


_tables()

cdef enum:
    _MAX_ATTRS = 32

cdef object _pure = None


cdef object _fallback(name, ns, attrs, raw, default_ns):
    global _pure
    if _pure is None:
        from xmppd.xml.element import forward_bytes as pure  # (imported late: no cycle)
        _pure = pure
    return _pure(name, ns, attrs, raw, default_ns)


cdef inline Py_ssize_t _escaped_size(const unsigned char* s, Py_ssize_t n) noexcept:
    """The size of ``s[:n]`` escaped."""
    cdef Py_ssize_t i, size = n
    cdef unsigned char k
    for i in range(n):
        k = _LEN[s[i]]
        if k:
            size += k - 1
    return size


cdef inline char* _put_escaped(char* o, const unsigned char* s, Py_ssize_t n,
                               Py_ssize_t size) noexcept:
    """Write ``s[:n]`` escaped (``size`` bytes) at ``o``; the end of what was written."""
    cdef Py_ssize_t i
    cdef unsigned char c, k
    if size == n:
        memcpy(o, s, n)
        return o + n
    for i in range(n):
        c = s[i]
        k = _LEN[c]
        if k:
            memcpy(o, _ESC[c], k)
            o += k
        else:
            o[0] = <char>c
            o += 1
    return o


cdef inline char* _put(char* o, const char* s, Py_ssize_t n) noexcept:
    memcpy(o, s, n)
    return o + n


def forward_bytes(name, ns, attrs, raw, default_ns):
    """``<name attrs>raw</name>`` (``<name attrs/>`` when ``raw`` is empty) as UTF-8, with
    ``xmlns="ns"`` unless ``ns`` is the stream's ``default_ns``: the forwarding form of an
    element whose content is the validated bytes ``raw`` (see the pure twin)."""
    cdef const char* keys[_MAX_ATTRS]
    cdef const char* values[_MAX_ATTRS]
    cdef Py_ssize_t key_sizes[_MAX_ATTRS]
    cdef Py_ssize_t value_sizes[_MAX_ATTRS]
    cdef Py_ssize_t escaped[_MAX_ATTRS]
    cdef Py_ssize_t name_size, ns_size = 0, ns_escaped = 0, raw_size, total, pos = 0
    cdef Py_ssize_t count = 0, i
    cdef const char* name_p
    cdef const char* ns_p = NULL
    cdef PyObject* key
    cdef PyObject* value
    cdef bint declare
    cdef char* o
    if type(name) is not str or type(ns) is not str or type(attrs) is not dict \
            or type(raw) is not bytes or len(<dict>attrs) > _MAX_ATTRS:
        return _fallback(name, ns, attrs, raw, default_ns)
    # Checked before anything is encoded: an error is then the pure function's own
    while PyDict_Next(<dict>attrs, &pos, &key, &value):
        if type(<object>key) is not str or type(<object>value) is not str \
                or PyUnicode_GET_LENGTH(<object>key) == 0 \
                or PyUnicode_READ_CHAR(<object>key, 0) == 0x7B:  # "{": qualified, prefixes
            return _fallback(name, ns, attrs, raw, default_ns)
    declare = not (ns == default_ns)
    name_p = PyUnicode_AsUTF8AndSize(name, &name_size)
    total = 1 + name_size
    if declare:
        ns_p = PyUnicode_AsUTF8AndSize(ns, &ns_size)
        ns_escaped = _escaped_size(<const unsigned char*>ns_p, ns_size)
        total += 9 + ns_escaped  # ' xmlns="' ... '"'
    pos = 0
    while PyDict_Next(<dict>attrs, &pos, &key, &value):
        keys[count] = PyUnicode_AsUTF8AndSize(<object>key, &key_sizes[count])
        values[count] = PyUnicode_AsUTF8AndSize(<object>value, &value_sizes[count])
        escaped[count] = _escaped_size(<const unsigned char*>values[count], value_sizes[count])
        total += key_sizes[count] + escaped[count] + 4  # ' key="' ... '"'
        count += 1
    raw_size = PyBytes_GET_SIZE(raw)
    total += 2 if raw_size == 0 else raw_size + name_size + 4  # "/>" or ">" raw "</name>"
    out = PyBytes_FromStringAndSize(NULL, total)
    o = PyBytes_AS_STRING(out)
    o[0] = b"<"
    o = _put(o + 1, name_p, name_size)
    if declare:
        o = _put(o, b' xmlns="', 8)
        o = _put_escaped(o, <const unsigned char*>ns_p, ns_size, ns_escaped)
        o[0] = b'"'
        o += 1
    for i in range(count):
        o[0] = b" "
        o = _put(o + 1, keys[i], key_sizes[i])
        o = _put(o, b'="', 2)
        o = _put_escaped(o, <const unsigned char*>values[i], value_sizes[i], escaped[i])
        o[0] = b'"'
        o += 1
    if raw_size == 0:
        _put(o, b"/>", 2)
    else:
        o[0] = b">"
        o = _put(o + 1, PyBytes_AS_STRING(raw), raw_size)
        o = _put(o, b"</", 2)
        o = _put(o, name_p, name_size)
        o[0] = b">"
    return out
