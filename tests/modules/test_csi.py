"""XEP-0352 client state indication over real sockets: what an inactive client gets at once,
what waits (coalesced), the order of a flush, the queue bound, unloading; one slixmpp client."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time

from slixmpp import ClientXMPP
from support import RawClient, connect
from test_blocking import subscribe_both
from test_offline import ping

from xmppd.jid import JID
from xmppd.modules.csi import hold_key
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS

CSI = "urn:xmpp:csi:0"
CS = "http://jabber.org/protocol/chatstates"
ALICE = "alice@localhost/a"


def held(server, full: str = ALICE) -> list[str] | None:
    """What the server holds for ``full`` (serialized, in order), None if it is active."""

    async def look() -> list[str] | None:
        srv = server.server
        session = srv.router.sessions.get(JID(full))
        state = srv.modules.api("csi").peek_state(session)
        return None if state is None else [str(s) for s in (state or {}).values()]

    return server.call(look())


def wait_held(server, count: int, full: str = ALICE) -> list[str]:
    deadline = time.monotonic() + 5
    while True:
        queue = held(server, full) or []
        if len(queue) == count:
            return queue
        assert time.monotonic() < deadline, f"held {queue!r}, wanted {count}"
        time.sleep(0.01)


def inactive(client: RawClient) -> None:
    client.send(f"<inactive xmlns='{CSI}'/>")
    ping(client, "inactive")  # the ping's answer proves <inactive/> was taken


def chat(to: str, payload: str, thread: str = "") -> str:
    thread_el = f"<thread>{thread}</thread>" if thread else ""
    return f"<message to='{to}' type='chat'>{thread_el}{payload}</message>"


def stream_error(text: str) -> str:
    found = re.search(r"<stream:error><([\w-]+)", text)
    return found.group(1) if found else ""


def post_auth_features(server) -> str:
    """The <stream:features/> a client is offered after SASL."""
    client = RawClient(server.port)
    try:
        assert CSI not in client.header()
        client.starttls()
        client.header()
        token = base64.b64encode(b"\0carol\0secret").decode()
        client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}"
                    "</auth>")
        client.read_until("<success")
        return client.header()
    finally:
        client.close()


def test_feature_after_authentication_and_unknown_nonzas(server):
    assert f"<csi xmlns=\"{CSI}\"/>" in post_auth_features(server)
    client = RawClient(server.port)
    client.login("alice", "secret", resource="a")
    client.send(f"<inactive xmlns='{CSI}'/><active xmlns='{CSI}'/>")
    ping(client)
    client.send("<enable xmlns='urn:example:nothing'/>")
    assert stream_error(client.read_closed()) == "unsupported-stanza-type"


def test_important_stanzas_reach_an_inactive_client_at_once(server):
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    alice.send("<presence/>")  # available: subscription requests are pushed to it
    inactive(alice)
    bob.send(chat(ALICE, "<body>hello</body>"))
    assert "<body>hello</body>" in alice.read_until("</message>")
    bob.send(f"<iq type='get' id='v1' to='{ALICE}'><query xmlns='jabber:iq:version'/></iq>")
    assert "jabber:iq:version" in alice.read_until("</iq>")
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
    alice.read_until("type=.subscribe.")
    # a message with a payload other than a chat state (a receipt) is important too
    bob.send(chat(ALICE, "<received xmlns='urn:xmpp:receipts' id='x'/>"))
    alice.read_until("urn:xmpp:receipts")
    assert held(server) == []  # still inactive, nothing waiting


def test_presence_updates_wait_latest_per_full_jid(server):
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    carol = connect(server, "carol", "c")
    subscribe_both(alice, bob, "alice", "bob")
    subscribe_both(alice, carol, "alice", "carol")
    bob.send("<presence/>")
    carol.send("<presence/>")
    ping(bob)
    ping(carol)
    alice.send("<presence/>")
    got = alice.read_until("from=.bob@localhost/b.") + alice.read_until("from=.carol@localhost/c.")
    assert got
    inactive(alice)

    bob.send("<presence><status>one</status></presence>")
    assert "one" in wait_held(server, 1)[0]
    bob.send("<presence><status>two</status></presence>")
    deadline = time.monotonic() + 5
    while "two" not in (held(server) or [""])[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    carol.send("<presence><show>away</show></presence>")
    wait_held(server, 2)
    bob.send("<presence><status>three</status></presence>")
    deadline = time.monotonic() + 5
    while "three" not in (held(server) or ["", ""])[-1]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queue = held(server)
    assert len(queue) == 2 and "away" in queue[0] and "three" in queue[1]

    alice.send(f"<active xmlns='{CSI}'/>")
    got = ping(alice)
    assert "one" not in got and "two" not in got
    assert got.index("<show>away</show>") < got.index("<status>three</status>")
    assert held(server) is None  # active: no state left


def test_chat_states_coalesce_and_an_important_stanza_flushes_first(server):
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    carol = connect(server, "carol", "c")
    inactive(alice)
    bob.send(chat(ALICE, f"<composing xmlns='{CS}'/>"))
    wait_held(server, 1)
    bob.send(chat(ALICE, f"<paused xmlns='{CS}'/><no-store xmlns='urn:xmpp:hints'/>"))
    deadline = time.monotonic() + 5
    while "paused" not in (held(server) or [""])[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    carol.send(chat(ALICE, f"<composing xmlns='{CS}'/>"))
    wait_held(server, 2)
    bob.send(chat(ALICE, f"<composing xmlns='{CS}'/>", thread="t1"))  # another conversation
    queue = wait_held(server, 3)
    assert "paused" in queue[0] and "carol" in queue[1] and "t1" in queue[2]

    bob.send(chat(ALICE, f"<body>hi</body><active xmlns='{CS}'/>"))
    got = alice.read_until("<body>hi</body>.*?</message>")
    order = [got.index("paused"), got.index("from=\"carol@localhost/c\""),
             got.index("<thread>t1</thread>"), got.index("<body>hi</body>")]
    assert order == sorted(order)
    assert "composing" not in got[: order[0]]  # bob's first chat state was superseded
    assert held(server) == []  # flushed, still inactive


def test_the_queue_is_flushed_beyond_its_bound(make_server):
    server = make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True,
                         modules_options={"csi": {"max_held": 2}})
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    inactive(alice)
    for thread in ("t1", "t2"):
        bob.send(chat(ALICE, f"<composing xmlns='{CS}'/>", thread=thread))
    wait_held(server, 2)
    bob.send(chat(ALICE, f"<composing xmlns='{CS}'/>", thread="t3"))
    got = alice.read_until("<thread>t3</thread>")
    assert got.index("t1") < got.index("t2") < got.index("t3")
    assert held(server) == []


def test_unloading_delivers_what_was_held_and_removes_everything(server):
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    inactive(alice)
    bob.send(chat(ALICE, f"<composing xmlns='{CS}'/>"))
    wait_held(server, 1)
    hooks = server.server.hooks
    module = server.server.modules.loaded["csi"].module

    async def unload() -> list:
        server.server.modules.unload("csi")
        return [h for event in hooks.events() for h in hooks.handlers(event)
                if getattr(h, "__self__", None) is module or h is module.features]

    assert server.call(unload()) == []
    assert "composing" in alice.read_until("</message>")
    assert "<bind" in post_auth_features(server) and CSI not in post_auth_features(server)
    alice.send(f"<inactive xmlns='{CSI}'/>")
    assert stream_error(alice.read_closed()) == "unsupported-stanza-type"


def test_hold_key():
    def el(name: str, attrs: dict, *children: Element) -> Element:
        return Element(name, CLIENT_NS, {"from": "bob@localhost/b", **attrs}, list(children))

    assert hold_key(el("presence", {})) == ("presence", "bob@localhost/b")
    assert hold_key(el("presence", {"type": "unavailable"})) == ("presence", "bob@localhost/b")
    for ptype in ("subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error"):
        assert hold_key(el("presence", {"type": ptype})) is None
    state = Element("gone", CS, {}, [])
    thread = Element("thread", CLIENT_NS, {}, ["t"])
    assert hold_key(el("message", {}, state)) == ("chatstate", "bob@localhost/b", "")
    assert hold_key(el("message", {}, thread, state)) == ("chatstate", "bob@localhost/b", "t")
    assert hold_key(el("message", {"type": "error"}, state)) is None
    assert hold_key(el("message", {}, state, Element("body", CLIENT_NS, {}, ["x"]))) is None
    assert hold_key(el("message", {})) is None  # an empty message is not a chat state
    assert hold_key(el("iq", {"type": "get"})) is None


def test_slixmpp_client_enables_csi(server):
    async def main() -> None:
        xmpp = ClientXMPP(ALICE, "secret")
        xmpp.register_plugin("xep_0085")
        xmpp.register_plugin("xep_0352")
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        xmpp.enable_direct_tls = False
        messages: asyncio.Queue = asyncio.Queue()
        xmpp.add_event_handler("message", messages.put_nowait)  # those with a body
        xmpp.add_event_handler("chatstate", messages.put_nowait)
        started = asyncio.get_running_loop().create_future()
        xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
        xmpp.connect("127.0.0.1", server.port)
        await asyncio.wait_for(started, 5)
        assert xmpp.plugin["xep_0352"].enabled  # the feature was offered
        xmpp.plugin["xep_0352"].send_inactive()
        deadline = time.monotonic() + 5
        while held(server) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        bob = await asyncio.to_thread(connect, server, "bob", "b", False)
        bob.send(chat(ALICE, f"<composing xmlns='{CS}'/>"))
        await asyncio.to_thread(wait_held, server, 1)
        bob.send(chat(ALICE, "<body>ping</body>"))
        first = await asyncio.wait_for(messages.get(), 5)
        second = await asyncio.wait_for(messages.get(), 5)
        assert first["chat_state"] == "composing" and not first["body"]
        assert second["body"] == "ping"
        xmpp.plugin["xep_0352"].send_active()
        deadline = time.monotonic() + 5
        while held(server) is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.wait_for(xmpp.disconnect(), 5)

    asyncio.run(asyncio.wait_for(main(), 30))
