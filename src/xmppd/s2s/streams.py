"""Server-to-server streams (RFC 6120): inbound and outbound, STARTTLS or direct TLS
(XEP-0368), authenticated with SASL EXTERNAL (XEP-0178) or Server Dialback (XEP-0220).

Streams are one-way: an outbound stream carries our stanzas from one local domain to one
remote domain (one per pair, set up on demand by :class:`S2SManager`); an inbound stream
carries a peer's stanzas to us, for every (remote, local) domain pair it authenticated.  A
stanza whose ``from``/``to`` pair is not authorized ends the stream with ``invalid-from``.

Stanzas cross the wire in ``jabber:server`` and are handed to the router in
``jabber:client``, so modules and client sessions only ever see one stanza namespace.  An
inbound stream is the router's ``origin``: it has ``jid = None`` and ``remote = True``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import warnings
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from xmppd.c2s.sasl import SASLFailure, decode_payload
from xmppd.jid import JID, JIDError
from xmppd.s2s import dialback
from xmppd.s2s.dialback import DIALBACK_FEATURE_NS, DIALBACK_NS
from xmppd.s2s.resolver import ResolutionError, Resolver, Target
from xmppd.transport.stream import StreamErrorCondition, XMLStream, limits_kwargs
from xmppd.transport.tls import server_context, sni_context
from xmppd.xml.element import Element
from xmppd.xml.events import STREAM_NS, StreamOpen
from xmppd.xml.framing import check_stream_header
from xmppd.xml.stanza import CLIENT_NS, SERVER_NS, STANZA_NAMES

if TYPE_CHECKING:
    from xmppd.core.config import Config

log = logging.getLogger(__name__)

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
_DB_DECL = {"xmlns:db": DIALBACK_NS}


def renamespace(el: Element, old: str, new: str) -> Element:
    """A copy of ``el`` with every element in namespace ``old`` moved to ``new`` (stanzas
    change their default namespace between client, server and component streams)."""
    kids: list[Element | str] = [
        k if isinstance(k, str) else renamespace(k, old, new) for k in el.children
    ]
    return Element(el.name, new if el.ns == old else el.ns, dict(el.attrs), kids)


def stanza_bytes(stanza: Element) -> bytes:
    """Serialize a stanza into whatever default namespace the stream has: its own
    namespace (and that of its unqualified children) is left implicit."""
    return stanza.to_bytes(stanza.ns)


def _domain_of(value: str | None) -> str | None:
    """The domain of a JID attribute, or None if absent or malformed."""
    if not value:
        return None
    try:
        return JID(value).domain
    except JIDError:
        return None


class NegotiationError(Exception):
    """An outbound stream could not be set up; ``condition`` is the stanza error to bounce."""

    def __init__(self, text: str, condition: str = "remote-server-not-found") -> None:
        super().__init__(text)
        self.condition = condition


# -- inbound ------------------------------------------------------------------------------


class S2SInStream(XMLStream):
    """A stream a peer server opened to us."""

    default_ns = SERVER_NS
    jid = None  # not a local client session
    remote = True  # for modules: stanzas from this origin come from another server

    def __init__(self, manager: S2SManager, direct_tls: bool = False) -> None:
        super().__init__(**limits_kwargs(manager.limits), connections=manager.connections)
        self.manager = manager
        self.size_limit_name = "max_stanza_size_preauth_bytes"
        self.direct_tls = direct_tls
        self.local: str | None = None  # the 'to' of the stream header
        self.claimed: str | None = None  # the 'from' of the stream header
        self.authorized: set[tuple[str, str]] = set()  # (remote domain, local domain)
        self.sasl_done = False
        self.last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._closing:
            return  # refused: too many connections from this address
        self.last_activity = self.loop.time()
        self._timer = self.loop.call_later(self.manager.timeout, self._check_timers)
        if self.direct_tls:
            self._wait(self._handshake(), [])

    def _check_timers(self) -> None:
        self._timer = None
        if self.closed or self._closing:
            return
        if not self.authorized:
            self.stream_error("connection-timeout", "not authenticated in time")
            return
        idle = self.manager.idle_timeout
        left = self.last_activity + idle - self.loop.time()
        if left <= 0:
            log.info("closing idle inbound s2s stream from %s", self.claimed)
            self.close()
            return
        self._timer = self.loop.call_later(left, self._check_timers)

    def on_closed(self, abrupt: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def local_domain(self) -> str | None:
        return self.local or self.manager.default_domain

    # -- header and features ----------------------------------------------------------------

    def handle_stream_open(self, header: StreamOpen) -> None:
        to = check_stream_header(header, SERVER_NS)
        if not to or not self.manager.served(to):
            raise StreamErrorCondition("host-unknown", f"{to or 'no domain'} is not served here")
        if self.local is not None and to != self.local:
            raise StreamErrorCondition("host-unknown", "'to' changed across a stream restart")
        self.local = to
        claimed = header.attrs.get("from", "").lower().rstrip(".")
        if claimed:
            self.claimed = claimed
        self.send_header(to, self.claimed, **_DB_DECL)
        if header.attrs.get("version", "").partition(".")[0] == "1":
            self.send_features(self._features())

    def _features(self) -> Element:
        feats = Element("features", STREAM_NS, {}, [])
        policy = self.manager.tls
        if not self.secure and policy.available:
            tls = feats.subelement("starttls", TLS_NS)
            if self.manager.require_encryption:
                tls.subelement("required")
        if self.secure or not self.manager.require_encryption:
            if not self.sasl_done and self.claimed and self._cert_valid_for(self.claimed):
                mechs = feats.subelement("mechanisms", SASL_NS)
                mechs.subelement("mechanism", text="EXTERNAL")
            feats.append(dialback.features_element())
        return feats

    def _cert_valid_for(self, domain: str) -> bool:
        if not self.secure or self.transport is None:
            return False
        sslobj = self.transport.get_extra_info("ssl_object")
        return sslobj is not None and self.manager.tls.peer_valid(sslobj, domain, server_side=True)

    # -- elements -----------------------------------------------------------------------------

    def handle_element(self, el: Element) -> Awaitable | None:
        self.last_activity = self.loop.time()
        ns = el.ns
        if ns == SERVER_NS and el.name in STANZA_NAMES:
            return self._stanza(el)
        if ns == DIALBACK_NS:
            if el.name == "result":
                return self._db_result(el)
            if el.name == "verify":
                return self._db_verify(el)
        elif ns == TLS_NS and el.name == "starttls":
            return self._starttls()
        elif ns == SASL_NS:
            return self._sasl(el)
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{el.name}/>")

    def _stanza(self, el: Element) -> Awaitable | None:
        sender, target = _domain_of(el.get("from")), _domain_of(el.get("to"))
        if sender is None or target is None:
            raise StreamErrorCondition("improper-addressing", "a stanza needs 'from' and 'to'")
        if (sender, target) not in self.authorized:
            raise StreamErrorCondition("invalid-from", f"{sender} is not authenticated to send to {target}")
        stanza = renamespace(el, SERVER_NS, CLIENT_NS)
        try:
            result = self.manager.router.route(stanza, self)
        except Exception:
            # A module failing on a remote origin must not cut off a whole domain.
            log.exception("routing a stanza from %s failed", sender)
            self.manager.router.bounce(stanza, "internal-server-error")
            return None
        return None if result is None else self._guard(result, stanza)

    async def _guard(self, pending: Awaitable, stanza: Element) -> None:
        try:
            await pending
        except Exception:
            log.exception("routing a stanza from %s failed", stanza.get("from"))
            self.manager.router.bounce(stanza, "internal-server-error")

    def _authorize(self, remote: str, local: str) -> None:
        log.info("inbound s2s stream %s authenticated as %s -> %s", self.peer, remote, local)
        self.authorized.add((remote, local))
        self.tokenizer.max_stanza_size = self.manager.limits.max_stanza_size_bytes
        self.size_limit_name = "max_stanza_size_bytes"

    # -- STARTTLS ---------------------------------------------------------------------------

    def _starttls(self) -> Awaitable | None:
        if self.secure or not self.manager.tls.available or self.authorized:
            raise StreamErrorCondition("policy-violation", "STARTTLS is not allowed now")
        self.send_bytes(f"<proceed xmlns='{TLS_NS}'/>".encode())
        self.flush()
        self.reset_stream()
        return self._handshake()

    async def _handshake(self) -> None:
        await self.start_tls(self.manager.tls.server_context(direct=self.direct_tls))

    # -- SASL EXTERNAL (XEP-0178) ---------------------------------------------------------------

    def _sasl(self, el: Element) -> None:
        if el.name != "auth":
            self._sasl_failure("aborted" if el.name == "abort" else "malformed-request")
            return
        if self.sasl_done or not self.secure:
            raise StreamErrorCondition("policy-violation", "SASL is not allowed now")
        if el.get("mechanism") != "EXTERNAL":
            self._sasl_failure("invalid-mechanism")
            return
        try:
            data = decode_payload(el.text)
        except SASLFailure as exc:
            self._sasl_failure(exc.condition)
            return
        authzid = (data or b"").decode("utf-8", "replace").lower() or self.claimed
        if not authzid or (self.claimed and authzid != self.claimed):
            self._sasl_failure("invalid-authzid")
            return
        if not self._cert_valid_for(authzid):
            self._sasl_failure("not-authorized")
            return
        self.sasl_done = True
        self.claimed = authzid
        self._authorize(authzid, self.local)
        self.send_bytes(f"<success xmlns='{SASL_NS}'/>".encode())
        self.restart_stream()

    def _sasl_failure(self, condition: str) -> None:
        self.send_bytes(f"<failure xmlns='{SASL_NS}'><{condition}/></failure>".encode())

    # -- dialback ---------------------------------------------------------------------------------

    def _db_result(self, el: Element) -> None:
        if "type" in el.attrs:
            return  # an answer on an inbound stream was never asked for: ignored
        remote, local, key = el.get("from", ""), el.get("to", ""), el.text.strip()
        if not self.secure and self.manager.require_encryption:
            raise StreamErrorCondition("policy-violation", "STARTTLS is required first")
        if not self.manager.served(local):
            self.send(dialback.result_error(local, remote, "item-not-found"))
            return
        if _domain_of(remote) != remote or not key:
            self.send(dialback.result_error(local, remote, "bad-request", "modify"))
            return
        if (remote, local) in self.authorized:
            self.send(dialback.result_answer(local, remote, True))
            return
        if self._cert_valid_for(remote):
            # The certificate already proves the domain (XEP-0344): no need to dial back.
            self._authorize(remote, local)
            self.send(dialback.result_answer(local, remote, True))
            return
        if remote in self.manager.require_valid:
            self.send(dialback.result_error(local, remote, "not-authorized", "auth"))
            return
        task = asyncio.ensure_future(self._verify_result(remote, local, key))
        task.add_done_callback(_log_failure)

    async def _verify_result(self, remote: str, local: str, key: str) -> None:
        valid = await self.manager.verify(local, remote, self.stream_id, key)
        if self.closed or self._closing:
            return
        if valid:
            self._authorize(remote, local)
        else:
            log.info("dialback for %s from %s failed", remote, self.peer)
        self.send(dialback.result_answer(local, remote, valid))

    def _db_verify(self, el: Element) -> None:
        if "type" in el.attrs:
            return  # answers come back on our outbound streams only
        receiving, originating = el.get("from", ""), el.get("to", "")
        stream_id = el.get("id", "")
        if not self.manager.served(originating):
            raise StreamErrorCondition("host-unknown", f"{originating} is not served here")
        valid = dialback.key_matches(
            self.manager.secret, receiving, originating, stream_id, el.text
        )
        self.send(dialback.verify_answer(originating, receiving, stream_id, valid))


# -- outbound -----------------------------------------------------------------------------


_TLS_DONE = object()
_CLOSED = object()


class S2SOutStream(XMLStream):
    """Our side of a stream to a peer: negotiated step by step by :meth:`negotiate`."""

    default_ns = SERVER_NS

    def __init__(self, link: OutboundLink, direct_tls: bool) -> None:
        super().__init__(**limits_kwargs(link.manager.limits, preauth=False), secure=direct_tls)
        self.link = link
        self.events: asyncio.Queue = asyncio.Queue()
        self.remote_id = ""
        self.dialback_declared = False

    def local_domain(self) -> str | None:
        return self.link.local

    def on_closed(self, abrupt: bool) -> None:
        self.events.put_nowait(_CLOSED)
        self.link.stream_closed(self)

    def handle_stream_open(self, header: StreamOpen) -> None:
        self.events.put_nowait(header)

    def handle_element(self, el: Element) -> Awaitable | None:
        if el.ns == DIALBACK_NS and el.name == "verify":
            self.link.verify_answered(el)
            return None
        if el.ns == TLS_NS and el.name == "proceed":
            self.reset_stream()
            return self._handshake()
        if el.ns == SASL_NS and el.name == "success":
            self.restart_stream()  # now: what follows is parsed as a new stream
        self.events.put_nowait(el)
        return None

    async def _handshake(self) -> None:
        link = self.link
        ctx = link.manager.tls.client_context(link.local, direct=False)
        if await self.start_tls(ctx, server_side=False, server_hostname=link.remote):
            self.events.put_nowait(_TLS_DONE)
        elif self.close_reason is not None:  # the handshake failed (not: the peer left)
            self.events.put_nowait(NegotiationError(self.close_reason))

    async def _next(self):
        item = await self.events.get()
        if item is _CLOSED:
            raise NegotiationError("the peer closed the stream")
        if isinstance(item, Exception):
            raise item
        if isinstance(item, Element) and item.ns == STREAM_NS and item.name == "error":
            cond = next((k.name for k in item.elements() if k.name != "text"), "undefined")
            raise NegotiationError(f"stream error from the peer: {cond}")
        return item

    async def _open(self) -> Element | None:
        """Send our header; return the peer's features (None for a pre-1.0 peer)."""
        link = self.link
        self.send_header(link.local, link.remote, **_DB_DECL)
        header = await self._next()
        if not isinstance(header, StreamOpen) or header.namespaces.get("") != SERVER_NS:
            raise NegotiationError("the peer did not open a jabber:server stream")
        self.remote_id = header.attrs.get("id", "")
        self.dialback_declared = header.namespaces.get("db") == DIALBACK_NS
        if header.attrs.get("version", "").partition(".")[0] != "1":
            return None
        features = await self._next()
        if not isinstance(features, Element) or features.name != "features":
            raise NegotiationError("the peer sent no stream features")
        return features

    async def negotiate(self) -> None:
        """TLS, then SASL EXTERNAL or dialback; returns once the stream is authorized."""
        link, manager = self.link, self.link.manager
        features = await self._open()
        if not self.secure and features is not None and features.find("starttls", TLS_NS) is not None:
            self.send_bytes(f"<starttls xmlns='{TLS_NS}'/>".encode())
            # handle_element turns <proceed/> into the handshake, which queues _TLS_DONE
            if await self._next() is not _TLS_DONE:
                raise NegotiationError("STARTTLS refused by the peer")
            features = await self._open()
        if not self.secure and manager.require_encryption:
            raise NegotiationError("the peer does not offer TLS")
        sslobj = self.transport.get_extra_info("ssl_object") if self.transport else None
        cert_ok = sslobj is not None and manager.tls.peer_valid(sslobj, link.remote)
        if link.remote in manager.require_valid and not cert_ok:
            raise NegotiationError(f"{link.remote} has no valid certificate")
        link.verify_ready(self)
        if features is not None and self.secure and _offers_external(features):
            if await self._external():
                return
        if features is not None and features.find("dialback", DIALBACK_FEATURE_NS) is None \
                and not self.dialback_declared:
            raise NegotiationError("no authentication method in common with the peer")
        await self._dialback()

    async def _external(self) -> bool:
        token = base64.b64encode(self.link.local.encode()).decode()
        self.send_bytes(f"<auth xmlns='{SASL_NS}' mechanism='EXTERNAL'>{token}</auth>".encode())
        reply = await self._next()
        if not isinstance(reply, Element) or reply.ns != SASL_NS or reply.name != "success":
            log.info("SASL EXTERNAL to %s failed; trying dialback", self.link.remote)
            return False
        await self._open()
        return True

    async def _dialback(self) -> None:
        link = self.link
        key = dialback.dialback_key(
            link.manager.secret, link.remote, link.local, self.remote_id
        )
        self.send(dialback.result_request(link.local, link.remote, key))
        while True:
            reply = await self._next()
            if not (isinstance(reply, Element) and reply.ns == DIALBACK_NS and reply.name == "result"):
                continue
            if reply.get("from") != link.remote or reply.get("to") != link.local:
                continue  # not the answer to our request: ignored
            if reply.get("type") == "valid":
                return
            raise NegotiationError(f"{link.remote} refused dialback ({reply.get('type')})")


