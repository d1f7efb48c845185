"""XEP-0045 Multi-User Chat over raw sockets: discovery, creation (instant, reserved,
locked), joins with every status code and error condition, messages, subject, private
messages, moderation, invitations, destruction, persistence, and the limits."""

from __future__ import annotations

import asyncio
import re

import pytest
from support import connect
from test_offline import ping
from test_roster import iq

MUC = "http://jabber.org/protocol/muc"
USER = MUC + "#user"
OWNER = MUC + "#owner"
ADMIN = MUC + "#admin"
ROOM = "room@conference.localhost"
INSTANT = f"<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>"


def codes(text: str) -> set[str]:
    return set(re.findall(r"<status code=.(\d+).", text))


def join(client, nick: str, room: str = ROOM, extra: str = "", until: str = "</subject>|<subject/>") -> str:
    """Join with MUC support; returns everything up to the subject (or the error)."""
    client.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{extra}</x></presence>")
    return client.read_until(until + r"|type=.error.[^>]*>.*?</presence>")


def create(client, nick: str = "owner", room: str = ROOM, config: str | None = None) -> str:
    """Create a room (reserved if ``config`` is a form body, else instant) and unlock it."""
    client.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
    got = client.read_until(r"<presence[^>]*>.*?</presence>")
    assert "201" in codes(got), got
    if config is None:
        body = INSTANT
    else:
        body = (f"<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>"
                f"<field var='FORM_TYPE'><value>{MUC}#roomconfig</value></field>{config}"
                "</x></query>")
    reply = iq(client, body, "cfg", to=room)
    assert "type=\"result\"" in reply, reply
    return got


def field(var: str, value: str) -> str:
    return f"<field var='muc#roomconfig_{var}'><value>{value}</value></field>"


def say(client, text: str, room: str = ROOM) -> None:
    client.send(f"<message to='{room}' type='groupchat' id='m-{text}'><body>{text}</body></message>")


def read_msg(client, word: str) -> str:
    """The next message with ``word`` in its text (not in an attribute: a random stanza or
    occupant id may contain it), alone.  A ``word`` with markup is matched as it is."""
    text = word if word.startswith("<") else f">[^<]*{re.escape(word)}"
    got = client.read_until(rf"<message[^>]*>(?:(?!</message>).)*?{text}.*?</message>")
    start = got.rindex("<message", 0, got.rindex(word))
    return got[start:]


def occupant_id(message: str) -> str:
    return re.search(r'occupant-id xmlns="urn:xmpp:occupant-id:0" id="([^"]+)"', message).group(1)


def error_of(text: str) -> str | None:
    m = re.search(r"<error[^>]*><([a-z-]+) xmlns=.urn:ietf:params:xml:ns:xmpp-stanzas", text)
    return m.group(1) if m else None


def test_discovery(server):
    alice = connect(server, "alice")
    items = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#items'/>", "i1", "get",
               "localhost")
    assert "conference.localhost" in items
    info = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "i2", "get",
              "conference.localhost")
    assert 'category="conference"' in info and 'type="text"' in info
    for feature in (MUC, "urn:xmpp:mam:2", "urn:xmpp:occupant-id:0", "urn:xmpp:sid:0",
                    "urn:xmpp:message-moderate:1"):
        assert f'var="{feature}"' in info
    create(alice, config=field("roomname", "The Room") + field("persistentroom", "1"))
    items = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#items'/>", "i3", "get",
               "conference.localhost")
    assert f'jid="{ROOM}"' in items and "The Room" in items
    info = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "i4", "get", ROOM)
    for feature in ("muc_persistent", "muc_public", "muc_open", "muc_unsecured",
                    "muc_unmoderated", "muc_semianonymous", "urn:xmpp:mam:2"):
        assert f'var="{feature}"' in info, feature
    assert "muc#roominfo" in info and "muc#roominfo_occupants" in info
    missing = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "i5", "get",
                 "nope@conference.localhost")
    assert error_of(missing) == "item-not-found"


