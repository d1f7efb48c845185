#!/usr/bin/env python3
"""Per-stanza cost of the link between two workers (``xmppd run --workers N``).

Measures what a stanza routed to a session on another worker costs on top of a local
delivery, both ends in one process (no socket, no event loop: the CPU cost only):
the sender serializes it into the peer's buffer (``Element.to_bytes`` + a STANZA record),
the buffer becomes one frame per batch; the receiver is the real one: the frames go to
``Inbound.data_received`` of a :class:`~xmppd.cluster.node.Node` (not started: no
socket), which decodes them, builds each stanza (``frames.stanza_element``) and delivers it
through the router to a local session whose transport writes it (``to_bytes``, which
returns the bytes that came).  Stanzas come from a tokenizer, as routed ones do (their
content bytes are reused).  Run with ``XMPPD_PURE_PYTHON=1`` for the pure twins.

    PYTHONPATH=src python benchmarks/worker_link.py [--batch 32] [--stanzas 200000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from xmppd._impl import implementation
from xmppd.cluster import codec, frames
from xmppd.cluster.link import Inbound, PeerLink
from xmppd.cluster.node import Node
from xmppd.core.hooks import Hooks
from xmppd.core.router import Router
from xmppd.core.session import Session
from xmppd.jid import JID
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


class Writer:
    """A session's transport that writes each stanza as its stream does, and keeps nothing."""

    closed = False
    peer = None

    def __init__(self) -> None:
        self.written = 0

    def send(self, element: Element) -> None:
        self.written += len(element.to_bytes(CLIENT_NS))


def receiver(directory: Path) -> tuple[Inbound, list[Writer]]:
    """Worker 0's side of a link from worker 1 (said hello), with the 100 recipients bound."""
    hooks = Hooks()
    node = Node(0, 2, directory, Router(hooks, {"localhost"}), hooks,
                end_session=lambda *_: None, reload=lambda: None)
    node.links[1] = PeerLink(1, directory / "none.sock", lambda _buf: None)  # never started
    writers = []
    for i in range(100):
        writers.append(Writer())
        session = Session(JID(f"bob@localhost/r{i}"), writers[-1])  # type: ignore[arg-type]
        node.router.sessions.add(session)
        node.registry.bind_local(session, None)
    inbound = Inbound(node._records, node._lost)
    hello = bytearray()
    codec.put_control(hello, "hello", {"worker": 1, "epoch": "bench", "pid": 0})
    inbound.data_received(codec.frame(hello))
    return inbound, writers


def run(stanzas: list[Element], batch: int) -> tuple[float, float]:
    """(send µs/stanza, receive and write for the recipient µs/stanza)."""
    targets = [f"bob@localhost/r{i % 100}".encode() for i in range(len(stanzas))]
    wire: list[bytes] = []
    start = time.perf_counter()
    for i in range(0, len(stanzas), batch):
        buf = bytearray()
        for j in range(i, min(i + batch, len(stanzas))):
            frames.put_stanza(buf, targets[j], stanzas[j].to_bytes(CLIENT_NS))
        wire.append(codec.frame(buf))
    sent = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        inbound, writers = receiver(Path(tmp))
        start = time.perf_counter()
        for data in wire:
            inbound.data_received(data)
        received = time.perf_counter() - start
    assert inbound.stanzas_in == len(stanzas), "stanzas were lost"
    assert sum(w.written for w in writers) == sum(len(d) for d in wire) - len(wire) * 4 \
        - sum(7 + len(t) for t in targets)
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
