"""XEP-0045 over raw sockets: registering with a room (§7.10), reserved nicks (joins and
nick changes to another user's nick refused, §7.12 ``x-roomuser-item``), registration in
members-only rooms, stored registrations across a restart, and nick changes of a user
joined from several resources."""

from __future__ import annotations

import re

from support import connect
from test_muc import ADMIN, ROOM, codes, create, error_of, field, join, read_msg, say
from test_offline import ping
from test_roster import iq

REG = "jabber:iq:register"
INFO = "http://jabber.org/protocol/disco#info"
GET = f"<query xmlns='{REG}'/>"
ROOMUSER = f"<query xmlns='{INFO}' node='x-roomuser-item'/>"


def register(client, nick: str, id: str = "reg", room: str = ROOM,
             form_type: str = "http://jabber.org/protocol/muc#register") -> str:
    body = (f"<query xmlns='{REG}'><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE'><value>{form_type}</value></field>"
            f"<field var='muc#register_roomnick'><value>{nick}</value></field>"
            "</x></query>")
    return iq(client, body, id, to=room)


def members(owner, room: str = ROOM) -> str:
    return iq(owner, f"<query xmlns='{ADMIN}'><item affiliation='member'/></query>", "ml",
              "get", room)


def test_register_form_reserved_nick_and_lookup(server):
    alice, bob, carol = (connect(server, u) for u in ("alice", "bob", "carol"))
    create(alice)
    info = iq(bob, f"<query xmlns='{INFO}'/>", "di", "get", ROOM)
    assert f'var="{REG}"' in info
    form = iq(bob, GET, "g1", "get", ROOM)
    assert 'type="result"' in form and "http://jabber.org/protocol/muc#register" in form
    assert re.search(r'var="muc#register_roomnick"[^>]*>\s*<required', form)
    assert "<registered" not in form
    empty = iq(bob, ROOMUSER, "ru1", "get", ROOM)
    assert 'type="result"' in empty and "<identity" not in empty and "x-roomuser-item" in empty
    # bad forms
    assert error_of(iq(bob, GET, "b1", to=ROOM)) == "bad-request"  # no form
    assert error_of(register(bob, "x", "b2", form_type="urn:other")) == "bad-request"
    assert error_of(register(bob, "  ", "b3")) == "not-acceptable"  # no nick
    # registered: a member with a reserved nick
    assert 'type="result"' in register(bob, "bobby")
    assert re.search(r'affiliation="member"[^>]*jid="bob@localhost"[^>]*nick="bobby"',
                     members(alice))
    got = iq(bob, GET, "g2", "get", ROOM)
    assert "<registered/>" in got and "<username>bobby</username>" in got
    got = iq(bob, ROOMUSER, "ru2", "get", ROOM)
    assert re.search(r'<identity[^>]*name="bobby"', got) and 'category="conference"' in got
    # the nick is bob's: no one else registers, joins or changes to it
    assert error_of(register(carol, "bobby", "c1")) == "conflict"
    assert error_of(join(carol, "bobby")) == "conflict"
    join(carol, "carol")
    carol.send(f"<presence to='{ROOM}/bobby'/>")
    assert error_of(carol.read_until(r"type=.error.[^>]*>.*?</presence>")) == "conflict"
    # a nick in use by another occupant cannot be registered either
    assert error_of(register(bob, "carol", "c2")) == "conflict"
    # bob joins under it as a member; carol registers from inside the room: she becomes a
    # member, which the room announces
    got = join(bob, "bobby")
    assert "110" in codes(got) and 'affiliation="member"' in got
    assert 'type="result"' in register(carol, "carol", "c3")
    got = alice.read_until(rf"from=.{ROOM}/carol.[^>]*>(?:(?!</presence>).)*?"
                           r'affiliation="member".*?</presence>')
    assert 'affiliation="member"' in got
    # re-registering replaces the reservation; <remove/> drops it
    bob.send(f"<presence to='{ROOM}/bobby' type='unavailable'/>")
    bob.read_until(r"type=.unavailable.[^>]*>.*?</presence>")
    assert 'type="result"' in register(bob, "bob2", "r1")
    assert 'name="bob2"' in iq(bob, ROOMUSER, "ru4", "get", ROOM)
    assert error_of(join(connect(server, "alice", "x"), "bobby")) is None
    assert 'type="result"' in iq(bob, f"<query xmlns='{REG}'><remove/></query>", "rm", to=ROOM)
    assert "<identity" not in iq(bob, ROOMUSER, "ru3", "get", ROOM)
    assert error_of(iq(bob, f"<query xmlns='{REG}'><remove/></query>", "rm2",
                       to=ROOM)) == "item-not-found"