def test_locked_room_instant_room_and_join_status_codes(server):
    alice, bob, carol = (connect(server, u) for u in ("alice", "bob", "carol"))
    alice.send(f"<presence to='{ROOM}/owner'><x xmlns='{MUC}'/></presence>")
    got = alice.read_until(r"<presence[^>]*>.*?</presence>")
    assert {"110", "201", "170"} <= codes(got) and 'affiliation="owner"' in got
    assert 'role="moderator"' in got
    # locked: nobody else may enter until the owner accepts the instant room
    got = join(bob, "bob")
    assert error_of(got) == "item-not-found" and "type=\"error\"" in got
    say(alice, "early")
    assert error_of(alice.read_until("type=.error.*?</message>")) == "not-allowed"  # not yet
    assert "type=\"result\"" in iq(alice, INSTANT, "inst", to=ROOM)
    got = join(bob, "bob")
    # the owner's presence first, then bob's own presence (110, last), then the subject
    assert got.index(f"from=\"{ROOM}/owner\"") < got.index(f"from=\"{ROOM}/bob\"")
    selfp = re.findall(r"<presence[^>]*>.*?</presence>", got)[-1]
    assert "110" in codes(selfp) and "201" not in codes(selfp)
    assert 'jid="' not in got.split(f"from=\"{ROOM}/bob\"")[0]  # semi-anonymous: no real JIDs
    assert "<subject/>" in got
    assert "occupant-id" in selfp
    assert f"from=\"{ROOM}/bob\"" in alice.read_until(f"from=.{ROOM}/bob.[^>]*>.*?</presence>")
    # the moderator sees real JIDs
    # nick conflict
    assert error_of(join(carol, "bob")) == "conflict"
    # nick modified by the service: 210
    got = join(carol, " carol ")
    assert "210" in codes(got) and f"{ROOM}/carol" in got
    # groupchat: everyone gets it with from=room/nick, a stanza-id by the room, an occupant-id
    say(bob, "hello")
    for c in (alice, bob, carol):
        msg = read_msg(c, "hello")
        assert f"from=\"{ROOM}/bob\"" in msg and 'type="groupchat"' in msg
        assert f'<stanza-id xmlns="urn:xmpp:sid:0" by="{ROOM}"' in msg
        assert "urn:xmpp:occupant-id:0" in msg
    # a non-occupant may not talk
    dave = connect(server, "alice", "other")
    say(dave, "intrude")
    assert error_of(dave.read_until("</message>")) == "not-acceptable"
    # nick change: 303 then the new nick; leave: unavailable with 110 to self
    bob.send(f"<presence to='{ROOM}/robert'/>")
    got = bob.read_until(f"from=.{ROOM}/robert.[^>]*>.*?</presence>")
    assert "303" in codes(got) and 'nick="robert"' in got
    got = carol.read_until(f"from=.{ROOM}/robert.[^>]*>.*?</presence>")
    assert "303" in codes(got)
    bob.send(f"<presence to='{ROOM}/robert' type='unavailable'/>")
    got = bob.read_until(r"type=.unavailable.[^>]*>.*?</presence>")
    assert "110" in codes(got)
    assert "unavailable" in carol.read_until(r"type=.unavailable.[^>]*>.*?</presence>")


def test_self_ping_and_occupant_id_stability(server):
    alice, bob = connect(server, "alice"), connect(server, "bob")
    create(alice)
    join(bob, "bob")
    ping_xml = "<ping xmlns='urn:xmpp:ping'/>"
    assert 'type="result"' in iq(bob, ping_xml, "sp1", "get", f"{ROOM}/bob")
    # a ping to another occupant is an IQ to that occupant: relayed (test_muc_relay.py)
    bob.send(f"<iq type='get' id='sp2' to='{ROOM}/owner'>{ping_xml}</iq>")
    relayed = alice.read_until(r"<iq[^>]*type=.get.[^>]*>.*?</iq>")
    assert f'from="{ROOM}/bob"' in relayed and "urn:xmpp:ping" in relayed
    assert error_of(iq(connect(server, "carol"), ping_xml, "sp3", "get",
                       f"{ROOM}/bob")) == "not-acceptable"
    say(bob, "one")
    first = occupant_id(read_msg(bob, "one"))
    bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    bob.read_until(r"type=.unavailable.[^>]*>.*?</presence>")
    join(bob, "bobby")
    say(bob, "two")
    second = occupant_id(read_msg(bob, "two"))
    assert first == second  # same user, same room, another nick: the same id
    say(alice, "three")
    other = occupant_id(read_msg(alice, "three"))
    assert other != first