def _offers_external(features: Element) -> bool:
    mechs = features.find("mechanisms", SASL_NS)
    return mechs is not None and any(m.text == "EXTERNAL" for m in mechs.elements())


class OutboundLink:
    """Everything we send from one local domain to one remote domain: the queue while the
    stream is set up, the stream once it is authorized, dialback verifications to send."""

    def __init__(self, manager: S2SManager, local: str, remote: str) -> None:
        self.manager = manager
        self.local = local
        self.remote = remote
        self.queue: deque[Element] = deque()
        self.stream: S2SOutStream | None = None
        self.ready = False
        self.done = False
        self.last_activity = manager.loop.time()
        self._verifies: list[Element] = []
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._verify_stream: S2SOutStream | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.task = asyncio.ensure_future(self._run())
        self.task.add_done_callback(_log_failure)

    def send(self, stanza: Element) -> None:
        self.last_activity = self.manager.loop.time()
        if self.ready and self.stream is not None:
            self.stream.send_bytes(stanza_bytes(stanza))
        elif len(self.queue) >= self.manager.max_queue:
            self.manager.router.bounce(stanza, "resource-constraint", "s2s queue full")
        else:
            self.queue.append(stanza)

    async def _run(self) -> None:
        try:
            async with asyncio.timeout(self.manager.timeout):
                await self._connect()
        except TimeoutError:
            self.fail("remote-server-timeout", f"{self.remote} did not answer in time")
            return
        except (ResolutionError, OSError, NegotiationError) as exc:
            condition = getattr(exc, "condition", "remote-server-not-found")
            self.fail(condition, str(exc))
            return
        log.info("outbound s2s stream %s -> %s ready", self.local, self.remote)
        self.ready = True
        while self.queue:
            self.stream.send_bytes(stanza_bytes(self.queue.popleft()))
        self._idle = self.manager.loop.call_later(self.manager.idle_timeout, self._check_idle)

    async def _connect(self) -> None:
        targets = await self.manager.resolver.resolve(self.remote)
        error: Exception = NegotiationError(f"no address for {self.remote}")
        for target in targets:
            try:
                await self._attempt(target)
                return
            except (OSError, NegotiationError) as exc:
                log.info("s2s %s -> %s via %s:%d failed: %s",
                         self.local, self.remote, target.host, target.port, exc)
                error = exc
                if self.stream is not None:
                    self.stream.close()
                    self.stream = None
        raise error

    async def _attempt(self, target: Target) -> None:
        loop = self.manager.loop
        tls = self.manager.tls
        ctx = tls.client_context(self.local, direct=True) if target.direct_tls else None
        _transport, stream = await loop.create_connection(
            lambda: S2SOutStream(self, target.direct_tls), target.host, target.port,
            ssl=ctx, server_hostname=self.remote if ctx else None,
            ssl_handshake_timeout=15 if ctx else None,
        )
        self.stream = stream
        await stream.negotiate()

    def _check_idle(self) -> None:
        left = self.last_activity + self.manager.idle_timeout - self.manager.loop.time()
        if left > 0:
            self._idle = self.manager.loop.call_later(left, self._check_idle)
            return
        log.info("closing idle outbound s2s stream %s -> %s", self.local, self.remote)
        self.close()

    def fail(self, condition: str, text: str) -> None:
        log.info("s2s %s -> %s failed (%s): %s", self.local, self.remote, condition, text)
        self.close()
        router = self.manager.router
        while self.queue:
            router.bounce(self.queue.popleft(), condition, text)

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        self.manager.forget(self)
        if self._idle is not None:
            self._idle.cancel()
        if not self.task.done():
            self.task.cancel()
        if self.stream is not None:
            self.stream.close()
        for futures in self._pending.values():
            for fut in futures:
                if not fut.done():
                    fut.set_result(False)
        self._pending.clear()

    def stream_closed(self, stream: S2SOutStream) -> None:
        if stream is self.stream and self.ready:
            self.close()

    # -- dialback verification through this link --------------------------------------------

    def request_verify(self, stream_id: str, key: str) -> asyncio.Future:
        """Ask the authoritative server (our peer) whether ``key`` is valid for the stream
        ``stream_id`` it opened to us; resolves to True or False."""
        fut = self.manager.loop.create_future()
        self._pending.setdefault(stream_id, []).append(fut)
        request = dialback.verify_request(self.local, self.remote, stream_id, key)
        if self._verify_stream is not None:
            self._verify_stream.send(request)
        else:
            self._verifies.append(request)
        return fut

    def verify_ready(self, stream: S2SOutStream) -> None:
        """The stream is encrypted as required: verifications may go out before it is
        authorized itself (XEP-0220 §2.1.2), which breaks the chicken-and-egg between two
        servers authenticating to each other at the same time."""
        self._verify_stream = stream
        for request in self._verifies:
            stream.send(request)
        self._verifies.clear()

    def verify_answered(self, el: Element) -> None:
        if el.get("from") != self.remote or el.get("to") != self.local:
            log.info("ignoring a db:verify answer for another domain pair")
            return
        futures = self._pending.pop(el.get("id", ""), None)
        if not futures:
            log.info("ignoring an unsolicited db:verify answer from %s", self.remote)
            return
        for fut in futures:
            if not fut.done():
                fut.set_result(el.get("type") == "valid")


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("s2s task failed", exc_info=task.exception())


