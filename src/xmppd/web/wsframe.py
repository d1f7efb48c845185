"""The WebSocket frame codec (RFC 6455): compiled when available, else the pure twin.

See :mod:`xmppd.web._wsframe_pure` for the contract both implementations follow.
"""

from xmppd._impl import choose
from xmppd.web._wsbase import (
    BINARY,
    CLOSE,
    CONTINUATION,
    GOING_AWAY,
    INVALID_DATA,
    NORMAL,
    PING,
    POLICY,
    PONG,
    PROTOCOL_ERROR,
    TEXT,
    TOO_BIG,
    UNSUPPORTED_DATA,
    WebSocketError,
    check_close_payload,
    close_payload,
    parse_close,
)

_impl = choose("wsframe", "xmppd.web._wsframe_pure")
FrameDecoder = _impl.FrameDecoder
encode_frame = _impl.encode_frame
frame_header = _impl.frame_header

__all__ = [
    "BINARY", "CLOSE", "CONTINUATION", "GOING_AWAY", "INVALID_DATA", "NORMAL", "PING",
    "POLICY", "PONG", "PROTOCOL_ERROR", "TEXT", "TOO_BIG", "UNSUPPORTED_DATA",
    "FrameDecoder", "WebSocketError", "check_close_payload", "close_payload",
    "encode_frame", "frame_header", "parse_close",
]
