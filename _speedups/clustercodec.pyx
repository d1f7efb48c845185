# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled STANZA records of the cluster links, the twin of ``xmppd.cluster.codec``.

The pure module is the specification: same records from the same bytes, however they are
split, and a ``CodecError`` (with the records before the bad one appended) where it raises
one.  Only what every routed stanza pays is here: :func:`put_stanza` (one resize and two
copies instead of two ``struct`` packs and four appends), :func:`parse_records` (a STANZA
record read with pointer arithmetic; the rare other kinds go to the pure
``codec.parse_record``), :class:`FrameDecoder` (frames cut from the received chunk
without a Python-level loop), :func:`stanza_element` (the receiver's element built from
the start tag our own peer's serializer wrote, in one pass over it), :func:`plain_stanza`
(whether the bytes may go to the recipient as they came: nothing built), :func:`send_quiet`
(the receiver's loop that writes them) and :func:`link_stanza` / :func:`send_remote` (the
sender's record for a stanza, from the element's slots, into a :class:`LinkBuffer`).
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.string cimport memchr, memcmp, memcpy

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyObject* PyType_GenericAlloc(PyTypeObject* t, Py_ssize_t n) except NULL
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    unsigned char* PyUnicode_1BYTE_DATA(object o)

from xmppd._impl import choose
from xmppd.cluster.codec import MAX_FRAME as _MAX_FRAME
from xmppd.cluster.codec import CodecError, parse_record, stanza_content
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS

__all__ = ["FrameDecoder", "LinkBuffer", "link_stanza", "parse_records", "plain_stanza",
           "put_stanza", "send_quiet", "send_remote", "stanza_element"]

cdef Py_ssize_t MAX_FRAME = _MAX_FRAME
cdef unsigned char STANZA = 1


cdef inline uint32_t _u32(const unsigned char* p) noexcept:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


def put_stanza(bytearray out, to, xml) -> None:
    """A STANZA record for the session ``to`` (its full JID, UTF-8)."""
    _put_stanza(out, to if type(to) is bytes else bytes(to),
                xml if type(xml) is bytes else bytes(xml))


cdef int _put_stanza(bytearray out, bytes t, bytes x) except -1:
    cdef Py_ssize_t lt = PyBytes_GET_SIZE(t), lx = PyBytes_GET_SIZE(x)
    cdef Py_ssize_t n = PyByteArray_GET_SIZE(out)
    cdef unsigned char* p
    if lt > 0xFFFF or lx > <Py_ssize_t>0xFFFFFFFF:
        raise CodecError(f"stanza record too large ({lt}-byte JID, {lx}-byte XML)")
    PyByteArray_Resize(out, n + 7 + lt + lx)
    p = <unsigned char*>PyByteArray_AS_STRING(out) + n
    p[0] = STANZA
    p[1] = <unsigned char>(lt >> 8)
    p[2] = <unsigned char>lt
    memcpy(p + 3, PyBytes_AS_STRING(t), lt)
    p += 3 + lt
    p[0] = <unsigned char>(lx >> 24)
    p[1] = <unsigned char>(lx >> 16)
    p[2] = <unsigned char>(lx >> 8)
    p[3] = <unsigned char>lx
    memcpy(p + 4, PyBytes_AS_STRING(x), lx)
    return 0


cdef int _parse(object owner, const unsigned char* p, Py_ssize_t n, Py_ssize_t pos,
                Py_ssize_t end, list out) except -1:
    """``parse_records`` on the ``n`` bytes at ``p``, whose bounds are checked (0 <= pos,
    end <= n); ``owner`` (bytes, or a view of the decoder's buffer) holds them, for the
    pure ``parse_record`` of the rare kinds."""
    cdef Py_ssize_t start, stop, size, size_to
    cdef Py_ssize_t last = -1, last_size = 0  # the previous STANZA record's JID bytes
    cdef object to = None
    while pos < end:
        if p[pos] != STANZA:
            pos = parse_record(owner, pos, out)
            continue
        if pos + 3 > n:
            raise CodecError("malformed record: a truncated stanza record")
        start = pos + 3 + (p[pos + 1] << 8 | p[pos + 2])
        # the pure twin decodes the slice, which stops at the buffer's end
        size_to = (start if start < n else n) - pos - 3
        # Runs of stanzas to one session (a client's burst) share one str: decoded once,
        # and send_quiet knows the recipient by identity
        if size_to != last_size or last < 0 or memcmp(p + last, p + pos + 3, size_to) != 0:
            to = PyUnicode_DecodeUTF8(<const char*>p + pos + 3, size_to, NULL) \
                if size_to > 0 else ""
            last, last_size = pos + 3, size_to
        if start + 4 > n:
            raise CodecError("malformed record: a truncated stanza record")
        size = _u32(p + start)
        start += 4
        pos = start + size
        # a size past the frame's end fails the check below: nothing past it is taken
        stop = pos if pos < n else n
        out.append((1, to, PyBytes_FromStringAndSize(<const char*>p + start, stop - start)))
    if pos != end:
        raise CodecError("a record runs past the end of its frame")
    return 0


def parse_records(buf, Py_ssize_t pos, Py_ssize_t end, list out) -> None:
    """Append the records in ``buf[pos:end]`` (one frame's body) to ``out``; CodecError
    (the records before the bad one appended) if they are malformed."""
    cdef bytes data = buf if type(buf) is bytes else bytes(buf)
    if pos < 0 or end > PyBytes_GET_SIZE(data):
        raise CodecError("frame bounds outside the buffer")
    try:
        _parse(data, <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
               pos, end, out)
    except UnicodeDecodeError as exc:
        raise CodecError(f"malformed record: {exc}") from None


cdef class FrameDecoder:
    """Bytes in, records out; keeps an incomplete frame until the rest arrives."""

    cdef bytearray _buf

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data) -> list:
        """The records of every frame completed by ``data``, in order."""
        cdef bytearray buf = self._buf
        cdef const unsigned char* p
        cdef Py_ssize_t pos = 0, end, size
        cdef list records = []
        if PyByteArray_GET_SIZE(buf):
            # A frame begun in an earlier chunk (a frame of a few hundred stanzas spans
            # reads): read in place in the buffer, not copied out of it
            buf += data
            end = PyByteArray_GET_SIZE(buf)
            if end < 4:
                return records
            size = _u32(<const unsigned char*>PyByteArray_AS_STRING(buf))
            if end - 4 < size <= MAX_FRAME:
                return records  # the first frame is still incomplete
            with memoryview(buf) as view:  # (released before the buffer shrinks)
                pos = self._frames(view, <const unsigned char*>PyByteArray_AS_STRING(buf),
                                   end, records)
            del buf[:pos]  # (from the front: no copy)
            return records
        chunk = data if type(data) is bytes else bytes(data)
        end = PyBytes_GET_SIZE(chunk)
        pos = self._frames(chunk, <const unsigned char*>PyBytes_AS_STRING(chunk), end, records)
        if pos < end:
            buf += memoryview(chunk)[pos:]
        return records

    cdef Py_ssize_t _frames(self, object owner, const unsigned char* p, Py_ssize_t end,
                            list records) except -1:
        """Parse the complete frames at ``p[:end]`` into ``records``: where they end."""
        cdef Py_ssize_t pos = 0, size
        try:
            while end - pos >= 4:
                size = _u32(p + pos)
                if size > MAX_FRAME:
                    raise CodecError(f"frame of {size} bytes exceeds {MAX_FRAME}")
                if end - pos - 4 < size:
                    break
                _parse(owner, p, end, pos + 4, pos + 4 + size, records)
                pos += 4 + size
        except UnicodeDecodeError as exc:
            raise CodecError(f"malformed record: {exc}") from None
        return pos


