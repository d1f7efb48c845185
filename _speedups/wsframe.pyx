# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled WebSocket frame codec (RFC 6455), the twin of ``xmppd.web._wsframe_pure``.

The pure module is the specification: same API, same events, same errors (code and reason)
in the same order, however the input is split.  What differs is speed: frames are parsed
straight from the received chunk (bytes are copied into the decoder's buffer only when a
frame is incomplete), unmasking XORs eight bytes at a time, and UTF-8 is checked with an
ASCII fast path instead of a decode.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

from xmppd.web._wsbase import (
    CLOSE,
    INVALID_DATA,
    PROTOCOL_ERROR,
    TEXT,
    TOO_BIG,
    WebSocketError,
    check_close_payload,
)

__all__ = ["FrameDecoder", "encode_frame", "frame_header"]

cdef int _TEXT = 0x1
cdef int _CLOSE = 0x8


cdef inline void _xor(char* dst, const char* src, Py_ssize_t n, const char* mask) noexcept:
    cdef uint32_t m32
    cdef uint64_t m64, w
    cdef Py_ssize_t i = 0
    memcpy(&m32, mask, 4)
    m64 = (<uint64_t>m32) | ((<uint64_t>m32) << 32)
    while i + 8 <= n:
        memcpy(&w, src + i, 8)
        w ^= m64
        memcpy(dst + i, &w, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ mask[i & 3]
        i += 1


cdef bint _utf8_ok(const unsigned char* s, Py_ssize_t n) noexcept:
    """What ``bytes.decode("utf-8")`` accepts: no overlong forms, no surrogates, nothing
    above U+10FFFF, no truncated sequence."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    cdef uint64_t w
    while i < n:
        if i + 8 <= n:
            memcpy(&w, s + i, 8)
            if (w & <uint64_t>0x8080808080808080ULL) == 0:
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:
            return False
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                return False
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0):
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90):
                return False
            i += 4
        else:
            return False
    return True


def frame_header(int opcode, Py_ssize_t length, bint fin=True, mask=None):
    """The header of a frame of ``length`` payload bytes (``mask``: four bytes, for a
    client's frame)."""
    cdef unsigned char head[14]
    cdef Py_ssize_t n, k
    cdef unsigned char bit = 0x80 if mask is not None else 0
    head[0] = (0x80 if fin else 0) | opcode
    if length < 126:
        head[1] = bit | length
        n = 2
    elif length < 65536:
        head[1] = bit | 126
        head[2] = (length >> 8) & 0xFF
        head[3] = length & 0xFF
        n = 4
    else:
        head[1] = bit | 127
        for k in range(8):
            head[2 + k] = (<uint64_t>length >> (8 * (7 - k))) & 0xFF
        n = 10
    if mask is not None:
        memcpy(head + n, PyBytes_AS_STRING(bytes(mask)), 4)
        n += 4
    return PyBytes_FromStringAndSize(<char*>head, n)


def encode_frame(int opcode, payload, bint fin=True, mask=None):
    """One whole frame (a server's frames are not masked; a test client's are)."""
    cdef bytes body = bytes(payload)
    cdef bytes head = frame_header(opcode, PyBytes_GET_SIZE(body), fin, mask)
    cdef Py_ssize_t h = PyBytes_GET_SIZE(head), n = PyBytes_GET_SIZE(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, h + n)
    cdef char* o = PyBytes_AS_STRING(out)
    memcpy(o, PyBytes_AS_STRING(head), h)
    if mask is not None:
        _xor(o + h, PyBytes_AS_STRING(body), n, o + h - 4)
    else:
        memcpy(o + h, PyBytes_AS_STRING(body), n)
    return out


cdef class FrameDecoder:
    """Turns a client's bytes into messages and control frames."""

    cdef public Py_ssize_t max_message_size
    cdef public bint require_mask
    cdef bytearray _buf
    cdef int _op
    cdef list _parts
    cdef Py_ssize_t _size
    cdef object _error

    def __init__(self, Py_ssize_t max_message_size=1 << 20, bint require_mask=True):
        self.max_message_size = max_message_size
        self.require_mask = require_mask
        self._buf = bytearray()
        self._op = 0
        self._parts = []
        self._size = 0
        self._error = None

    @property
    def buffered(self):
        """Bytes held: an incomplete frame, and the fragments of an unfinished message."""
        return PyByteArray_GET_SIZE(self._buf) + self._size

    def feed(self, data) -> list:
        if self._error is not None:
            raise self._error
        cdef list events = []
        cdef object src
        cdef const char* p
        cdef Py_ssize_t n, pos = 0, head, start, end
        cdef unsigned char b0, b1
        cdef int op, k
        cdef bint fin, control, masked
        cdef uint64_t length
        cdef bytes payload
        cdef bint buffered = PyByteArray_GET_SIZE(self._buf) > 0
        if buffered:
            self._buf += data
            src = self._buf
            p = PyByteArray_AS_STRING(self._buf)
            n = PyByteArray_GET_SIZE(self._buf)
        else:
            src = data if type(data) is bytes else bytes(data)
            p = PyBytes_AS_STRING(src)
            n = PyBytes_GET_SIZE(src)
        try:
            while n - pos >= 2:
                b0 = <unsigned char>p[pos]
                b1 = <unsigned char>p[pos + 1]
                op = b0 & 0x0F
                fin = (b0 & 0x80) != 0
                if b0 & 0x70:
                    raise WebSocketError(PROTOCOL_ERROR, "reserved bits set")
                if not (op <= 2 or 8 <= op <= 10):
                    raise WebSocketError(PROTOCOL_ERROR, f"unknown opcode {op}")
                control = op >= 8
                if control and not fin:
                    raise WebSocketError(PROTOCOL_ERROR, "fragmented control frame")
                masked = (b1 & 0x80) != 0
                if self.require_mask and not masked:
                    raise WebSocketError(PROTOCOL_ERROR, "unmasked client frame")
                length = b1 & 0x7F
                if control and length > 125:
                    raise WebSocketError(PROTOCOL_ERROR, "control frame longer than 125 bytes")
                if op == 0 and self._op == 0:
                    raise WebSocketError(PROTOCOL_ERROR, "continuation without a message")
                if not control and op != 0 and self._op != 0:
                    raise WebSocketError(PROTOCOL_ERROR, "new message inside a fragmented one")
                head = 2
                if length == 126:
                    if n - pos < 4:
                        break
                    length = ((<uint64_t><unsigned char>p[pos + 2]) << 8) | <unsigned char>p[pos + 3]
                    head = 4
                    if length < 126:
                        raise WebSocketError(PROTOCOL_ERROR, "length not minimally encoded")
                elif length == 127:
                    if n - pos < 10:
                        break
                    length = 0
                    for k in range(8):
                        length = (length << 8) | <unsigned char>p[pos + 2 + k]
                    head = 10
                    if length >> 63:
                        raise WebSocketError(PROTOCOL_ERROR, "length out of range")
                    if length < 65536:
                        raise WebSocketError(PROTOCOL_ERROR, "length not minimally encoded")
                if not control and (self.max_message_size < 0 or length > <uint64_t>(
                        self.max_message_size - self._size)):
                    raise WebSocketError(TOO_BIG, "message too big")
                if masked:
                    head += 4
                if <uint64_t>(n - pos - head) < length or n - pos < head:
                    break
                start = pos + head
                end = start + <Py_ssize_t>length
                if masked:
                    payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
                    _xor(PyBytes_AS_STRING(payload), p + start, <Py_ssize_t>length, p + start - 4)
                else:
                    payload = PyBytes_FromStringAndSize(p + start, <Py_ssize_t>length)
                pos = end
                if control:
                    if op == _CLOSE:
                        check_close_payload(payload)
                    events.append((op, payload))
                elif op != 0 and fin:
                    events.append(_message(op, payload))
                else:
                    if op != 0:
                        self._op = op
                    self._parts.append(payload)
                    self._size += <Py_ssize_t>length
                    if fin:
                        payload = b"".join(self._parts)
                        op = self._op
                        self._op = 0
                        self._parts = []
                        self._size = 0
                        events.append(_message(op, payload))
        except WebSocketError as exc:
            self._keep(src, buffered, pos, n)
            exc.events = events
            self._error = exc
            raise
        self._keep(src, buffered, pos, n)
        return events

    cdef _keep(self, object src, bint buffered, Py_ssize_t pos, Py_ssize_t n):
        """Keep the bytes after ``pos`` (an incomplete frame) for the next feed."""
        if buffered:
            del self._buf[:pos]
        elif pos < n:
            self._buf += (<bytes>src)[pos:]


cdef tuple _message(int op, bytes payload):
    if op == _TEXT and not _utf8_ok(<const unsigned char*>PyBytes_AS_STRING(payload),
                                    PyBytes_GET_SIZE(payload)):
        raise WebSocketError(INVALID_DATA, "text message is not UTF-8")
    return (op, payload)
