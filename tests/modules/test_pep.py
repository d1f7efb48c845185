"""XEP-0163 PEP over raw sockets: caps-filtered notifications (XEP-0115), access models,
publish-options, bookmarks (XEP-0402), limits and persistence."""

from __future__ import annotations

from pubsub_support import (
    ERRORS,
    PUBSUB,
    answer_disco,
    caps_presence,
    connect,
    events,
    iq,
    options_form,
    ping,
    publish,
    subscribe_both,
)

GEO = "http://jabber.org/protocol/geoloc"
GEO_ITEM = f"<geoloc xmlns='{GEO}'><lat>45.44</lat></geoloc>"


def test_notifications_go_to_own_and_contact_resources_with_notify_exactly_once(server):
    alice = connect(server, "alice", "a1")
    bob = connect(server, "bob", "b1")
    subscribe_both(alice, bob, "alice", "bob")
    notify = [GEO + "+notify"]
    caps_presence(alice, notify)
    answer_disco(alice, notify)
    ping(alice, "x")
    quiet = connect(server, "alice", "a2")  # same ver shown: no second query, cached
    caps_presence(quiet, ["urn:other"])
    answer_disco(quiet, ["urn:other"])
    ping(quiet)
    caps_presence(bob, notify)  # the same ver as alice's: the cache answers at once
    bob2 = connect(server, "bob", "b2")
    bob2.send("<presence/>")  # no caps: no notifications
    carol = connect(server, "carol", "c")
    caps_presence(carol, notify)  # +notify, but no subscription
    ping(bob)
    ping(bob2)
    reply = publish(alice, GEO, GEO_ITEM, "g1")
    assert 'type="result"' in reply and 'id="g1"' in reply
    got_alice = reply + ping(alice, "z")
    assert len(events(got_alice)) == 1 and "45.44" in events(got_alice)[0]
    got_bob = ping(bob, "z")
    assert len(events(got_bob)) == 1 and 'from="alice@localhost"' in events(got_bob)[0]
    assert events(ping(quiet, "z")) == [] and events(ping(bob2, "z")) == []
    assert events(ping(carol, "z")) == []
    # carol has no presence subscription: a presence-model node is closed to her
    err = iq(carol, f"<pubsub xmlns='{PUBSUB}'><items node='{GEO}'/></pubsub>", "i", "get",
             to="alice@localhost")
    assert "not-authorized" in err and f"presence-subscription-required xmlns=\"{ERRORS}\"" in err
    got = iq(bob, f"<pubsub xmlns='{PUBSUB}'><items node='{GEO}'/></pubsub>", "i", "get",
             to="alice@localhost")
    assert "45.44" in got and 'id="g1"' in got
    # a contact may not publish on alice's node
    assert "forbidden" in publish(bob, GEO, GEO_ITEM, "x", to="alice@localhost")


def test_last_item_on_presence_and_a_mismatching_hash_is_rejected(server):
    alice = connect(server, "alice", "a")
    publish(alice, GEO, GEO_ITEM, "g1")
    late = connect(server, "alice", "late")
    caps_presence(late, [GEO + "+notify"])
    answer_disco(late, [GEO + "+notify"])
    got = late.read_until("</message>")
    assert "45.44" in got and "pubsub#event" in got
    liar = connect(server, "alice", "liar")
    caps_presence(liar, [GEO + "+notify", "urn:liar"], wrong=True)
    answer_disco(liar, [GEO + "+notify", "urn:liar"])  # does not hash to the ver shown
    assert events(ping(liar)) == []
    publish(alice, GEO, GEO_ITEM.replace("45.44", "46.0"), "g2")
    assert events(ping(liar, "e2")) == []
    # the notification is sent after the publish is answered: wait for it, not for a ping
    assert "46.0" in late.read_until("46.0")