# -- a STANZA record's element, from its start tag ---------------------------------------------

# Byte classes, one table lookup per byte.  _NAME: 1 a name's first character
# ([A-Za-z_]), 2 one that may only follow ([0-9.-]).  _VAL, in an attribute value: 0 plain
# ASCII, _QUOTE its end, _AMP a reference, _BAD not in the serializer's values (a control
# character, "<"), _HIGH a byte of a multi-byte UTF-8 character.
cdef unsigned char _NAME[256]
cdef unsigned char _VAL[256]
cdef enum:
    _QUOTE = 1
    _AMP = 2
    _BAD = 3
    _HIGH = 4


cdef _tables():
    cdef int c
    for c in range(256):
        _NAME[c] = 1 if (0x41 <= c <= 0x5A) or (0x61 <= c <= 0x7A) or c == 0x5F else \
            2 if (0x30 <= c <= 0x39) or c == 0x2E or c == 0x2D else 0
        _VAL[c] = _QUOTE if c == 0x22 else _AMP if c == 0x26 else \
            _BAD if c < 0x20 or c == 0x3C else _HIGH if c >= 0x80 else 0


_tables()


cdef inline Py_ssize_t _name_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The end of the name at ``i`` (``i`` itself: no name there)."""
    if i >= n or _NAME[p[i]] != 1:
        return i
    i += 1
    while i < n and _NAME[p[i]]:
        i += 1
    return i


cdef inline Py_ssize_t _ref(const unsigned char* p, Py_ssize_t i, Py_ssize_t e,
                            unsigned char* out) noexcept:
    """The length of the reference ``&...;`` at ``i`` (before ``e``) that the serializer
    writes, its character in ``out``; 0 for any other."""
    cdef Py_ssize_t k = e - i
    if k >= 5 and memcmp(p + i, b"&amp;", 5) == 0:
        out[0] = 0x26
        return 5
    if k >= 4 and memcmp(p + i, b"&lt;", 4) == 0:
        out[0] = 0x3C
        return 4
    if k >= 4 and memcmp(p + i, b"&gt;", 4) == 0:
        out[0] = 0x3E
        return 4
    if k >= 6 and memcmp(p + i, b"&quot;", 6) == 0:
        out[0] = 0x22
        return 6
    if k >= 4 and memcmp(p + i, b"&#9;", 4) == 0:
        out[0] = 0x09
        return 4
    if k >= 5 and memcmp(p + i, b"&#10;", 5) == 0:
        out[0] = 0x0A
        return 5
    if k >= 5 and memcmp(p + i, b"&#13;", 5) == 0:
        out[0] = 0x0D
        return 5
    return 0


cdef object _value(const unsigned char* p, Py_ssize_t s, Py_ssize_t e, bint refs):
    """The attribute value ``p[s:e]`` as str, references replaced; None if it holds one the
    serializer does not write, or is not UTF-8."""
    cdef bytearray buf
    cdef unsigned char* q
    cdef Py_ssize_t i = s, k, m = 0
    cdef unsigned char c
    if not refs:
        try:
            return PyUnicode_DecodeUTF8(<const char*>p + s, e - s, NULL)
        except UnicodeDecodeError:
            return None
    buf = bytearray(e - s)
    q = <unsigned char*>PyByteArray_AS_STRING(buf)
    while i < e:
        if p[i] == 0x26:
            k = _ref(p, i, e, &c)
            if k == 0:
                return None
            q[m] = c
            i += k
        else:
            q[m] = p[i]
            i += 1
        m += 1
    try:
        return PyUnicode_DecodeUTF8(<const char*>q, m, NULL)
    except UnicodeDecodeError:
        return None


# Element's slots, written directly (Element.__init__ only stores its arguments): a Python
# frame per stanza is what this module is here to save.  Checked at import; if the slots
# change, _FAST is False and attributes are set one by one.
cdef tuple _SLOTS = ("name", "ns", "attrs", "_children", "_lazy", "_raw_inner", "_raw_ns", "_wire")
cdef Py_ssize_t _OFF[8]
cdef bint _FAST = False


cdef _find_slots():
    global _FAST
    for k, slot in enumerate(_SLOTS):
        descr = Element.__dict__.get(slot)
        if type(descr).__name__ != "member_descriptor":
            return
        _OFF[k] = (<PyMemberDescrObject*>descr).d_member.offset
    _FAST = getattr(Element, "__slots__", None) == _SLOTS


_find_slots()


cdef object _new_element(str name, dict attrs, object lazy, bytes inner, tuple wire):
    cdef PyObject* o
    cdef int k
    values = (name, CLIENT_NS, attrs, None, lazy, inner, CLIENT_NS, wire)
    if not _FAST:
        element = Element.__new__(Element)
        for k in range(8):
            setattr(element, _SLOTS[k], values[k])
        return element
    o = PyType_GenericAlloc(<PyTypeObject*>Element, 0)  # (a new reference, owned below)
    element = <object>o
    Py_DECREF(element)
    for k in range(8):
        Py_INCREF(values[k])
        (<PyObject**>((<char*>o) + _OFF[k]))[0] = <PyObject*>values[k]
    return element


@cython.final
@cython.freelist(64)
cdef class StanzaContent:
    """The children of an element :func:`stanza_element` built: its bytes parsed (with
    the validating tokenizer) when first read (``xmppd.cluster.codec.stanza_content``)."""

    cdef readonly bytes data

    def __call__(self):
        return stanza_content(self.data)


# Names the serializer writes on every stanza: the same str objects each time (their hash
# is computed once), not a new decode per stanza.
cdef str _MESSAGE = "message", _PRESENCE = "presence", _IQ = "iq"
cdef str _TO = "to", _FROM = "from", _TYPE = "type", _ID = "id"


cdef str _name(const unsigned char* p, Py_ssize_t n):
    """An ASCII name (checked by the caller)."""
    if n == 2 and p[0] == 0x74 and p[1] == 0x6F:
        return _TO
    if n == 2 and p[0] == 0x69 and p[1] == 0x64:
        return _ID
    if n == 4 and memcmp(p, b"from", 4) == 0:
        return _FROM
    if n == 4 and memcmp(p, b"type", 4) == 0:
        return _TYPE
    if n == 7 and memcmp(p, b"message", 7) == 0:
        return _MESSAGE
    if n == 8 and memcmp(p, b"presence", 8) == 0:
        return _PRESENCE
    if n == 2 and p[0] == 0x69 and p[1] == 0x71:
        return _IQ
    text = PyUnicode_New(n, 127)
    memcpy(PyUnicode_1BYTE_DATA(text), p, n)
    return text


cdef enum:
    _NOT_PLAIN = -1


cdef Py_ssize_t _attributes(const unsigned char* p, Py_ssize_t n, Py_ssize_t i,
                            dict attrs) except -2:
    """Walk the attributes of a start tag from ``i`` (the end of its name) in the
    serializer's form, each into ``attrs``, decoded: where they end, or _NOT_PLAIN."""
    cdef Py_ssize_t ks, ke, vs
    cdef unsigned char c
    cdef bint refs, high
    while i < n and p[i] == 0x20:  # one attribute, after exactly one space
        ks = i + 1
        ke = _name_end(p, ks, n)
        if ke == ks or ke + 1 >= n or p[ke] != 0x3D or p[ke + 1] != 0x22:
            return _NOT_PLAIN
        vs = i = ke + 2
        refs = high = False
        # four plain bytes at a time (one test for the common case), then byte by byte
        while i + 4 <= n and not (_VAL[p[i]] | _VAL[p[i + 1]] | _VAL[p[i + 2]] | _VAL[p[i + 3]]):
            i += 4
        while i < n:
            c = _VAL[p[i]]
            if c:
                if c == _QUOTE:
                    break
                if c == _BAD:
                    return _NOT_PLAIN
                if c == _AMP:
                    refs = True
                else:
                    high = True
            i += 1
        if i >= n:
            return _NOT_PLAIN
        if ke - ks >= 3 and (p[ks] | 0x20) == 0x78 and (p[ks + 1] | 0x20) == 0x6D \
                and (p[ks + 2] | 0x20) == 0x6C:
            return _NOT_PLAIN  # xmlns, and names XML reserves
        if not high and not refs:  # ASCII: no decoder
            value = PyUnicode_New(i - vs, 127)
            memcpy(PyUnicode_1BYTE_DATA(value), p + vs, i - vs)
        else:
            value = _value(p, vs, i, refs)
            if value is None:
                return _NOT_PLAIN
        key = _name(p + ks, ke - ks)
        if key in attrs:
            return _NOT_PLAIN  # twice the same attribute
        attrs[key] = value
        i += 1
    return i


