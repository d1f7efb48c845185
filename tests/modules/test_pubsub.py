"""XEP-0060 service on pubsub.localhost: raw-socket use cases and errors, and slixmpp
end to end (a sensor publishes, several subscribers are notified)."""

from __future__ import annotations

import asyncio
import re
import ssl

from pubsub_support import OWNER, PUBSUB, connect, events, iq, ping, publish
from slixmpp import ClientXMPP

SVC = "pubsub.localhost"


def create(client, node: str, id: str = "c", config: str = "") -> str:
    conf = ""
    if config:
        conf = (f"<configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
                f"type='hidden'><value>{PUBSUB}#node_config</value></field>{config}</x>"
                "</configure>")
    return iq(client, f"<pubsub xmlns='{PUBSUB}'><create node='{node}'/>{conf}</pubsub>", id, to=SVC)


def field(var: str, value: str) -> str:
    return f"<field var='pubsub#{var}'><value>{value}</value></field>"


def sub(client, node: str, jid: str, id: str = "s") -> str:
    return iq(client, f"<pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub>",
              id, to=SVC)


def items(client, node: str, id: str = "i", extra: str = "", attrs: str = "") -> str:
    return iq(client, f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{attrs}/>{extra}</pubsub>", id,
              "get", to=SVC)


