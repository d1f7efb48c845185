"""XEP-0060 / XEP-0248 collection nodes on pubsub.localhost (raw sockets): creation,
association both ways, disco, notifications through a collection (depth 1 and all,
``nodes`` subscriptions), publishing to a collection, deletion detaching children."""

from __future__ import annotations

import asyncio
import re

from pubsub_support import ERRORS, OWNER, PUBSUB, connect, events, iq, options_form, ping, publish
from test_pubsub import SVC, create, field, items, sub

DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
SUBOPT = PUBSUB + "#subscribe_options"


def collection(name: str, children: str = "") -> str:
    return field("node_type", "collection") + (field("children", children) if children else "")


def configure(client, node: str, fields: str, id: str = "cf") -> str:
    return iq(client, f"<pubsub xmlns='{OWNER}'><configure node='{node}'><x xmlns='jabber:x:data' "
                      f"type='submit'>{fields}</x></configure></pubsub>", id, to=SVC)


def disco_items(client, node: str = "", id: str = "di") -> str:
    attr = f" node='{node}'" if node else ""
    return iq(client, f"<query xmlns='{DISCO_ITEMS}'{attr}/>", id, "get", to=SVC)


def nodes_in(reply: str) -> list[str]:
    return sorted(re.findall(r'<item [^>]*node="([^"]*)"', reply))


def sub_with(client, node: str, jid: str, id: str, **options: str) -> str:
    fields = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>"
                     for k, v in options.items())
    return iq(client, f"<pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='{jid}'/><options>"
                      f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                      f"<value>{SUBOPT}</value></field>{fields}</x></options></pubsub>", id, to=SVC)


def online(*clients) -> None:
    for client in clients:
        client.send("<presence/>")
        ping(client, "p")


def test_collection_nodes(server):
    alice, bob, carol = (connect(server, u, u[0]) for u in ("alice", "bob", "carol"))
    online(alice, bob, carol)
    info = iq(alice, f"<query xmlns='{DISCO_INFO}'/>", "d0", "get", to=SVC)
    assert f"{PUBSUB}#collections" in info
    assert 'type="result"' in create(alice, "blogs", "c1", collection("blogs"))
    assert 'type="result"' in create(alice, "a", "c2", field("collection", "blogs"))
    assert 'type="result"' in create(alice, "b", "c3")
    # a collection's children named on the collection: b joins it
    assert 'type="result"' in configure(alice, "blogs", field("children", "a")
                                        .replace("</field>", "<value>b</value></field>"))
    got = iq(alice, f"<pubsub xmlns='{OWNER}'><configure node='blogs'/></pubsub>", "g1", "get",
             to=SVC)
    assert re.search(r'var="pubsub#children"[^>]*>\s*<value>a</value>\s*<value>b</value>', got)
    leaf = iq(alice, f"<pubsub xmlns='{OWNER}'><configure node='b'/></pubsub>", "g2", "get",
              to=SVC)
    assert re.search(r'var="pubsub#collection"[^>]*>\s*<value>blogs</value>', leaf)
    # disco: the root lists the nodes in no collection, the collection its children
    assert nodes_in(disco_items(bob)) == ["blogs"]
    assert nodes_in(disco_items(bob, "blogs", "di2")) == ["a", "b"]
    ident = iq(bob, f"<query xmlns='{DISCO_INFO}' node='blogs'/>", "d1", "get", to=SVC)
    assert 'type="collection"' in ident
    # collections hold no items
    err = publish(alice, "blogs", "<e xmlns='urn:e'/>", "x", to=SVC)
    assert "feature-not-implemented" in err and f"unsupported xmlns=\"{ERRORS}\"" in err
    assert 'feature="publish"' in err
    # bob subscribes to the collection: items of a and b reach him, with the header
    assert 'subscription="subscribed"' in sub(bob, "blogs", "bob@localhost", "s1")
    publish(alice, "a", "<e xmlns='urn:e'>one</e>", "a1", "p1", to=SVC)
    publish(alice, "b", "<e xmlns='urn:e'>two</e>", "b1", "p2", to=SVC)
    got = events(ping(bob))
    assert len(got) == 2
    assert '<items node="a"' in got[0] and "one" in got[0]
    assert '<header name="Collection">blogs</header>' in got[0]
    assert '<items node="b"' in got[1] and "two" in got[1]
    retract = (f"<pubsub xmlns='{PUBSUB}'><retract node='b'><item id='b1'/></retract></pubsub>")
    assert 'type="result"' in iq(alice, retract, "r1", to=SVC)
    got = events(ping(bob))
    assert len(got) == 1 and '<retract id="b1"/>' in got[0] and "Collection" in got[0]
    # subscribed to a leaf and to its collection: one notification
    sub(bob, "a", "bob@localhost", "s2")
    assert 'item id="a1"' in bob.read_until("</message>")  # the last item, on subscribe
    publish(alice, "a", "<e xmlns='urn:e'>three</e>", "a2", "p3", to=SVC)
    got = events(ping(bob))
    assert len(got) == 1 and "Collection" not in got[0]
    # a whitelist leaf in the collection stays closed to the collection's subscribers
    create(alice, "secret", "c4", field("access_model", "whitelist") + field("collection", "blogs"))
    publish(alice, "secret", "<e xmlns='urn:e'>hush</e>", "s1", "p4", to=SVC)
    assert events(ping(bob)) == []
    # depth: a nested collection; depth 1 hears only its own children, depth all the rest
    create(alice, "inner", "c5", collection("inner") + field("collection", "blogs"))
    create(alice, "deep", "c6", field("collection", "inner"))
    assert 'type="result"' in sub_with(carol, "blogs", "carol@localhost", "s3",
                                       subscription_depth="all")
    publish(alice, "deep", "<e xmlns='urn:e'>down</e>", "d1", "p5", to=SVC)
    assert events(ping(bob)) == []
    got = events(ping(carol))
    assert len(got) == 1 and '<items node="deep"' in got[0]
    assert '<header name="Collection">blogs</header>' in got[0]
    # a "nodes" subscription hears of associations, not of items
    sub_with(carol, "inner", "carol@localhost/c", "s4", subscription_type="nodes")
    configure(alice, "b", field("collection", "inner"), "cf2")
    got = events(ping(carol))
    assert len(got) == 1
    assert re.search(r'<collection node="inner">\s*<associate node="b"/>', got[0])
    publish(alice, "b", "<e xmlns='urn:e'>x</e>", "b2", "p6", to=SVC)
    assert len(events(ping(carol))) == 1  # through blogs (depth all), not inner
    # errors: a leaf as a collection, a cycle, someone else's collection, a leaf's children
    assert "not-acceptable" in create(alice, "bad", "c7", field("collection", "a"))
    assert "not-acceptable" in configure(alice, "blogs", field("collection", "inner"), "cf3")
    create(bob, "mine", "c8", collection("mine"))
    assert "forbidden" in create(bob, "x", "c9", field("collection", "blogs"))
    assert "not-acceptable" in configure(alice, "a", field("children", "b"), "cf4")
    assert "not-acceptable" in configure(alice, "a", field("node_type", "collection"), "cf5")
    assert "item-not-found" in configure(alice, "blogs", field("children", "nope"), "cf6")
    # deleting a collection detaches its children, which stay
    assert 'type="result"' in iq(alice, f"<pubsub xmlns='{OWNER}'><delete node='blogs'/></pubsub>",
                                 "dl", to=SVC)
    assert nodes_in(disco_items(bob, id="di3")) == ["a", "inner", "mine", "secret"]
    leaf = iq(alice, f"<pubsub xmlns='{OWNER}'><configure node='a'/></pubsub>", "g3", "get",
              to=SVC)
    assert "<value>blogs</value>" not in leaf
    assert 'item id="a2"' in items(bob, "a", "i1")
    # the subscriptions to it went with it: publishing to a reaches bob once (his own)
    publish(alice, "a", "<e xmlns='urn:e'/>", "a3", "p7", to=SVC)
    got = events(ping(bob))
    assert len(got) == 1 and "Collection" not in got[0]


