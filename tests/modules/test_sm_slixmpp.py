"""XEP-0198 end to end with slixmpp's ``xep_0198`` plugin: a killed TCP connection is
resumed, and the messages sent meanwhile arrive once each, none lost, none twice."""

from __future__ import annotations

import asyncio

from support import SLIX_TIMEOUT as TIMEOUT
from support import drain
from support import slixmpp_client as client


def test_slixmpp_resumes_after_a_killed_connection(server):
    async def scenario() -> None:
        alice, _ = await client(server.port, "alice@localhost/r", sm=False)
        bob, inbox = await client(server.port, "bob@localhost/phone", sm=True)
        alice.send_message("bob@localhost/phone", "before", mtype="chat")
        assert await asyncio.wait_for(inbox.get(), TIMEOUT) == "before"
        resumed = asyncio.get_running_loop().create_future()
        bob.add_event_handler("session_resumed", lambda _: resumed.done()
                              or resumed.set_result(True))
        gone = asyncio.get_running_loop().create_future()
        bob.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(True))
        bob.transport.abort()  # the TCP connection dies: no </stream:stream>
        await asyncio.wait_for(gone, TIMEOUT)
        for i in range(5):
            alice.send_message("bob@localhost/phone", f"while-away-{i}", mtype="chat")
        await asyncio.sleep(0.2)
        bob.connect("127.0.0.1", server.port)
        await asyncio.wait_for(resumed, TIMEOUT)
        alice.send_message("bob@localhost/phone", "after", mtype="chat")
        got = await drain(inbox)
        assert got == [f"while-away-{i}" for i in range(5)] + ["after"]
        await asyncio.wait_for(bob.disconnect(), TIMEOUT)
        await asyncio.wait_for(alice.disconnect(), TIMEOUT)

    asyncio.run(asyncio.wait_for(scenario(), 30))
