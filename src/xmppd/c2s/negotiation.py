"""Client stream negotiation (RFC 6120 §4-7), sans-IO: the stream header checks, STARTTLS,
SASL and resource binding, up to the bound :class:`~xmppd.core.session.Session`.

A :class:`ClientNegotiation` consumes the tokenizer's events (``StreamOpen`` and elements)
and answers through a :class:`StreamIO` — the asyncio shell (:class:`xmppd.c2s.stream.C2SStream`)
in the server, a recorder in the tests.  It asks the shell for what only the shell can do
(the TLS handshake, a stream restart, raising the stanza size limit) and reaches the rest of
the server only through the narrow :class:`ClientPolicy`.  A SASL step that reads storage
returns a coroutine; the shell runs it eagerly and holds the input until it completes.

Once the resource is bound the negotiation is dropped: stanzas then go through
:func:`xmppd.c2s.stanzas.client_stanza`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Hashable, Mapping, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from xmppd.c2s import sasl2
from xmppd.c2s.fast import HT_MECHANISMS
from xmppd.c2s.sasl import (
    ALL_MECHANISMS,
    SASLFailure,
    SASLServer,
    decode_payload,
    encode_payload,
)
from xmppd.jid import JID, JIDError
from xmppd.transport.connections import address_text
from xmppd.transport.stream import writes_plain
from xmppd.xml.element import Element, escape_attr, escape_text
from xmppd.xml.events import STREAM_NS, StreamOpen
from xmppd.xml.framing import StreamErrorCondition, check_stream_header, features_bytes
from xmppd.xml.stanza import CLIENT_NS, STANZA_NAMES, error_reply, reply

if TYPE_CHECKING:
    import ssl

    from xmppd.c2s.sasl import CredentialStore
    from xmppd.core.config import Limits
    from xmppd.core.session import Session

log = logging.getLogger("xmppd.c2s")

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
SASL_CB_NS = "urn:xmpp:sasl-cb:0"

#: Mechanism names counted as themselves in the login metrics; whatever else a client
#: names is counted as "other" (a client must not be able to grow the table).
COUNTED_MECHANISMS = ALL_MECHANISMS | frozenset(HT_MECHANISMS)


class BindError(Exception):
    """A resource cannot be bound; ``condition`` is the stanza error for the bind IQ."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(text or condition)
        self.condition = condition
        self.text = text


