"""Client-to-server streams (RFC 6120): negotiation, STARTTLS, SASL, binding, then routing.

``from`` policy: a client may omit ``from`` or give its own bare or full JID; the router
then sees the full JID of the session.  Any other ``from`` ends the stream with
``invalid-from`` (RFC 6120 §8.1.2.1): a spoofing client is disconnected, not corrected.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from xmppd.c2s.sasl import SASLFailure, SASLServer, decode_payload, encode_payload
from xmppd.core.session import Session
from xmppd.jid import JID, JIDError
from xmppd.transport.stream import StreamErrorCondition, XMLStream, limits_kwargs
from xmppd.transport.tls import channel_bindings
from xmppd.xml.element import Element, escape_text
from xmppd.xml.events import STREAM_NS, StreamOpen
from xmppd.xml.stanza import CLIENT_NS, STANZA_NAMES, error_reply, reply

if TYPE_CHECKING:
    from xmppd.core.config import Listener
    from xmppd.server import Server

log = logging.getLogger(__name__)

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
SASL_CB_NS = "urn:xmpp:sasl-cb:0"


def _preauth_features(
    starttls: bool, required: bool, mechs: tuple[str, ...], cb_types: tuple[str, ...]
) -> bytes:
    feats = Element("features", STREAM_NS, {}, [])
    if starttls:
        tls = feats.subelement("starttls", TLS_NS)
        if required:
            tls.subelement("required")
    if mechs:
        mechanisms = feats.subelement("mechanisms", SASL_NS)
        for name in mechs:
            mechanisms.subelement("mechanism", text=name)
    if cb_types:
        cb = feats.subelement("sasl-channel-binding", SASL_CB_NS)
        for t in cb_types:
            cb.subelement("channel-binding", attrs={"type": t})
    inner = b"".join(k.to_bytes(None) for k in feats.children if isinstance(k, Element))
    return b"<stream:features>" + inner + b"</stream:features>"


#: Serialized pre-authentication features by (starttls, required, mechanisms, cb types).
_PREAUTH_FEATURES: dict[tuple, bytes] = {}


class C2SStream(XMLStream):
    """One client connection, from the TCP accept to the closing tag."""

    default_ns = CLIENT_NS

    __slots__ = (
        "server", "size_limit_name", "secure", "domain", "username", "jid", "session", "sasl",
        "auth_failures", "_timeout", "_bindings",
    )

    def __init__(self, server: Server, listener: Listener) -> None:
        limits = server.config.limits
        super().__init__(**limits_kwargs(limits, rate_limited=True))
        self.server = server
        self.size_limit_name = "max_stanza_size_preauth_bytes"
        self.secure = listener.direct_tls
        self.domain: str | None = None
        self.username: str | None = None
        self.jid: JID | None = None  # the full JID once bound
        self.session: Session | None = None  # what the router sees, once bound
        self.sasl: SASLServer | None = None
        self.auth_failures = 0
        self._timeout: asyncio.TimerHandle | None = None
        self._bindings: dict[str, bytes] | None = None  # TLS channel bindings, until auth

    # -- connection lifecycle ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.server.connection_opened(self):
            # Tell the client why rather than just hanging up; it is not counted, so
            # on_closed() leaves the per-IP bookkeeping alone.
            self.stream_error("policy-violation", "too many connections from your address")
            return
        if self.secure:
            self._tls_established()
        timeout = self.server.config.limits.auth_timeout_s
        if timeout:
            self._timeout = self.loop.call_later(timeout, self._auth_timeout)

    def _auth_timeout(self) -> None:
        self._timeout = None
        if self.jid is None:
            log.info("limit auth_timeout_s (%g) reached for %s: closing",
                     self.server.config.limits.auth_timeout_s, self.peer)
            self.stream_error("connection-timeout", "not authenticated in time")

    def on_closed(self, abrupt: bool) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
        self.server.connection_closed(self, abrupt)

    def close(self, timeout: float = 2.0) -> None:
        if self._closing or self.closed:
            return
        super().close(timeout)
        self.server.session_ended(self, abrupt=False)

    def local_domain(self) -> str | None:
        return self.domain or self.server.config.domains[0]

    # -- stream header ----------------------------------------------------------------------

    def handle_stream_open(self, header: StreamOpen) -> None:
        # interned: every session of a domain then shares one string
        to = sys.intern(header.attrs.get("to", "").lower().rstrip("."))
        previous = self.domain
        if header.name != "stream" or header.ns != STREAM_NS:
            raise StreamErrorCondition("invalid-namespace", "not an XMPP stream")
        if header.namespaces.get("") != CLIENT_NS:
            raise StreamErrorCondition("invalid-namespace", "the default namespace must be jabber:client")
        version = header.attrs.get("version", "0.9")
        if version.partition(".")[0] != "1":
            raise StreamErrorCondition("unsupported-version", "XMPP 1.0 is required")
        if not to:
            raise StreamErrorCondition("improper-addressing", "the stream header has no 'to'")
        if to not in self.server.router.hosts:
            raise StreamErrorCondition("host-unknown", f"{to} is not served here")
        if previous is not None and to != previous:
            raise StreamErrorCondition("host-unknown", "'to' changed across a stream restart")
        self.domain = to
        self.send_header(to)
        if self.username is None:
            self._send_preauth_features()
        else:
            self.send_features(self._features())
        return None

    def _send_preauth_features(self) -> None:
        """STARTTLS and SASL mechanisms: the same few variants for every connection, so
        each is serialized once."""
        starttls = not self.secure and self.server.tls_available
        required = self.server.config.require_encryption
        mechs: tuple[str, ...] = ()
        cb_types: tuple[str, ...] = ()
        if self.secure or not required:
            self._new_sasl()
            mechs = tuple(self.sasl.mechanisms())
            cb_types = tuple(self.sasl.channel_binding_types())
        key = (starttls, required, mechs, cb_types)
        data = _PREAUTH_FEATURES.get(key)
        if data is None:
            data = _PREAUTH_FEATURES[key] = _preauth_features(*key)
        self.send_bytes(data)

    def _features(self) -> Element:
        feats = Element("features", STREAM_NS, {}, [])
        if self.jid is None:
            feats.subelement("bind", BIND_NS)
            feats.subelement("session", SESSION_NS).subelement("optional")
            self.server.hooks.fire_sync("stream-features", self, feats)
        return feats

    def _new_sasl(self) -> None:
        cfg = self.server.config
        self.sasl = SASLServer(
            self.server.storage,
            secure=self.secure,
            channel_bindings=self._bindings,
            allow_plain=cfg.allow_plain,
            server_secret=self.server.secret,
            domain=self.domain or cfg.domains[0],
        )

    # -- elements -----------------------------------------------------------------------------

    def handle_element(self, el: Element) -> Awaitable | None:
        if self.jid is not None:
            return self._stanza(el)
        ns = el.ns
        if ns == SASL_NS:
            return self._sasl(el)
        if ns == TLS_NS and el.name == "starttls":
            return self._starttls()
        if ns == CLIENT_NS and el.name in STANZA_NAMES:
            if self.username is not None and el.name == "iq":
                return self._bind(el)
            raise StreamErrorCondition("not-authorized", "authenticate first")
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{el.name}/>")

    # -- STARTTLS ---------------------------------------------------------------------------

    def _starttls(self) -> Awaitable | None:
        if self.secure or not self.server.tls_available or self.username is not None:
            raise StreamErrorCondition("policy-violation", "STARTTLS is not allowed now")
        ctx = self.server.tls_context
        self.send_bytes(f"<proceed xmlns='{TLS_NS}'/>".encode())
        self.flush()
        self.reset_stream()
        return self._handshake(ctx)

    async def _handshake(self, ctx) -> None:
        try:
            transport = await self.loop.start_tls(
                self.transport, self, ctx, server_side=True, ssl_handshake_timeout=15
            )
        except (TimeoutError, OSError, ConnectionError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            self._closing = True
            if self.transport is not None:
                self.transport.abort()
            return
        if transport is None:  # the connection went away during the handshake
            self._closing = True
            return
        self.transport = transport
        self.secure = True
        self._tls_established()

    def _tls_established(self) -> None:
        sslobj = self.transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self._bindings = channel_bindings(sslobj)

    # -- SASL --------------------------------------------------------------------------------

    def _sasl(self, el: Element) -> Awaitable | None:
        if self.username is not None:
            raise StreamErrorCondition("policy-violation", "already authenticated")
        if el.name == "abort":
            if self.sasl is not None:
                self.sasl.abort()
            self._sasl_failure("aborted")
            return None
        if self.sasl is None:  # TLS required and not yet negotiated
            self._sasl_failure("encryption-required")
            return None
        if el.name == "auth":
            return self._sasl_step(el, start=el.get("mechanism", ""))
        if el.name == "response":
            return self._sasl_step(el)
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected SASL <{el.name}/>")

    async def _sasl_step(self, el: Element, start: str | None = None) -> None:
        server = self.server
        if not server.auth_allowed(self.peer):
            self._sasl_failure("temporary-auth-failure", "too many failed attempts, wait")
            return
        try:
            data = decode_payload(el.text)
            if start is not None:
                step = await self.sasl.start(start, data)
            else:
                step = await self.sasl.respond(data if data is not None else b"")
        except SASLFailure as exc:
            self._auth_failed(exc)
            return
        if not step.success:
            text = encode_payload(step.challenge or b"")
            self.send_bytes(f"<challenge xmlns='{SASL_NS}'>{text}</challenge>".encode())
            return
        self.username = step.username
        self.sasl = None  # negotiation state is not needed any more
        self._bindings = None
        extra = encode_payload(step.additional_data)
        self.send_bytes(f"<success xmlns='{SASL_NS}'>{extra}</success>".encode())
        self.tokenizer.max_stanza_size = server.config.limits.max_stanza_size_bytes
        self.size_limit_name = "max_stanza_size_bytes"
        log.info("%s authenticated as %s@%s", self.peer, self.username, self.domain)
        self.restart_stream()

    def _auth_failed(self, exc: SASLFailure) -> None:
        sasl = self.sasl
        log.info("authentication failed: address %s, username %r, mechanism %s: %s%s",
                 self.peer[0] if self.peer else "?", sasl.username_tried if sasl else "",
                 sasl.mechanism if sasl else "?", exc.condition,
                 f" ({exc.text})" if exc.text else "")
        self._sasl_failure(exc.condition, exc.text)
        if not exc.credentials:
            return  # a negotiation error says nothing about the password: not counted
        self.auth_failures += 1
        self.server.auth_failed(self.peer)
        if self.auth_failures >= self.server.config.limits.max_auth_failures:
            log.warning("limit max_auth_failures (%d) reached for %s: closing",
                        self.auth_failures, self.peer)
            self.stream_error("policy-violation", "too many failed authentication attempts")

    def _sasl_failure(self, condition: str, text: str | None = None) -> None:
        body = f"<{condition}/>"
        if text:
            body += f"<text>{escape_text(text)}</text>"
        self.send_bytes(f"<failure xmlns='{SASL_NS}'>{body}</failure>".encode())

    # -- resource binding -------------------------------------------------------------------

    def _bind(self, iq: Element) -> None:
        payload = iq.find("bind", BIND_NS)
        if payload is None or iq.get("type") != "set" or "id" not in iq.attrs:
            raise StreamErrorCondition("not-authorized", "bind a resource first")
        requested = (payload.findtext("resource") or "").strip()
        resource = requested or secrets.token_hex(6)
        try:
            jid = JID(f"{self.username}@{self.domain}/{resource}")
        except JIDError as exc:
            self.send(error_reply(iq, "bad-request", text=str(exc)))
            return
        router = self.server.router
        limit = self.server.config.limits.max_resources_per_account
        if router.sessions.get(jid) is None and router.sessions.count(jid.bare) >= limit:
            log.info("limit max_resources_per_account (%d) reached for %s", limit, jid.bare)
            self.send(error_reply(iq, "resource-constraint", text="too many resources bound"))
            return
        self.jid = jid
        self.session = Session(jid, self)
        old = router.sessions.add(self.session)
        if old is not None and old is not self:
            old.stream_error("conflict", "replaced by a new session")
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
        result = reply(iq)
        result.attrs.pop("from", None)
        result.subelement("bind", BIND_NS).subelement("jid", text=str(jid))
        self.send(result)
        self.server.hooks.fire_sync("resource-bound", self.session)

    # -- stanzas after binding ----------------------------------------------------------------

    def _stanza(self, el: Element) -> Awaitable | None:
        name = el.name
        if el.ns != CLIENT_NS or name not in STANZA_NAMES:
            raise StreamErrorCondition("unsupported-stanza-type", f"<{name}/> is not a stanza")
        attrs = el.attrs
        sender = attrs.get("from")
        full = self.jid
        if sender is not None and sender != full.full:
            try:
                claimed = JID(sender)
            except JIDError:
                raise StreamErrorCondition("invalid-from", "malformed 'from'") from None
            if claimed != full and claimed != full.bare:
                raise StreamErrorCondition("invalid-from", "'from' is not this session")
        attrs["from"] = full.full
        if name == "iq":
            return self._iq(el)
        return self.server.route_from_client(el, self.session)

    def _iq(self, iq: Element) -> Awaitable | None:
        itype = iq.attrs.get("type")
        if itype not in ("get", "set", "result", "error") or "id" not in iq.attrs:
            if itype != "error":  # an error is never answered with an error (RFC 6120 §8.3.1)
                self.send(error_reply(iq, "bad-request", text="an IQ needs a type and an id"))
            return None
        if itype in ("get", "set"):
            kids = list(iq.elements())
            if len(kids) != 1:
                self.send(error_reply(iq, "bad-request", text="exactly one child needed"))
                return None
            if kids[0].ns == SESSION_NS and kids[0].name == "session":
                self.send(reply(iq))
                return None
            if kids[0].ns == BIND_NS:
                self.send(error_reply(iq, "not-allowed", text="already bound"))
                return None
        return self.server.route_from_client(iq, self.session)

