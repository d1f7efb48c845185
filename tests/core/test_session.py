"""The Session: transport attachment, per-module state slots, tracked writes."""

from __future__ import annotations

import asyncio

from xmppd.core.session import Session
from xmppd.jid import JID


class FakeTransport:
    closed = False
    peer = ("127.0.0.1", 1)

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, element) -> None:
        self.sent.append(element)

    def flush(self) -> None:
        pass

    def stream_error(self, condition, text=None) -> None:
        self.closed = True


def test_send_is_the_transports_and_follows_attach():
    first, second = FakeTransport(), FakeTransport()
    session = Session(JID("a@example.org/r"), first)
    session.send("x")
    session.attach(second)
    session.send("y")
    assert first.sent == ["x"] and second.sent == ["y"]
    assert session.bare == JID("a@example.org") and not session.closed
    session.stream_error("conflict")
    assert session.closed


def test_state_slots():
    session = Session(JID("a@example.org/r"), FakeTransport())
    assert session.get_state(3) is None
    session.set_state(3, "three")
    session.set_state(0, "zero")
    assert (session.get_state(0), session.get_state(1), session.get_state(3)) == (
        "zero", None, "three")


def test_settled_waits_for_every_tracked_write():
    async def main() -> list[str]:
        session = Session(JID("a@example.org/r"), FakeTransport())
        loop = asyncio.get_running_loop()
        log: list[str] = []
        first, second = loop.create_future(), loop.create_future()
        session.track(first)
        session.track(second)
        done = loop.create_future()
        done.set_result(None)
        session.track(done)  # already done: nothing to wait for

        async def waiter() -> None:
            await session.settled()
            log.append("settled")

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)
        loop.call_soon(first.set_result, 1)
        loop.call_soon(lambda: (log.append("second"), second.set_exception(OSError("disk"))))
        await task
        await session.settled()  # nothing pending: returns at once
        return log

    assert asyncio.run(main()) == ["second", "settled"]
