"""XEP-0357 push notifications end to end: a raw client enables push, an external component
(XEP-0114) plays the app server and receives the ``<publish/>`` IQs; offline messages and
stanzas for a detached stream-management session wake it, the app server's error removes
the registration, and every refusal of ``<enable/>`` is checked."""

from __future__ import annotations

import re

import pytest
from support import RawClient, RawComponent, component_port
from test_sm import SM, detached, say, wait_for

from xmppd.core.config import Listener
from xmppd.jid import JID

PUSH = "urn:xmpp:push:0"
APP = "push.localhost"
BOB = JID("bob@localhost")
SECRET_FORM = ("<x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options"
               "</value></field><field var='secret'><value>s3cr3t-token</value></field></x>")


def push_server(make_server, **push_options):
    return make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True,
                       components={APP: "appsecret"},
                       component_listeners=(Listener("127.0.0.1", 0),),
                       modules_options={"push": push_options,
                                        "sm": {"request_every": 0, "request_after_s": 0}})


def app_server(server) -> RawComponent:
    app = RawComponent(component_port(server))
    app.connect(APP, "appsecret")
    return app


def enable(client: RawClient, node: str = "device-1", form: str = SECRET_FORM,
           jid: str = APP, id: str = "e1") -> str:
    client.send(f"<iq type='set' id='{id}'><enable xmlns='{PUSH}' jid='{jid}' node='{node}'>"
                f"{form}</enable></iq>")
    return client.read_until(f"<iq[^>]*id=.{id}.*?(/>|</iq>)")


def registrations(server, user: str = "bob") -> dict:
    store = server.server.services["push"].store
    return server.call(store.items(f"{user}@localhost"))


def next_push(app: RawComponent) -> str:
    return app.read_until(r"<iq [^>]*type=.set.*?</iq>")


def answer(app: RawComponent, push: str, error: str | None = None) -> None:
    ident = re.search(r"id=.([^'\"]+)", push).group(1)
    if error is None:
        app.send(f"<iq type='result' from='{APP}' to='bob@localhost' id='{ident}'/>")
    else:
        app.send(f"<iq type='error' from='{APP}' to='bob@localhost' id='{ident}'>"
                 f"<error type='{error}'><item-not-found "
                 f"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")


def fields(form: str) -> dict[str, str]:
    return dict(re.findall(r"<field var=.([^'\"]+).><value>([^<]*)</value></field>", form))


def summary(push: str) -> dict[str, str]:
    """The notification's summary form (what precedes the publish-options)."""
    return fields(push.partition("<publish-options>")[0])


def test_offline_message_wakes_the_app_server(make_server):
    server = push_server(make_server)
    app = app_server(server)
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    assert "type=\"result\"" in enable(bob)
    bob.close()
    wait_for(lambda: not server.server.router.sessions.resources(BOB))
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    say(alice, "bob@localhost", "are you there?")
    push = next_push(app)
    assert "from=\"bob@localhost\"" in push and f"to=\"{APP}\"" in push
    assert re.search(r"<publish node=.device-1.><item><notification xmlns=.urn:xmpp:push:0.>",
                     push)
    got = summary(push)
    assert got["FORM_TYPE"] == "urn:xmpp:push:summary"
    assert got["message-count"] == "1"
    assert "last-message-body" not in got and "last-message-sender" not in got  # private
    # the publish-options the client gave
    assert fields(push.partition("<publish-options>")[2])["secret"] == "s3cr3t-token"
    answer(app, push)
    say(alice, "bob@localhost", "hello?")
    assert summary(next_push(app))["message-count"] == "2"