def test_join_errors_password_members_only_ban_full(server):
    alice, bob, carol = (connect(server, u) for u in ("alice", "bob", "carol"))
    create(alice, config=field("passwordprotectedroom", "1") + field("roomsecret", "pw")
           + field("maxusers", "2"))
    assert error_of(join(bob, "bob")) == "not-authorized"
    assert error_of(join(bob, "bob", extra="<password>no</password>")) == "not-authorized"
    assert "110" in codes(join(bob, "bob", extra="<password>pw</password>"))
    assert error_of(join(carol, "carol", extra="<password>pw</password>")) == \
        "service-unavailable"  # full (maxusers 2)
    # a password-protected room without a secret is refused
    bad = (f"<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>"
           + field("passwordprotectedroom", "1") + field("roomsecret", "") + "</x></query>")
    assert error_of(iq(alice, bad, "bad", to=ROOM)) == "not-acceptable"
    # members only; ban
    room2 = "club@conference.localhost"
    create(alice, room=room2, config=field("membersonly", "1"))
    assert error_of(join(carol, "carol", room=room2)) == "registration-required"
    member = f"<query xmlns='{ADMIN}'><item affiliation='member' jid='carol@localhost'/></query>"
    assert 'type="result"' in iq(alice, member, "mem", to=room2)
    assert "110" in codes(join(carol, "carol", room=room2))
    ban = (f"<query xmlns='{ADMIN}'><item affiliation='outcast' jid='carol@localhost'>"
           "<reason>spam</reason></item></query>")
    assert 'type="result"' in iq(alice, ban, "ban", to=room2)
    got = carol.read_until(r"type=.unavailable.[^>]*>.*?</presence>")
    assert {"301", "110"} <= codes(got) and "<reason>spam</reason>" in got
    assert error_of(join(carol, "carol", room=room2)) == "forbidden"
    lst = iq(alice, f"<query xmlns='{ADMIN}'><item affiliation='outcast'/></query>", "l", "get",
             room2)
    assert 'jid="carol@localhost"' in lst
    # a member may not see or change affiliations
    assert error_of(iq(bob, lst and f"<query xmlns='{ADMIN}'><item affiliation='owner'/></query>",
                       "l2", "get", ROOM)) == "forbidden"
    # the last owner cannot step down
    demote = f"<query xmlns='{ADMIN}'><item affiliation='member' jid='alice@localhost'/></query>"
    assert error_of(iq(alice, demote, "d", to=room2)) == "conflict"
    # no nick
    alice.send(f"<presence to='{room2}'><x xmlns='{MUC}'/></presence>")
    assert error_of(alice.read_until(r"type=.error.[^>]*>.*?</presence>")) == "jid-malformed"


