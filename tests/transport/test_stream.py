"""XMLStream without sockets: a fake transport, bytes in, bytes out."""

from __future__ import annotations

import asyncio

from xmppd.transport.connections import Traffic
from xmppd.transport.stream import XMLStream
from xmppd.xml.element import Element
from xmppd.xml.events import StreamOpen

HEADER = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
          b" to='localhost' version='1.0'>")


class FakeTransport(asyncio.Transport):
    def __init__(self, buffered: int = 0) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = buffered
        self.reading = True
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default

    @property
    def output(self) -> bytes:
        return b"".join(self.writes)


class EchoStream(XMLStream):
    """Answers the header, records elements; ``<slow/>`` takes a while to handle."""

    def __init__(self, **kw) -> None:
        super().__init__(max_stanza_size=kw.get("max_stanza_size", 10_000), max_depth=10,
                         max_attrs=10, max_output_buffer=kw.get("max_output_buffer", 1000),
                         traffic=kw.get("traffic"))
        self.handled: list[str] = []
        self.release = asyncio.Event()

    def handle_stream_open(self, header: StreamOpen) -> None:
        self.send_header("localhost")

    def handle_element(self, el: Element):
        if el.name == "slow":
            return self._slow(el)
        self.handled.append(el.get("id") or el.name)
        return None

    async def _slow(self, el: Element) -> None:
        await self.release.wait()
        self.handled.append("slow")


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def open_stream(**kw) -> tuple[EchoStream, FakeTransport]:
    stream, transport = EchoStream(**kw), FakeTransport()
    stream.connection_made(transport)
    stream.data_received(HEADER)
    return stream, transport


def test_output_is_batched_per_loop_iteration():
    async def main():
        stream, transport = open_stream()
        await _settle()
        transport.writes.clear()
        for i in range(3):
            stream.send(Element("message", "jabber:client", {"id": str(i)}))
        assert transport.writes == []
        await _settle()
        assert len(transport.writes) == 1 and transport.output.count(b"<message") == 3

    asyncio.run(main())


class FailingTransport(FakeTransport):
    def write(self, data: bytes) -> None:
        raise OSError("gone")


def test_one_callback_per_iteration_flushes_every_stream_with_output(caplog):
    async def main():
        traffic = Traffic("c2s")
        pairs = [open_stream(traffic=traffic) for _ in range(3)]
        await _settle()
        (a, ta), (b, tb), (c, tc) = pairs
        for t in (ta, tb, tc):
            t.writes.clear()
        a.send(Element("message", "jabber:client", {"id": "1"}))
        b.send(Element("message", "jabber:client", {"id": "2"}))
        a.send(Element("message", "jabber:client", {"id": "3"}))
        assert traffic.unflushed == [a, b]  # one list, one callback: not one per stream
        await asyncio.sleep(0)
        assert traffic.unflushed is None
        assert len(ta.writes) == 1 and ta.output.count(b"<message") == 2
        assert len(tb.writes) == 1 and tc.writes == []
        # a transport that fails to write does not keep the others' output back
        failing = FailingTransport()
        a.transport = failing
        a.send(Element("message", "jabber:client", {"id": "4"}))
        c.send(Element("message", "jabber:client", {"id": "5"}))
        await asyncio.sleep(0)
        assert b'id="5"' in tc.output and "flushing output" in caplog.text
        a.transport = ta
        a.send(Element("message", "jabber:client", {"id": "6"}))  # queued again
        await asyncio.sleep(0)
        assert b'id="6"' in ta.output

    asyncio.run(main())


def test_async_handler_pauses_reading_and_keeps_order():
    async def main():
        stream, transport = open_stream()
        stream.data_received(b"<a id='1'/><slow/><a id='2'/>")
        stream.data_received(b"<a id='3'/>")
        await _settle()
        assert stream.handled == ["1"] and not transport.reading
        stream.release.set()
        await _settle()
        assert stream.handled == ["1", "slow", "2", "3"] and transport.reading

    asyncio.run(main())


def test_nothing_is_written_after_the_closing_tag():
    async def main():
        stream, transport = open_stream()
        stream.close()
        stream.send(Element("message", "jabber:client", {"id": "late"}))
        stream.stream_error("conflict")
        await _settle()
        assert transport.closing
        assert transport.output.endswith(b"</stream:stream>")
        assert b"late" not in transport.output and b"conflict" not in transport.output

    asyncio.run(main())


def test_close_aborts_a_transport_that_does_not_finish_closing():
    async def main():
        stream, transport = open_stream()
        stream.close(timeout=0.01)
        assert transport.closing and not transport.aborted
        for _ in range(100):
            if transport.aborted:
                break
            await asyncio.sleep(0.005)
        assert transport.aborted

    asyncio.run(main())


def test_close_timer_cancelled_when_the_connection_goes():
    async def main():
        stream, transport = open_stream()
        stream.close(timeout=0.01)
        stream.connection_lost(None)
        await asyncio.sleep(0.03)
        assert not transport.aborted

    asyncio.run(main())


def test_peer_not_reading_is_cut_off():
    async def main():
        stream, transport = open_stream(max_output_buffer=100)
        await _settle()
        transport.buffered = 101
        stream.send(Element("message", "jabber:client", {"id": "x"}))
        await _settle()
        assert transport.aborted

    asyncio.run(main())


def test_stream_error_before_header_sends_one():
    async def main():
        stream, transport = EchoStream(), FakeTransport()
        stream.connection_made(transport)
        stream.data_received(b"<not xml")
        stream.data_received(b"<<")
        await _settle()
        out = transport.output
        assert out.startswith(b"<?xml version='1.0'?><stream:stream ")
        assert b"<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
        assert out.endswith(b"</stream:stream>") and transport.closing

    asyncio.run(main())


def test_oversized_element_is_policy_violation():
    async def main():
        stream, transport = open_stream(max_stanza_size=100)
        stream.data_received(b"<message><body>" + b"x" * 200)
        await _settle()
        assert b"<policy-violation " in transport.output and transport.closing

    asyncio.run(main())