cdef inline Py_ssize_t _open_name(const unsigned char* p, Py_ssize_t n) noexcept:
    """The end of the element's name after its ``<``; -1 if there is none."""
    if n < 3 or p[0] != 0x3C:
        return -1
    cdef Py_ssize_t ne = _name_end(p, 1, n)
    return -1 if ne == 1 else ne


cdef Py_ssize_t _content(const unsigned char* p, Py_ssize_t n, Py_ssize_t i,
                         Py_ssize_t ne, Py_ssize_t* tail) noexcept:
    """Where the content starts after the attributes' end ``i`` (``ne``: the end of the
    element's name), its end in ``tail`` (both ``n`` for an empty element ``.../>``); -1
    if the element does not end as the serializer ends it."""
    if i < n and p[i] == 0x2F:
        if i + 2 != n or p[i + 1] != 0x3E:
            return -1
        tail[0] = n
        return n
    if i >= n or p[i] != 0x3E:
        return -1
    tail[0] = n - (ne - 1) - 3  # where "</name>" must start
    if tail[0] < i + 1 or p[tail[0]] != 0x3C or p[tail[0] + 1] != 0x2F or p[n - 1] != 0x3E \
            or memcmp(p + tail[0] + 2, p + 1, ne - 1) != 0:
        return -1
    return i + 1


