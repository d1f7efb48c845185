"""Stanzas from a bound client (sans-IO): the ``from`` policy and the IQ checks, then the
route callback.

``from`` policy: a client may omit ``from`` or give its own bare or full JID; the router
then sees the full JID of the session.  Any other ``from`` ends the stream with
``invalid-from`` (RFC 6120 §8.1.2.1): a spoofing client is disconnected, not corrected.

Other top-level elements (nonzas: XEP-0352 ``<inactive/>``, XEP-0198 ``<r/>``...) never
come here: the stream hands them to the modules (:func:`xmppd.c2s.negotiation.stream_extension`).

This is the routing hot path: one plain function, no object per session or per stanza.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from xmppd.c2s.negotiation import BIND_NS, SESSION_NS
from xmppd.jid import JID, JIDError
from xmppd.xml.framing import StreamErrorCondition
from xmppd.xml.stanza import CLIENT_NS, STANZA_NAMES, error_reply, reply

if TYPE_CHECKING:
    from xmppd.core.session import Session
    from xmppd.xml.element import Element

Route = Callable[["Element", "Session"], "Awaitable | None"]


class Sender(Protocol):
    """Where answers to a client go (its stream)."""

    def send(self, element: Element) -> None: ...


def client_stanza(el: Element, session: Session, route: Route, stream: Sender) -> Awaitable | None:
    """Check and stamp a stanza from ``session``'s client, then ``route`` it; answers that
    do not leave the stream (an IQ error, the session IQ) go back through ``stream.send``
    (the stream, not its bound method: no method object made per stanza)."""
    name = el.name
    if el.ns != CLIENT_NS or name not in STANZA_NAMES:
        raise StreamErrorCondition("unsupported-stanza-type", f"<{name}/> is not a stanza")
    attrs = el.attrs
    sender = attrs.get("from")
    full = session.jid
    if sender is not None and sender != full.full:
        try:
            claimed = JID(sender)
        except JIDError:
            raise StreamErrorCondition("invalid-from", "malformed 'from'") from None
        if claimed != full and claimed != session.bare:
            raise StreamErrorCondition("invalid-from", "'from' is not this session")
    attrs["from"] = full.full
    if name == "iq" and not _iq_ok(el, stream.send):
        return None
    return route(el, session)


def _iq_ok(iq: Element, send: Callable[[Element], None]) -> bool:
    """Whether the IQ goes on to the router (else it was answered here or dropped)."""
    itype = iq.attrs.get("type")
    if itype not in ("get", "set", "result", "error") or "id" not in iq.attrs:
        if itype != "error":  # an error is never answered with an error (RFC 6120 §8.3.1)
            send(error_reply(iq, "bad-request", text="an IQ needs a type and an id"))
        return False
    if itype in ("get", "set"):
        kids = list(iq.elements())
        if len(kids) != 1:
            send(error_reply(iq, "bad-request", text="exactly one child needed"))
            return False
        if kids[0].ns == SESSION_NS and kids[0].name == "session":
            send(reply(iq))
            return False
        if kids[0].ns == BIND_NS:
            send(error_reply(iq, "not-allowed", text="already bound"))
            return False
    return True