def test_subject_private_messages_kick_voice_invite_destroy(server):
    alice, bob, carol = (connect(server, u) for u in ("alice", "bob", "carol"))
    create(alice, config=field("whois", "anyone") + field("allowpm", "anyone"))
    got = join(bob, "bob")
    assert "100" in codes(got) and 'jid="alice@localhost/r"' in got  # non-anonymous
    join(carol, "carol")
    # subject: occupants may not change it by default, the moderator may
    bob.send(f"<message to='{ROOM}' type='groupchat'><subject>mine</subject></message>")
    assert error_of(bob.read_until("type=.error.*?</message>")) == "forbidden"
    alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Topic</subject></message>")
    assert f"from=\"{ROOM}/owner\"" in read_msg(carol, "<subject>Topic")
    # private message from room/nick with <x/>; to a missing nick: item-not-found
    bob.send(f"<message to='{ROOM}/carol' type='chat'><body>psst</body></message>")
    pm = read_msg(carol, "psst")
    assert f"from=\"{ROOM}/bob\"" in pm and USER in pm
    bob.send(f"<message to='{ROOM}/nobody' type='chat'><body>x</body></message>")
    assert error_of(bob.read_until("type=.error.*?</message>")) == "item-not-found"
    bob.send(f"<message to='{ROOM}/carol' type='groupchat'><body>x</body></message>")
    assert error_of(bob.read_until("type=.error.*?</message>")) == "bad-request"
    # moderation: voice revoked -> visitor may not talk; kick -> 307
    mute = f"<query xmlns='{ADMIN}'><item nick='bob' role='visitor'/></query>"
    assert 'type="result"' in iq(alice, mute, "mute", to=ROOM)
    assert 'role="visitor"' in bob.read_until(f"from=.{ROOM}/bob.[^>]*>.*?</presence>")
    say(bob, "muted")
    assert error_of(bob.read_until("type=.error.*?</message>")) == "forbidden"
    kick_owner = f"<query xmlns='{ADMIN}'><item nick='owner' role='none'/></query>"
    assert error_of(iq(carol, kick_owner, "k0", to=ROOM)) == "forbidden"
    kick = f"<query xmlns='{ADMIN}'><item nick='bob' role='none'><reason>bye</reason></item></query>"
    assert 'type="result"' in iq(alice, kick, "kick", to=ROOM)
    got = bob.read_until(r"type=.unavailable.[^>]*>.*?</presence>")
    assert {"307", "110"} <= codes(got) and "<actor nick=\"owner\"/>" in got
    assert "307" in codes(carol.read_until(r"type=.unavailable.[^>]*>.*?</presence>"))
    roles = iq(alice, f"<query xmlns='{ADMIN}'><item role='participant'/></query>", "r", "get",
               ROOM)
    assert 'nick="carol"' in roles and 'nick="bob"' not in roles
    # mediated invitation: the invitee gets it from the room
    carol.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite to='bob@localhost'>"
               "<reason>come</reason></invite></x></message>")
    assert error_of(carol.read_until("type=.error.*?</message>")) == "forbidden"
    alice.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite to='bob@localhost/r'>"
               "<reason>come back</reason></invite></x></message>")
    inv = read_msg(bob, "come back")
    assert f"from=\"{ROOM}\"" in inv and 'invite from="alice@localhost"' in inv
    # XEP-0249 direct invitations pass through untouched
    alice.send("<message to='bob@localhost/r'><x xmlns='jabber:x:conference' "
               f"jid='{ROOM}' reason='direct'/></message>")
    got = bob.read_until(r"<message[^>]*>(?:(?!</message>).)*?jabber:x:conference.*?</message>")
    assert re.search("reason=.direct.", got)  # the serializer may change the quotes
    # destruction with an alternate venue
    destroy = (f"<query xmlns='{OWNER}'><destroy jid='other@conference.localhost'>"
               "<reason>moved</reason></destroy></query>")
    assert error_of(iq(carol, destroy, "d0", to=ROOM)) == "forbidden"
    assert 'type="result"' in iq(alice, destroy, "d1", to=ROOM)
    got = carol.read_until(r"</destroy>")
    assert 'jid="other@conference.localhost"' in got and "<reason>moved</reason>" in got
    assert error_of(iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "gone",
                       "get", ROOM)) == "item-not-found"


def test_history_on_join_with_limits(server):
    alice, bob = connect(server, "alice"), connect(server, "bob")
    create(alice)
    for n in range(5):
        say(alice, f"h{n}")
    read_msg(alice, "h4")
    got = join(bob, "bob")
    assert re.findall(r"<body>(h\d)</body>", got) == ["h0", "h1", "h2", "h3", "h4"]
    assert f'<delay xmlns="urn:xmpp:delay" from="{ROOM}" stamp="' in got
    assert got.index("h4") < got.index("<subject")  # history, then the subject
    carol = connect(server, "carol")
    got = join(carol, "c1", extra="<history maxstanzas='2'/>")
    assert re.findall(r"<body>(h\d)</body>", got) == ["h3", "h4"]
    carol.send(f"<presence to='{ROOM}/c1' type='unavailable'/>")
    carol.read_until(r"type=.unavailable.[^>]*>.*?</presence>")
    got = join(carol, "c2", extra="<history maxchars='0'/>")
    assert "<body>h" not in got
    carol.send(f"<presence to='{ROOM}/c2' type='unavailable'/>")
    carol.read_until(r"type=.unavailable.[^>]*>.*?</presence>")
    got = join(carol, "c3", extra="<history since='2999-01-01T00:00:00Z'/>")
    assert "<body>h" not in got


