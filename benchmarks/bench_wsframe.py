"""WebSocket frame codec speed: compiled vs pure, decoding a client's masked frames and
encoding the server's, for 250-byte messages (a typical chat stanza).

    python -m pytest benchmarks/bench_wsframe.py --benchmark-only

Each round decodes (or encodes) 1,000 messages; divide the mean by 1,000 for one message.
"""

from __future__ import annotations

import importlib

import pytest

import xmppd.web._wsframe_pure as pure

TEXT = 0x1
MESSAGE = b"<message to='juliet@example.com/balcony' type='chat' id='x'><body>" + \
    "é".encode() * 60 + b"</body></message>"
MESSAGE = (MESSAGE + b"x" * 250)[:250]
MASK = b"\x37\xfa\x21\x3d"
FRAMES = b"".join(pure.encode_frame(TEXT, MESSAGE, True, MASK) for _ in range(1000))


def _impl(name: str):
    if name == "pure":
        return pure
    try:
        return importlib.import_module("xmppd._speedups.wsframe")
    except ImportError:
        pytest.skip("compiled frame codec not built")


@pytest.mark.parametrize("name", ["pure", "compiled"])
def test_decode(benchmark, name):
    mod = _impl(name)

    def run():
        return mod.FrameDecoder(1 << 20).feed(FRAMES)

    assert len(benchmark(run)) == 1000


@pytest.mark.parametrize("name", ["pure", "compiled"])
def test_encode(benchmark, name):
    mod = _impl(name)
    header = mod.frame_header

    def run():
        return [header(TEXT, len(MESSAGE)) for _ in range(1000)]

    assert len(benchmark(run)) == 1000
