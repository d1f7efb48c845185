"""PubSub fan-out micro-benchmark: one publisher, N subscribers on a service node,
notifications per second (in-process, no sockets: each subscriber's session has a real
client stream, as ``bench_muc.py``'s occupants do, whose transport counts the writes, so
that notifications take the path they take to a TCP client).

    PYTHONPATH=src python -m benchmarks.pubsub_fanout [subscribers] [items]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from xmppd.core.config import Config
from xmppd.jid import JID
from xmppd.server import Server
from xmppd.xml.element import Element

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_muc import ClientStream, client_stream  # noqa: E402

NS = "http://jabber.org/protocol/pubsub"


class Counter(ClientStream):
    """A client stream that counts the stanzas it is given (as bytes or as elements)."""

    peer = None
    count = 0

    def send_bytes(self, data: bytes) -> None:
        self.count += 1
        super().send_bytes(data)


def counter() -> Counter:
    return client_stream(Counter)[0]  # type: ignore[return-value]


async def main(subscribers: int, items: int, storage: str) -> None:
    res = await run(subscribers, items, storage)
    print(f"{storage or 'sqlite'}: {subscribers} subscribers x {items} items: "
          f"{res['delivered']:.0f} notifications in {res['seconds']:.2f} s = "
          f"{res['per_s']:,.0f}/s ({items / res['seconds']:,.1f} publishes/s)")


async def run(subscribers: int, items: int, storage: str) -> dict[str, float]:
    """Publish ``items`` to ``subscribers``: notifications delivered, seconds, per second."""
    data = Path(tempfile.mkdtemp())
    config = Config(data_dir=data, storage=storage, c2s=(), s2s=())
    server = Server(config)
    await server.storage.open()
    await server.start(listen=False)
    module = server.modules.loaded["pubsub"].module
    engine = module.engine
    owner = "pubsub.localhost"
    publisher = counter()
    pub_session = server.bind_session(JID("sensor@localhost/s"), publisher)
    await engine.create(owner, "fan", {**module.defaults, "persist_items": True},
                        "sensor@localhost")
    sinks = []
    for n in range(subscribers):
        sink = counter()
        jid = JID(f"u{n}@localhost/r")
        # as a client's bind does: the modules mark the account quiet (no block list,
        # an active client), which lets notifications skip their stanza/inbound handlers
        server.hooks.fire_sync("resource-bound", server.bind_session(jid, sink))
        await engine.subscribe(owner, "fan", str(jid), str(jid.bare), "subscribed")
        sinks.append(sink)
    start = time.perf_counter()
    for i in range(items):
        iq = Element("iq", "jabber:client", {"type": "set", "id": f"p{i}", "to": owner,
                                             "from": "sensor@localhost/s"}, [])
        pub = iq.subelement("pubsub", NS).subelement("publish", attrs={"node": "fan"})
        pub.subelement("item", attrs={"id": f"i{i}"}).subelement("v", "urn:v", text=str(i))
        result = server.router.route(iq, pub_session)
        if result is not None:
            await result
    while sum(s.count for s in sinks) < subscribers * items:
        await asyncio.sleep(0.001)
        if time.perf_counter() - start > 60:
            break
    elapsed = time.perf_counter() - start
    delivered = sum(s.count for s in sinks)
    await server.stop()
    shutil.rmtree(data, ignore_errors=True)
    return {"delivered": delivered, "seconds": elapsed, "per_s": delivered / elapsed}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    for spec in ("memory:", ""):
        asyncio.run(main(n, k, spec))
