"""BOSH (XEP-0124, XEP-0206): XMPP over HTTP long polling on ``/http-bind``.

A BOSH session is one more kind of client stream: a :class:`BOSHStream` plays the part
the TCP :class:`~xmppd.c2s.stream.C2SStream` plays — the sans-IO
:class:`~xmppd.c2s.negotiation.ClientNegotiation` (SASL, bind, the same limits and
throttles) until the resource is bound, then :func:`~xmppd.c2s.stanzas.client_stanza` and
the router — and it is the bound :class:`~xmppd.core.session.Session`'s transport, so stream
management, offline storage, carbons and the rest behave as over TCP.  The HTTP side (the
``rid`` window, retransmissions, held requests, what each answer carries) is the sans-IO
:class:`xmppd.web.bosh.BOSHSession`; this module adds the timers (``wait``, inactivity,
pause, authentication) and the futures the HTTP handlers wait on.

There is no STARTTLS inside BOSH: a session counts as encrypted when its requests came over
HTTPS, or over plain HTTP from a trusted reverse proxy that terminated TLS
(``trusted_proxies``, loopback by default; their ``X-Forwarded-For`` then names the client
for the per-address limits).  With ``require_encryption`` (the default) any other session is
refused.  Responses carry CORS headers: browsers call the endpoint cross-origin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from xmppd.c2s.negotiation import ClientNegotiation, ClientPolicy
from xmppd.c2s.stream import client_element
from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.transport.connections import address_text
from xmppd.transport.http import HTTPError, HTTPRequest, Response, cors_headers
from xmppd.web.bosh import (
    BOSH_NS,
    RETRANSMIT,
    Body,
    BOSHError,
    BOSHSession,
    body_bytes,
    creation_attrs,
    negotiate,
    new_sid,
    parse_body,
    stream_error_body,
    terminate_bytes,
)
from xmppd.xml.events import STREAM_NS, StreamOpen
from xmppd.xml.framing import StreamErrorCondition, new_stream_id
from xmppd.xml.stanza import CLIENT_NS

if TYPE_CHECKING:
    from xmppd.core.session import Session
    from xmppd.xml.element import Element

PATH = "/http-bind"
XBOSH = "urn:xmpp:alt-connections:xbosh"
#: Ended sessions whose terminal answer a later request still gets (then item-not-found).
ENDED_KEPT = 1000


class BOSHStream:
    """One BOSH session: the negotiation's stream (``StreamIO``) and, once bound, the
    session's transport."""

    default_ns = CLIENT_NS
    kind = "bosh"  # the stream kind in the metrics (logins, stream errors)

    def __init__(self, module: BOSH, core: BOSHSession, policy: ClientPolicy,
                 peer: tuple[str, int] | None, secure: bool) -> None:
        self.module = module
        self.core = core
        self.sid = core.sid
        self.policy = policy
        self.peer = peer
        self.secure = secure
        self.negotiation: ClientNegotiation | None = ClientNegotiation(policy, self, secure=secure)
        self.session: Session | None = None
        self.sm: Any = None  # XEP-0198 state, as on C2SStream
        self.stream_id = ""
        self.header_sent = False
        self.closed = False
        self.heard = True
        self.close_reason: str | None = None
        self.restart_expected = False
        self.authed = False
        self.loop = asyncio.get_running_loop()
        self.waiters: dict[int, list[asyncio.Future]] = {}
        self.wait_timers: dict[int, asyncio.TimerHandle] = {}
        self.idle_timer: asyncio.TimerHandle | None = None
        self.auth_timer: asyncio.TimerHandle | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.backlog: deque[Body] = deque()
        self.processing = False

    @property
    def jid(self) -> Any:
        return None if self.session is None else self.session.jid

    # -- HTTP requests --------------------------------------------------------------------

    async def request(self, body: Body) -> bytes:
        """Admit one request of this session; its answer, when there is one."""
        core = self.core
        try:
            verdict = core.accept(body, self.loop.time())
        except BOSHError as exc:
            self.module.limit_log(exc, self)
            self.fail(exc.condition, f"{exc.condition} ({exc.text})")
            return terminate_bytes(exc.condition)
        self.heard = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        core.paused = 0
        rid = body.rid
        if verdict == RETRANSMIT:
            cached = core.replay(rid)
            if cached is not None:
                return cached
        waiter = self.loop.create_future()
        self.waiters.setdefault(rid, []).append(waiter)
        if verdict != RETRANSMIT:
            ready = core.ready()
            if ready:
                self.backlog.extend(ready)
                if not self.processing:
                    self.module.api.spawn(self._process())
        return await waiter

    async def _process(self) -> None:
        """Apply the ready requests in rid order (a SASL step may wait for storage; the
        requests after it wait their turn)."""
        self.processing = True
        try:
            while self.backlog and not self.closed:
                await self._apply(self.backlog.popleft())
        finally:
            self.processing = False

    async def _apply(self, body: Body) -> None:
        rid, core = body.rid, self.core
        try:
            pause = body.pause
            if pause is not None and not body.terminate:
                if pause > core.terms.maxpause:
                    self.fail("policy-violation", f"pause {pause} s over maxpause")
                    return
                core.paused = pause
                self._hold(rid)
                self._answer(core.answers(everything=True))
                return
            if body.restart:
                if not self.restart_expected or self.negotiation is None:
                    self.fail("bad-request", "stream restart when none was due")
                    return
                self.restart_expected = False
                self.negotiation.handle_stream_open(self._header(body.attrs.get("to")))
            else:
                for el in body.children:
                    if self.closed:
                        break
                    result = self._element(el)
                    if result is not None and inspect.isawaitable(result):
                        await result
        except StreamErrorCondition as exc:
            self.stream_error(exc.condition, exc.text)
        except Exception:
            self.module.api.log.exception("BOSH session %s: handling a request failed", self.sid)
            self.stream_error("internal-server-error")
        if self.closed:
            return  # ending answered this request too
        self._hold(rid)
        if body.terminate:
            self.close_reason = "terminated by the client"
            self.close()
            return
        self.flush()

    def _element(self, el: Element) -> Awaitable | None:
        return client_element(self, el)

    def _header(self, to: str | None) -> StreamOpen:
        """The stream header a restart stands for (XEP-0206 §: ``xmpp:restart``)."""
        domain = self.negotiation.domain if self.negotiation.domain else (to or "")
        return StreamOpen("stream", STREAM_NS, {"to": domain, "version": "1.0"},
                          {"": CLIENT_NS, "stream": STREAM_NS})

    def _hold(self, rid: int) -> None:
        if self.idle_timer is not None:  # started while this request was being processed
            self.idle_timer.cancel()
            self.idle_timer = None
        self.core.hold(rid)
        self.wait_timers[rid] = self.loop.call_later(self.core.terms.wait, self._wait_over, rid)

    def _wait_over(self, rid: int) -> None:
        self.wait_timers.pop(rid, None)
        self._answer(self.core.answers(upto=rid))

    def _answer(self, answers: list[tuple[int, bytes]]) -> None:
        for rid, data in answers:
            timer = self.wait_timers.pop(rid, None)
            if timer is not None:
                timer.cancel()
            for waiter in self.waiters.pop(rid, ()):
                if not waiter.done():
                    waiter.set_result(data)
        if not self.core.held and not self.closed and self.idle_timer is None:
            seconds = self.core.paused or self.core.terms.inactivity
            self.idle_timer = self.loop.call_later(seconds, self._inactive, seconds)

    def _inactive(self, seconds: float) -> None:
        self.idle_timer = None
        name = "the client's pause" if self.core.paused else "modules.bosh.inactivity_s"
        if not self.core.paused:
            self.module.api.count_limit(name)
        self.module.api.log.info("limit %s (%g) reached for BOSH session %s (%s, jid=%s): "
                                 "session ended", name, seconds, self.sid,
                                 address_text(self.peer), self.jid or "-")
        self.end(terminate_bytes(), "inactive", abrupt=True, keep=False)

    # -- StreamIO (what the negotiation needs) --------------------------------------------

    def send(self, element: Element) -> None:
        self.send_bytes(element.to_bytes(BOSH_NS))

    def send_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        self.core.out.append(data)
        if self.flush_handle is None:
            # batched: everything sent in this loop iteration goes in one answer
            self.flush_handle = self.loop.call_soon(self.flush)

    def send_header(self, from_: str | None, to: str | None = None, **_: Any) -> None:
        # The <body/> wrapper replaces the stream header; authid carries the stream id.
        self.stream_id = new_stream_id()
        self.header_sent = True

    def begin_tls(self) -> Awaitable | None:
        raise StreamErrorCondition("policy-violation", "no STARTTLS inside BOSH")

    def restart_stream(self) -> None:
        self.restart_expected = True

    def authenticated(self) -> None:
        self.authed = True  # the full stanza size limit applies from now on

    def bound(self, session: Session) -> None:
        self.session = session
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        self.negotiation = None

    # -- Transport (what the session needs) ----------------------------------------------

    def flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if not self.closed:
            self._answer(self.core.answers())

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if self.closed:
            return
        errors = self.module.traffic.stream_errors
        errors[condition] = errors.get(condition, 0) + 1
        self.module.api.log.info("stream error to BOSH session %s (%s): %s%s", self.sid,
                                 address_text(self.peer), condition,
                                 f" ({text})" if text else "")
        self.end(stream_error_body(condition, text), f"stream error {condition}")

    def drop(self, reason: str) -> None:
        self.end(terminate_bytes("remote-connection-failed"), reason, abrupt=True)

    def close(self) -> None:
        self.end(terminate_bytes(), self.close_reason or "closed by the server")

    def fail(self, condition: str, reason: str) -> None:
        """A terminal binding error ends the session."""
        self.end(terminate_bytes(condition), reason, abrupt=True)

    def end(self, data: bytes, reason: str, *, abrupt: bool = False, keep: bool = True) -> None:
        """End the session: the held requests are answered (the last with ``data``), a
        later request still gets ``data`` (with ``keep``), the session is unbound."""
        if self.closed:
            return
        self.close_reason = self.close_reason or reason
        self._answer(self.core.terminate(data))
        self.closed = True
        for timer in (self.idle_timer, self.auth_timer, self.flush_handle,
                      *self.wait_timers.values()):
            if timer is not None:
                timer.cancel()
        self.wait_timers.clear()
        for waiters in self.waiters.values():  # out-of-order requests never processed
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(data)
        self.waiters.clear()
        self.module.forget(self, data if keep else None)
        session = self.session
        if session is not None:
            if self.sm is not None:
                self.sm.stream_closed(self, abrupt)
            else:
                self.policy.unbind(session, abrupt)
        self.module.api.log.info("BOSH session ended: sid=%s address=%s jid=%s reason=%s",
                                 self.sid, address_text(self.peer), self.jid or "-",
                                 self.close_reason)

    def auth_timeout(self, seconds: float) -> None:
        self.auth_timer = None
        self.module.api.count_limit("auth_timeout_s")
        self.module.api.log.info("limit auth_timeout_s (%g) reached for BOSH session %s (%s): "
                                 "closing", seconds, self.sid, address_text(self.peer))
        self.stream_error("connection-timeout", "not authenticated in time")

    def local_domain(self) -> str | None:
        return self.negotiation.domain if self.negotiation is not None else None

    def __repr__(self) -> str:
        return f"<BOSHStream {self.sid} {self.jid or '-'}>"


