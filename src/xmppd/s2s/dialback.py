"""Server Dialback (XEP-0220) with keys generated per XEP-0185: pure logic, no I/O.

Roles (XEP-0220 §1.3): the *Originating Server* opens a stream to the *Receiving Server* and
sends ``<db:result>`` with a key; the Receiving Server checks that key with the *Authoritative
Server* of the originating domain by sending ``<db:verify>`` over its own outbound stream.
Only the Authoritative Server can recompute the key, because it is derived from its secret.
"""

from __future__ import annotations

import hashlib
import hmac

from xmppd.xml.element import Element
from xmppd.xml.stanza import STANZA_ERROR_NS

DIALBACK_NS = "jabber:server:dialback"
#: Stream feature advertising dialback (XEP-0220 §2.4), with dialback errors support.
DIALBACK_FEATURE_NS = "urn:xmpp:features:dialback"


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: HMAC-SHA256 keyed with SHA-256(secret) over "receiving originating id".

    The secret is hashed first so the key never depends on the raw secret directly.
    """
    mac_key = hashlib.sha256(secret).hexdigest().encode()
    message = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()


def key_matches(secret: bytes, receiving: str, originating: str, stream_id: str, key: str) -> bool:
    """Constant-time check of a key received in ``<db:verify>``."""
    expected = dialback_key(secret, receiving, originating, stream_id)
    return hmac.compare_digest(expected.encode(), key.strip().encode())


def result_request(originating: str, receiving: str, key: str) -> Element:
    """``<db:result>`` the originating server sends to ask for authorization."""
    return Element("result", DIALBACK_NS, {"from": originating, "to": receiving}, [key])


def result_answer(receiving: str, originating: str, valid: bool) -> Element:
    """The receiving server's answer to a ``<db:result>``."""
    attrs = {"from": receiving, "to": originating, "type": "valid" if valid else "invalid"}
    return Element("result", DIALBACK_NS, attrs, [])


def result_error(receiving: str, originating: str, condition: str, type: str = "cancel") -> Element:
    """A dialback error (XEP-0220 §2.4): the answer when authorization cannot even be tried."""
    attrs = {"from": receiving, "to": originating, "type": "error"}
    el = Element("result", DIALBACK_NS, attrs, [])
    el.subelement("error", attrs={"type": type}).subelement(condition, STANZA_ERROR_NS)
    return el


def verify_request(receiving: str, originating: str, stream_id: str, key: str) -> Element:
    """``<db:verify>`` the receiving server sends to the authoritative server."""
    attrs = {"from": receiving, "to": originating, "id": stream_id}
    return Element("verify", DIALBACK_NS, attrs, [key])


def verify_answer(originating: str, receiving: str, stream_id: str, valid: bool) -> Element:
    """The authoritative server's answer to a ``<db:verify>``."""
    attrs = {
        "from": originating, "to": receiving, "id": stream_id,
        "type": "valid" if valid else "invalid",
    }
    return Element("verify", DIALBACK_NS, attrs, [])


def features_element() -> Element:
    """The ``<dialback/>`` stream feature, announcing support for dialback errors."""
    el = Element("dialback", DIALBACK_FEATURE_NS, {}, [])
    el.subelement("errors")
    return el
