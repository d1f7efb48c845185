"""PubSub fan-out micro-benchmark: one publisher, N subscribers on a service node,
notifications per second (in-process: sessions with counting transports, no sockets).

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

NS = "http://jabber.org/protocol/pubsub"


class Counter:
    """A transport that counts what it is given."""

    closed = False
    peer = None

    def __init__(self) -> None:
        self.count = 0

    def send(self, element: Element) -> None:
        self.count += 1

    def flush(self) -> None: ...

    def stream_error(self, condition: str, text: str | None = None) -> None: ...


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
    publisher = Counter()
    pub_session = server.bind_session(JID("sensor@localhost/s"), publisher)
    await engine.create(owner, "fan", {**module.defaults, "persist_items": True},
                        "sensor@localhost")
    sinks = []
    for n in range(subscribers):
        sink = Counter()
        jid = JID(f"u{n}@localhost/r")
        server.bind_session(jid, sink)
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
