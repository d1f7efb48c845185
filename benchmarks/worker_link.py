#!/usr/bin/env python3
"""Per-stanza cost of the link between two workers (``xmppd run --workers N``).

Measures what a stanza routed to a session on another worker costs, both ends in one
process (no socket, no event loop: the CPU cost only), against the same stanza delivered
to a local session.  The sender routes it as a client's message is
(``Router.route_quiet_message``) to its remote session, which serializes it into the
link's buffer (``Element.to_bytes`` + a STANZA record); the buffer becomes one frame per
batch.  The receiver is the real one: the frames go to ``Inbound.data_received`` of a
:class:`~xmppd.cluster.node.Node` (not started: no socket), which decodes them and, for
a recipient no ``stanza/inbound`` handler acts for (here: none is loaded), writes each
stanza's bytes as they came to its stream (``send_bytes``; ``frames.plain_stanza`` checks
them first), else builds it (``frames.stanza_element``) and delivers it through the
router.  The local reference routes the same stanzas to local sessions, whose stream
writes them (``to_bytes``).  Stanzas come from a tokenizer, as routed ones do (their
content bytes are reused).  Run with ``XMPPD_PURE_PYTHON=1`` for the pure twins.

    PYTHONPATH=src python benchmarks/worker_link.py [--batch 32] [--stanzas 200000]

Under callgrind, ``--only cross`` and ``--only local`` with ``--rounds 1``, each for N and
2N stanzas: (Ir(2N) - Ir(N)) / N is the instructions per stanza of each way (the
tokenizer's share included in both), their difference what crossing adds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from xmppd._impl import implementation
from xmppd.cluster import codec
from xmppd.cluster.link import Inbound, PeerLink
from xmppd.cluster.node import Node
from xmppd.core.hooks import Hooks
from xmppd.core.router import Router
from xmppd.core.session import Session
from xmppd.jid import JID
from xmppd.transport.stream import plain_send
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
    """A session's transport that writes each stanza as a client stream does (its ``send``
    marked :func:`~xmppd.transport.stream.plain_send`, as ``C2SStream.send`` is: the
    receiver may hand it the bytes that came), and keeps nothing."""

    closed = False
    peer = None
    default_ns = CLIENT_NS

    def __init__(self) -> None:
        self.written = 0

    @plain_send
    def send(self, element: Element) -> None:
        self.send_bytes(element.to_bytes(CLIENT_NS))

    def send_bytes(self, data: bytes) -> None:
        self.written += len(data)


class Wire:
    """The link's transport: keeps the frames written."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.frames.append(b"".join(parts))


def sender(directory: Path) -> tuple[Router, PeerLink, Wire, Session]:
    """Worker 1's side: the 100 recipients bound on worker 0 (remote sessions over a link
    whose transport keeps the frames), and the senders' session."""
    hooks = Hooks()
    node = Node(1, 2, directory, Router(hooks, {"localhost"}), hooks,
                end_session=lambda *_: None, reload=lambda: None)
    link = node.links[0] = PeerLink(0, directory / "none.sock", lambda _buf: None)
    wire = link._transport = Wire()  # type: ignore[assignment]  # never started
    for i in range(100):
        node.registry.bind_remote(0, f"bob@localhost/r{i}", i + 1, link)
    origin = Session(JID("alice@localhost/a0"), Writer())  # type: ignore[arg-type]
    return node.router, link, wire, origin


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
    """(send µs/stanza, receive and write for the recipient µs/stanza).  The sender routes
    each stanza as a client's message is (``Router.route_quiet_message``) to its remote
    session, which writes it into the link's buffer; a frame per ``batch``."""
    with tempfile.TemporaryDirectory() as tmp:
        router, link, wire, origin = sender(Path(tmp))
        route = router.route_quiet_message
        start = time.perf_counter()
        for i in range(0, len(stanzas), batch):
            link.scheduled = True  # flushed here, not by a loop
            for j in range(i, min(i + batch, len(stanzas))):
                route(stanzas[j], origin, 0)
            link.flush()
        sent = time.perf_counter() - start
        inbound, writers = receiver(Path(tmp))
        start = time.perf_counter()
        for data in wire.frames:
            inbound.data_received(data)
        received = time.perf_counter() - start
    assert inbound.stanzas_in == len(stanzas), "stanzas were lost"
    assert sum(w.written for w in writers) == sum(len(s.to_bytes(CLIENT_NS)) for s in stanzas)
    return sent / len(stanzas) * 1e6, received / len(stanzas) * 1e6


def run_local(stanzas: list[Element]) -> float:
    """The reference: the same stanzas routed the same way to local sessions (µs/stanza)."""
    hooks = Hooks()
    router = Router(hooks, {"localhost"})
    writers = []
    for i in range(100):
        writers.append(Writer())
        router.sessions.add(Session(JID(f"bob@localhost/r{i}"), writers[-1]))  # type: ignore[arg-type]
    origin = Session(JID("alice@localhost/a0"), Writer())  # type: ignore[arg-type]
    route = router.route_quiet_message
    start = time.perf_counter()
    for stanza in stanzas:
        route(stanza, origin, 0)
    elapsed = time.perf_counter() - start
    assert sum(w.written for w in writers) == sum(len(s.to_bytes(CLIENT_NS)) for s in stanzas)
    return elapsed / len(stanzas) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="stanzas per frame")
    parser.add_argument("--stanzas", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="best of this many")
    parser.add_argument("--only", choices=("cross", "local"),
                        help="run one side alone (under callgrind: the instructions of each)")
    args = parser.parse_args()
    stanzas = routed_stanzas(args.stanzas)
    if args.only != "local":
        best = min((run(stanzas, args.batch) for _ in range(args.rounds)), key=sum)
        print(f"{implementation()}: batch {args.batch}: send {best[0]:.2f} µs/stanza, "
              f"receive {best[1]:.2f} µs/stanza, total {sum(best):.2f} µs/stanza")
    if args.only != "cross":
        local = min(run_local(stanzas) for _ in range(args.rounds))
        print(f"{implementation()}: delivered locally instead: {local:.2f} µs/stanza")


if __name__ == "__main__":
    main()
