"""XMPP over BOSH (XEP-0124, XEP-0206) for the load generator: a carrier that puts the
unchanged TCP :class:`~loadgen.client.Session` on HTTP long polling.

What the session writes becomes the payload of ``<body/>`` requests (``POST`` on plain
HTTP/1.1 keep-alive connections, at most two per session: the ``requests`` a server grants
with ``hold='1'``): its first stream header the session creation request, the one after
SASL success a restart (``xmpp:restart='true'``), ``</stream:stream>`` a terminate request,
anything else stanzas qualified with ``jabber:client``.  Writes of one loop iteration go
out in one request.  The carrier keeps one request outstanding at all times (the long poll
the server holds): when an answer comes back and none is left, it sends an empty one (never
while one is held, so no ``polling`` violation); when there is something to send it goes
out at once if fewer than two requests are outstanding, else with the next one.  The
children of every answer's ``<body>`` are handed to the session, concatenated, so that its
login patterns and the workloads' hot path (``bytes.count`` of closing tags) run as over
TCP.  Responses are parsed with httptools.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import httptools

from .client import CLOSE, LoginConfig, XmppError

HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
#: At most this many requests outstanding (the servers grant hold + 1 = 2).
MAX_REQUESTS = 2
_STANZA = re.compile(rb"<(iq|message|presence)(?=[\s/>])(?![^>]*\bxmlns=)")
_CLIENT = rb"<\1 xmlns='jabber:client'"
_ATTR = re.compile(rb"""\b([\w:]+)=(['"])(.*?)\2""", re.S)


def qualified(data: bytes) -> bytes:
    """Stanzas inside ``<body xmlns=httpbind>`` declare ``jabber:client`` (XEP-0206 §6)."""
    return _STANZA.sub(_CLIENT, data)


def body_parts(data: bytes) -> tuple[dict[str, str], bytes]:
    """(attributes of the ``<body>`` element, its children as bytes)."""
    start = data.find(b"<body")
    if start < 0:
        raise XmppError(f"not a BOSH body: {data[:200]!r}")
    end = data.find(b">", start)
    head = data[start:end]
    attrs = {m.group(1).decode(): m.group(3).decode() for m in _ATTR.finditer(head)}
    if head.endswith(b"/"):
        return attrs, b""
    close = data.rfind(b"</body>")
    return attrs, data[end + 1: close if close > end else len(data)]


class _HTTPConn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, carrier: BOSHCarrier) -> None:
        self.carrier = carrier
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.busy = False
        self.alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.alive = False
            self.carrier.failed(XmppError(f"bad HTTP response: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.busy:
            self.busy = False
            self.carrier.failed(XmppError(f"HTTP connection lost: {exc or 'closed by server'}"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        data = b"".join(self.chunks)
        self.chunks = []
        self.busy = False
        status = self.parser.get_status_code()
        if not self.parser.should_keep_alive():
            self.alive = False
            if self.transport is not None:
                self.transport.close()
        self.carrier.answered(self, status, data)


class _Transport:
    """What the session writes to."""

    def __init__(self, carrier: BOSHCarrier) -> None:
        self.carrier = carrier

    def write(self, data: bytes) -> None:
        self.carrier.write(data)

    def close(self) -> None:
        self.carrier.close()

    def abort(self) -> None:
        self.carrier.abort()

    def is_closing(self) -> bool:
        return self.carrier.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class BOSHCarrier:
    """One BOSH session for ``session`` at ``cfg.bosh`` on ``cfg.host:cfg.port``."""

    def __init__(self, session: asyncio.Protocol, cfg: LoginConfig, wait: int = 60) -> None:
        self.session = session
        self.cfg = cfg
        self.wait = wait
        self.loop = asyncio.get_running_loop()
        self.head = (f"POST {cfg.bosh} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\n"
                     "Content-Type: text/xml; charset=utf-8\r\nContent-Length: ").encode()
        self.sid: str | None = None
        self.rid = random.randint(1 << 20, 1 << 40)
        self.conns: list[_HTTPConn] = []
        self.connecting = 0
        self.outstanding = 0  # requests sent (or about to be) and not answered
        self.queue: list[bytes] = []
        self.special: list[bytes] = []  # creation / restart / terminate: alone in their request
        self.flush_scheduled = False
        self.terminating = False
        self.closed = False
        self.transport = _Transport(self)
        self.requests = 0  # sent, for the figures

    async def start(self) -> None:
        await self._connect()
        self.session.connection_made(self.transport)  # type: ignore[arg-type]

    async def _connect(self) -> _HTTPConn:
        self.connecting += 1
        try:
            _, conn = await self.loop.create_connection(lambda: _HTTPConn(self), self.cfg.host,
                                                        self.cfg.port)
        finally:
            self.connecting -= 1
        self.conns.append(conn)
        return conn

    # -- from the session ----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if data.startswith(b"<?xml") or data.startswith(b"<stream:stream"):
            if self.sid is None:
                attrs = (f"content='text/xml; charset=utf-8' hold='1' rid='{self._next_rid()}' "
                         f"to='{self.cfg.domain}' wait='{self.wait}' xml:lang='en' ver='1.6' "
                         f"xmpp:version='1.0' xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}'")
            else:
                attrs = (f"rid='{self._next_rid()}' sid='{self.sid}' to='{self.cfg.domain}' "
                         f"xml:lang='en' xmpp:restart='true' xmlns='{HTTPBIND}' "
                         f"xmlns:xmpp='{XBOSH}'")
            self.special.append(f"<body {attrs}/>".encode())
        elif data == CLOSE:
            self.terminating = True
        else:
            self.queue.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def close(self) -> None:
        """After ``</stream:stream>``: the connections close once the terminate request is
        answered (at once if nothing was sent)."""
        if self.sid is None or not self.terminating:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.abort()
        self.conns = []

    def _next_rid(self) -> int:
        self.rid += 1
        return self.rid

    # -- requests ------------------------------------------------------------------------
    def _flush(self) -> None:
        self.flush_scheduled = False
        while not self.closed and self.outstanding < MAX_REQUESTS:
            if self.special:
                if self.sid is None and self.outstanding:
                    return  # nothing more before the creation response
                self._send(self.special.pop(0))
            elif self.sid is None:
                return
            elif self.queue or self.terminating:
                payload = qualified(b"".join(self.queue))
                self.queue = []
                kind = b""
                if self.terminating:
                    kind = b" type='terminate'"
                    self.closed = True  # nothing after the terminate request
                self._send(b"<body rid='%d' sid='%s'%s xmlns='%s'>%s</body>" % (
                    self._next_rid(), self.sid.encode(), kind, HTTPBIND.encode(), payload))
                if self.terminating:
                    return
            elif self.outstanding == 0:  # keep one long poll at the server
                self._send(b"<body rid='%d' sid='%s' xmlns='%s'/>" % (
                    self._next_rid(), self.sid.encode(), HTTPBIND.encode()))
            else:
                return

    def _send(self, body: bytes) -> None:
        self.outstanding += 1
        self.requests += 1
        request = self.head + b"%d\r\n\r\n" % len(body) + body
        for conn in self.conns:
            if conn.alive and not conn.busy:
                conn.busy = True
                conn.transport.write(request)  # type: ignore[union-attr]
                return
        self.conns = [c for c in self.conns if c.alive]
        asyncio.ensure_future(self._send_new(request))

    async def _send_new(self, request: bytes) -> None:
        try:
            conn = await self._connect()
        except OSError as exc:
            self.failed(XmppError(f"BOSH connect failed: {exc}"))
            return
        conn.busy = True
        conn.transport.write(request)  # type: ignore[union-attr]

    # -- from the connections ------------------------------------------------------------
    def answered(self, conn: _HTTPConn, status: int, data: bytes) -> None:
        self.outstanding -= 1
        if status != 200:
            self.failed(XmppError(f"BOSH request answered HTTP {status}: {data[:200]!r}"))
            return
        try:
            attrs, payload = body_parts(data)
        except XmppError as exc:
            self.failed(exc)
            return
        if self.sid is None:
            sid = attrs.get("sid")
            if not sid:
                self.failed(XmppError(f"no sid in the session creation response: {data[:300]!r}"))
                return
            self.sid = sid
        if attrs.get("type") == "terminate":
            if payload:
                self.session.data_received(payload)
            if self.closed:  # our own terminate request
                self.abort()
                return
            self.failed(XmppError(f"BOSH session terminated: {attrs.get('condition', '')} "
                                  f"{payload[:200]!r}"))
            return
        if payload:
            self.session.data_received(payload)
        if self.closed:
            if self.outstanding <= 0:
                self.abort()
            return
        if not self.flush_scheduled:
            self._flush()

    def failed(self, exc: Exception) -> None:
        if self.closed:
            return
        self.abort()
        self.session.connection_lost(exc)  # type: ignore[arg-type]
