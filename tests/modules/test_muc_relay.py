"""XEP-0045 over raw sockets, the occupant-to-occupant parts: IQs relayed to occupants
(vCard requests to the real bare JID), voice requests (§7.13, §8.6), and the 333 removal
of an occupant whose presence bounced."""

from __future__ import annotations

import re

from support import connect
from test_muc import ROOM, codes, create, error_of, field, join, read_msg, say
from test_offline import ping
from test_roster import iq

VERSION = "<query xmlns='jabber:iq:version'/>"
REQUEST = "http://jabber.org/protocol/muc#request"


def read_iq(client, type: str = "get") -> str:
    return client.read_until(rf"<iq[^>]*type=.{type}.[^>]*>.*?</iq>")


def attr(stanza: str, name: str) -> str:
    return re.search(rf'<iq[^>]*\s{name}="([^"]*)"', stanza).group(1)


def users(make_server):
    srv = make_server(users={u: "secret" for u in ("alice", "bob", "carol", "dave")},
                      allow_plain=True)
    return srv, [connect(srv, u) for u in ("alice", "bob", "carol", "dave")]


def test_iq_to_an_occupant_is_relayed_and_answered_back(make_server):
    _, (alice, bob, carol, dave) = users(make_server)
    create(alice)
    join(bob, "bobby")
    join(carol, "cee")
    bob.send(f"<iq type='get' id='v1' to='{ROOM}/cee'>{VERSION}</iq>")
    got = read_iq(carol)
    assert attr(got, "from") == f"{ROOM}/bobby" and attr(got, "to") == "carol@localhost/r"
    relay_id = attr(got, "id")
    assert relay_id != "v1" and "jabber:iq:version" in got
    # someone else answering under the relay id is ignored
    dave.send(f"<iq type='result' id='{relay_id}' to='{ROOM}/bobby'/>")
    carol.send(f"<iq type='result' id='{relay_id}' to='{ROOM}/bobby'>"
               "<query xmlns='jabber:iq:version'><name>cee-client</name></query></iq>")
    got = bob.read_until(r"<iq[^>]*id=.v1.[^>]*>.*?</iq>")
    assert 'type="result"' in got and f'from="{ROOM}/cee"' in got and "cee-client" in got
    # an error answer comes back as well
    bob.send(f"<iq type='get' id='v2' to='{ROOM}/cee'>{VERSION}</iq>")
    relay_id = attr(read_iq(carol), "id")
    carol.send(f"<iq type='error' id='{relay_id}' to='{ROOM}/bobby'><error type='cancel'>"
               "<feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
               "</error></iq>")
    got = bob.read_until(r"<iq[^>]*id=.v2.[^>]*>.*?</iq>")
    assert error_of(got) == "feature-not-implemented" and f'from="{ROOM}/cee"' in got
    # the same id once more: nothing pending any more, nothing passed on
    carol.send(f"<iq type='result' id='{relay_id}' to='{ROOM}/bobby'/>")
    assert "v2" not in ping(bob, "b1")
    # not an occupant: not-acceptable; no such nick: item-not-found
    assert error_of(iq(dave, VERSION, "v3", "get", f"{ROOM}/cee")) == "not-acceptable"
    assert error_of(iq(bob, VERSION, "v4", "get", f"{ROOM}/nobody")) == "item-not-found"
    # a ping to another occupant is relayed too; a self-ping is answered by the room
    assert 'type="result"' in iq(bob, "<ping xmlns='urn:xmpp:ping'/>", "p1", "get",
                                 f"{ROOM}/bobby")
    bob.send(f"<iq type='get' id='p2' to='{ROOM}/cee'><ping xmlns='urn:xmpp:ping'/></iq>")
    got = read_iq(carol)
    assert "urn:xmpp:ping" in got and attr(got, "from") == f"{ROOM}/bobby"
    assert error_of(iq(dave, "<ping xmlns='urn:xmpp:ping'/>", "p3", "get",
                       f"{ROOM}/dave")) == "not-acceptable"


def test_vcard_request_to_an_occupant_goes_to_its_bare_jid(make_server):
    _, (alice, bob, carol, _dave) = users(make_server)
    assert 'type="result"' in iq(bob, "<vCard xmlns='vcard-temp'><FN>Bob Builder</FN></vCard>",
                                 "vs")
    create(alice)
    join(bob, "bobby")
    join(carol, "cee")
    got = iq(carol, "<vCard xmlns='vcard-temp'/>", "vc", "get", f"{ROOM}/bobby")
    assert 'type="result"' in got and "Bob Builder" in got and f'from="{ROOM}/bobby"' in got
    assert "bob@localhost" not in got  # the room stays semi-anonymous


def test_voice_request_and_approval(make_server):
    _, (alice, bob, carol, _dave) = users(make_server)
    create(alice, config=field("moderatedroom", "1"))
    got = join(bob, "bobby")
    assert 'role="visitor"' in got
    say(bob, "mute")
    assert error_of(bob.read_until("type=.error.*?</message>")) == "forbidden"
    bob.send(f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
             f"<field var='FORM_TYPE'><value>{REQUEST}</value></field>"
             "<field var='muc#role' type='list-single'><value>participant</value></field>"
             "</x></message>")
    form = alice.read_until(r"<message[^>]*>(?:(?!</message>).)*muc#request_allow.*?</message>")
    assert "Voice request" in form and "<value>bobby</value>" in form
    assert "<value>bob@localhost/r</value>" in form
    # a participant cannot approve; the moderator can
    join(carol, "cee")
    carol.send(f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
               f"<field var='FORM_TYPE'><value>{REQUEST}</value></field>"
               "<field var='muc#roomnick'><value>bobby</value></field>"
               "<field var='muc#request_allow'><value>true</value></field></x></message>")
    assert error_of(carol.read_until("type=.error.*?</message>")) == "forbidden"
    alice.send(f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
               f"<field var='FORM_TYPE'><value>{REQUEST}</value></field>"
               "<field var='muc#role'><value>participant</value></field>"
               "<field var='muc#roomnick'><value>bobby</value></field>"
               "<field var='muc#request_allow'><value>true</value></field></x></message>")
    got = bob.read_until(rf"<presence[^>]*from=.{ROOM}/bobby.*?</presence>")
    assert 'role="participant"' in got and "110" in codes(got)
    say(bob, "voiced")
    assert "voiced" in read_msg(alice, "voiced")


def test_a_bounced_presence_removes_the_occupant_with_333(make_server):
    _, (alice, bob, _carol, _dave) = users(make_server)
    create(alice)
    join(bob, "bobby")
    bob.send(f"<presence to='{ROOM}/bobby' type='error'><error type='cancel'>"
             "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
             "</error></presence>")
    got = alice.read_until(rf"<presence[^>]*from=.{ROOM}/bobby.[^>]*unavailable.*?</presence>")
    assert {"307", "333"} <= codes(got) and 'role="none"' in got
    assert 'type="result"' in iq(alice, "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                                 "it", "get", ROOM) and "bobby" not in ping(alice, "b")
