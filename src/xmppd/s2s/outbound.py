"""Outbound s2s streams: we connect to a peer for one (local, remote) domain pair.

:class:`OutboundLink` queues what we send while :class:`S2SOutStream` is set up (resolve,
connect, STARTTLS or direct TLS, then SASL EXTERNAL or dialback), sends it once the stream
is authorized, bounces it if that fails, and carries our ``<db:verify>`` requests when we
check a dialback key with the peer's authoritative server.  When the peer offers
bidirectional streams (XEP-0288) we ask for it, and the peer's stanzas from the remote
domain to the local one then arrive over this stream too.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from xmppd.s2s import dialback
from xmppd.s2s.common import (
    BIDI_FEATURE_NS,
    BIDI_NS,
    DB_DECL,
    SASL_NS,
    TLS_NS,
    NegotiationError,
    Traced,
    domain_of,
    log,
    log_failure,
    renamespace,
    stanza_bytes,
    tls_version,
)
from xmppd.s2s.dialback import DIALBACK_FEATURE_NS, DIALBACK_NS, dialback_bytes
from xmppd.s2s.inbound import route_inbound
from xmppd.s2s.resolver import ResolutionError, Target
from xmppd.transport.stream import StreamErrorCondition, XMLStream, limits_kwargs
from xmppd.xml.element import Element
from xmppd.xml.events import STREAM_NS, StreamOpen
from xmppd.xml.stanza import CLIENT_NS, SERVER_NS, STANZA_NAMES

if TYPE_CHECKING:
    from xmppd.s2s.manager import S2SManager

_TLS_DONE = object()
_CLOSED = object()


class S2SOutStream(Traced, XMLStream):
    """Our side of a stream to a peer: negotiated step by step by :meth:`negotiate`."""

    default_ns = SERVER_NS
    kind = "s2s_out"
    jid = None  # with bidi, the origin of the peer's stanzas (like an inbound stream)
    remote = True

    def __init__(self, link: OutboundLink, direct_tls: bool) -> None:
        connections = link.manager.connections  # counters only: not capped as inbound are
        super().__init__(**limits_kwargs(link.manager.limits, preauth=False), secure=direct_tls,
                         traffic=connections.traffic_for(self.kind) if connections else None)
        self.link = link
        self.manager = link.manager
        self.events: asyncio.Queue = asyncio.Queue()
        self.remote_id = ""
        self.dialback_declared = False
        self.bidi = False  # we asked for a bidirectional stream (the peer offered it)
        self.method = ""  # how we authenticated: "SASL EXTERNAL" or "dialback"
        self.authenticated = False  # set as the answer is parsed: stanzas may follow it

    def local_domain(self) -> str | None:
        return self.link.local

    def on_closed(self, abrupt: bool) -> None:
        self.events.put_nowait(_CLOSED)
        self.link.stream_closed(self)

    def handle_stream_open(self, header: StreamOpen) -> None:
        self.events.put_nowait(header)

    def handle_element(self, el: Element) -> Awaitable | None:
        self.trace_in(el, SERVER_NS)
        if el.ns == SERVER_NS and el.name in STANZA_NAMES and self.bidi and self.authenticated:
            return self._stanza(el)
        if el.ns == DIALBACK_NS and el.name == "verify":
            if "type" not in el.attrs and self.bidi:
                self._db_verify(el)  # the peer checks a key with us over our bidi stream
            else:
                self.link.verify_answered(el)
            return None
        if el.ns == DIALBACK_NS and el.name == "result" and el.get("type") == "valid" \
                and (el.get("from"), el.get("to")) == (self.link.remote, self.link.local):
            self.authenticated = True
        if el.ns == TLS_NS and el.name == "proceed":
            self.reset_stream()
            return self._handshake()
        if el.ns == SASL_NS and el.name == "success":
            self.authenticated = True
            self.restart_stream()  # now: what follows is parsed as a new stream
        self.events.put_nowait(el)
        return None

    def _stanza(self, el: Element) -> Awaitable | None:
        """A stanza from the peer over our bidirectional stream: only for the domain pair
        this stream is for (we connected to the remote domain and authenticated to it)."""
        self.link.last_activity = self.loop.time()
        sender, target = domain_of(el.get("from")), domain_of(el.get("to"))
        if (sender, target) != (self.link.remote, self.link.local):
            raise StreamErrorCondition(
                "invalid-from", f"{sender} -> {target} is not this stream's domain pair")
        return route_inbound(self, renamespace(el, SERVER_NS, CLIENT_NS), sender)

    def _db_verify(self, el: Element) -> None:
        receiving, originating, stream_id = el.get("from", ""), el.get("to", ""), el.get("id", "")
        if originating != self.link.local:
            raise StreamErrorCondition("host-unknown", f"{originating} is not this stream's")
        valid = dialback.key_matches(self.manager.secret, receiving, originating, stream_id, el.text)
        self.send_bytes(dialback_bytes(
            dialback.verify_answer(originating, receiving, stream_id, valid)))

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
        self.send_header(link.local, link.remote, **DB_DECL)
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
        self._ask_bidi(features)
        if features is not None and self.secure and _offers_external(features):
            if await self._external():
                self._ask_bidi(await self._open())
                self.method = "SASL EXTERNAL"
                return
        if not manager.settings.dialback:
            raise NegotiationError("SASL EXTERNAL failed and dialback is disabled")
        if features is not None and features.find("dialback", DIALBACK_FEATURE_NS) is None \
                and not self.dialback_declared:
            raise NegotiationError("no authentication method in common with the peer")
        await self._dialback()
        self.method = "dialback"

    def _ask_bidi(self, features: Element | None) -> None:
        """XEP-0288: ask for a bidirectional stream, before authentication, when offered."""
        if (not self.bidi and features is not None and self.link.manager.settings.bidi
                and features.find("bidi", BIDI_FEATURE_NS) is not None):
            self.send_bytes(f"<bidi xmlns='{BIDI_NS}'/>".encode())
            self.bidi = True

    async def _external(self) -> bool:
        token = base64.b64encode(self.link.local.encode()).decode()
        self.send_bytes(f"<auth xmlns='{SASL_NS}' mechanism='EXTERNAL'>{token}</auth>".encode())
        reply = await self._next()
        if not isinstance(reply, Element) or reply.ns != SASL_NS or reply.name != "success":
            why = next((k.name for k in reply.elements()), "no answer") \
                if isinstance(reply, Element) else "no answer"
            log.info("s2s %s -> %s: SASL EXTERNAL refused (%s); trying dialback",
                     self.link.local, self.link.remote, why)
            return False
        return True

    async def _dialback(self) -> None:
        link = self.link
        key = dialback.dialback_key(
            link.manager.secret, link.remote, link.local, self.remote_id
        )
        self.send_bytes(dialback_bytes(dialback.result_request(link.local, link.remote, key)))
        while True:
            reply = await self._next()
            if not (isinstance(reply, Element) and reply.ns == DIALBACK_NS and reply.name == "result"):
                continue
            if reply.get("from") != link.remote or reply.get("to") != link.local:
                continue  # not the answer to our request: ignored
            if reply.get("type") == "valid":
                return
            error = next((k for k in reply.elements() if k.name == "error"), None)
            cond = next((k.name for k in error.elements()), "") if error is not None else ""
            raise NegotiationError(f"{link.remote} refused dialback ({reply.get('type')}"
                                   f"{': ' + cond if cond else ''})")


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
        self.task.add_done_callback(log_failure)

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
        stream = self.stream
        log.info("s2s outbound to %s: %s -> %s authenticated by %s over %s%s", stream.peer,
                 self.local, self.remote, stream.method, tls_version(stream.transport),
                 " (bidi)" if stream.bidi else "")
        self.ready = True
        while self.queue:
            stream.send_bytes(stanza_bytes(self.queue.popleft()))
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
        log.info("s2s outbound %s -> %s failed (%s): %s", self.local, self.remote, condition, text)
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
            self._verify_stream.send_bytes(dialback_bytes(request))
        else:
            self._verifies.append(request)
        return fut

    def verify_ready(self, stream: S2SOutStream) -> None:
        """The stream is encrypted as required: verifications may go out before it is
        authorized itself (XEP-0220 §2.1.2), which breaks the chicken-and-egg between two
        servers authenticating to each other at the same time."""
        self._verify_stream = stream
        for request in self._verifies:
            stream.send_bytes(dialback_bytes(request))
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
