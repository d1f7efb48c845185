"""Helpers for the PEP / PubSub / vCard / private storage tests (raw sockets)."""

from __future__ import annotations

import base64
import hashlib
import re

from support import RawClient, connect
from test_offline import ping
from test_roster import iq

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = PUBSUB + "#owner"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"
CAPS = "http://jabber.org/protocol/caps"
DISCO = "http://jabber.org/protocol/disco#info"

__all__ = ["RawClient", "connect", "iq", "ping", "caps_presence", "answer_disco",
           "publish", "options_form", "subscribe_both", "events"]


def caps_ver(features: list[str]) -> str:
    s = "client/pc//<" + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def caps_presence(client: RawClient, features: list[str], *, wrong: bool = False) -> str:
    """Send available presence with caps for ``features``; returns the ver."""
    ver = caps_ver(features)
    shown = caps_ver(["bogus"]) if wrong else ver
    client.send(f"<presence><c xmlns='{CAPS}' hash='sha-1' node='http://raw' ver='{shown}'/>"
                "</presence>")
    return shown


def answer_disco(client: RawClient, features: list[str]) -> None:
    """Answer the server's disco#info query for our caps."""
    got = client.read_until(rf"<iq[^>]*type=.get.[^>]*>\s*<query xmlns=.{re.escape(DISCO)}.[^>]*/>\s*</iq>")
    m = re.search(r"<iq[^>]*>", got[got.rindex("<iq"):])
    head = m.group(0)
    iq_id = re.search(r"id=.([^'\"]*)", head).group(1)
    frm = re.search(r"from=.([^'\"]*)", head).group(1)
    node = re.search(r"node=.([^'\"]*)", got[got.rindex("<iq"):]).group(1)
    feats = "".join(f"<feature var='{f}'/>" for f in features)
    client.send(f"<iq type='result' id='{iq_id}' to='{frm}'><query xmlns='{DISCO}' node='{node}'>"
                f"<identity category='client' type='pc'/>{feats}</query></iq>")


def options_form(**fields: str) -> str:
    out = (f"<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
           f"type='hidden'><value>{PUBSUB}#publish-options</value></field>")
    for key, value in fields.items():
        out += f"<field var='pubsub#{key}'><value>{value}</value></field>"
    return out + "</x></publish-options>"


def publish(client: RawClient, node: str, payload: str, item_id: str = "current",
            id: str = "p", to: str = "", options: str = "") -> str:
    item = f"<item id='{item_id}'>{payload}</item>" if item_id else f"<item>{payload}</item>"
    return iq(client, f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish>"
                      f"{options}</pubsub>", id, to=to)


def subscribe_both(a: RawClient, b: RawClient, a_name: str, b_name: str) -> None:
    """Mutual presence subscription (via pre-approval)."""
    for x, yname in ((a, b_name), (b, a_name)):
        x.send(f"<presence to='{yname}@localhost' type='subscribed'/>")
        ping(x)
    a.send(f"<presence to='{b_name}@localhost' type='subscribe'/>")
    b.send(f"<presence to='{a_name}@localhost' type='subscribe'/>")
    ping(a)
    ping(b)


def events(text: str) -> list[str]:
    """The pubsub event messages in ``text``."""
    return re.findall(r"<message[^>]*>(?:(?!</message>).)*?" + re.escape(EVENT) + r".*?</message>",
                      text, re.S)
