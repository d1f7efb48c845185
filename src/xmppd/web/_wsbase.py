"""What both WebSocket frame codecs share (``_wsframe_pure`` and ``xmppd._speedups.wsframe``):
opcodes, close codes and the error."""

from __future__ import annotations

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

#: RFC 6455 §7.4.1 close codes used here.
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
INVALID_DATA = 1007  # e.g. a text message that is not UTF-8
POLICY = 1008
TOO_BIG = 1009


class WebSocketError(Exception):
    """The peer broke RFC 6455: fail the connection with close ``code`` (``reason`` says
    why).  After it the decoder raises the same error again."""

    def __init__(self, code: int, reason: str, events: list | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        #: the events completed, in the same feed, before the violation
        self.events = [] if events is None else events

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebSocketError):
            return NotImplemented
        return (self.code, self.reason) == (other.code, other.reason)

    __hash__ = Exception.__hash__


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the code, then the reason (at most 123 bytes)."""
    return code.to_bytes(2, "big") + reason.encode()[:123]


def _code_allowed(code: int) -> bool:
    """Codes a peer may send (RFC 6455 §7.4: 1004-1006 and 1015 never appear on the wire)."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def check_close_payload(payload: bytes) -> None:
    """Raise :class:`WebSocketError` for a close frame a peer may not send."""
    if not payload:
        return
    if len(payload) == 1:
        raise WebSocketError(PROTOCOL_ERROR, "close frame with a one-byte payload")
    if not _code_allowed(int.from_bytes(payload[:2], "big")):
        raise WebSocketError(PROTOCOL_ERROR, "invalid close code")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(INVALID_DATA, "close reason is not UTF-8") from None


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a checked close frame's payload (None: no code given)."""
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8")
