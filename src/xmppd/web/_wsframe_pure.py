"""The pure-Python WebSocket frame codec (RFC 6455, server side): the specification that the
compiled codec (``xmppd._speedups.wsframe``) must match event for event, error for error.

Contract
--------
``FrameDecoder.feed(data)`` takes any chunk of what a client sent and returns the events
completed so far, each ``(opcode, payload)``: a whole message (``TEXT`` or ``BINARY``, its
fragments joined and unmasked; a text message's payload is bytes that were checked to be
UTF-8) or a control frame (``PING``, ``PONG``, ``CLOSE``: a close frame's payload was checked
with :func:`~xmppd.web._wsbase.check_close_payload`).  A violation raises
:class:`~xmppd.web._wsbase.WebSocketError` with the close code to send, carrying the events
completed before it in that call (``events``); afterwards every ``feed`` raises it again.

The checks, in this order, each as soon as the bytes it needs have arrived (so the outcome
never depends on how the input was split):

1. first two bytes of a frame: reserved bits set; unknown opcode; a control frame without
   FIN; an unmasked frame (with ``require_mask``); a control frame longer than 125 bytes;
   a continuation with no message started; a data frame inside a fragmented message —
   all 1002;
2. the extended length: not minimally encoded, or the 64-bit length's top bit set (1002);
   the message (its fragments so far plus this one) longer than ``max_message_size``
   (1009), checked before any of the payload is buffered;
3. the whole frame: a close payload of one byte, with a code that may not be sent, or a
   reason that is not UTF-8 (1002 / 1007); a finished text message that is not UTF-8 (1007).
"""

from __future__ import annotations

from xmppd.web._wsbase import (
    BINARY,
    CLOSE,
    CONTINUATION,
    INVALID_DATA,
    PROTOCOL_ERROR,
    TEXT,
    TOO_BIG,
    WebSocketError,
    check_close_payload,
)

_OPCODES = frozenset((CONTINUATION, TEXT, BINARY, CLOSE, 0x9, 0xA))


def _unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (bytes(mask) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame_header(opcode: int, length: int, fin: bool = True, mask: bytes | None = None) -> bytes:
    """The header of a frame of ``length`` payload bytes (``mask``: four bytes, for a
    client's frame)."""
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((first, bit | length))
    elif length < 65536:
        head = bytes((first, bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + length.to_bytes(8, "big")
    return head + mask if mask is not None else head


def encode_frame(opcode: int, payload: bytes, fin: bool = True,
                 mask: bytes | None = None) -> bytes:
    """One whole frame (a server's frames are not masked; a test client's are)."""
    body = _unmask(payload, mask) if mask is not None else payload
    return frame_header(opcode, len(payload), fin, mask) + body


class FrameDecoder:
    """Turns a client's bytes into messages and control frames."""

    def __init__(self, max_message_size: int = 1 << 20, require_mask: bool = True) -> None:
        self.max_message_size = max_message_size
        self.require_mask = require_mask
        self._buf = bytearray()
        self._op = 0  # opcode of the fragmented message in progress (0: none)
        self._parts: list[bytes] = []
        self._size = 0  # its bytes so far
        self._error: WebSocketError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: an incomplete frame, and the fragments of an unfinished message."""
        return len(self._buf) + self._size

    def feed(self, data: bytes) -> list:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        events: list = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                op = b0 & 0x0F
                fin = b0 & 0x80
                if b0 & 0x70:
                    raise WebSocketError(PROTOCOL_ERROR, "reserved bits set")
                if op not in _OPCODES:
                    raise WebSocketError(PROTOCOL_ERROR, f"unknown opcode {op}")
                control = op >= 8
                if control and not fin:
                    raise WebSocketError(PROTOCOL_ERROR, "fragmented control frame")
                masked = b1 & 0x80
                if self.require_mask and not masked:
                    raise WebSocketError(PROTOCOL_ERROR, "unmasked client frame")
                length = b1 & 0x7F
                if control and length > 125:
                    raise WebSocketError(PROTOCOL_ERROR, "control frame longer than 125 bytes")
                if op == CONTINUATION and not self._op:
                    raise WebSocketError(PROTOCOL_ERROR, "continuation without a message")
                if not control and op != CONTINUATION and self._op:
                    raise WebSocketError(PROTOCOL_ERROR, "new message inside a fragmented one")
                head = 2
                if length == 126:
                    if n - pos < 4:
                        break
                    length = (buf[pos + 2] << 8) | buf[pos + 3]
                    head = 4
                    if length < 126:
                        raise WebSocketError(PROTOCOL_ERROR, "length not minimally encoded")
                elif length == 127:
                    if n - pos < 10:
                        break
                    length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    head = 10
                    if length >> 63:
                        raise WebSocketError(PROTOCOL_ERROR, "length out of range")
                    if length < 65536:
                        raise WebSocketError(PROTOCOL_ERROR, "length not minimally encoded")
                if not control and self._size + length > self.max_message_size:
                    raise WebSocketError(TOO_BIG, "message too big")
                if masked:
                    head += 4
                end = pos + head + length
                if n < end:
                    break
                start = pos + head
                if masked:
                    payload = _unmask(buf[start:end], buf[start - 4:start])
                else:
                    payload = bytes(buf[start:end])
                pos = end
                if control:
                    if op == CLOSE:
                        check_close_payload(payload)
                    events.append((op, payload))
                elif op != CONTINUATION and fin:
                    events.append(_message(op, payload))
                else:
                    if op != CONTINUATION:
                        self._op = op
                    self._parts.append(payload)
                    self._size += length
                    if fin:
                        whole = b"".join(self._parts)
                        kind = self._op
                        self._op = 0
                        self._parts = []
                        self._size = 0
                        events.append(_message(kind, whole))
        except WebSocketError as exc:
            del buf[:pos]
            exc.events = events
            self._error = exc
            raise
        del buf[:pos]
        return events


def _message(op: int, payload: bytes) -> tuple[int, bytes]:
    if op == TEXT:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketError(INVALID_DATA, "text message is not UTF-8") from None
    return (op, payload)
