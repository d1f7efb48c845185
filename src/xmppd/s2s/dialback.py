"""Server Dialback (XEP-0220) with keys generated per XEP-0185: pure logic, no I/O.

Roles (XEP-0220 §1.3): the *Originating Server* opens a stream to the *Receiving Server* and
sends ``<db:result>`` with a key; the Receiving Server checks that key with the *Authoritative
Server* of the originating domain by sending ``<db:verify>`` over its own outbound stream.
Only the Authoritative Server can recompute the key, because it is derived from its secret.

On the wire the elements carry the ``db:`` prefix the stream header declares
(``xmlns:db='jabber:server:dialback'``): XEP-0220 §2 requires it, and ejabberd ignores an
unprefixed ``<result xmlns='jabber:server:dialback'>``.  :func:`dialback_bytes` writes
them so; inbound, the parser resolves either form to the same namespace.
"""

from __future__ import annotations

import hashlib
import hmac

from xmppd.xml.element import Element
from xmppd.xml.stanza import SERVER_NS, STANZA_ERROR_NS

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
    # the <error/> child is unprefixed, so in the stream's namespace (XEP-0220 §2.4)
    error = el.append(Element("error", SERVER_NS, {"type": type}, []))
    error.subelement(condition, STANZA_ERROR_NS)
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


def dialback_bytes(el: Element) -> bytes:
    """``el`` (a dialback element) as ``<db:result>``/``<db:verify>``, for a
    ``jabber:server`` stream whose header declared the ``db`` prefix."""
    data = el.to_bytes(DIALBACK_NS)  # <result ...>...</result>, children qualified
    name = el.name.encode()
    data = b"<db:" + data[1:]
    if data.endswith(b"</" + name + b">"):
        data = data[: -len(name) - 3] + b"</db:" + name + b">"
    return data