def test_body_and_sender_only_when_the_operator_allows(make_server):
    server = push_server(make_server, include_body=True, include_sender=True)
    app = app_server(server)
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    enable(bob)
    bob.close()
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    wait_for(lambda: not server.server.router.sessions.resources(BOB))
    # a chat state alone wakes nobody (or its push would come first, without a body)
    alice.send("<message to='bob@localhost' type='chat'>"
               "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    say(alice, "bob@localhost", "dinner at 8")
    got = summary(next_push(app))
    assert got["last-message-body"] == "dinner at 8"
    assert got["last-message-sender"] == "alice@localhost/r"


def test_detached_stream_management_session_wakes_its_app(make_server):
    server = push_server(make_server)
    app = app_server(server)
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    bob.send(f"<enable xmlns='{SM}' resume='true'/>")
    bob.read_until("<enabled[^>]*/>")
    enable(bob)
    bob.send("<presence/>")
    bob.read_until("<presence[^>]*/>")
    bob.close()  # the TCP connection dies: the session waits for a resumption
    wait_for(lambda: len(detached(server)) == 1)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    say(alice, "bob@localhost/phone", "wake up")
    push = next_push(app)
    assert summary(push)["message-count"] == "1"
    answer(app, push)


def test_app_server_error_removes_the_registration(make_server):
    server = push_server(make_server)
    app = app_server(server)
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    enable(bob, node="gone-device")
    enable(bob, node="other-device", id="e2")
    bob.close()
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    wait_for(lambda: not server.server.router.sessions.resources(BOB))
    say(alice, "bob@localhost", "one")
    first, second = next_push(app), next_push(app)
    gone = first if "gone-device" in first else second
    other = second if gone is first else first
    answer(app, gone, error="cancel")  # "this device is unregistered"
    answer(app, other, error="wait")  # a passing problem: kept
    wait_for(lambda: len(registrations(server)) == 1)
    assert [r["node"] for r in registrations(server).values()] == ["other-device"]


def test_disable_removes_one_node_or_the_whole_service(make_server):
    server = push_server(make_server)
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    enable(bob, node="a", id="e1")
    enable(bob, node="b", id="e2")
    enable(bob, node="c", id="e3", jid="other.example")
    assert len(registrations(server)) == 3
    bob.send(f"<iq type='set' id='d1'><disable xmlns='{PUSH}' jid='{APP}' node='a'/></iq>")
    assert 'type="result"' in bob.read_until("id=.d1.*?(/>|</iq>)")
    assert sorted(r["node"] for r in registrations(server).values()) == ["b", "c"]
    bob.send(f"<iq type='set' id='d2'><disable xmlns='{PUSH}' jid='{APP}'/></iq>")
    bob.read_until("id=.d2.*?(/>|</iq>)")
    assert [r["node"] for r in registrations(server).values()] == ["c"]


@pytest.mark.parametrize(("payload", "condition"), [
    (f"<enable xmlns='{PUSH}' jid='{APP}'/>", "bad-request"),  # no node
    (f"<enable xmlns='{PUSH}' jid='a@@b' node='n'/>", "jid-malformed"),
    (f"<enable xmlns='{PUSH}' jid='{APP}' node='n'><x xmlns='jabber:x:data' type='submit'>"
     f"<field var='FORM_TYPE'><value>urn:example</value></field></x></enable>", "bad-request"),
])
def test_enable_refusals(make_server, payload, condition):
    server = push_server(make_server)
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    bob.send(f"<iq type='set' id='x1'>{payload}</iq>")
    assert f"<{condition} " in bob.read_until("</iq>")
    assert registrations(server) == {}


def test_enable_limits_and_only_for_ones_own_account(make_server):
    server = push_server(make_server, max_registrations=2)
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    enable(bob, node="1", id="a")
    enable(bob, node="2", id="b")
    assert "<resource-constraint " in enable(bob, node="3", id="c")
    assert 'type="result"' in enable(bob, node="2", id="d")  # the same node again: updated
    bob.send(f"<iq type='set' id='f' to='alice@localhost'><enable xmlns='{PUSH}' jid='{APP}' "
             f"node='x'/></iq>")
    assert "<forbidden " in bob.read_until("</iq>")
    assert registrations(server, "alice") == {}
    bob.send("<iq type='get' id='disco' to='bob@localhost'>"
             "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert PUSH in bob.read_until("</iq>")


def test_what_is_important():
    from xmppd.modules.push import important
    from xmppd.xml.stanza import decode_stanza

    def msg(xml: str) -> bool:
        return important(decode_stanza(xml.encode()))

    assert msg("<message type='chat'><body>hi</body></message>")
    assert msg("<message type='groupchat'><body>hi all</body></message>")
    assert msg("<message><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>")
    assert msg("<message><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>")
    assert msg("<message><x xmlns='jabber:x:conference' jid='r@muc.example'/></message>")
    assert msg("<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:"
               "forward:0'><message type='chat'><body>x</body></message></forwarded>"
               "</received></message>")
    assert not msg("<message><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:"
                   "forward:0'><message type='chat'><body>x</body></message></forwarded>"
                   "</sent></message>")
    assert not msg("<message type='chat'><active xmlns='http://jabber.org/protocol/"
                   "chatstates'/></message>")
    assert not msg("<message><received xmlns='urn:xmpp:receipts' id='m1'/></message>")
    assert not msg("<message type='groupchat'><subject>topic</subject></message>")
    assert not msg("<message type='groupchat'><x xmlns='http://jabber.org/protocol/muc#user'/>"
                   "</message>")
    assert not msg("<message type='headline'><body>news</body></message>")
    assert not msg("<message type='error'><body>x</body></message>")
    assert not msg("<presence/>")