def test_service_use_cases_and_errors(server):
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    carol = connect(server, "carol", "c")
    for client in (alice, bob, carol):  # a bare-JID subscription reaches available resources
        client.send("<presence/>")
        ping(client, "p")
    disco = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#items'/>", "d", "get",
               to="localhost")
    assert SVC in disco
    info = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "d2", "get", to=SVC)
    assert 'category="pubsub"' in info and f"{PUBSUB}#publish-options" in info
    assert "item-not-found" in publish(alice, "news", "<e xmlns='urn:e'/>", "1", to=SVC)
    assert 'type="result"' in create(alice, "news", config=field("max_items", "3")
                                     + field("title", "News"))
    assert "conflict" in create(alice, "news", "c2")
    assert 'node="news"' in iq(bob, "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                               "d3", "get", to=SVC)
    assert 'subscription="subscribed"' in sub(bob, "news", "bob@localhost")
    assert "invalid-jid" in sub(bob, "news", "carol@localhost", "s2")
    assert "forbidden" in publish(bob, "news", "<e xmlns='urn:e'/>", "1", to=SVC)
    for n in range(5):
        publish(alice, "news", f"<e xmlns='urn:e'>{n}</e>", f"i{n}", f"p{n}", to=SVC)
    got = events(ping(bob))
    assert len(got) == 5 and 'from="pubsub.localhost"' in got[0]
    listed = items(bob, "news")
    assert [f'id="i{n}"' in listed for n in range(5)] == [False, False, True, True, True]
    newest = items(bob, "news", "mx", attrs=" max_items='1'")
    assert 'item id="i4"' in newest and 'item id="i3"' not in newest
    page = items(bob, "news", "i4", "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set>")
    assert 'item id="i2"' in page and 'item id="i3"' in page and "<count>3</count>" in page
    byid = iq(bob, f"<pubsub xmlns='{PUBSUB}'><items node='news'><item id='i3'/></items></pubsub>",
              "i5", "get", to=SVC)
    assert 'item id="i3"' in byid and 'item id="i4"' not in byid
    # last item on subscribe, payload-less notifications
    cf = iq(alice, f"<pubsub xmlns='{OWNER}'><configure node='news'><x xmlns='jabber:x:data' "
              f"type='submit'>{field('deliver_payloads', '0')}</x></configure></pubsub>", "cf", to=SVC)
    assert 'type="result"' in cf
    sub(carol, "news", "carol@localhost/c", "s3")
    last = carol.read_until("</message>")
    assert 'item id="i4"' in last and "<e xmlns" not in last
    publish(alice, "news", "<e xmlns='urn:e'>quiet</e>", "i9", "p9", to=SVC)
    got = events(ping(carol))
    assert len(got) == 1 and 'item id="i9"' in got[0] and "quiet" not in got[0]
    # affiliations: bob becomes publisher; carol outcast
    affs = (f"<pubsub xmlns='{OWNER}'><affiliations node='news'><affiliation jid='bob@localhost' "
            "affiliation='publisher'/><affiliation jid='carol@localhost' affiliation='outcast'/>"
            "</affiliations></pubsub>")
    assert "forbidden" in iq(bob, affs, "a0", to=SVC)
    assert 'type="result"' in iq(alice, affs, "a1", to=SVC)
    assert 'type="result"' in publish(bob, "news", "<e xmlns='urn:e'/>", "b1", to=SVC)
    assert "forbidden" in items(carol, "news", "i6")
    subs = iq(alice, f"<pubsub xmlns='{OWNER}'><subscriptions node='news'/></pubsub>", "ss", "get",
              to=SVC)
    assert "bob@localhost" in subs and "carol@localhost" not in subs
    assert "not-subscribed" in iq(carol, f"<pubsub xmlns='{PUBSUB}'><unsubscribe node='news' "
                                         "jid='carol@localhost/c'/></pubsub>", "u", to=SVC)
    # whitelist and authorize
    create(alice, "club", "c3", field("access_model", "whitelist"))
    assert "closed-node" in sub(bob, "club", "bob@localhost", "s4")
    create(alice, "door", "c4", field("access_model", "authorize"))
    assert 'subscription="pending"' in sub(bob, "door", "bob@localhost", "s5")
    assert "not-subscribed" in items(bob, "door", "i7")
    approve = (f"<pubsub xmlns='{OWNER}'><subscriptions node='door'><subscription "
               "jid='bob@localhost' subscription='subscribed'/></subscriptions></pubsub>")
    assert 'type="result"' in iq(alice, approve, "ap", to=SVC)
    assert 'type="result"' in items(bob, "door", "i8")
    # presence model needs a roster subscription to an owner
    create(alice, "friends", "c5", field("access_model", "presence"))
    assert "presence-subscription-required" in sub(bob, "friends", "bob@localhost", "s6")
    # transient node: notifications but no items
    create(alice, "live", "c6", field("persist_items", "0"))
    sub(bob, "live", "bob@localhost/b", "s7")
    publish(alice, "live", "<t xmlns='urn:t'>now</t>", "t1", "pt", to=SVC)
    assert "now" in bob.read_until("now")
    assert "<item " not in items(bob, "live", "i9")
    # delete notifies subscribers
    assert 'type="result"' in iq(alice, f"<pubsub xmlns='{OWNER}'><delete node='live'/></pubsub>",
                                 "dl", to=SVC)
    assert "<delete node=\"live\"" in bob.read_until("<delete[^>]*>")
    assert "item-not-found" in items(bob, "live", "i10")


def test_a_subscriber_who_blocks_the_service_hears_nothing_until_unblocked(server):
    """Notifications skip the ``stanza/inbound`` chain only for recipients every handler
    declared quiet: a block list ends that, so blocking still drops them (XEP-0191)."""
    alice, bob, carol = (connect(server, n, n[0]) for n in ("alice", "bob", "carol"))
    create(alice, "feed")
    for client, name in ((bob, "bob"), (carol, "carol")):
        assert 'subscription="subscribed"' in sub(client, "feed", f"{name}@localhost/{name[0]}")
    block = "<{0} xmlns='urn:xmpp:blocking'><item jid='pubsub.localhost'/></{0}>"
    assert 'type="result"' in iq(bob, block.format("block"), "b1")
    publish(alice, "feed", "<e xmlns='urn:e'>1</e>", "i1", to=SVC)
    assert len(events(ping(carol))) == 1 and events(ping(bob)) == []
    assert 'type="result"' in iq(bob, block.format("unblock"), "b2")
    publish(alice, "feed", "<e xmlns='urn:e'>2</e>", "i2", "p2", to=SVC)
    got = events(ping(bob))
    assert len(got) == 1 and "<e xmlns=\"urn:e\">2</e>" in got[0]


def test_service_subscription_limit(make_server):
    srv = make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True,
                      modules_options={"pubsub": {"max_subscriptions": 1}})
    alice, bob = connect(srv, "alice"), connect(srv, "bob")
    create(alice, "a")
    create(alice, "b", "c2")
    sub(bob, "a", "bob@localhost")
    err = sub(bob, "b", "bob@localhost", "s2")
    assert "policy-violation" in err and "too-many-subscriptions" in err


