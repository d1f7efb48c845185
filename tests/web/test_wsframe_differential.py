"""Differential tests: the compiled WebSocket frame codec against the pure twin (the
specification).  Random frame sequences, valid and mutated, are fed to both in random
pieces: the events and the error (code, reason, events before it) must be identical, and
identical to feeding everything at once."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import twins

from xmppd.web._wsbase import WebSocketError

pure, compiled = twins("wsframe")

pytestmark = pytest.mark.skipif(compiled is None, reason="compiled frame codec not built")

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

PAYLOADS = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
    st.sampled_from([b"a" * 125, b"b" * 126, b"c" * 300, b"d" * 65536, "é".encode() * 70]),
)
OPCODES = st.sampled_from([0x0, 0x1, 0x1, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB])
MASKS = st.one_of(st.binary(min_size=4, max_size=4), st.none())


@st.composite
def frame(draw) -> bytes:
    op = draw(OPCODES)
    payload = draw(PAYLOADS)
    if op == 0x8 and draw(st.booleans()):
        payload = draw(st.sampled_from([1000, 1001, 1005, 1015, 2999, 3000, 4999, 5000]))\
            .to_bytes(2, "big") + draw(PAYLOADS)[:20]
    fin = draw(st.booleans()) if op in (0, 1, 2) else draw(st.sampled_from([True] * 9 + [False]))
    mask = draw(st.sampled_from([b"\x00\x00\x00\x00", b"\xff\x10\x20\x30"]))
    mask = draw(st.one_of(st.just(mask), MASKS))
    data = bytearray(pure.encode_frame(op, payload, fin, mask))
    if draw(st.integers(0, 9)) == 0:  # mutate a byte of the header
        i = draw(st.integers(0, min(len(data) - 1, 9)))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


def run(impl, data: bytes, cuts: list[int], max_size: int, require_mask: bool):
    dec = impl.FrameDecoder(max_size, require_mask)
    events: list = []
    start = 0
    try:
        for cut in [*sorted(cuts), len(data)]:
            piece = data[start:cut]
            start = max(start, cut)
            events += dec.feed(piece)
    except WebSocketError as exc:
        return events + exc.events, (exc.code, exc.reason), dec.buffered
    return events, None, dec.buffered


@SETTINGS
@given(st.lists(frame(), max_size=8), st.data(), st.sampled_from([100, 1000, 70000, 1 << 20]),
       st.booleans())
def test_compiled_matches_pure(frames, data, max_size, require_mask):
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, max(len(stream), 1)), max_size=6))
    expected = run(pure, stream, [], max_size, require_mask)
    assert run(pure, stream, cuts, max_size, require_mask)[:2] == expected[:2]
    assert run(compiled, stream, cuts, max_size, require_mask)[:2] == expected[:2]
    assert run(compiled, stream, [], max_size, require_mask) == expected


@SETTINGS
@given(st.integers(0, 15), PAYLOADS, st.booleans(), MASKS)
def test_encoders_agree(op, payload, fin, mask):
    assert compiled.encode_frame(op, payload, fin, mask) == pure.encode_frame(op, payload, fin, mask)
    assert compiled.frame_header(op, len(payload), fin, mask) == \
        pure.frame_header(op, len(payload), fin, mask)