# -- TLS policy ---------------------------------------------------------------------------------


class TLSPolicy:
    """TLS contexts for s2s and the PKIX check of a peer's certificate (RFC 6125).

    Inbound streams request a client certificate only when ``s2s_ca_file`` is set: the
    ``ssl`` module cannot request one without failing the handshake on a certificate that
    does not verify, which would lock out peers that rely on dialback.  Outbound streams
    never fail the handshake; the peer's certificate is checked afterwards.
    """

    available = True  # every served domain has a certificate (generated if need be)

    def __init__(self, config: Config) -> None:
        self.config = config
        self._server: dict[bool, ssl.SSLContext] = {}
        self._client: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._store: Store | None | bool = False

    def _cert_domain(self, domain: str) -> str:
        """The configured domain whose certificate serves ``domain`` (a subdomain such as
        a component's is covered by the parent's ``*.`` name)."""
        domains = self.config.domains
        for d in domains:
            if domain == d or domain.endswith("." + d):
                return d
        return domains[0]

    def server_context(self, direct: bool) -> ssl.SSLContext:
        ctx = self._server.get(direct)
        if ctx is None:
            cfg = self.config
            alpn = ["xmpp-server"] if direct else None
            contexts = {
                d: server_context(cfg.certificate_for(d).cert, cfg.certificate_for(d).key,
                                  alpn=alpn, client_ca=cfg.s2s_ca_file)
                for d in cfg.domains
            }
            ctx = self._server[direct] = sni_context(contexts, cfg.domains[0])
        return ctx

    def client_context(self, local: str, direct: bool) -> ssl.SSLContext:
        key = (self._cert_domain(local), direct)
        ctx = self._client.get(key)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # checked by peer_valid, after the handshake
            cert = self.config.certificate_for(key[0])
            ctx.load_cert_chain(cert.cert, cert.key)  # presented for SASL EXTERNAL
            if direct:
                ctx.set_alpn_protocols(["xmpp-server"])
            self._client[key] = ctx
        return ctx

    def _trust_store(self) -> Store | None:
        if self._store is False:
            path = self.config.s2s_ca_file
            if path is None:
                paths = ssl.get_default_verify_paths()
                path = paths.cafile or paths.openssl_cafile
            try:
                with open(path, "rb") as fh, warnings.catch_warnings():
                    # system bundles hold a few legacy roots cryptography frowns upon
                    warnings.simplefilter("ignore")
                    self._store = Store(x509.load_pem_x509_certificates(fh.read()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("no CA certificates for s2s (%s): certificates never validate", exc)
                self._store = None
        return self._store  # type: ignore[return-value]

    def peer_valid(self, sslobj: ssl.SSLObject, domain: str, server_side: bool = False) -> bool:
        """Whether the peer's certificate chains to a trusted CA and names ``domain``."""
        der = sslobj.getpeercert(binary_form=True)
        store = self._trust_store()
        if not der or store is None:
            return False
        try:
            cert = x509.load_der_x509_certificate(der)
            verifier = PolicyBuilder().store(store).build_server_verifier(DNSName(domain))
            verifier.verify(cert, [])
        except (VerificationError, ValueError) as exc:
            log.debug("certificate of %s not valid (%s side): %s",
                      domain, "server" if server_side else "client", exc)
            return False
        return True


# -- the manager ------------------------------------------------------------------------------


class S2SManager:
    """Outbound links by domain pair, the ``route/remote`` handler, and the policy shared by
    all s2s streams of one server."""

    def __init__(self, server: Any, resolver: Resolver | None = None) -> None:
        # ``server`` is the composition root (what modules/s2s.py hands over): what the
        # streams need of it is taken here, once, and nothing else of it is kept.
        cfg = server.config
        self.router = server.router
        self.secret: bytes = server.secret
        self.connections = server.connections
        self.limits = cfg.limits
        self.default_domain = cfg.domains[0]
        self.loop = asyncio.get_event_loop()
        self.resolver = resolver or Resolver(cfg.s2s_routes, timeout=cfg.s2s_timeout_s)
        self.tls = TLSPolicy(cfg)
        self.timeout = cfg.s2s_timeout_s
        self.idle_timeout = cfg.s2s_idle_timeout_s
        self.max_queue = cfg.s2s_max_queue
        self.require_encryption = cfg.s2s_require_encryption
        self.require_valid = frozenset(d.lower() for d in cfg.s2s_require_valid_certificates)
        self.links: dict[tuple[str, str], OutboundLink] = {}
        self.extra_domains: set[str] = set()  # e.g. external components' domains

    def served(self, domain: str) -> bool:
        return domain in self.router.hosts or domain in self.extra_domains

    def link(self, local: str, remote: str) -> OutboundLink:
        link = self.links.get((local, remote))
        if link is None or link.done:
            link = self.links[(local, remote)] = OutboundLink(self, local, remote)
        return link

    def forget(self, link: OutboundLink) -> None:
        if self.links.get((link.local, link.remote)) is link:
            del self.links[(link.local, link.remote)]

    def route(self, stanza: Element, origin: object) -> bool:
        """``route/remote``: send a stanza to its remote domain (True: taken care of)."""
        remote, local = _domain_of(stanza.get("to")), _domain_of(stanza.get("from"))
        if remote is None or local is None or not self.served(local) or self.served(remote):
            return False
        self.link(local, remote).send(stanza)
        return True

    async def verify(self, local: str, remote: str, stream_id: str, key: str) -> bool:
        """Check a dialback key ``remote`` gave us with ``remote``'s authoritative server."""
        fut = self.link(local, remote).request_verify(stream_id, key)
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            return False

    def close_all(self, *_args: object) -> None:
        for link in list(self.links.values()):
            link.close()