def test_publish_autocreate_into_a_collection(make_server):
    srv = make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True,
                      modules_options={"pubsub": {"autocreate_on_publish": True}})
    alice, bob = connect(srv, "alice"), connect(srv, "bob")
    create(alice, "feeds", config=collection("feeds"))
    into = options_form(collection="feeds")
    assert "forbidden" in publish(bob, "bobs", "<e xmlns='urn:e'/>", "1", to=SVC, options=into)
    assert "item-not-found" in items(bob, "bobs")
    assert 'type="result"' in publish(alice, "alices", "<e xmlns='urn:e'/>", "1", "p2", to=SVC,
                                      options=into)
    assert nodes_in(disco_items(alice, "feeds")) == ["alices"]
    typed = options_form(node_type="collection")
    assert "not-acceptable" in publish(alice, "more", "<e xmlns='urn:e'/>", "1", "p3", to=SVC,
                                       options=typed)


def test_slixmpp_subscribes_to_a_collection(server):
    from slixmpp.plugins.xep_0004 import Form
    from slixmpp.xmlstream import ET
    from test_pubsub import _client

    async def main() -> None:
        owner = await _client(server.port, "alice@localhost/o")
        reader = await _client(server.port, "bob@localhost/r")
        got: list[tuple[str, str, str]] = []
        reader.add_event_handler("pubsub_publish", lambda msg: got.append((
            msg["pubsub_event"]["items"]["node"], msg["pubsub_event"]["items"]["item"]["id"],
            msg.xml.findtext("{http://jabber.org/protocol/shim}headers/"
                             "{http://jabber.org/protocol/shim}header") or "")))
        p = owner.plugin["xep_0060"]
        config = Form()
        config.add_field(var="pubsub#title", value="All sensors")
        await p.create_node(SVC, "sensors", config=config, ntype="collection", timeout=5)
        for name in ("kitchen", "garden"):
            leaf = Form()
            leaf.add_field(var="pubsub#collection", ftype="text-multi", value=["sensors"])
            await p.create_node(SVC, name, config=leaf, timeout=5)
        found = await reader.plugin["xep_0030"].get_items(jid=SVC, node="sensors", timeout=5)
        assert sorted(i[1] for i in found["disco_items"]["items"]) == ["garden", "kitchen"]
        options = Form()
        options["type"] = "submit"
        options.add_field(var="FORM_TYPE", ftype="hidden", value=SUBOPT)
        options.add_field(var="pubsub#subscription_depth", value="all")
        await reader.plugin["xep_0060"].subscribe(SVC, "sensors", options=options, timeout=5)
        current = await reader.plugin["xep_0060"].get_subscription_options(
            SVC, "sensors", "bob@localhost", timeout=5)
        form = current["pubsub"]["options"].xml.find("{jabber:x:data}x")
        depth = form.find("{jabber:x:data}field[@var='pubsub#subscription_depth']")
        assert depth.findtext("{jabber:x:data}value") == "all"
        for n, name in enumerate(("kitchen", "garden")):
            payload = ET.fromstring(f"<reading xmlns='urn:example:sensor'>{n}</reading>")
            await p.publish(SVC, name, id=f"r{n}", payload=payload, timeout=5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(got) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert got == [("kitchen", "r0", "sensors"), ("garden", "r1", "sensors")]
        for xmpp in (owner, reader):
            xmpp.disconnect()

    asyncio.run(main())