def test_ban_drops_the_registration_and_members_only_rooms(server):
    alice, bob, carol = (connect(server, u) for u in ("alice", "bob", "carol"))
    create(alice)
    assert 'type="result"' in register(carol, "cee")
    ban = f"<query xmlns='{ADMIN}'><item affiliation='outcast' jid='carol@localhost'/></query>"
    assert 'type="result"' in iq(alice, ban, "ban", to=ROOM)
    assert error_of(iq(carol, GET, "g", "get", ROOM)) == "forbidden"
    assert error_of(register(carol, "cee", "c2")) == "forbidden"
    assert "110" in codes(join(bob, "cee"))  # the banned user's nick is free again
    # members-only: registration only for those on the member list
    club = "club@conference.localhost"
    owner = connect(server, "alice", "club")  # not in the first room
    create(owner, room=club, config=field("membersonly", "1"))
    assert error_of(iq(bob, GET, "g2", "get", club)) == "not-allowed"
    assert error_of(register(bob, "bob", "b1", room=club)) == "not-allowed"
    member = f"<query xmlns='{ADMIN}'><item affiliation='member' jid='bob@localhost'/></query>"
    assert 'type="result"' in iq(owner, member, "m", to=club)
    assert 'type="result"' in register(bob, "bob", "b2", room=club)
    # an owner registering stays the owner
    assert 'type="result"' in register(owner, "boss", "a1", room=club)
    assert 'jid="alice@localhost"' not in members(owner, club)
    got = iq(owner, f"<query xmlns='{INFO}' node='x-roomuser-item'/>", "ru", "get", club)
    assert 'name="boss"' in got
    # an admin granting membership with a nick reserves it (§9.3), unless someone has it
    grant = ("<query xmlns='" + ADMIN + "'><item affiliation='member' jid='carol@localhost' "
             "nick='{}'/></query>")
    assert error_of(iq(owner, grant.format("bob"), "gr1", to=club)) == "conflict"
    assert 'type="result"' in iq(owner, grant.format("cee"), "gr2", to=club)
    assert 'jid="carol@localhost" nick="cee"' in members(owner, club)
    assert error_of(register(bob, "cee", "b3", room=club)) == "conflict"
    assert 'name="cee"' in iq(carol, ROOMUSER, "ru2", "get", club)
    # a member dropped to none loses the reservation
    none = f"<query xmlns='{ADMIN}'><item affiliation='none' jid='bob@localhost'/></query>"
    assert 'type="result"' in iq(owner, none, "n", to=club)
    assert 'type="result"' in iq(owner, member, "m2", to=club)
    assert "<registered" not in iq(bob, GET, "g3", "get", club)


def test_registration_survives_restart(make_server, tmp_path):
    data = tmp_path / "persist"
    srv = make_server(users={"alice": "secret", "bob": "secret", "carol": "secret"},
                      data_dir=data, allow_plain=True)
    alice, bob = connect(srv, "alice"), connect(srv, "bob")
    create(alice, config=field("persistentroom", "1"))
    assert 'type="result"' in register(bob, "bobby")
    ping(bob)
    srv.stop()
    srv2 = make_server(data_dir=data, allow_plain=True)
    bob, carol = connect(srv2, "bob"), connect(srv2, "carol")
    assert error_of(join(carol, "bobby")) == "conflict"
    assert 'name="bobby"' in iq(bob, ROOMUSER, "ru", "get", ROOM)
    assert "<username>bobby</username>" in iq(bob, GET, "g", "get", ROOM)
    got = join(bob, "bobby")
    assert "110" in codes(got) and 'affiliation="member"' in got


def test_nick_change_moves_every_resource(server):
    alice, bob = connect(server, "alice"), connect(server, "bob")
    bob2 = connect(server, "bob", "r2")
    create(alice)
    join(bob, "bob")
    join(bob2, "bob")
    bob.send(f"<presence to='{ROOM}/robert'/>")
    for c in (bob, bob2):
        got = c.read_until(f"from=.{ROOM}/robert.[^>]*>.*?</presence>")
        assert {"303", "110"} <= codes(got) and 'nick="robert"' in got
    got = alice.read_until(f"from=.{ROOM}/robert.[^>]*>.*?</presence>")
    assert "303" in codes(got) and got.count('nick="robert"') == 1
    say(bob2, "from-r2")
    assert f'from="{ROOM}/robert"' in read_msg(alice, "from-r2")
    roles = iq(alice, f"<query xmlns='{ADMIN}'><item role='participant'/></query>", "r", "get",
               ROOM)
    assert roles.count('nick="robert"') == 1 and 'nick="bob"' not in roles
