"""The routing hot path in one process, without sockets: CPU time per message from bytes
received on one client stream to bytes written on another (tokenizer, the ``from`` policy,
the router, the modules' hooks, the recipient's output batching).

    PYTHONPATH=src python benchmarks/hotpath.py [--messages 200000] [--runs 7] [--mam]
                                                [--pairs 1]

Two :class:`~xmppd.c2s.stream.C2SStream` over in-memory transports log in (PLAIN) and bind
with the default modules loaded; then one feeds ``<message/>``s to the other's full JID, one
per read and one event-loop iteration each (as in the closed-loop ``throughput`` workload,
where reads and writes carry a message or two).  Printed: the best run's nanoseconds per
message.  Without the network, the generator and the other engineers' work on the machine,
it tells a change to the path (e.g. counting for the metrics) apart from noise:
run it under two ``PYTHONPATH``s alternately.  ``--mam``: the ``mam`` module loaded too,
on SQLite storage (the CPU time counts the writer thread's: every message is archived
twice, ``--burst`` messages per loop iteration, and the run waits for the last write).
``--pairs P``: P senders, each to its own recipient, one message each per loop iteration
(P recipients flushed per iteration, as on a busy server).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
import time
from pathlib import Path

from xmppd.c2s.sasl import derive_all
from xmppd.c2s.stream import C2SStream
from xmppd.core.config import Config, Limits
from xmppd.core.manager import DEFAULT_MODULES
from xmppd.server import Server

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


class Transport:
    """An in-memory transport: what is written is counted, then dropped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.written = 0
        self.closing = False
        self.last = b""  # the last write, for a failed login's message

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", self.port) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.last = data

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


async def settle(transport: Transport, answer: bytes) -> None:
    """Until ``answer`` was written (a login hashes the password off the loop)."""
    for _ in range(500):
        if answer in transport.last:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"no {answer!r}; last written: {transport.last!r}")


async def login(policy, user: str, port: int) -> tuple[C2SStream, Transport]:
    # "direct TLS" over a plain in-memory transport: PLAIN is offered only when secure
    stream, transport = C2SStream(policy, direct_tls=True), Transport(port)
    stream.connection_made(transport)
    stream.data_received(HEADER)
    token = base64.b64encode(f"\0{user}\0bench".encode())
    stream.data_received(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                         + token + b"</auth>")
    await settle(transport, b"<success")
    stream.data_received(HEADER)
    stream.data_received(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                         b"<resource>r</resource></bind></iq>")
    await settle(transport, b"</jid>")
    return stream, transport


def runner() -> asyncio.Runner:
    """The server's event loop: uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


async def main(messages: int, runs: int, mam: bool = False, burst: int = 1,
               pairs: int = 1) -> None:
    best = await measure(messages, runs, mam, burst, pairs)
    print(f"{best * 1e9:.0f} ns per message (best of {runs} runs of {messages})")


async def measure(messages: int, runs: int, mam: bool = False, burst: int = 1,
                  pairs: int = 1) -> float:
    """The best run's CPU seconds per routed message."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = {"modules_enabled": (*DEFAULT_MODULES, "mam")} if mam else {}
        cfg = Config(data_dir=Path(tmp), storage="" if mam else "memory:",
                     limits=Limits(rate_limit_bytes_per_s=0), **extra)
        server = Server(cfg)
        await server.storage.open()
        users = ("alice", "bob") if pairs == 1 else [f"u{i}" for i in range(2 * pairs)]
        credentials = derive_all("bench")
        for user in users:
            await server.storage.create_account(user, "localhost", credentials)
        await server.start(listen=False)
        policy = server.client_policy()
        senders, receivers = [], []
        for i in range(pairs):
            senders.append((await login(policy, users[2 * i], 2 * i + 1))[0])
            receivers.append((await login(policy, users[2 * i + 1], 2 * i + 2))[1])
        body = b"@localhost/r' type='chat'><body>" + b"x" * 64 + b"</body></message>"
        feeds = [(s.data_received, b"<message to='" + users[2 * i + 1].encode() + body)
                 for i, s in enumerate(senders)]
        message = feeds[0][1]
        best = float("inf")
        for _ in range(runs):
            before = sum(r.written for r in receivers)
            started = time.process_time()
            for _ in range(messages // (burst * pairs)):
                for feed, data in feeds:
                    for _ in range(burst):
                        feed(data)
                await asyncio.sleep(0)  # the recipients' flush: one write each
            if mam:
                await server.storage.open_store("mam", "archive").count(f"{users[1]}@localhost")
                archive = server.modules.loaded["mam"].module
                if archive.last_write is not None:
                    await asyncio.wait([archive.last_write])
            elapsed = time.process_time() - started
            sent = messages // (burst * pairs) * burst * pairs
            written = sum(r.written for r in receivers) - before
            assert written >= sent * len(message), "messages were lost"
            best = min(best, elapsed / sent)
        server.modules.unload_all()
        await server.storage.close()
        return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mam", action="store_true", help="archive every message (SQLite)")
    parser.add_argument("--burst", type=int, default=1, help="messages per loop iteration")
    parser.add_argument("--pairs", type=int, default=1,
                        help="sender/recipient pairs, each sending once per loop iteration")
    args = parser.parse_args()
    with runner() as loop_runner:
        loop_runner.run(main(args.messages, args.runs, args.mam, args.burst, args.pairs))