def test_room_mam_paging_and_retraction(server):
    alice, bob = connect(server, "alice"), connect(server, "bob")
    create(alice)
    join(bob, "bob")
    for n in range(5):
        say(bob, f"a{n}")
    ids = [re.search(r'stanza-id xmlns="urn:xmpp:sid:0" by="[^"]+" id="([^"]+)"',
                     read_msg(alice, f"a{n}")).group(1) for n in range(5)]
    read_msg(bob, "a4")
    mam = "<query xmlns='urn:xmpp:mam:2' queryid='q1'><set xmlns='http://jabber.org/protocol/rsm'>" \
          "<max>2</max></set></query>"
    got = iq(bob, mam, "mam1", to=ROOM)
    assert re.findall(r"<body>(a\d)</body>", got) == ["a0", "a1"]
    assert 'queryid="q1"' in got and "urn:xmpp:forward:0" in got
    assert "<count>5</count>" in got and 'complete="true"' not in got
    page2 = mam.replace("<max>2</max>", f"<max>5</max><after>{ids[1]}</after>")
    got = iq(bob, page2, "mam2", to=ROOM)
    assert re.findall(r"<body>(a\d)</body>", got) == ["a2", "a3", "a4"] and 'complete="true"' in got
    last = mam.replace("<max>2</max>", "<max>2</max><before/>")
    assert re.findall(r"<body>(a\d)</body>", iq(bob, last, "mam3", to=ROOM)) == ["a3", "a4"]
    bad = mam.replace("<max>2</max>", "<max>2</max><after>nope</after>")
    assert error_of(iq(bob, bad, "mam4", to=ROOM)) == "item-not-found"
    # XEP-0425: only a moderator retracts; a tombstone goes to everyone; MAM shows it
    retract = (f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{ids[2]}'>"
               "<retract xmlns='urn:xmpp:message-retract:1'/><reason>rude</reason></moderate>")
    assert error_of(iq(bob, retract, "rt0", to=ROOM)) == "forbidden"
    assert 'type="result"' in iq(alice, retract, "rt1", to=ROOM)
    tomb = read_msg(bob, "rude")
    assert f'<retract xmlns="urn:xmpp:message-retract:1" id="{ids[2]}">' in tomb
    assert f'moderated xmlns="urn:xmpp:message-moderate:1" by="{ROOM}/owner"' in tomb
    got = iq(bob, mam.replace("<max>2</max>", "<max>10</max>"), "mam5", to=ROOM)
    assert "<body>a2</body>" not in got and "<retracted" in got
    assert error_of(iq(alice, retract.replace(ids[2], "nope"), "rt2", to=ROOM)) == "item-not-found"
    got = join(connect(server, "carol"), "carol")
    assert "<body>a2</body>" not in got and "<body>a3</body>" in got  # gone from history


def test_persistent_room_survives_restart(make_server, tmp_path):
    users = {"alice": "secret", "bob": "secret"}
    data = tmp_path / "persist"
    srv = make_server(users=users, data_dir=data, allow_plain=True)
    alice = connect(srv, "alice")
    create(alice, config=field("persistentroom", "1") + field("roomname", "Kept"))
    member = f"<query xmlns='{ADMIN}'><item affiliation='member' jid='bob@localhost'/></query>"
    iq(alice, member, "m", to=ROOM)
    alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Kept topic</subject></message>")
    say(alice, "before-restart")
    read_msg(alice, "before-restart")
    ping(alice)
    srv.stop()
    srv2 = make_server(data_dir=data, allow_plain=True)  # the accounts are stored too
    bob = connect(srv2, "bob")
    got = join(bob, "bob")
    assert "201" not in codes(got) and "Kept topic" in got and "before-restart" in got
    assert 'affiliation="member"' in got
    info = iq(bob, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "i", "get", ROOM)
    assert "Kept" in info and "muc_persistent" in info
    got = iq(bob, "<query xmlns='urn:xmpp:mam:2'/>", "mam", to=ROOM)
    assert "before-restart" in got


