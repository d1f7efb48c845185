"""MUC fan-out: one room of N occupants in-process, delivered stanzas per second.

    PYTHONPATH=src python benchmarks/bench_muc.py [N ...]      (default: 10 100 500)

A real :class:`~xmppd.server.Server` (memory storage, no listeners) with the default
modules; each occupant is a bound :class:`~xmppd.core.session.Session` carried by a real
:class:`~xmppd.transport.stream.XMLStream` whose asyncio transport only counts bytes.  One
occupant sends groupchat messages through the router; every occupant's stream gets each
one (including the sender: the reflection).  Reported: delivered stanzas/s for

* ``once``: the module as shipped (serialized once per room message, per-occupant bytes
  ``head + to + tail`` written into each stream's buffer);
* ``per-occupant``: the naive way, a copy of the element per occupant, addressed and
  serialized by the stream (what ``router.deliver`` of a copy costs).

Numbers vary with the machine; compare the two lines of one run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from xmppd._impl import implementation
from xmppd.core.config import Config
from xmppd.core.session import Session
from xmppd.jid import JID
from xmppd.modules import _fanout as fanout
from xmppd.server import Server
from xmppd.transport.stream import XMLStream
from xmppd.xml.element import Element

ROOM = "bench@conference.localhost"
MUC = "http://jabber.org/protocol/muc"
OWNER = MUC + "#owner"


class CountingTransport:
    """The asyncio transport of a fake client: counts writes and bytes."""

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.bytes += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


class ClientStream(XMLStream):
    """A client stream with nothing behind it (sending only)."""

    default_ns = "jabber:client"


def client_stream(cls: type[XMLStream] = ClientStream) -> tuple[XMLStream, CountingTransport]:
    stream = cls(max_stanza_size=1 << 20, max_depth=64, max_attrs=64,
                       max_output_buffer=1 << 30)
    counter = CountingTransport()
    stream.transport = counter  # type: ignore[assignment]
    return stream, counter


def naive_deliver(self: fanout.Deliverer, bc: fanout.Broadcast, target: fanout.Target) -> None:
    stanza = bc.stanza.copy()
    stanza.attrs["to"] = target.full
    session = self.sessions.get(target.jid)
    if self.fire("stanza/inbound", stanza, session) is False:
        session.send(stanza)


async def run(n: int, messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Config(data_dir=Path(tmp), storage="memory:", c2s=()))
        await server.start(listen=False)
        router = server.router
        sessions, counters = [], []
        for i in range(n):
            stream, counter = client_stream()
            session = Session(JID(f"user{i}@localhost/r"), stream)
            router.sessions.add(session)
            sessions.append(session)
            counters.append(counter)
        async def route(stanza: Element, origin: Session) -> None:
            pending = router.route(stanza, origin)
            if pending is not None:
                await pending

        owner = sessions[0]
        join = Element("presence", "jabber:client", {"from": str(owner.jid),
                       "to": f"{ROOM}/u0"}, [Element("x", MUC)])
        await route(join, owner)
        form = Element("iq", "jabber:client", {"type": "set", "id": "c", "from": str(owner.jid),
                       "to": ROOM}, [])
        x = form.subelement("query", OWNER).subelement("x", "jabber:x:data", {"type": "submit"})
        x.subelement("field", attrs={"var": "muc#roomconfig_maxusers"}).subelement(
            "value", text=str(n))
        await route(form, owner)
        for i, session in enumerate(sessions[1:], 1):
            await route(Element("presence", "jabber:client", {"from": str(session.jid),
                        "to": f"{ROOM}/u{i}"}, [Element("x", MUC)]), session)
        await asyncio.sleep(0.01)
        room = server.services["muc"].rooms[ROOM]
        assert len(room.occupants) == n, len(room.occupants)
        server.services["muc"].rate = 0  # no token bucket in a benchmark
        results = {}
        shipped = fanout.Deliverer.deliver
        for label, deliver in (("once", shipped), ("per-occupant", naive_deliver)):
            fanout.Deliverer.deliver = deliver  # type: ignore[method-assign]
            for c in counters:
                c.writes = c.bytes = 0
            sender = sessions[-1]
            start = time.perf_counter()
            for m in range(messages):
                msg = Element("message", "jabber:client", {"from": str(sender.jid), "to": ROOM,
                              "type": "groupchat", "id": f"m{m}"}, [])
                msg.subelement("body", text=f"message number {m} to everyone in the room")
                await route(msg, sender)
                await asyncio.sleep(0)  # the streams flush: one write each
            elapsed = time.perf_counter() - start
            delivered = messages * n
            assert sum(c.writes for c in counters) == delivered, "one write per stanza"
            results[label] = delivered / elapsed
        fanout.Deliverer.deliver = shipped  # type: ignore[method-assign]
        await server.stop()
        return results


def main(sizes: list[int]) -> None:
    original = fanout.Deliverer.deliver
    print(f"implementation: {implementation()}")
    for n in sizes:
        fanout.Deliverer.deliver = original  # type: ignore[method-assign]
        messages = max(20, 20000 // n)
        res = asyncio.run(run(n, messages))
        print(f"{n:4d} occupants, {messages} messages: once {res['once']:>10,.0f} stanzas/s   "
              f"per-occupant {res['per-occupant']:>10,.0f} stanzas/s   "
              f"x{res['once'] / res['per-occupant']:.2f}")
    fanout.Deliverer.deliver = original  # type: ignore[method-assign]


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 100, 500])
