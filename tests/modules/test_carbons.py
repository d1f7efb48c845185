"""XEP-0280 message carbons: raw-socket protocol tests and slixmpp (xep_0280) end to end."""

from __future__ import annotations

import asyncio
import re

import pytest
from support import RawClient, connect
from test_mam import ping

from xmppd.core.manager import DEFAULT_MODULES

CARBONS = "urn:xmpp:carbons:2"
WITH_MAM = (*DEFAULT_MODULES, "mam")
WRAPPED = "</(received|sent)></message>"

@pytest.fixture
def make_server(make_server):
    """Servers with the archive (not in the default module set) enabled."""
    def factory(**kw):
        kw.setdefault("modules_enabled", WITH_MAM)
        return make_server(**kw)
    return factory



def enable(client: RawClient, to: str = "", id: str = "c") -> str:
    to_attr = f" to='{to}'" if to else ""
    client.send(f"<iq type='set' id='{id}'{to_attr}><enable xmlns='{CARBONS}'/></iq>")
    return client.read_until(f"<iq[^>]*id=.{id}.[^>]*(/>|>.*?</iq>)")


def test_received_and_sent_copies(server):
    a1, a2 = connect(server, "alice", "one"), connect(server, "alice", "two")
    bob = connect(server, "bob", "b")
    assert 'type="result"' in enable(a1)
    assert 'type="result"' in enable(a2, "alice@localhost")
    bob.send("<message to='alice@localhost/one' type='chat' id='in'><body>hi</body></message>")
    got = a2.read_until(WRAPPED)
    assert re.search(r'<message from="alice@localhost" to="alice@localhost/two" type="chat">'
                     r'<received xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0">'
                     r'<message xmlns="jabber:client" to="alice@localhost/one" type="chat" id="in"'
                     r' from="bob@localhost/b"><body>hi</body>'
                     r'<stanza-id xmlns="urn:xmpp:sid:0" by="alice@localhost"', got), got
    assert "<received" not in a1.read_until("</message>")
    a1.send("<message to='bob@localhost/b' type='chat' id='out'><body>yo</body></message>")
    got = a2.read_until(WRAPPED)
    assert '<sent xmlns="urn:xmpp:carbons:2">' in got and "<body>yo</body>" in got
    assert 'stanza-id xmlns="urn:xmpp:sid:0" by="alice@localhost"' in got
    to_bob = bob.read_until("</message>")
    assert "by=\"alice@localhost\"" not in to_bob  # the sender's archive id stays home
    assert "<sent" not in ping(a1) and "<received" not in ping(a1, "e2")


def test_bare_jid_copies_go_to_resources_that_did_not_get_it(server):
    a1, a2 = connect(server, "alice", "one"), connect(server, "alice", "two")
    bob = connect(server, "bob", "b")
    a1.send("<presence><priority>5</priority></presence>")
    a2.send("<presence><priority>1</priority></presence>")
    enable(a1)
    enable(a2)
    ping(a1), ping(a2)
    # normal with body: to the highest priority only, so a carbon for the other
    bob.send("<message to='alice@localhost' type='normal'><body>n</body></message>")
    assert "<received" not in a1.read_until("<body>n</body>.*?</message>")
    got = a2.read_until(WRAPPED)
    assert "<received" in got and "<body>n</body>" in got
    # chat: every resource gets it, nobody a carbon
    bob.send("<message to='alice@localhost' type='chat'><body>c</body></message>")
    ping(bob)
    for client in (a1, a2):
        got = ping(client)
        assert "<body>c</body>" in got and "<received" not in got


