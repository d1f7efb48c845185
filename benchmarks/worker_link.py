#!/usr/bin/env python3
"""Per-stanza cost of the link between two workers (``xmppd run --workers N``).

Measures what a stanza routed to a session on another worker costs on top of a local
delivery, both ends in one process (no socket, no event loop: the CPU cost only):
the sender serializes it into the peer's buffer (``Element.to_bytes`` + a STANZA record),
the buffer becomes one frame per batch; the receiver decodes the frame, parses the
batch's stanzas with one tokenizer feed and writes each for its recipient (``to_bytes``,
which returns the bytes that came: ``Element.keep_wire``, as ``Node._records`` does).
Stanzas come from a tokenizer, as routed ones do (their content bytes are reused).  Run
with ``XMPPD_PURE_PYTHON=1`` for the pure twins.

    PYTHONPATH=src python benchmarks/worker_link.py [--batch 32] [--stanzas 200000]
"""

from __future__ import annotations

import argparse
import time

from xmppd._impl import implementation
from xmppd.cluster import codec
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS
from xmppd.xml.tokenizer import Tokenizer

HEADER = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"


def routed_stanzas(n: int) -> list[Element]:
    """``n`` chat messages as a client stream's tokenizer yields them."""
    tok = Tokenizer()
    tok.feed(HEADER)
    raw = b"".join(
        b"<message to='bob@localhost/r%d' type='chat' id='m%d'><body>%s</body></message>"
        % (i % 100, i, b"x" * 64) for i in range(n))
    out = [e for e in tok.feed(raw) if isinstance(e, Element)]
    for i, el in enumerate(out):
        el.attrs["from"] = f"alice@localhost/a{i % 100}"  # stamped by the router
    return out


def run(stanzas: list[Element], batch: int) -> tuple[float, float]:
    """(send µs/stanza, receive and write for the recipient µs/stanza)."""
    targets = [f"bob@localhost/r{i % 100}".encode() for i in range(len(stanzas))]
    frames: list[bytes] = []
    start = time.perf_counter()
    for i in range(0, len(stanzas), batch):
        buf = bytearray()
        for j in range(i, min(i + batch, len(stanzas))):
            codec.put_stanza(buf, targets[j], stanzas[j].to_bytes(CLIENT_NS))
        frames.append(codec.frame(buf))
    sent = time.perf_counter() - start
    decoder = codec.FrameDecoder()
    tok = Tokenizer(max_stanza_size=codec.MAX_FRAME)
    tok.feed(HEADER)
    count = 0
    start = time.perf_counter()
    for data in frames:
        records = decoder.feed(data)
        elements = [e for e in tok.feed(b"".join(r[2] for r in records))
                    if isinstance(e, Element)]
        for element, record in zip(elements, records, strict=True):
            element.keep_wire(record[2], CLIENT_NS)
            element.to_bytes(CLIENT_NS)  # the recipient's stream
        count += len(elements)
    received = time.perf_counter() - start
    assert count == len(stanzas)
    return sent / len(stanzas) * 1e6, received / len(stanzas) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="stanzas per frame")
    parser.add_argument("--stanzas", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="best of this many")
    args = parser.parse_args()
    stanzas = routed_stanzas(args.stanzas)
    best = min((run(stanzas, args.batch) for _ in range(args.rounds)), key=sum)
    print(f"{implementation()}: batch {args.batch}: send {best[0]:.2f} µs/stanza, "
          f"receive {best[1]:.2f} µs/stanza, total {sum(best):.2f} µs/stanza")


if __name__ == "__main__":
    main()