def test_subscriptions_survive_a_restart(make_server, tmp_path):
    users = {"alice": "secret", "bob": "secret", "carol": "secret"}
    first = make_server(users=users, allow_plain=True, data_dir=tmp_path / "d")
    alice, bob, carol = (connect(first, u) for u in users)
    create(alice, "keep")
    create(alice, "gone", "c2")
    sub(bob, "keep", "bob@localhost/r")
    sub(carol, "keep", "carol@localhost")
    sub(carol, "gone", "carol@localhost", "s2")
    sub(bob, "keep", "bob@localhost", "s3")
    assert 'subscription="none"' not in iq(
        alice, f"<pubsub xmlns='{OWNER}'><subscriptions node='keep'><subscription "
               "jid='bob@localhost' subscription='none'/></subscriptions></pubsub>", "o1", to=SVC)
    iq(alice, f"<pubsub xmlns='{OWNER}'><delete node='gone'/></pubsub>", "d", to=SVC)
    first.stop()
    second = make_server(users={}, allow_plain=True, data_dir=tmp_path / "d")
    alice, carol = connect(second, "alice"), connect(second, "carol")
    listing = iq(alice, f"<pubsub xmlns='{OWNER}'><subscriptions node='keep'/></pubsub>", "o",
                 "get", to=SVC)
    assert re.findall(r'jid="([^"]+)"', listing) == ["bob@localhost/r", "carol@localhost"]
    own = iq(carol, f"<pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub>", "l", "get", to=SVC)
    assert re.findall(r'node="([^"]+)" jid="([^"]+)"', own) == [("keep", "carol@localhost")]
    carol.send("<presence/>")
    ping(carol, "p")
    publish(alice, "keep", "<e xmlns='urn:e'>after</e>", "a1", to=SVC)
    assert ">after<" in carol.read_until("</message>")


async def _client(port: int, jid: str) -> ClientXMPP:
    xmpp = ClientXMPP(jid, "secret")
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.enable_direct_tls = False
    xmpp.register_plugin("xep_0060")
    started = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    xmpp.connect("127.0.0.1", port)
    await asyncio.wait_for(started, 5)
    xmpp.send_presence()  # a bare-JID subscription reaches available resources
    await xmpp.plugin["xep_0060"].get_nodes(SVC, timeout=5)  # a round trip after it
    return xmpp


def test_slixmpp_sensor_publishes_to_several_subscribers(server):
    async def main() -> None:
        sensor = await _client(server.port, "alice@localhost/sensor")
        readers = [await _client(server.port, f"{u}@localhost/r") for u in ("bob", "carol")]
        got: dict[str, list[str]] = {"bob": [], "carol": []}
        for reader in readers:
            user = str(reader.boundjid.user)
            reader.add_event_handler(
                "pubsub_publish",
                lambda msg, user=user: got[user].append(msg["pubsub_event"]["items"]["item"]["id"]))
        p = sensor.plugin["xep_0060"]
        await p.create_node(SVC, "temperature", timeout=5)
        for reader in readers:
            await reader.plugin["xep_0060"].subscribe(SVC, "temperature", timeout=5)
        from slixmpp.xmlstream import ET
        for n in range(3):
            payload = ET.fromstring(f"<reading xmlns='urn:example:sensor'>{20 + n}</reading>")
            await p.publish(SVC, "temperature", id=f"t{n}", payload=payload, timeout=5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while any(len(v) < 3 for v in got.values()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert got == {"bob": ["t0", "t1", "t2"], "carol": ["t0", "t1", "t2"]}
        result = await readers[0].plugin["xep_0060"].get_items(SVC, "temperature", timeout=5)
        assert [i["id"] for i in result["pubsub"]["items"]] == ["t0", "t1", "t2"]
        for xmpp in (sensor, *readers):
            xmpp.disconnect()

    asyncio.run(main())