def test_not_copied_private_no_copy_groupchat_muc_pm_and_disabled(server):
    a1, a2 = connect(server, "alice", "one"), connect(server, "alice", "two")
    bob = connect(server, "bob", "b")
    enable(a1)
    enable(a2, "localhost")
    a1.send("<message to='bob@localhost/b' type='chat'><body>p</body>"
            f"<private xmlns='{CARBONS}'/><no-copy xmlns='urn:xmpp:hints'/></message>")
    got = bob.read_until("</message>")
    assert "<body>p</body>" in got and "private" not in got and "no-copy" in got
    bob.send("<message to='alice@localhost/one' type='chat'><body>q</body>"
             "<no-copy xmlns='urn:xmpp:hints'/></message>")
    bob.send("<message to='alice@localhost/one' type='chat'><body>pm</body>"
             "<x xmlns='http://jabber.org/protocol/muc#user'/></message>")
    bob.send("<message to='alice@localhost/one' type='headline'><body>h</body></message>")
    bob.send("<message to='alice@localhost/one' type='normal'>"
             "<received xmlns='urn:xmpp:receipts' id='x'/></message>")  # IM payload: copied
    ping(bob)
    got = ping(a2)
    assert got.count("<received xmlns=\"urn:xmpp:carbons:2\"") == 1 and "urn:xmpp:receipts" in got
    a2.send(f"<iq type='set' id='d'><disable xmlns='{CARBONS}'/></iq>")
    a2.read_until("id=.d.")
    bob.send("<message to='alice@localhost/one' type='chat'><body>after</body></message>")
    a1.read_until("after")
    assert "after" not in ping(a2)


def test_enable_for_another_account_is_forbidden(server):
    alice = connect(server, "alice", "one")
    assert "forbidden" in enable(alice, "bob@localhost")


def test_forged_carbons_from_another_user_are_not_forwarded(server):
    alice, bob = connect(server, "alice", "one"), connect(server, "bob", "b")
    enable(alice)
    forged = (f"<received xmlns='{CARBONS}'><forwarded xmlns='urn:xmpp:forward:0'>"
              "<message xmlns='jabber:client' from='carol@localhost/c' to='alice@localhost'"
              " type='chat'><body>I am carol</body></message></forwarded></received>")
    bob.send(f"<message to='alice@localhost/one' type='chat'>{forged}</message>")
    bob.send(f"<message to='alice@localhost/one' type='chat'><body>real</body>"
             f"{forged.replace('received', 'sent')}</message>")
    ping(bob)
    got = ping(alice)
    assert "I am carol" not in got and "carbons" not in got
    assert got.count("<message") == 1 and "<body>real</body>" in got
    assert "I am carol" not in "".join(x for _i, x in __import__("test_mam").query(alice)[0])


def test_slixmpp_carbons_across_two_resources(server):
    from slixmpp import ClientXMPP

    async def start(jid: str) -> ClientXMPP:
        xmpp = ClientXMPP(jid, "secret")
        for plugin in ("xep_0030", "xep_0280", "xep_0313", "xep_0359"):
            xmpp.register_plugin(plugin)
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = __import__("ssl").CERT_NONE
        xmpp.enable_direct_tls = False
        started = asyncio.get_running_loop().create_future()
        xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
        xmpp.connect("127.0.0.1", server.port)
        await asyncio.wait_for(started, 10)
        xmpp.send_presence()
        return xmpp

    async def main() -> None:
        phone = await start("alice@localhost/phone")
        laptop = await start("alice@localhost/laptop")
        bob = await start("bob@localhost/b")
        await phone.plugin["xep_0280"].enable(timeout=5)
        await laptop.plugin["xep_0280"].enable(timeout=5)
        received: asyncio.Queue = asyncio.Queue()
        sent: asyncio.Queue = asyncio.Queue()
        laptop.add_event_handler("carbon_received", received.put_nowait)
        laptop.add_event_handler("carbon_sent", sent.put_nowait)
        bob.send_message("alice@localhost/phone", "to the phone", mtype="chat")
        msg = await asyncio.wait_for(received.get(), 10)
        inner = msg["carbon_received"]
        assert inner["body"] == "to the phone" and inner["from"] == "bob@localhost/b"
        assert inner["stanza_id"]["by"] == "alice@localhost"
        phone.send_message("bob@localhost/b", "from the phone", mtype="chat")
        msg = await asyncio.wait_for(sent.get(), 10)
        inner = msg["carbon_sent"]
        assert inner["body"] == "from the phone" and inner["to"] == "bob@localhost/b"
        assert inner["stanza_id"]["by"] == "alice@localhost"
        for xmpp in (phone, laptop, bob):
            await asyncio.wait_for(xmpp.disconnect(), 5)

    asyncio.run(asyncio.wait_for(main(), 60))
