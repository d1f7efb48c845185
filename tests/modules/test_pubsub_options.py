"""XEP-0060 §6.3 subscription options on pubsub.localhost (raw sockets): the form, setting
it, subscribe-and-configure, ``pubsub#deliver`` and ``pubsub#show-values`` at work, the
§6.3.4 errors, §6.4 default options; PEP still does not offer them."""

from __future__ import annotations

import re

from pubsub_support import ERRORS, PUBSUB, connect, events, iq, ping, publish
from test_pubsub import SVC, create, field, sub

SUBOPT = PUBSUB + "#subscribe_options"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


def form(fields: str, type: str = "submit") -> str:
    return (f"<x xmlns='jabber:x:data' type='{type}'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{SUBOPT}</value></field>{fields}</x>")


def get_options(client, node: str, jid: str | None, id: str = "og", extra: str = "") -> str:
    jid_attr = f" jid='{jid}'" if jid is not None else ""
    return iq(client, f"<pubsub xmlns='{PUBSUB}'><options node='{node}'{jid_attr}{extra}/>"
                      "</pubsub>", id, "get", to=SVC)


def set_options(client, node: str, jid: str, fields: str, id: str = "os",
                type: str = "submit") -> str:
    return iq(client, f"<pubsub xmlns='{PUBSUB}'><options node='{node}' jid='{jid}'>"
                      f"{form(fields, type)}</options></pubsub>", id, to=SVC)


def values(reply: str, var: str) -> list[str]:
    m = re.search(rf'var="pubsub#{var}"[^>]*>(.*?)</field>', reply, re.S)
    assert m, f"no {var} in {reply}"
    return re.findall(r"<value>([^<]*)</value>", re.sub(r"<option>.*?</option>", "", m.group(1)))


def bad_options(reply: str) -> bool:
    return "bad-request" in reply and f'invalid-options xmlns="{ERRORS}"' in reply


def test_subscription_options(server):
    alice, bob, carol = (connect(server, u, u[0]) for u in ("alice", "bob", "carol"))
    for client in (alice, bob, carol):
        client.send("<presence/>")
        ping(client, "p")
    info = iq(alice, f"<query xmlns='{DISCO_INFO}'/>", "d0", "get", to=SVC)
    assert f"{PUBSUB}#subscription-options" in info
    create(alice, "news")
    sub(bob, "news", "bob@localhost")
    # the form
    got = get_options(bob, "news", "bob@localhost")
    assert 'type="result"' in got and f"<value>{SUBOPT}</value>" in got
    assert values(got, "deliver") == ["1"] and values(got, "digest") == ["0"]
    assert values(got, "include_body") == ["0"] and values(got, "show-values") == []
    assert "subscription_type" not in got  # a leaf: no collection fields
    assert re.search(r'<options node="news" jid="bob@localhost" subid="[0-9a-f]+"', got)
    subid = re.search(r'subid="([0-9a-f]+)"', got).group(1)
    # §6.3.4 errors
    assert "jid-required" in get_options(bob, "news", None, "e1")
    err = get_options(bob, "news", "carol@localhost", "e2")
    assert "bad-request" in err and "invalid-jid" in err
    err = get_options(carol, "news", "carol@localhost", "e3")
    assert "unexpected-request" in err and "not-subscribed" in err
    err = get_options(bob, "news", "bob@localhost", "e4", " subid='nope'")
    assert "not-acceptable" in err and "invalid-subid" in err
    assert "item-not-found" in get_options(bob, "nothing", "bob@localhost", "e5")
    assert 'type="result"' in get_options(bob, "news", "bob@localhost", "e6", f" subid='{subid}'")
    assert 'type="result"' in get_options(alice, "news", "bob@localhost", "e7")  # the owner
    assert bad_options(set_options(bob, "news", "bob@localhost", field("digest", "1"), "e8"))
    assert bad_options(set_options(bob, "news", "bob@localhost", field("colour", "red"), "e9"))
    assert bad_options(set_options(bob, "news", "bob@localhost", field("deliver", "maybe"), "e10"))
    assert bad_options(set_options(bob, "news", "bob@localhost",
                                   field("subscription_type", "nodes"), "e11"))
    assert bad_options(set_options(bob, "news", "bob@localhost",
                                   field("show-values", "sleepy"), "e12"))
    assert "invalid-jid" in set_options(carol, "news", "bob@localhost", field("deliver", "0"),
                                        "e13")
    # deliver off: no notifications; on again: they come back
    assert 'type="result"' in set_options(bob, "news", "bob@localhost", field("deliver", "0"))
    assert values(get_options(bob, "news", "bob@localhost", "og2"), "deliver") == ["0"]
    publish(alice, "news", "<e xmlns='urn:e'>1</e>", "n1", "p1", to=SVC)
    assert events(ping(bob)) == []
    assert 'type="result"' in set_options(bob, "news", "bob@localhost", field("deliver", "1"),
                                          "os2")
    publish(alice, "news", "<e xmlns='urn:e'>2</e>", "n2", "p2", to=SVC)
    got = events(ping(bob))
    assert len(got) == 1 and 'item id="n2"' in got[0]
    # a cancelled form changes nothing
    assert 'type="result"' in set_options(bob, "news", "bob@localhost", field("deliver", "0"),
                                          "os3", "cancel")
    assert values(get_options(bob, "news", "bob@localhost", "og3"), "deliver") == ["1"]
    # subscribe and configure: deliver off from the start (no last item either)
    got = iq(carol, f"<pubsub xmlns='{PUBSUB}'><subscribe node='news' jid='carol@localhost'/>"
                    f"<options>{form(field('deliver', 'false'))}</options></pubsub>", "sc", to=SVC)
    assert 'subscription="subscribed"' in got and values(got, "deliver") == ["0"]
    assert "<message" not in ping(alice, "pa")  # no approval asked for
    publish(alice, "news", "<e xmlns='urn:e'>3</e>", "n3", "p3", to=SVC)
    assert events(ping(carol)) == []
    err = iq(carol, f"<pubsub xmlns='{PUBSUB}'><subscribe node='news' jid='carol@localhost'/>"
                    f"<options>{form(field('include_body', '1'))}</options></pubsub>", "sc2",
             to=SVC)
    assert bad_options(err)
    # options survive an owner's change of the subscription state
    approve = (f"<pubsub xmlns='{PUBSUB}#owner'><subscriptions node='news'><subscription "
               "jid='carol@localhost' subscription='subscribed'/></subscriptions></pubsub>")
    assert 'type="result"' in iq(alice, approve, "ap", to=SVC)
    assert values(get_options(carol, "news", "carol@localhost", "og4"), "deliver") == ["0"]
    # §6.4 default subscription options
    default = iq(bob, f"<pubsub xmlns='{PUBSUB}'><default/></pubsub>", "df", "get", to=SVC)
    assert f"<value>{SUBOPT}</value>" in default and values(default, "deliver") == ["1"]


