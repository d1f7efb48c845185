"""External components (XEP-0114, ``jabber:component:accept``).

A component opens a stream to its own domain, proves it knows the shared secret with
``<handshake>`` = hex SHA-1(stream id + secret), then exchanges stanzas for that domain: the
router hands it every stanza addressed to the domain, and it may send stanzas only from the
domain (or JIDs at it); anything else is ``invalid-from``.  Like an inbound s2s stream, a
component is the router's ``origin`` with ``jid = None`` and ``remote = True``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from xmppd.jid import JID, JIDError
from xmppd.s2s.common import renamespace
from xmppd.transport.stream import StreamErrorCondition, XMLStream, limits_kwargs
from xmppd.xml.element import Element
from xmppd.xml.events import StreamOpen
from xmppd.xml.framing import check_stream_header
from xmppd.xml.stanza import CLIENT_NS, STANZA_NAMES

if TYPE_CHECKING:
    from xmppd.core.config import Limits
    from xmppd.core.router import Router
    from xmppd.transport.connections import AuthThrottle, Connections

log = logging.getLogger(__name__)

COMPONENT_NS = "jabber:component:accept"


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: lower-case hex SHA-1 of the stream id followed by the secret."""
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


class ComponentStream(XMLStream):
    """One connected external component."""

    default_ns = COMPONENT_NS
    kind = "component"
    jid = None  # not a local client session
    remote = True

    def __init__(
        self,
        router: Router,
        limits: Limits,
        secrets: dict[str, str],
        attach: Callable[[ComponentStream], bool],
        detach: Callable[[ComponentStream], None],
        *,
        connections: Connections | None = None,
        throttle: AuthThrottle | None = None,
    ) -> None:
        self.limits = limits
        super().__init__(**limits_kwargs(limits), connections=connections)
        self.router = router
        self.throttle = throttle
        self.size_limit_name = "max_stanza_size_preauth_bytes"
        self.secrets = secrets
        self._attach = attach
        self._detach = detach
        self.domain: str | None = None
        self.authenticated = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self._closing:
            self.set_auth_timeout(self.limits.auth_timeout_s, "no handshake in time")

    def on_closed(self, abrupt: bool) -> None:
        if self.authenticated:
            self._detach(self)

    def local_domain(self) -> str | None:
        return self.domain

    def handle_stream_open(self, header: StreamOpen) -> None:
        to = check_stream_header(header, COMPONENT_NS)
        if to not in self.secrets:
            raise StreamErrorCondition("host-unknown", f"no component {to or '(none)'} here")
        self.domain = to
        # XEP-0114: the header has no version, so no stream features follow.
        self.send_header(to, version=False)

    def handle_element(self, el: Element) -> Awaitable | None:
        if not self.authenticated:
            if el.name == "handshake" and el.ns == COMPONENT_NS:
                self._handshake(el.text.strip().lower())
                return None
            raise StreamErrorCondition("not-authorized", "handshake first")
        if el.ns != COMPONENT_NS or el.name not in STANZA_NAMES:
            raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{el.name}/>")
        return self._stanza(el)

    def _handshake(self, digest: str) -> None:
        expected = handshake_digest(self.stream_id, self.secrets[self.domain])
        if not hmac.compare_digest(expected.encode(), digest.encode()):
            if self.throttle is not None:
                self.throttle.failed(self.peer)
            self._count_login("failure")
            raise StreamErrorCondition("not-authorized", "wrong handshake")
        if not self._attach(self):
            raise StreamErrorCondition("conflict", f"{self.domain} is already connected")
        self.authenticated = True
        self._count_login("success")
        self.auth_complete()
        self.tokenizer.max_stanza_size = self.limits.max_stanza_size_bytes
        self.size_limit_name = "max_stanza_size_bytes"
        log.info("component %s connected from %s", self.domain, self.peer)
        self.send_bytes(b"<handshake/>")

    def _count_login(self, outcome: str) -> None:
        if self.connections is not None:
            self.connections.login(self.kind, "handshake", outcome)

    def _stanza(self, el: Element) -> Awaitable | None:
        try:
            sender = JID(el.get("from", ""))
            JID(el.get("to", ""))
        except JIDError:
            raise StreamErrorCondition("improper-addressing", "a stanza needs a valid 'from' and 'to'") from None
        if sender.domain != self.domain:
            raise StreamErrorCondition("invalid-from", f"a component may only send from {self.domain}")
        stanza = renamespace(el, COMPONENT_NS, CLIENT_NS)
        try:
            result = self.router.route(stanza, self)
        except Exception:
            # a module failing on a non-session origin must not disconnect the component
            log.exception("routing a stanza from component %s failed", self.domain)
            self.router.bounce(stanza, "internal-server-error")
            return None
        return None if result is None else self._guard(result, stanza)

    async def _guard(self, pending: Awaitable, stanza: Element) -> None:
        try:
            await pending
        except Exception:
            log.exception("routing a stanza from component %s failed", self.domain)
            self.router.bounce(stanza, "internal-server-error")

    def send_stanza(self, stanza: Element) -> None:
        """Write a stanza in the component namespace (it is left implicit)."""
        self.send_bytes(stanza.to_bytes(stanza.ns))