def test_publish_options_preconditions_and_bookmarks_max_items(server):
    alice = connect(server, "alice")
    bm = "urn:xmpp:bookmarks:1"
    opts = options_form(persist_items="true", access_model="whitelist", max_items="max")
    for room in ("a", "b", "c"):
        conf = f"<conference xmlns='{bm}' name='{room}' autojoin='true'><nick>al</nick></conference>"
        assert 'type="result"' in publish(alice, bm, conf, f"{room}@muc.localhost", room, options=opts)
    got = iq(alice, f"<pubsub xmlns='{PUBSUB}'><items node='{bm}'/></pubsub>", "g", "get")
    assert all(f'id="{r}@muc.localhost"' in got for r in "abc")
    err = publish(alice, bm, f"<conference xmlns='{bm}'/>", "d@muc.localhost", "bad",
                  options=options_form(access_model="open"))
    assert "conflict" in err and "precondition-not-met" in err
    bob = connect(server, "bob")
    assert "closed-node" in iq(bob, f"<pubsub xmlns='{PUBSUB}'><items node='{bm}'/></pubsub>",
                               "w", "get", to="alice@localhost")
    # max_items=1 default keeps only the newest item
    publish(alice, "urn:xmpp:nick", "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>", "1")
    publish(alice, "urn:xmpp:nick", "<nick xmlns='http://jabber.org/protocol/nick'>B</nick>", "2",
            "n2")
    got = iq(alice, f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:nick'/></pubsub>", "n", "get")
    assert ">B<" in got and ">A<" not in got
    # retract, purge, delete by the owner
    retract = (f"<pubsub xmlns='{PUBSUB}'><retract node='{bm}' notify='true'>"
               "<item id='a@muc.localhost'/></retract></pubsub>")
    assert 'type="result"' in iq(alice, retract, "r")
    assert "item-not-found" in iq(alice, retract, "r2")
    owner = "http://jabber.org/protocol/pubsub#owner"
    assert 'type="result"' in iq(alice, f"<pubsub xmlns='{owner}'><purge node='{bm}'/></pubsub>", "pu")
    got = iq(alice, f"<pubsub xmlns='{PUBSUB}'><items node='{bm}'/></pubsub>", "g2", "get")
    assert "<item " not in got
    assert 'type="result"' in iq(alice, f"<pubsub xmlns='{owner}'><delete node='{bm}'/></pubsub>", "de")
    assert "item-not-found" in iq(alice, f"<pubsub xmlns='{PUBSUB}'><items node='{bm}'/></pubsub>",
                                  "g3", "get")
    info = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "d", "get",
              to="alice@localhost")
    assert f"{PUBSUB}#publish-options" in info and "urn:xmpp:bookmarks:1#compat" in info


def test_open_omemo_devicelist_and_limits(make_server):
    srv = make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True,
                      modules_options={"pep": {"max_item_size": 300, "max_nodes": 2}})
    alice = connect(srv, "alice")
    devices = "eu.siacs.conversations.axolotl.devicelist"
    item = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>"
    publish(alice, devices, item, "current", options=options_form(access_model="open"))
    bob = connect(srv, "bob")  # a stranger may read an open node
    assert "device id=\"1\"" in iq(bob, f"<pubsub xmlns='{PUBSUB}'><items node='{devices}'/>"
                                        "</pubsub>", "o", "get", to="alice@localhost")
    big = f"<x xmlns='urn:big'>{'y' * 400}</x>"
    err = publish(alice, "urn:big", big, "1", "b")
    assert "not-acceptable" in err and "payload-too-big" in err
    publish(alice, "urn:two", "<x xmlns='urn:two'/>", "1", "t")
    err = publish(alice, "urn:three", "<x xmlns='urn:three'/>", "1", "t3")
    assert "policy-violation" in err and "max-nodes-exceeded" in err


def test_pep_items_survive_a_restart(make_server, tmp_path):
    users = {"alice": "secret", "bob": "secret"}
    first = make_server(users=users, allow_plain=True, data_dir=tmp_path / "d")
    alice = connect(first, "alice")
    publish(alice, GEO, GEO_ITEM, "keep")
    first.stop()
    second = make_server(users={}, allow_plain=True, data_dir=tmp_path / "d")
    alice = connect(second, "alice")
    got = iq(alice, f"<pubsub xmlns='{PUBSUB}'><items node='{GEO}'/></pubsub>", "g", "get")
    assert "45.44" in got and 'id="keep"' in got
