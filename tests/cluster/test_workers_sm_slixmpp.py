"""XEP-0198 with slixmpp's ``xep_0198`` across ``xmppd run --workers 2``: the client's
connection is killed and it resumes by itself, until a resumption lands on the other
worker; the messages sent while it was away arrive once each, in order, every time."""

from __future__ import annotations

import asyncio

from support import SLIX_TIMEOUT, drain, slixmpp_client
from test_workers_sm import ATTEMPTS, cluster  # noqa: F401 - the fixture


def test_slixmpp_resumes_on_the_other_worker(cluster):  # noqa: F811 - the fixture
    full = "bob@localhost/phone"

    async def scenario() -> None:
        alice, _ = await slixmpp_client(cluster.port, "alice@localhost/r", sm=False)
        bob, inbox = await slixmpp_client(cluster.port, full, sm=True)
        first = holder = await asyncio.to_thread(cluster.where, full)
        for attempt in range(ATTEMPTS):
            resumed = asyncio.get_running_loop().create_future()
            bob.add_event_handler("session_resumed", lambda _, f=resumed: f.done()
                                  or f.set_result(True))
            gone = asyncio.get_running_loop().create_future()
            bob.add_event_handler("disconnected", lambda _, f=gone: f.done()
                                  or f.set_result(True))
            bob.transport.abort()  # the TCP connection dies: no </stream:stream>
            await asyncio.wait_for(gone, SLIX_TIMEOUT)
            away = [f"away-{attempt}-{i}" for i in range(3)]
            for body in away:
                alice.send_message(full, body, mtype="chat")
            await asyncio.sleep(0.2)
            bob.connect("127.0.0.1", cluster.port)
            await asyncio.wait_for(resumed, SLIX_TIMEOUT)
            alice.send_message(full, f"after-{attempt}", mtype="chat")
            assert await drain(inbox) == [*away, f"after-{attempt}"]
            holder = await asyncio.to_thread(cluster.where, full)
            if holder != first:
                break
        assert holder != first, "no resumption landed on the other worker"
        await asyncio.wait_for(bob.disconnect(), SLIX_TIMEOUT)
        await asyncio.wait_for(alice.disconnect(), SLIX_TIMEOUT)

    asyncio.run(asyncio.wait_for(scenario(), 120))
