"""The WebSocket frame codec (RFC 6455), both implementations: decoding a client's frames,
every violation's close code, and the encoder."""

from __future__ import annotations

import pytest

from xmppd.web._wsbase import (
    BINARY,
    CLOSE,
    INVALID_DATA,
    PING,
    PONG,
    PROTOCOL_ERROR,
    TEXT,
    TOO_BIG,
    WebSocketError,
    close_payload,
    parse_close,
)

MASK = b"\x01\x02\x03\x04"


def frames(impl, *specs) -> bytes:
    """Client frames: (opcode, payload[, fin])."""
    return b"".join(impl.encode_frame(s[0], s[1], s[2] if len(s) > 2 else True, MASK)
                    for s in specs)


def test_messages_and_control_frames(wsframe_impl):
    dec = wsframe_impl.FrameDecoder(1000)
    data = frames(wsframe_impl, (TEXT, b"<a/>"), (PING, b"hi"), (BINARY, b"\x00\xff"),
                  (PONG, b""), (CLOSE, close_payload(1000, "bye")))
    assert dec.feed(data) == [(TEXT, b"<a/>"), (PING, b"hi"), (BINARY, b"\x00\xff"),
                              (PONG, b""), (CLOSE, b"\x03\xe8bye")]
    assert parse_close(b"\x03\xe8bye") == (1000, "bye") and parse_close(b"") == (None, "")


def test_any_split_gives_the_same_events(wsframe_impl):
    data = frames(wsframe_impl, (TEXT, "é".encode() * 100), (TEXT, b"x" * 70000),
                  (TEXT, b"<a>", False), (PING, b"p"), (0, b"</a>"))
    expected = [(TEXT, "é".encode() * 100), (TEXT, b"x" * 70000), (PING, b"p"),
                (TEXT, b"<a></a>")]
    for step in (1, 2, 3, 7, 125, 4096):
        dec = wsframe_impl.FrameDecoder(100_000)
        events = []
        for i in range(0, len(data), step):
            events += dec.feed(data[i:i + step])
        assert events == expected and dec.buffered == 0


def test_length_encodings(wsframe_impl):
    for n in (0, 125, 126, 65535, 65536):
        frame = wsframe_impl.encode_frame(TEXT, b"a" * n)
        assert len(frame) == n + (2 if n < 126 else 4 if n < 65536 else 10)
        assert wsframe_impl.FrameDecoder(1 << 20, require_mask=False).feed(frame) == [
            (TEXT, b"a" * n)]
    assert wsframe_impl.frame_header(TEXT, 5) == b"\x81\x05"
    assert wsframe_impl.frame_header(CLOSE, 2, mask=MASK) == b"\x88\x82" + MASK


@pytest.mark.parametrize("data, code, reason", [
    (b"\xc1\x80" + MASK, PROTOCOL_ERROR, "reserved bits set"),
    (b"\x83\x80" + MASK, PROTOCOL_ERROR, "unknown opcode 3"),
    (b"\x09\x80" + MASK, PROTOCOL_ERROR, "fragmented control frame"),
    (b"\x81\x00", PROTOCOL_ERROR, "unmasked client frame"),
    (b"\x89\xfe\x00\x7e", PROTOCOL_ERROR, "control frame longer than 125 bytes"),
    (b"\x80\x80" + MASK, PROTOCOL_ERROR, "continuation without a message"),
    (b"\x01\x80" + MASK + b"\x81\x80" + MASK, PROTOCOL_ERROR,
     "new message inside a fragmented one"),
    (b"\x81\xfe\x00\x05", PROTOCOL_ERROR, "length not minimally encoded"),
    (b"\x81\xff" + (5).to_bytes(8, "big"), PROTOCOL_ERROR, "length not minimally encoded"),
    (b"\x81\xff" + (1 << 63).to_bytes(8, "big"), PROTOCOL_ERROR, "length out of range"),
    (b"\x81\xfe\x04\x00", TOO_BIG, "message too big"),
    (b"\x88\x81" + MASK + b"\x00", PROTOCOL_ERROR, "close frame with a one-byte payload"),
    (b"\x88\x82" + MASK + bytes(a ^ b for a, b in zip(b"\x03\xed", MASK, strict=False)),
     PROTOCOL_ERROR, "invalid close code"),
    (b"\x81\x82" + MASK + bytes(a ^ b for a, b in zip(b"\xc3\x28", MASK, strict=False)),
     INVALID_DATA, "text message is not UTF-8"),
])
def test_violations(wsframe_impl, data, code, reason):
    dec = wsframe_impl.FrameDecoder(1000)
    ok = frames(wsframe_impl, (TEXT, b"first"))
    with pytest.raises(WebSocketError) as info:
        dec.feed(ok + data)
    assert (info.value.code, info.value.reason) == (code, reason)
    assert info.value.events == [(TEXT, b"first")]
    with pytest.raises(WebSocketError):  # and it stays failed
        dec.feed(ok)


def test_fragments_count_toward_the_size_limit(wsframe_impl):
    dec = wsframe_impl.FrameDecoder(10)
    with pytest.raises(WebSocketError) as info:
        dec.feed(frames(wsframe_impl, (TEXT, b"123456", False), (0, b"123456")))
    assert info.value.code == TOO_BIG


@pytest.mark.parametrize("text", [b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\x80",
                                  b"\xc0\xaf", b"abc\xe2\x82", b"\xff", b"\xf0\x8f\xbf\xbf"])
def test_utf8_rules_are_python_s(wsframe_impl, text):
    dec = wsframe_impl.FrameDecoder(1000)
    with pytest.raises(WebSocketError) as info:
        dec.feed(frames(wsframe_impl, (TEXT, text)))
    assert info.value.code == INVALID_DATA


def test_a_text_message_split_inside_a_character_is_fine(wsframe_impl):
    dec = wsframe_impl.FrameDecoder(1000)
    assert dec.feed(frames(wsframe_impl, (TEXT, b"\xc3", False), (0, b"\xa9"))) == [
        (TEXT, "é".encode())]
