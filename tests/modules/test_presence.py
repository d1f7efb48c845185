"""RFC 6121 §3/§4 end to end: subscriptions, presence broadcast and probes, with slixmpp
and raw clients."""

from __future__ import annotations

import asyncio
import ssl

from slixmpp import ClientXMPP
from support import connect
from test_roster import ROSTER, iq

TIMEOUT = 5


class Client:
    """A bound slixmpp client whose incoming presence and messages are queued."""

    def __init__(self, xmpp: ClientXMPP) -> None:
        self.xmpp = xmpp
        self.presences: asyncio.Queue = asyncio.Queue()
        self.messages: asyncio.Queue = asyncio.Queue()
        xmpp.add_event_handler("presence", self.presences.put_nowait)
        xmpp.add_event_handler("message", self.messages.put_nowait)

    async def presence_from(self, jid: str | None, ptype: str | None = None):
        """The next presence from ``jid`` (anyone for None) of ``ptype``, skipping others."""
        while True:
            p = await asyncio.wait_for(self.presences.get(), TIMEOUT)
            if jid in (None, str(p["from"])) and (ptype is None or p["type"] == ptype):
                return p

    async def message(self):
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)


async def sli(port: int, jid: str, *, auto: bool = False) -> Client:
    """Connect, fetch the roster and wait for the session (auto-approval off by default)."""
    xmpp = ClientXMPP(jid, "secret")
    xmpp.auto_authorize = True if auto else None
    xmpp.auto_subscribe = False
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.enable_direct_tls = False
    client = Client(xmpp)
    started = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    xmpp.connect("127.0.0.1", port)
    await asyncio.wait_for(started, TIMEOUT)
    await xmpp.get_roster(timeout=TIMEOUT)
    return client


async def until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_two_users_subscribe_see_presence_and_chat(server):
    async def main() -> None:
        alice = await sli(server.port, "alice@localhost/a")
        bob = await sli(server.port, "bob@localhost/b")
        alice.xmpp.send_presence()
        bob.xmpp.send_presence()
        # alice asks, bob approves; then bob asks, alice approves
        alice.xmpp.send_presence(pto="bob@localhost", ptype="subscribe")
        await bob.presence_from("alice@localhost", "subscribe")
        bob.xmpp.send_presence(pto="alice@localhost", ptype="subscribed")
        await alice.presence_from("bob@localhost", "subscribed")
        await alice.presence_from("bob@localhost/b")  # bob's presence follows the approval
        bob.xmpp.send_presence(pto="alice@localhost", ptype="subscribe")
        await alice.presence_from("bob@localhost", "subscribe")
        alice.xmpp.send_presence(pto="bob@localhost", ptype="subscribed")
        await bob.presence_from("alice@localhost/a")
        await until(lambda: alice.xmpp.client_roster["bob@localhost"]["subscription"] == "both"
                    and bob.xmpp.client_roster["alice@localhost"]["subscription"] == "both")
        # presence updates with show/status pass through
        bob.xmpp.send_presence(pshow="away", pstatus="lunch", ppriority=5)
        p = await alice.presence_from("bob@localhost/b")
        assert (p["show"], p["status"], p["priority"]) == ("away", "lunch", 5)
        # messages to the bare JID
        alice.xmpp.send_message(mto="bob@localhost", mbody="hello", mtype="chat")
        assert (await bob.message())["body"] == "hello"
        # a second resource of bob: alice sees it, it gets alice's presence by probe
        bob2 = await sli(server.port, "bob@localhost/phone")
        bob2.xmpp.send_presence()
        await alice.presence_from("bob@localhost/phone")
        # alice's presence (probe answer) and bob's other resource, in some order
        seen = set()
        while not {"alice@localhost/a", "bob@localhost/b"} <= seen:
            seen.add(str((await bob2.presence_from(None))["from"]))
        # clean logout: unavailable
        await asyncio.wait_for(bob2.xmpp.disconnect(), TIMEOUT)
        await alice.presence_from("bob@localhost/phone", "unavailable")
        # abrupt drop (no </stream:stream>): unavailable too
        bob.xmpp.transport.abort()
        await alice.presence_from("bob@localhost/b", "unavailable")
        await asyncio.wait_for(alice.xmpp.disconnect(), TIMEOUT)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_subscription_request_to_offline_user_delivered_at_login(server):
    alice = connect(server, "alice", "a")
    alice.send("<presence/>")
    alice.send("<presence to='carol@localhost' type='subscribe'><status>hi carol</status>"
               "</presence>")
    alice.read_until("ask=.subscribe.")
    carol = connect(server, "carol", "c")
    assert "alice" not in iq(carol, f"<query xmlns='{ROSTER}'/>", "g", "get")  # no item yet
    carol.send("<presence/>")
    request = carol.read_until(r"<presence[^>]*type=.subscribe.[^>]*>.*?</presence>")
    assert "from=\"alice@localhost\"" in request and "hi carol" in request
    # approve: alice gets subscribed + carol's presence; the request is not redelivered
    carol.send("<presence to='alice@localhost' type='subscribed'/>")
    alice.read_until("type=.subscribed.")
    alice.read_until("from=.carol@localhost/c.")
    carol.close()
    carol = connect(server, "carol", "c2")
    carol.send("<presence/>")
    carol.send("<iq type='get' id='end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "type=\"subscribe\"" not in carol.read_until("id=.end.")


def test_probe_unsubscribe_and_directed_presence(server):
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    # a mutual subscription through pre-approval: bob pre-approves alice
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
    assert "approved=\"true\"" in bob.read_until("approved=.true..*?</iq>")
    bob.send("<presence><show>dnd</show></presence>")
    alice.send("<presence/>")
    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    alice.read_until("type=.subscribed.")  # automatic, bob was not asked
    got = alice.read_until(r"from=.bob@localhost/b.*?</presence>")
    assert "dnd" in got
    # alice now has 'to': a new alice resource probes and gets bob's presence
    alice2 = connect(server, "alice", "a2")
    alice2.send("<presence/>")
    assert "dnd" in alice2.read_until(r"from=.bob@localhost/b.*?</presence>")
    # directed presence to carol (no subscription) is followed by unavailable on logout
    carol = connect(server, "carol", "c")
    carol.send("<presence/>")
    carol.read_until("from=.carol@localhost/c.")  # available now
    alice2.send("<presence to='carol@localhost'><status>psst</status></presence>")
    assert "psst" in carol.read_until("psst")
    alice2.close()
    carol.read_until("from=.alice@localhost/a2. type=.unavailable.|type=.unavailable. "
                     "from=.alice@localhost/a2.")
    # alice unsubscribes: bob's presence no longer reaches her, bob learns 'none'
    alice.send("<presence to='bob@localhost' type='unsubscribe'/>")
    bob.read_until("subscription=.none.")
    bob.send("<presence><show>away</show></presence>")
    alice.send("<iq type='get' id='end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "away" not in alice.read_until("id=.end.")
