"""Differential fuzzing of the WebSocket frame codec twins (``xmppd.web._wsframe_pure`` vs
``xmppd._speedups.wsframe``).

Input layout: one mode byte (the message size limit, whether frames must be masked), four
bytes that choose where the input is split, then the client's bytes.  Every implementation
must give the same events and the same ``WebSocketError`` (code and reason, and the events
before it), whole or split; no other exception is allowed.  A text message's payload must
be UTF-8, a close frame's code one a peer may send.

    python fuzz/fuzz_wsframe.py fuzz/corpus/wsframe -dict=fuzz/wsframe.dict
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import FuzzInput, instrumented, main, twins  # noqa: E402

with instrumented(__name__ == "__main__"):
    from xmppd.web import _wsframe_pure
    from xmppd.web._wsbase import CLOSE, TEXT, WebSocketError, check_close_payload


IMPLS = twins(_wsframe_pure, "wsframe")

SIZES = (0, 1, 125, 126, 200, 65535, 65536, 1 << 20)


def decode(data: bytes) -> tuple[int, bool, list[int], bytes]:
    """(max message size, require mask, split points, client bytes) of one fuzz input."""
    inp = FuzzInput(data)
    mode = inp.byte()
    cuts = [inp.byte() for _ in range(4)]
    body = data[inp.pos:]
    points = sorted({c * len(body) // 256 for c in cuts if c})
    return SIZES[mode % len(SIZES)], not mode & 0x80, points, body


def encode(body: bytes, *, mode: int = 7, cuts: bytes = b"\0\0\0\0") -> bytes:
    """The fuzz input that feeds ``body`` (mode 7: 1 MiB messages, masks required)."""
    return bytes([mode]) + cuts + body


def run(impl, size: int, mask: bool, points: list[int], body: bytes) -> tuple:
    dec = impl.FrameDecoder(size, mask)
    events: list = []
    start = 0
    try:
        for point in [*points, len(body)]:
            events += dec.feed(body[start:point])
            start = point
    except WebSocketError as exc:
        return tuple(events + exc.events), (exc.code, exc.reason)
    return tuple(events), None


def test_one_input(data: bytes) -> None:
    size, mask, points, body = decode(data)
    whole = run(_wsframe_pure, size, mask, [], body)
    for op, payload in whole[0]:
        if op == TEXT:
            payload.decode("utf-8")  # the contract: only UTF-8 text comes out
        elif op == CLOSE:
            check_close_payload(payload)
    for name, impl in IMPLS.items():
        got = run(impl, size, mask, points, body)
        assert got == whole, (name, got, whole)


if __name__ == "__main__":
    main("wsframe", test_one_input)