class AuthPolicy(Protocol):
    """Throttling of failed authentications by (address, username)
    (:class:`xmppd.transport.connections.AuthThrottle`)."""

    def allowed(self, peer: tuple[str, int] | None, username: str | None = None) -> bool:
        """False: refuse (password spraying from this address)."""
    def delay(self, peer: tuple[str, int] | None, username: str | None) -> float:
        """Seconds to hold the answer to this attempt."""
    def failed(self, peer: tuple[str, int] | None, username: str | None = None) -> None: ...
    def succeeded(self, peer: tuple[str, int] | None, username: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """Everything client streams need of the server, built once per server.

    ``bind(jid, transport)`` enters a session in the session table (raising
    :class:`BindError`); ``bound(session)`` announces it to the modules once the client has
    its answer; ``unbind(session, abrupt)`` takes it out again.  ``route(stanza, session)``
    carries a stamped stanza from a bound client to the router.  ``stream_features(stream,
    features)`` lets modules add post-authentication features.
    """

    hosts: Set[str]  # the router's set: a reload changes it in place
    default_domain: str
    credentials: CredentialStore
    secret: bytes
    limits: Limits
    tls_context: ssl.SSLContext | None
    require_encryption: bool
    allow_plain: bool
    throttle: AuthPolicy
    bind: Callable[[JID, Any], Session]
    bound: Callable[[Session], None]
    unbind: Callable[[Session, bool], None]
    route: Callable[[Element, Session], Awaitable | None]
    stream_features: Callable[[Any, Element], None]
    connections: Any = None  # xmppd.transport.connections.Connections, for the shell
    #: ``(stream, element) -> bool | Awaitable[bool]``: a non-stanza element after
    #: authentication (XEP-0198 ``<enable/>``, ``<r/>``, ``<resume/>``; XEP-0352
    #: ``<inactive/>``...), the core event ``stream/element``; True if a module handled it.
    stream_element: Callable[[Any, Element], Any] | None = None
    #: What modules provide each other (``ModuleAPI.provide``): c2s looks up ``sasl2``
    #: (XEP-0388/0386/0484, :class:`xmppd.c2s.sasl2.SASL2Provider`) when a client connects.
    services: Mapping[str, Any] | None = None
    #: ``() -> hashable``: what the post-authentication features depend on (the server
    #: passes its ``stream-features`` handlers); with it they are serialized once per value
    #: instead of built and serialized for every login.
    features_key: Callable[[], Hashable] | None = None


class StreamIO(Protocol):
    """What the negotiation needs of the stream that carries it."""

    peer: tuple[str, int] | None

    def send_bytes(self, data: bytes) -> None: ...
    def send(self, element: Element) -> None: ...
    def send_header(self, from_: str | None) -> None: ...
    def stream_error(self, condition: str, text: str | None = None) -> None: ...
    def begin_tls(self) -> Awaitable | None:
        """``<proceed/>`` is queued: flush it, drop the plaintext parser state, handshake;
        then call :meth:`ClientNegotiation.tls_started`."""
    def restart_stream(self) -> None: ...
    def authenticated(self) -> None:
        """SASL succeeded: the full stanza size limit applies from now on."""
    def bound(self, session: Session) -> None:
        """The resource is bound: stanzas go to ``session`` from now on."""


def _preauth_features(
    starttls: bool, required: bool, mechs: tuple[str, ...], cb_types: tuple[str, ...],
    sasl2_key: tuple | None = None, register: tuple[str, ...] = (), provider: Any = None,
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
    if mechs and sasl2_key is not None:
        feats.append(sasl2.feature(provider, mechs, sasl2_key[1]))
    for ns in register:  # XEP-0077 in-band registration, XEP-0445 invitations
        feats.subelement("register", ns)
    return features_bytes(feats)


#: Serialized pre-authentication features by (starttls, required, mechanisms, cb types).
_PREAUTH_FEATURES: dict[tuple, bytes] = {}
#: Serialized post-authentication features by ``ClientPolicy.features_key()``.  A reload
#: that changes the handlers adds a key; the old ones (holding old handlers) are dropped.
_BOUND_FEATURES: dict[Hashable, bytes] = {}
_BOUND_FEATURES_MAX = 8


def _sasl_failure(condition: str, text: str | None = None) -> bytes:
    body = f"<{condition}/>"
    if text:
        body += f"<text>{escape_text(text)}</text>"
    return f"<failure xmlns='{SASL_NS}'>{body}</failure>".encode()


class ClientNegotiation:
    """One client's way from the first stream header to a bound resource."""

    __slots__ = (
        "policy", "io", "secure", "domain", "username", "sasl", "auth_failures", "bindings",
        "sasl2", "preauth",
    )

    def __init__(self, policy: ClientPolicy, io: StreamIO, *, secure: bool = False) -> None:
        self.policy = policy
        self.io = io
        self.secure = secure
        self.domain: str | None = None
        self.username: str | None = None
        self.sasl: SASLServer | None = None
        self.auth_failures = 0
        self.bindings: dict[str, bytes] | None = None  # TLS channel bindings, until auth
        self.sasl2: sasl2.Request | None = None  # a SASL2 <authenticate/> in progress
        #: What the ``register`` module keeps for this stream (an accepted invitation token).
        self.preauth: Any = None

    def provider(self) -> Any:
        """The ``sasl2`` module's service, or None (SASL2 not offered)."""
        services = self.policy.services
        return None if services is None else services.get("sasl2")

    def registration(self) -> Any:
        """The ``register`` module's service (XEP-0077 before authentication), or None."""
        services = self.policy.services
        return None if services is None else services.get("register")

    def tls_started(self, bindings: dict[str, bytes] | None) -> None:
        """TLS is on (direct TLS, or STARTTLS done), with these channel bindings."""
        self.secure = True
        self.bindings = bindings

    # -- stream header ----------------------------------------------------------------------

    def handle_stream_open(self, header: StreamOpen) -> None:
        # interned: every session of a domain then shares one string
        to = sys.intern(check_stream_header(header, CLIENT_NS))
        version = header.attrs.get("version", "0.9")
        if version.partition(".")[0] != "1":
            raise StreamErrorCondition("unsupported-version", "XMPP 1.0 is required")
        if not to:
            raise StreamErrorCondition("improper-addressing", "the stream header has no 'to'")
        if to not in self.policy.hosts:
            raise StreamErrorCondition("host-unknown", f"{to} is not served here")
        if self.domain is not None and to != self.domain:
            raise StreamErrorCondition("host-unknown", "'to' changed across a stream restart")
        self.domain = to
        self.io.send_header(to)
        if self.username is None:
            self._send_preauth_features()
        else:
            self.io.send_bytes(self._bound_features())

    def _send_preauth_features(self) -> None:
        """STARTTLS and SASL mechanisms: the same few variants for every connection, so
        each is serialized once."""
        policy = self.policy
        starttls = not self.secure and policy.tls_context is not None
        required = policy.require_encryption
        mechs: tuple[str, ...] = ()
        cb_types: tuple[str, ...] = ()
        if self.secure or not required:
            sasl = self.sasl = self._new_sasl()
            mechs = sasl.offered()
            cb_types = tuple(sasl.channel_binding_types())
        provider = self.provider() if mechs else None
        registration = self.registration() if mechs else None
        register = () if registration is None else registration.preauth_features(self.domain)
        key = (starttls, required, mechs, cb_types, sasl2.feature_key(provider, self), register)
        data = _PREAUTH_FEATURES.get(key)
        if data is None:
            data = _PREAUTH_FEATURES[key] = _preauth_features(*key, provider=provider)
        self.io.send_bytes(data)

    def _bound_features(self) -> bytes:
        """Bind, session and what the modules add: the same for every login while the
        modules' handlers stay the same, so serialized once per set of handlers."""
        key_of = self.policy.features_key
        if key_of is None:
            return features_bytes(self._features())
        key = key_of()
        data = _BOUND_FEATURES.get(key)
        if data is None:
            if len(_BOUND_FEATURES) >= _BOUND_FEATURES_MAX:
                _BOUND_FEATURES.clear()
            data = _BOUND_FEATURES[key] = features_bytes(self._features())
        return data

    def _features(self, bound: bool = False) -> Element:
        feats = Element("features", STREAM_NS, {}, [])
        if not bound:
            feats.subelement("bind", BIND_NS)
            feats.subelement("session", SESSION_NS).subelement("optional")
        self.policy.stream_features(self.io, feats)
        return feats

    def authenticated_features(self, bound: bool) -> bytes:
        """The features after a SASL2 success (no restart): those of a stream whose
        resource is ``bound`` already (XEP-0386) or is still to bind."""
        return features_bytes(self._features(bound))

    def _new_sasl(self) -> SASLServer:
        policy = self.policy
        return SASLServer(
            policy.credentials,
            secure=self.secure,
            channel_bindings=self.bindings,
            allow_plain=policy.allow_plain,
            server_secret=policy.secret,
            domain=self.domain or policy.default_domain,
        )

    # -- elements -----------------------------------------------------------------------------

    def handle_element(self, el: Element) -> Awaitable | None:
        ns = el.ns
        if ns == SASL_NS:
            return self._sasl(el)
        if ns == sasl2.SASL2_NS:
            return sasl2.handle(self, el)
        if ns == TLS_NS and el.name == "starttls":
            return self._starttls()
        if ns == CLIENT_NS and el.name in STANZA_NAMES:
            if self.username is not None and el.name == "iq":
                self._bind(el)
                return None
            registration = self.registration() if el.name == "iq" else None
            if registration is not None and registration.handles(el):
                return registration.preauth_iq(self, el)
            raise StreamErrorCondition("not-authorized", "authenticate first")
        if self.username is not None:  # e.g. XEP-0198 <resume/> instead of binding
            return stream_extension(self.policy, self.io, el)
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{el.name}/>")

    # -- STARTTLS ---------------------------------------------------------------------------

    def _starttls(self) -> Awaitable | None:
        if self.secure or self.policy.tls_context is None or self.username is not None:
            raise StreamErrorCondition("policy-violation", "STARTTLS is not allowed now")
        self.io.send_bytes(f"<proceed xmlns='{TLS_NS}'/>".encode())
        return self.io.begin_tls()

    # -- SASL --------------------------------------------------------------------------------

    def _sasl(self, el: Element) -> Awaitable | None:
        if self.username is not None:
            raise StreamErrorCondition("policy-violation", "already authenticated")
        if el.name == "abort":
            if self.sasl is not None:
                self.sasl.abort()
            self.io.send_bytes(_sasl_failure("aborted"))
            return None
        if self.sasl is None:  # TLS required and not yet negotiated
            self.io.send_bytes(_sasl_failure("encryption-required"))
            return None
        if el.name == "auth":
            return self._sasl_step(el, start=el.get("mechanism", ""))
        if el.name == "response":
            return self._sasl_step(el)
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected SASL <{el.name}/>")

    async def _sasl_step(self, el: Element, start: str | None = None) -> None:
        io, sasl, throttle = self.io, self.sasl, self.policy.throttle
        failure: SASLFailure | None = None
        try:
            data = decode_payload(el.text)
            if start is not None:
                step = await sasl.start(start, data)
            else:
                step = await sasl.respond(data if data is not None else b"")
        except SASLFailure as exc:
            failure = exc
        else:
            if not step.success:
                text = encode_payload(step.challenge or b"")
                io.send_bytes(f"<challenge xmlns='{SASL_NS}'>{text}</challenge>".encode())
                return
            if await self.account_disabled(step.username):
                failure = SASLFailure("account-disabled")
                self.sasl = sasl = self._new_sasl()
        # The outcome is known; the throttle decides when (and whether) the client hears it,
        # by (address, username): one user's failures never slow down or refuse another's
        # login, except under password spraying (many usernames failing from one address).
        user = sasl.attempted_username
        if not throttle.allowed(io.peer, user):
            self._auth_refused()
            return
        wait = throttle.delay(io.peer, user)
        if wait:
            await asyncio.sleep(wait)  # the shell reads nothing from this client meanwhile
        if failure is not None:
            self._auth_failed(failure)
            return
        throttle.succeeded(io.peer, step.username)
        self.count_login(sasl.mechanism, "success")
        self.username = step.username
        if log.isEnabledFor(logging.INFO):  # the address text costs even when not logged
            log.info("c2s authenticated: address=%s username=%s@%s mechanism=%s",
                     _addr(io.peer), self.username, self.domain, sasl.mechanism)
        self.sasl = None  # negotiation state is not needed any more
        self.bindings = None
        extra = encode_payload(step.additional_data)
        io.send_bytes(f"<success xmlns='{SASL_NS}'>{extra}</success>".encode())
        io.authenticated()
        io.restart_stream()

    def _auth_refused(self) -> None:
        self.auth_refused(_sasl_failure, self.sasl.mechanism)

    def _auth_failed(self, exc: SASLFailure) -> None:
        self.auth_failed(exc, self.sasl, _sasl_failure)

    async def account_disabled(self, username: str | None) -> bool:
        """The account is disabled (XEP-0133): checked only once its credentials proved
        right, so the answer tells nothing to someone who does not know the password."""
        domain = self.domain or self.policy.default_domain
        return bool(username) and await self.policy.credentials.account_disabled(username, domain)

    def auth_refused(self, failure: Callable[[str, str | None], bytes], mechanism: str) -> None:
        """Password spraying from this address (the throttle logged the limit): the same
        answer whatever the password was, so it tells the client nothing."""
        self.count_login(mechanism, "refused")
        self.sasl = self._new_sasl()  # a refused success must not leave it authenticated
        self.io.send_bytes(failure("temporary-auth-failure",
                                   "too many failed logins from your address, wait"))
        self._count_failure()

    def auth_failed(self, exc: SASLFailure, sasl: Any,
                    failure: Callable[[str, str | None], bytes]) -> None:
        """A failed attempt (``sasl``: the mechanism's state, for the log line)."""
        io = self.io
        log.info("c2s authentication failed: address=%s username=%s mechanism=%s reason=%s%s",
                 _addr(io.peer), _printable(sasl.attempted_username),
                 _printable(sasl.mechanism), exc.condition,
                 f" ({exc.text})" if exc.text else "")
        io.send_bytes(failure(exc.condition, exc.text))
        # "error": a negotiation error, which says nothing about the password
        self.count_login(sasl.mechanism, "failure" if exc.credentials else "error")
        if not exc.credentials:
            return  # not counted toward the limits either
        self.policy.throttle.failed(io.peer, sasl.attempted_username)
        self._count_failure()

    def count_login(self, mechanism: str, outcome: str) -> None:
        """For the metrics: a login with ``mechanism`` ended with ``outcome``."""
        connections = self.policy.connections
        if connections is not None:
            if mechanism not in COUNTED_MECHANISMS:
                mechanism = "other"
            # the kind of the stream carrying it: "c2s" (TCP), "bosh"...
            connections.login(getattr(self.io, "kind", "c2s"), mechanism, outcome)

    def _count_failure(self) -> None:
        """One more failed (or refused) attempt on this connection; close at the limit."""
        io = self.io
        self.auth_failures += 1
        limit = self.policy.limits.max_auth_failures
        if limit and self.auth_failures >= limit:
            if self.policy.connections is not None:
                self.policy.connections.limit("max_auth_failures")
            log.warning("limit max_auth_failures (%d) reached for %s: closing",
                        limit, _addr(io.peer))
            io.stream_error("policy-violation", "too many failed authentication attempts")

    # -- resource binding -------------------------------------------------------------------

    def _bind(self, iq: Element) -> None:
        payload = iq.find("bind", BIND_NS)
        if payload is None or iq.get("type") != "set" or "id" not in iq.attrs:
            raise StreamErrorCondition("not-authorized", "bind a resource first")
        requested = (payload.findtext("resource") or "").strip()
        resource = requested or secrets.token_hex(6)
        io = self.io
        try:
            jid = JID(f"{self.username}@{self.domain}/{resource}")
        except JIDError as exc:
            io.send(error_reply(iq, "bad-request", text=str(exc)))
            return
        try:
            session = self.policy.bind(jid, io)
        except BindError as exc:
            io.send(error_reply(iq, exc.condition, text=exc.text))
            return
        io.bound(session)
        if writes_plain(io):
            # What send() would write, without building and serializing the element (a
            # tenth of the cost): the stream only buffers the bytes (transport.plain_send).
            io.send_bytes(_bind_result(iq, jid.full))
        else:
            result = reply(iq)
            result.attrs.pop("from", None)
            result.subelement("bind", BIND_NS).subelement("jid", text=jid.full)
            io.send(result)
        if log.isEnabledFor(logging.INFO):
            log.info("c2s session bound: jid=%s address=%s", jid, _addr(io.peer))
        self.policy.bound(session)


def _bind_result(iq: Element, jid: str) -> bytes:
    """The bind result for ``iq`` as a ``jabber:client`` stream writes it: the bytes of
    ``reply(iq)`` without 'from', holding ``<bind><jid>jid</jid></bind>``."""
    attrs = iq.attrs
    to = attrs.get("from")  # reply() turns the request's 'from' into 'to'
    head = '<iq type="result"' if to is None else f'<iq type="result" to="{escape_attr(to)}"'
    return (f'{head} id="{escape_attr(attrs["id"])}"><bind xmlns="{BIND_NS}"><jid>'
            f'{escape_text(jid)}</jid></bind></iq>').encode()


def stream_extension(policy: ClientPolicy, stream: Any, el: Element) -> Awaitable | None:
    """Hand a non-stanza element of an authenticated stream to the modules
    (``policy.stream_element``); a stream error when none takes it."""
    handler = policy.stream_element
    result = False if handler is None else handler(stream, el)
    if result is True:
        return None
    if result is False or result is None:
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{el.name}/>")
    return _handled_later(result, el.name)


async def _handled_later(pending: Awaitable[Any], name: str) -> None:
    """A handler that decides asynchronously: unhandled is still a stream error."""
    if await pending is not True:
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{name}/>")


def _addr(peer: tuple[str, int] | None) -> str:
    """``host:port`` for the log (``[v6]:port``; ``-`` when unknown)."""
    return address_text(peer)


def _printable(text: str) -> str:
    """Client-chosen text for one log line: control characters and spaces replaced."""
    return "".join(c if c.isprintable() and c != " " else "?" for c in text) or "-"