def test_show_values(server):
    alice = connect(server, "alice", "a")
    away = connect(server, "bob", "away")
    here = connect(server, "bob", "here")
    away.send("<presence><show>away</show></presence>")
    here.send("<presence/>")
    ping(away, "p")
    ping(here, "p")
    create(alice, "status")
    shows = "<field var='pubsub#show-values'><value>online</value><value>chat</value></field>"
    got = iq(here, f"<pubsub xmlns='{PUBSUB}'><subscribe node='status' jid='bob@localhost'/>"
                   f"<options>{form(shows)}</options></pubsub>", "sc", to=SVC)
    assert values(got, "show-values") == ["chat", "online"]
    publish(alice, "status", "<e xmlns='urn:e'/>", "s1", "p1", to=SVC)
    got = events(ping(here))
    assert len(got) == 1 and 'to="bob@localhost/here"' in got[0]
    assert events(ping(away)) == []
    away.send("<presence><show>chat</show></presence>")
    here.send("<presence><show>dnd</show></presence>")
    ping(away, "p2")
    ping(here, "p2")
    publish(alice, "status", "<e xmlns='urn:e'/>", "s2", "p2", to=SVC)
    assert len(events(ping(away, "p3"))) == 1
    assert events(ping(here, "p3")) == []


def test_collection_subscription_options(server):
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    create(alice, "all", config=field("node_type", "collection"))
    sub(bob, "all", "bob@localhost")
    got = iq(bob, f"<pubsub xmlns='{PUBSUB}'><options node='all' jid='bob@localhost'/></pubsub>",
             "og", "get", to=SVC)
    assert values(got, "subscription_type") == ["items"]
    assert values(got, "subscription_depth") == ["1"]
    assert 'type="result"' in set_options(bob, "all", "bob@localhost",
                                          field("subscription_depth", "all"))
    got = iq(bob, f"<pubsub xmlns='{PUBSUB}'><options node='all' jid='bob@localhost'/></pubsub>",
             "og2", "get", to=SVC)
    assert values(got, "subscription_depth") == ["all"]
    default = iq(bob, f"<pubsub xmlns='{PUBSUB}'><default node='all'/></pubsub>", "df", "get",
                 to=SVC)
    assert values(default, "subscription_type") == ["items"]


def test_pep_has_no_subscription_options(server):
    alice = connect(server, "alice", "a")
    got = iq(alice, f"<pubsub xmlns='{PUBSUB}'><options node='urn:x' jid='alice@localhost'/>"
                    "</pubsub>", "o", "get", to="alice@localhost")
    assert "feature-not-implemented" in got and 'feature="subscription-options"' in got
    default = iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><default/></pubsub>", "d", "get",
                 to="alice@localhost")  # nor collections
    assert 'var="pubsub#node_type"' in default and "<value>collection</value>" not in default
    default = iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><default/></pubsub>", "d2", "get",
                 to=SVC)
    assert "<option><value>collection</value></option>" in default