def test_room_changes_are_answered_once_stored(server):
    """An owner's configuration (and an admin's affiliation change) is acknowledged only
    after the room's write to storage is done: a crash after the answer loses nothing."""
    muc = server.server.modules.loaded["muc"].module
    store = muc.store
    gate: list[asyncio.Event] = []
    real_set = store.set

    async def slow_set(*args, **kwargs):
        if gate:
            await gate[0].wait()
        return await real_set(*args, **kwargs)

    alice = connect(server, "alice")
    create(alice, config=field("persistentroom", "1"))
    store.set = slow_set
    try:
        server.call(_hold(gate))
        member = f"<query xmlns='{ADMIN}'><item affiliation='member' jid='bob@localhost'/></query>"
        alice.send(f"<iq type='set' id='m' to='{ROOM}'>{member}</iq>")
        with pytest.raises(TimeoutError):  # not yet stored: not yet answered
            alice.read_until("<iq[^>]*id=.m.", timeout=0.5)
        server.call(_release(gate))
        assert "type=\"result\"" in alice.read_until("<iq[^>]*id=.m.[^>]*/>|</iq>")
    finally:
        store.set = real_set


async def _hold(gate: list) -> None:
    gate.append(asyncio.Event())


async def _release(gate: list) -> None:
    gate.pop().set()


def test_limits_creation_rate_rooms_per_user(make_server):
    srv = make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True,
                      modules_options={"muc": {"max_rooms_per_user": 1, "message_rate": 1.0,
                                               "message_burst": 2,
                                               "restrict_room_creation": "admins",
                                               "admins": ["alice@localhost"]}})
    alice, bob = connect(srv, "alice"), connect(srv, "bob")
    assert error_of(join(bob, "bob", room="b@conference.localhost")) == "not-allowed"
    create(alice)  # admins are not limited
    create(alice, room="second@conference.localhost")
    join(bob, "bob")
    for n in range(4):
        say(bob, f"r{n}")
    got = bob.read_until(r"type=.error.*?</message>")
    assert error_of(got) == "resource-constraint" and 'type="wait"' in got


def test_rooms_per_user_and_local_creation(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True,
                      modules_options={"muc": {"max_rooms_per_user": 1}})
    alice = connect(srv, "alice")
    create(alice)
    got = join(alice, "a", room="more@conference.localhost")
    assert error_of(got) == "policy-violation" and "max_rooms_per_user" in got


def test_multi_session_nick_and_groupchat_not_offline(server):
    alice, bob = connect(server, "alice"), connect(server, "bob")
    bob2 = connect(server, "bob", "r2")
    create(alice)
    join(bob, "bob")
    join(bob2, "bob")
    say(alice, "both")
    read_msg(bob, "both")
    read_msg(bob2, "both")
    # one occupant for the others; one resource leaving keeps the occupant
    roles = iq(alice, f"<query xmlns='{ADMIN}'><item role='participant'/></query>", "r", "get",
               ROOM)
    assert roles.count('nick="bob"') == 1
    bob2.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    assert "110" in codes(bob2.read_until(r"type=.unavailable.[^>]*>.*?</presence>"))
    assert "unavailable" not in ping(alice)
    # groupchat is never stored offline
    from test_blocking import offline_count

    bob.send("<presence/>")
    alice.send("<message to='carol@localhost' type='groupchat'><body>x</body></message>")
    assert error_of(alice.read_until("type=.error.*?</message>")) == "service-unavailable"
    assert offline_count(server, "carol") == 0


def test_disabling_the_module_removes_the_service(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True, modules_disabled=("muc",))
    alice = connect(srv, "alice")
    items = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#items'/>", "i", "get",
               "localhost")
    assert "conference.localhost" not in items
    got = join(alice, "a")
    assert error_of(got) == "remote-server-not-found"