def _ip_list(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP address or network"
    return None


class BOSH(Module):
    """Serves ``/http-bind`` on the HTTP listener."""

    name = "bosh"
    xeps = ("XEP-0124", "XEP-0206")
    #: a session's requests come on several connections: with workers, worker 0 serves
    #: HTTP, and a BOSH session is a session like others there
    workers_safe = True
    http_in_one_worker = True
    options = {
        "max_wait_s": Option(int, 60, "the longest a request is held ('wait')", min=1,
                             max=3600),
        "max_hold": Option(int, 1, "the most requests held at once ('hold')", min=0, max=5),
        "inactivity_s": Option(int, 60, "a session with no request open for this long ends",
                               min=1, max=3600),
        "polling_s": Option(int, 2, "the shortest interval between empty requests while "
                            "'hold' requests are held (faster: policy-violation)", min=0,
                            max=600),
        "max_pause_s": Option(int, 300, "the longest pause a client may ask for ('maxpause')",
                              min=0, max=86400),
        "max_body_bytes": Option(int, 256 * 1024, "the largest request body (else 413)",
                                 min=1024),
        "max_sessions_per_ip": Option(int, 100, "open BOSH sessions from one address "
                                      "(0: no limit)", min=0),
        "cors_origins": Option(list, ("*",), "origins allowed to call the endpoint from a "
                               "browser ('*': any)", item=str),
        "trusted_proxies": Option(list, ("127.0.0.1", "::1"), "addresses whose plain-HTTP "
                                  "requests count as encrypted (a TLS-terminating reverse "
                                  "proxy) and whose X-Forwarded-For names the client",
                                  item=str, check=_ip_list),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        opts = api.options
        self.sessions: dict[str, BOSHStream] = {}
        api.gauge("bosh_sessions", "BOSH sessions (negotiating or bound; bound ones are in "
                  "xmppd_sessions too)", lambda: len(self.sessions))
        # stream errors of BOSH sessions, under the stream kind "bosh" (their HTTP requests
        # are counted as kind "http")
        self.traffic = api.connections.traffic_for(BOSHStream.kind)
        self.per_ip: dict[str, int] = {}
        self.ended: OrderedDict[str, bytes] = OrderedDict()
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in opts["trusted_proxies"]]
        self._policy: ClientPolicy | None = None
        self._policy_of: ClientPolicy | None = None  # the server's, _policy was made from
        api.add_http_route(PATH, self.handle, methods=("POST", "OPTIONS", "GET"),
                           max_body_bytes=opts["max_body_bytes"], alt_connection=XBOSH)
        api.hook("server-stopping", self.stopping)
        api.on_unload(self._unloaded)

    def _unloaded(self) -> None:
        for stream in list(self.sessions.values()):
            stream.close()

    def stopping(self, server: Any) -> None:
        for stream in list(self.sessions.values()):
            stream.stream_error("system-shutdown", "the server is shutting down")

    def policy(self) -> ClientPolicy | None:
        """The client policy without STARTTLS (BOSH has none)."""
        current = self.api.client_policy
        if current is not self._policy_of:  # a reload renewed it: new sessions get the new one
            self._policy_of = current
            self._policy = None if current is None else dataclasses.replace(
                current, tls_context=None)
        return self._policy

    # -- HTTP -------------------------------------------------------------------------------

    def cors(self, request: HTTPRequest) -> dict[str, str]:
        return cors_headers(request, self.api.options["cors_origins"], {
            "Access-Control-Allow-Methods": "POST, OPTIONS, GET",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "86400"})

    def reply(self, request: HTTPRequest, data: bytes, status: int = 200) -> Response:
        return Response(status, data, self.cors(request), content_type="text/xml; charset=utf-8")

    async def handle(self, request: HTTPRequest) -> Response:
        if request.method == "OPTIONS":  # CORS preflight
            return Response(200, b"", self.cors(request))
        if request.method in ("GET", "HEAD"):
            return Response(200, b"xmppd BOSH endpoint (XEP-0206): POST <body/> here\n",
                            self.cors(request), content_type="text/plain; charset=utf-8")
        data = await request.read()
        try:
            body = self.parse(data)
        except BOSHError as exc:
            stream = self.sessions.get(exc.sid) if exc.sid else None
            if exc.condition == "policy-violation":
                name = "max_stanza_size_bytes" if stream is not None and stream.authed \
                    else "max_stanza_size_preauth_bytes"
                self.api.count_limit(name)
                self.api.log.warning("limit %s reached for BOSH request from %s: %s", name,
                                     address_text(request.peer), exc)
            else:
                self.api.log.info("bad BOSH request from %s: %s", address_text(request.peer),
                                  exc)
            if stream is not None:
                stream.fail(exc.condition, str(exc))
            return self.reply(request, terminate_bytes(exc.condition),
                              400 if exc.condition == "bad-request" else 200)
        sid = body.sid
        if sid is None:
            return self.reply(request, self.create(body, request))
        stream = self.sessions.get(sid)
        if stream is None:
            return self.reply(request, self.ended.get(sid) or terminate_bytes("item-not-found"))
        return self.reply(request, await stream.request(body))

    def parse(self, data: bytes) -> Body:
        """The request, with the stanza size limit of its session: the small one until it
        authenticated, as over TCP."""
        limits = self.api.limits
        kw = {"max_depth": limits.max_depth, "max_attrs": limits.max_attrs}
        try:
            return parse_body(data, max_stanza_size=limits.max_stanza_size_preauth_bytes, **kw)
        except BOSHError as exc:
            stream = self.sessions.get(exc.sid) if exc.sid else None
            if exc.condition != "policy-violation" or stream is None or not stream.authed:
                raise
        return parse_body(data, max_stanza_size=limits.max_stanza_size_bytes, **kw)

    def client_address(self, request: HTTPRequest) -> tuple[tuple[str, int] | None, bool]:
        """(the client's address, whether the request came encrypted)."""
        peer = request.peer
        try:
            trusted = peer is not None and any(
                ipaddress.ip_address(peer[0]) in net for net in self.proxies)
        except ValueError:
            trusted = False
        if not trusted:
            return peer, request.secure
        forwarded = request.headers.get("x-forwarded-for", "").rpartition(",")[2].strip()
        return ((forwarded, 0) if forwarded else peer), True

    def create(self, body: Body, request: HTTPRequest) -> bytes:
        """A session creation request: its response (or a terminal error)."""
        api, opts = self.api, self.api.options
        policy = self.policy()
        if policy is None:
            raise HTTPError(503, "the server is starting")
        peer, secure = self.client_address(request)
        to = body.attrs.get("to", "").lower().rstrip(".")
        if to not in policy.hosts:
            return terminate_bytes("host-unknown")
        if policy.require_encryption and not secure:
            api.log.info("BOSH session refused for %s: not encrypted (require_encryption)",
                         address_text(peer))
            return terminate_bytes("policy-violation")
        ip = peer[0] if peer else "?"
        limit = opts["max_sessions_per_ip"]
        if limit and self.per_ip.get(ip, 0) >= limit:
            api.count_limit("modules.bosh.max_sessions_per_ip")
            api.log.warning("limit modules.bosh.max_sessions_per_ip (%d) reached for %s: "
                            "session refused", limit, ip)
            return terminate_bytes("policy-violation")
        try:
            terms = negotiate(body, max_wait=opts["max_wait_s"], max_hold=opts["max_hold"],
                              inactivity=opts["inactivity_s"], polling=opts["polling_s"],
                              maxpause=opts["max_pause_s"])
        except BOSHError as exc:
            return terminate_bytes(exc.condition)
        sid = new_sid()
        core = BOSHSession(sid, body.rid, terms, asyncio.get_running_loop().time())
        stream = BOSHStream(self, core, policy, peer, secure)
        try:
            stream.negotiation.handle_stream_open(stream._header(to))
        except StreamErrorCondition as exc:
            return terminate_bytes("host-unknown" if exc.condition == "host-unknown"
                                   else "bad-request")
        self.sessions[sid] = stream
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        data = body_bytes(core.out, creation_attrs(terms, sid, to, stream.stream_id, body))
        core.out = []
        core.answered(body.rid, data)
        stream._answer([])  # starts the inactivity timer
        timeout = api.limits.auth_timeout_s
        if timeout:
            stream.auth_timer = stream.loop.call_later(timeout, stream.auth_timeout, timeout)
        api.log.info("BOSH session created: sid=%s address=%s wait=%d hold=%d",
                     sid, address_text(peer), terms.wait, terms.hold)
        return data

    def forget(self, stream: BOSHStream, data: bytes | None) -> None:
        """``stream`` ended: out of the table; ``data`` answers its sid a while longer."""
        if self.sessions.pop(stream.sid, None) is None:
            return
        ip = stream.peer[0] if stream.peer else "?"
        count = self.per_ip.get(ip, 1) - 1
        if count > 0:
            self.per_ip[ip] = count
        else:
            self.per_ip.pop(ip, None)
        if data is not None:
            self.ended[stream.sid] = data
            while len(self.ended) > ENDED_KEPT:
                self.ended.popitem(last=False)

    def limit_log(self, exc: BOSHError, stream: BOSHStream) -> None:
        self.api.log.info("BOSH session %s (%s): %s", stream.sid, address_text(stream.peer), exc)
