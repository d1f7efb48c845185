"""XEP-0045 Multi-User Chat over raw sockets: discovery, creation (instant, reserved,
locked), joins with every status code and error condition, messages, subject, private
messages, moderation, invitations, destruction, persistence, and the limits."""

from __future__ import annotations

import re

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
    got = client.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>") or \
        client.read_until(r"<presence[^>]*>.*?</presence>")
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
