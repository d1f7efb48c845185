"""Stanza helpers: namespaces, envelope access, replies and RFC 6120 §8.3 errors."""

from __future__ import annotations

from xmppd.xml.element import Element

CLIENT_NS = "jabber:client"
SERVER_NS = "jabber:server"
STANZA_ERROR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
STANZA_NAMES = frozenset({"message", "presence", "iq"})

#: The default error type of each RFC 6120 §8.3.3 condition.
ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StanzaError(Exception):
    """Raised by handlers to answer the stanza being handled with an error."""

    def __init__(self, condition: str, text: str | None = None, type: str | None = None):
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = type or ERROR_TYPES.get(condition, "cancel")


def reply(stanza: Element, type: str = "result") -> Element:
    """An empty reply to ``stanza`` (``to``/``from`` swapped, same ``id``)."""
    attrs = {"type": type}
    _envelope_back(stanza, attrs)
    return Element(stanza.name, stanza.ns, attrs, [])


def error_reply(
    stanza: Element,
    condition: str,
    type: str | None = None,
    text: str | None = None,
    by: str | None = None,
) -> Element:
    """The RFC 6120 §8.3 error reply to ``stanza``."""
    attrs = {"type": "error"}
    _envelope_back(stanza, attrs)
    out = Element(stanza.name, stanza.ns, attrs, [])
    err = out.subelement("error", attrs={"type": type or ERROR_TYPES.get(condition, "cancel")})
    if by:
        err.attrs["by"] = by
    err.subelement(condition, STANZA_ERROR_NS)
    if text:
        err.subelement("text", STANZA_ERROR_NS, text=text)
    return out


def _envelope_back(stanza: Element, attrs: dict[str, str]) -> None:
    a = stanza.attrs
    if "from" in a:
        attrs["to"] = a["from"]
    if "to" in a:
        attrs["from"] = a["to"]
    if "id" in a:
        attrs["id"] = a["id"]


def error_condition(stanza: Element) -> str | None:
    """The defined condition of an error stanza, or None."""
    err = stanza.find("error")
    if err is None:
        return None
    for child in err.elements():
        if child.ns == STANZA_ERROR_NS and child.name != "text":
            return child.name
    return None


def iq_payload(iq: Element) -> Element | None:
    """The single child of a get/set IQ, or None if it does not have exactly one."""
    kids = list(iq.elements())
    return kids[0] if len(kids) == 1 else None


def message(to: str, body: str | None = None, type: str = "chat", **attrs: str) -> Element:
    msg = Element("message", CLIENT_NS, {"to": to, "type": type, **attrs}, [])
    if body is not None:
        msg.subelement("body", text=body)
    return msg


def own_account(iq: Element, origin: object):
    """The bare JID of the account an IQ about itself comes from (roster, blocking, ...).

    Only a local session may ask, and only about its own account: a server-generated IQ,
    a remote server, a component (which have no ``jid``) or another user get ``forbidden``.
    """
    from xmppd.jid import JID, JIDError

    session_jid = getattr(origin, "jid", None)
    if session_jid is None:
        raise StanzaError("forbidden")
    to = iq.attrs.get("to")
    if to is not None:
        try:
            target = JID(to)
        except JIDError:
            raise StanzaError("forbidden") from None
        if target != session_jid.bare:
            raise StanzaError("forbidden")
    return session_jid.bare


# -- stanzas kept as bytes (offline messages, pending subscription requests) --------------------

_STORED_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def encode_stanza(stanza: Element) -> bytes:
    """Serialize a ``jabber:client`` stanza for storage."""
    return stanza.to_bytes(CLIENT_NS)


def decode_stanza(data: bytes) -> Element:
    """Parse bytes written by :func:`encode_stanza` back into an element (ValueError if
    they do not hold exactly one)."""
    from xmppd.xml.tokenizer import Tokenizer  # the stream tokenizer, so limits stay the same

    events = Tokenizer(max_stanza_size=len(data) + len(_STORED_HEADER) + 1).feed(
        _STORED_HEADER + data
    )
    elements = [e for e in events if isinstance(e, Element)]
    if len(elements) != 1:
        raise ValueError("a stored stanza does not parse to exactly one element")
    return elements[0]