def stanza_element(bytes data):
    """The ``jabber:client`` element a peer's STANZA record carries, built from its start
    tag alone; None when the bytes are not in the form the serializer writes (see the pure
    twin, ``xmppd.cluster.codec.stanza_element``)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, ne, body, tail
    cdef dict attrs = {}
    cdef StanzaContent lazy = None
    ne = _open_name(p, n)
    if ne < 0:
        return None
    i = _attributes(p, n, ne, attrs)
    if i < 0:
        return None
    body = _content(p, n, i, ne, &tail)
    if body < 0:
        return None
    inner = PyBytes_FromStringAndSize(<const char*>p + body, tail - body)
    if tail > body:
        lazy = StanzaContent.__new__(StanzaContent)
        lazy.data = data
    name = _name(p + 1, ne - 1)
    return _new_element(name, attrs, lazy, inner, (inner, CLIENT_NS, name, attrs.copy(), data))


# -- whether a STANZA record's bytes may go to the recipient as they are -----------------------

cdef bint _found(const unsigned char* p, Py_ssize_t n, const unsigned char* s, Py_ssize_t m) noexcept:
    """Whether ``s[:m]`` occurs in ``p[:n]`` (``bytes.find(...) >= 0``)."""
    cdef const unsigned char* q
    cdef const unsigned char* last
    if m == 0:
        return True
    if m > n:
        return False
    last = p + n - m
    while p <= last:
        q = <const unsigned char*>memchr(p, s[0], last - p + 1)
        if q == NULL:
            return False
        if memcmp(q, s, m) == 0:
            return True
        p = q + 1
    return False


cdef bint _content_quiet(const unsigned char* p, Py_ssize_t n, tuple encoded) except -1:
    """The content check of :func:`plain_stanza` on ``p[:n]``."""
    cdef bytes ns
    if memchr(p, 0x3D, n) == NULL:  # "="
        return True
    if memchr(p, 0x26, n) != NULL:  # "&"
        return False
    for item in encoded:
        ns = item
        if _found(p, n, <const unsigned char*>PyBytes_AS_STRING(ns), PyBytes_GET_SIZE(ns)):
            return False
    return True


def plain_stanza(bytes data, tuple encoded) -> bool:
    """Whether a STANZA record's XML may be written to its recipient's stream as it came:
    an element with no attribute named ``xml...`` (no namespace declared) whose content
    carries none of ``encoded`` (see the pure twin, ``xmppd.cluster.codec.plain_stanza``)."""
    return _plain(data, encoded)


cdef bint _plain(bytes data, tuple encoded) except -1:
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef const unsigned char* q
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), ne, gt, tail
    ne = _open_name(p, n)
    if ne < 0 or ne >= n or (p[ne] != 0x20 and p[ne] != 0x2F and p[ne] != 0x3E):
        return False
    q = <const unsigned char*>memchr(p + ne, 0x3E, n - ne)  # the start tag's end
    if q == NULL:
        return False
    gt = q - p
    if _found(p + ne, gt - ne, <const unsigned char*>b" xml", 4):
        return False  # a namespace declared (xmlns...), or xml:lang: parsed
    if p[gt - 1] == 0x2F:  # "/>": no content
        return gt + 1 == n
    tail = n - (ne - 1) - 3  # where "</name>" must start
    if tail < gt + 1 or p[tail] != 0x3C or p[tail + 1] != 0x2F or p[n - 1] != 0x3E \
            or memcmp(p + tail + 2, p + 1, ne - 1) != 0:
        return False
    return _content_quiet(p + gt + 1, tail - gt - 1, encoded)


# -- the receiver's quiet way: a run of STANZA records written as they came ---------------------

cdef int _write_run(object transport, list records, Py_ssize_t first, Py_ssize_t end) except -1:
    """``transport.send_bytes`` of the XML of ``records[first:end]``, joined (one call)."""
    cdef Py_ssize_t k, size = 0
    cdef bytes data
    cdef char* o
    if end - first == 1:
        transport.send_bytes((<tuple>records[first])[2])
        return 0
    for k in range(first, end):
        size += PyBytes_GET_SIZE(<bytes>(<tuple>records[k])[2])
    joined = PyBytes_FromStringAndSize(NULL, size)
    o = PyBytes_AS_STRING(joined)
    for k in range(first, end):
        data = <bytes>(<tuple>records[k])[2]
        memcpy(o, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        o += PyBytes_GET_SIZE(data)
    transport.send_bytes(joined)
    return 0


def send_quiet(list records, Py_ssize_t i, dict local, dict quiet, long need, tuple encoded,
               dict plain, object is_plain):
    """Write ``records[i:]`` to their recipients' streams as the bytes that came, for as
    long as each may be, a run of records to one session in one ``send_bytes`` (see the pure
    twin, ``xmppd.cluster.codec.send_quiet``); returns ``(index of the first record not
    written, messages, presences, iqs)``."""
    cdef Py_ssize_t n = len(records), first = i
    cdef tuple record
    cdef bytes data
    cdef long messages = 0, presences = 0, iqs = 0
    cdef unsigned char kind
    cdef object to, last = None, transport = None, candidate
    while i < n:
        record = <tuple>records[i]
        if record[0] != STANZA:
            break
        to = record[1]
        if to is not last and (last is None or to != last):
            entry = local.get(to)
            if entry is None:
                break
            session = entry.session
            candidate = session.transport
            ok = plain.get(type(candidate))
            if ok is None:
                ok = is_plain(candidate)
            if not ok:
                break
            if need and (<long>quiet.get(session.bare, 0)) & need != need:
                break
            if i > first:
                _write_run(transport, records, first, i)
            transport, last, first = candidate, to, i
        data = <bytes>record[2]
        if not _plain(data, encoded):
            break
        kind = (<const unsigned char*>PyBytes_AS_STRING(data))[1]
        if kind == 0x6D:  # m
            messages += 1
        elif kind == 0x70:  # p
            presences += 1
        else:
            iqs += 1
        i += 1
    if i > first:
        _write_run(transport, records, first, i)
    return i, messages, presences, iqs


# -- the sender's way: a stanza for a session on a peer, into the link's buffer ---------------

# The forwarding serializer Element.to_bytes calls (chosen as xmppd.xml.element chooses it)
_forward = choose("serialize", "xmppd.xml.element").forward_bytes
cdef enum:
    _NAME_SLOT, _NS_SLOT, _ATTRS_SLOT, _RAW_SLOT = 5, _RAW_NS_SLOT, _WIRE_SLOT


cdef inline PyObject* _slot(object element, int k) noexcept:
    return (<PyObject**>((<char*><PyObject*>element) + _OFF[k]))[0]


cdef bytes _element_bytes(object element):
    """``element.to_bytes(CLIENT_NS)`` without its Python frame for a routed stanza (the
    forwarding form, from the element's slots); the method itself for anything else."""
    cdef PyObject* raw
    cdef PyObject* ns
    cdef PyObject* raw_ns
    if _FAST and type(element) is Element:
        raw = _slot(element, _RAW_SLOT)
        ns = _slot(element, _NS_SLOT)
        raw_ns = _slot(element, _RAW_NS_SLOT)
        # (a slot never set reads NULL: the method raises as it would)
        if raw != NULL and <object>raw is not None and ns != NULL and raw_ns != NULL \
                and _slot(element, _WIRE_SLOT) != NULL and <object>_slot(element, _WIRE_SLOT) is None \
                and _slot(element, _NAME_SLOT) != NULL and _slot(element, _ATTRS_SLOT) != NULL \
                and (raw_ns == ns or <object>raw_ns == <object>ns):
            return _forward(<object>_slot(element, _NAME_SLOT), <object>ns,
                            <object>_slot(element, _ATTRS_SLOT), <object>raw, CLIENT_NS)
    return element.to_bytes(CLIENT_NS)


cdef class LinkBuffer:
    """What a stanza's way to a peer reads and updates of its link, as C fields (see the
    pure twin, ``xmppd.cluster.codec.LinkBuffer``)."""

    cdef public bytearray buffer
    cdef public Py_ssize_t max_pending
    cdef public long long stanzas
    cdef public bint scheduled

    def __cinit__(self, *args, **kwargs):
        self.buffer = bytearray()


cdef int _link_stanza(LinkBuffer link, object to, object element) except -1:
    cdef bytearray buffer = link.buffer
    if link.max_pending and PyByteArray_GET_SIZE(buffer) > link.max_pending:
        link.overflow(element)
        return 0
    link.stanzas += 1
    _put_stanza(buffer, to if type(to) is bytes else bytes(to), _element_bytes(element))
    if not link.scheduled:
        link.schedule()
    return 0


def link_stanza(LinkBuffer link, to, element) -> None:
    """A STANZA record for ``element`` to the session ``to`` in ``link``'s buffer, counted,
    its flush scheduled; past the link's bound, ``link.overflow(element)`` instead (see the
    pure twin, ``xmppd.cluster.codec.link_stanza``)."""
    _link_stanza(link, to, element)


def send_remote(session, element) -> None:
    """``RemoteSession.send``: :func:`link_stanza` to the session's link and JID."""
    _link_stanza(session.link, session.to, element)
