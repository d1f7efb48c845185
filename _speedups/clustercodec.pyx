# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled STANZA records of the cluster links, the twin of ``xmppd.cluster.codec``.

The pure module is the specification: same records from the same bytes, however they are
split, and a ``CodecError`` (with the records before the bad one appended) where it raises
one.  Only what every routed stanza pays is here: :func:`put_stanza` (one resize and two
copies instead of two ``struct`` packs and four appends), :func:`parse_records` (a STANZA
record read with pointer arithmetic; the rare other kinds go to the pure
``codec.parse_record``) and :class:`FrameDecoder` (frames cut from the received chunk
without a Python-level loop).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t
from libc.string cimport memcpy

from xmppd.cluster.codec import MAX_FRAME as _MAX_FRAME
from xmppd.cluster.codec import CodecError, parse_record

__all__ = ["FrameDecoder", "parse_records", "put_stanza"]

cdef Py_ssize_t MAX_FRAME = _MAX_FRAME
cdef unsigned char STANZA = 1


cdef inline uint32_t _u32(const unsigned char* p) noexcept:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


def put_stanza(bytearray out, to, xml) -> None:
    """A STANZA record for the session ``to`` (its full JID, UTF-8)."""
    cdef bytes t = to if type(to) is bytes else bytes(to)
    cdef bytes x = xml if type(xml) is bytes else bytes(xml)
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


cdef int _parse(bytes data, Py_ssize_t pos, Py_ssize_t end, list out) except -1:
    """``parse_records`` on bytes whose bounds are checked (0 <= pos, end <= len)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), start, stop, size
    cdef object to
    while pos < end:
        if p[pos] != STANZA:
            pos = parse_record(data, pos, out)
            continue
        if pos + 3 > n:
            raise CodecError("malformed record: a truncated stanza record")
        start = pos + 3 + (p[pos + 1] << 8 | p[pos + 2])
        # the pure twin decodes the slice, which stops at the buffer's end
        to = PyUnicode_DecodeUTF8(<const char*>p + pos + 3, (start if start < n else n) - pos - 3,
                                  NULL) if start > pos + 3 else ""
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
        _parse(data, pos, end, out)
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
        cdef bytes chunk
        cdef const unsigned char* p
        cdef Py_ssize_t pos = 0, end, size, have
        cdef list records = []
        if PyByteArray_GET_SIZE(buf):
            buf += data
            have = PyByteArray_GET_SIZE(buf)
            if have < 4:
                return records
            size = _u32(<const unsigned char*>PyByteArray_AS_STRING(buf))
            if have - 4 < size <= MAX_FRAME:
                return records  # the first frame is still incomplete: no copy yet
            chunk = bytes(buf)
            del buf[:]
        else:
            chunk = data if type(data) is bytes else bytes(data)
        # ``chunk`` is bytes from here on: its slices are the records' bytes, one copy each
        p = <const unsigned char*>PyBytes_AS_STRING(chunk)
        end = PyBytes_GET_SIZE(chunk)
        try:
            while end - pos >= 4:
                size = _u32(p + pos)
                if size > MAX_FRAME:
                    raise CodecError(f"frame of {size} bytes exceeds {MAX_FRAME}")
                if end - pos - 4 < size:
                    break
                _parse(chunk, pos + 4, pos + 4 + size, records)
                pos += 4 + size
        except UnicodeDecodeError as exc:
            raise CodecError(f"malformed record: {exc}") from None
        if pos < end:
            buf += chunk[pos:]
        return records
