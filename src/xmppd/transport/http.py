"""The HTTP/1.1 listener: an asyncio shell around ``httptools``, with a route table that the
core and modules register handlers on (``ModuleAPI.add_http_route``).

A handler gets an :class:`HTTPRequest` and returns (or returns an awaitable of) one of:

- a :class:`Response` with a ``bytes`` body: the simple case; a handler may wait as long as
  it likes first (a BOSH long poll), the connection is not timed out meanwhile;
- a :class:`Response` whose body is an async iterable of ``bytes``: streamed, flow-controlled
  (``length`` gives ``Content-Length``, else chunked); the request body can be consumed as a
  stream too (:meth:`HTTPRequest.stream`), with backpressure, or whole (:meth:`HTTPRequest.read`);
- an :class:`Upgrade`: the ``101`` answer is written and the connection handed to another
  ``asyncio.Protocol`` (WebSocket), with the bytes that followed the request.

Raising :class:`HTTPError` answers with its status.  Every limit is on by default and named
in its log line: header bytes and count (431; a longer URL alone 414), body size (413, per
route), the time to send the request head and the longest pause in a body (408), the idle
keep-alive time, and open connections per address (503).  Requests on one connection are
served in order; a pipelined request waits for the answer to the one before it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from xmppd.transport.connections import Traffic, address_text

log = logging.getLogger("xmppd.http")

#: Request body bytes held for a handler that has not read them yet before reading pauses.
BODY_BUFFER = 256 * 1024


@dataclass(frozen=True)
class HTTPSettings:
    """The ``[http]`` limits (see docs/CONFIG.md)."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 1024 * 1024
    request_timeout_s: float = 30.0
    keepalive_timeout_s: float = 60.0
    max_connections_per_ip: int = 100

    @classmethod
    def from_config(cls, cfg: Any) -> HTTPSettings:
        return cls(cfg.http_max_header_bytes, cfg.http_max_headers, cfg.http_max_body_bytes,
                   cfg.http_request_timeout_s, cfg.http_keepalive_timeout_s,
                   cfg.http_max_connections_per_ip)


class HTTPError(Exception):
    """Raised by a handler (or the body readers) to answer with ``status``."""

    def __init__(self, status: int, text: str = "", headers: dict[str, str] | None = None):
        super().__init__(f"{status} {text}".strip())
        self.status = status
        self.text = text
        self.headers = headers or {}


class Response:
    """An answer: ``body`` is bytes, or an async iterable of bytes (streamed; ``length`` is
    its ``Content-Length`` when known, else it is sent chunked)."""

    __slots__ = ("status", "headers", "body", "length")

    def __init__(self, status: int = 200, body: bytes | AsyncIterable[bytes] = b"",
                 headers: dict[str, str] | None = None, *, content_type: str | None = None,
                 length: int | None = None) -> None:
        self.status = status
        self.headers = dict(headers or {})
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        self.body = body
        self.length = len(body) if isinstance(body, bytes) else length


class Upgrade:
    """Accept a protocol upgrade: answer ``101`` with ``headers``, then ``protocol`` owns the
    connection (its ``connection_made`` gets the transport, then ``data_received`` what the
    client sent after the request, if anything)."""

    __slots__ = ("headers", "protocol")

    def __init__(self, headers: dict[str, str], protocol: asyncio.Protocol) -> None:
        self.headers = headers
        self.protocol = protocol


Handler = Callable[["HTTPRequest"], "Response | Upgrade | Awaitable[Response | Upgrade]"]


@dataclass(frozen=True)
class Route:
    """One registered endpoint."""

    path: str
    handler: Handler
    prefix: bool = False
    methods: tuple[str, ...] | None = None  # None: any method
    max_body_bytes: int | None = None  # None: http.max_body_bytes
    #: XEP-0156 link relation announced for this path (e.g.
    #: ``urn:xmpp:alt-connections:websocket``), or None.
    alt_connection: str | None = None


class Routes:
    """The route table: exact paths first, then the longest matching prefix."""

    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._prefixes: list[Route] = []  # longest first

    def add(self, path: str, handler: Handler, *, prefix: bool = False,
            methods: tuple[str, ...] | None = None, max_body_bytes: int | None = None,
            alt_connection: str | None = None) -> Callable[[], None]:
        """Register ``handler`` for ``path`` (with ``prefix``: every path under it);
        returns the function that removes it again."""
        if not path.startswith("/"):
            raise ValueError(f"an HTTP route must start with '/': {path!r}")
        if any(r.path == path and r.prefix == prefix for r in self.all()):
            raise ValueError(f"HTTP route {path!r} is registered already")
        if methods is not None:
            methods = tuple(m.upper() for m in methods)
        route = Route(path, handler, prefix, methods, max_body_bytes, alt_connection)
        if prefix:
            self._prefixes.append(route)
            self._prefixes.sort(key=lambda r: len(r.path), reverse=True)
        else:
            self._exact[path] = route

        def remove() -> None:
            if prefix:
                if route in self._prefixes:
                    self._prefixes.remove(route)
            elif self._exact.get(path) is route:
                del self._exact[path]

        return remove

    def match(self, path: str) -> Route | None:
        route = self._exact.get(path)
        if route is not None:
            return route
        for route in self._prefixes:
            if path.startswith(route.path):
                return route
        return None

    def all(self) -> list[Route]:
        return [*self._exact.values(), *self._prefixes]

    def alt_connections(self) -> list[tuple[str, str]]:
        """``(relation, path)`` of the routes announced in connection discovery."""
        return sorted((r.alt_connection, r.path) for r in self.all() if r.alt_connection)


class HTTPServer:
    """What every HTTP connection shares: the routes, the settings, the per-address
    accounting and the open connections (closed at shutdown)."""

    def __init__(self, routes: Routes, settings: HTTPSettings,
                 traffic: Traffic | None = None) -> None:
        self.routes = routes
        self.settings = settings
        #: counters of the HTTP connections (kind ``http``), read by xmppd.metrics
        self.traffic = traffic if traffic is not None else Traffic("http")
        self.connections: set[HTTPConnection] = set()
        self._per_ip: dict[str, int] = {}
        self._date = ("", 0)

    def factory(self, secure: bool) -> Callable[[], HTTPConnection]:
        return lambda: HTTPConnection(self, secure)

    def admit(self, conn: HTTPConnection) -> bool:
        ip = conn.peer[0] if conn.peer else "?"
        count = self._per_ip.get(ip, 0)
        limit = self.settings.max_connections_per_ip
        if limit and count >= limit:
            self.traffic.limit("http.max_connections_per_ip")
            log.warning("limit http.max_connections_per_ip (%d) reached for %s: refused",
                        limit, ip)
            return False
        self._per_ip[ip] = count + 1
        self.connections.add(conn)
        self.traffic.opened += 1
        return True

    def release(self, conn: HTTPConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.traffic.closed += 1  # also on an upgrade: it counts as the new protocol now
        ip = conn.peer[0] if conn.peer else "?"
        count = self._per_ip.get(ip, 1) - 1
        if count > 0:
            self._per_ip[ip] = count
        else:
            self._per_ip.pop(ip, None)

    def date(self) -> str:
        """The ``Date`` header value, formatted once per second."""
        now = int(time.time())
        if self._date[1] != now:
            self._date = (email.utils.formatdate(now, usegmt=True), now)
        return self._date[0]

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.shutdown()


class HTTPRequest:
    """One request: its head at once, its body as it arrives."""

    __slots__ = (
        "method", "path", "query", "version", "headers", "peer", "secure", "keep_alive",
        "route", "max_body", "_conn", "_chunks", "_buffered", "_received", "_complete",
        "_waiter", "_error", "_continue",
    )

    def __init__(self, conn: HTTPConnection, method: str, path: str, query: str, version: str,
                 headers: dict[str, str], keep_alive: bool) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers  # lower-case names; repeated fields joined with ", "
        self.peer = conn.peer
        self.secure = conn.secure
        self.keep_alive = keep_alive
        self.route: Route | None = None
        self.max_body = conn.server.settings.max_body_bytes
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._received = 0
        self._complete = False
        self._waiter: asyncio.Future | None = None
        self._error: HTTPError | None = None
        self._continue = headers.get("expect", "").lower() == "100-continue"

    @property
    def host(self) -> str:
        """The ``Host`` header without the port, lower-cased ("" when missing)."""
        host = self.headers.get("host", "").strip().lower()
        if host.startswith("["):
            return host[1:].partition("]")[0]
        return host.rpartition(":")[0] if host.count(":") == 1 else host

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    # -- the body --------------------------------------------------------------------------

    async def read(self) -> bytes:
        """The whole body (at most the route's body limit: else :class:`HTTPError` 413)."""
        return b"".join([chunk async for chunk in self.stream()])

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk; reading pauses while the handler holds
        more than :data:`BODY_BUFFER` bytes it has not taken."""
        if self._continue:  # the client waits for this before sending the body
            self._continue = False
            self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < BODY_BUFFER // 2:
                    self._conn.body_drained()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _feed(self, chunk: bytes) -> bool:
        """Body bytes arrived; False once over the limit (the connection answers 413)."""
        self._received += len(chunk)
        if self._received > self.max_body:
            self._fail(HTTPError(413, "request body too large"))
            return False
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self._wake()
        return True

    def _done(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: HTTPError) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<HTTPRequest {self.method} {self.path} from {address_text(self.peer)}>"


class _Stop(Exception):
    """Raised in a parser callback to stop parsing (the error answer is set)."""


class HTTPConnection(asyncio.Protocol):
    """One HTTP/1.1 connection, keep-alive, requests served in order."""

    def __init__(self, server: HTTPServer, secure: bool) -> None:
        self.server = server
        self.secure = secure
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self._closing = False
        self._queue: deque[HTTPRequest] = deque()  # parsed, waiting their turn
        self._reading: HTTPRequest | None = None  # the request whose body is arriving
        self._serving: HTTPRequest | None = None
        self._task: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_bytes = 0
        self._head_size = 0  # header fields parsed, in bytes
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._error: tuple[int, str, str] | None = None  # status, text, limit name
        self._upgrade: bytes | None = None  # bytes after an Upgrade request
        self._paused = False
        self._write_paused = False
        self._drain: asyncio.Future | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        if not self.server.admit(self):
            self._closing = True
            transport.write(_simple(503, "too many connections from your address",
                                    self.server.date(), {"Retry-After": "10"}))
            transport.close()
            return
        self._idle(self.server.settings.request_timeout_s, None)

    def data_received(self, data: bytes) -> None:
        self.server.traffic.bytes_in += len(data)
        if self._closing or self._upgrade is not None:
            return
        if self._reading is not None and not self._in_head:
            # a body is arriving: the timeout bounds each pause in it
            self._idle(self.server.settings.request_timeout_s, "http.request_timeout_s")
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade = data[exc.args[0]:] if exc.args else b""
            self.transport.pause_reading()
            self._serve_next()
            return
        except (_Stop, httptools.HttpParserCallbackError):
            pass
        except httptools.HttpParserError as exc:
            if self._error is None:
                self._error = (400, f"malformed request ({exc})", "")
        if self._error is None and self._in_head:
            # Counted here rather than in the callbacks: httptools buffers a header until
            # it is complete, so a never-ending one would otherwise grow unseen.  (A read
            # that began with the previous request's body counts whole: at most one read.)
            self._head_bytes += len(data)
            if self._head_bytes > self.server.settings.max_header_bytes:
                self._error = (431, "request headers too large", "http.max_header_bytes")
        if self._error is not None:
            self._fail(*self._error)
            return
        if self._queue and self._serving is not None:
            self._pause()  # one pipelined request waits at most: read no further

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()  # nobody is left to answer
        for request in (self._reading, *self._queue):
            if request is not None:
                request._fail(HTTPError(400, "connection closed"))
        self.resume_writing()
        self.server.release(self)

    # -- parser callbacks (httptools) -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._in_head = True
        self._head_bytes = 0
        # The whole head must arrive within the timeout (however slowly it trickles in).
        self._idle(self.server.settings.request_timeout_s, "http.request_timeout_s")

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.server.settings.max_header_bytes:
            self._error = (414, "URL too long", "http.max_header_bytes")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))
        self._head_size += len(name) + len(value) + 4
        if self._head_size + len(self._url) > self.server.settings.max_header_bytes:
            self._error = (431, "request headers too large", "http.max_header_bytes")
            raise _Stop
        if len(self._headers) > self.server.settings.max_headers:
            self._error = (431, "too many header fields", "http.max_headers")
            raise _Stop

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        try:
            url = httptools.parse_url(self._url)
            path = (url.path or b"/").decode("latin-1")
            query = (url.query or b"").decode("latin-1")
        except (httptools.HttpParserInvalidURLError, ValueError):
            self._error = (400, "malformed request target", "")
            raise _Stop from None
        headers: dict[str, str] = {}
        for name, value in self._headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = HTTPRequest(self, parser.get_method().decode("latin-1"), path, query,
                              parser.get_http_version(), headers, parser.should_keep_alive())
        route = request.route = self.server.routes.match(path)
        if route is not None and route.max_body_bytes is not None:
            request.max_body = route.max_body_bytes
        length = request.content_length
        if length is not None and length > request.max_body:
            self._error = (413, "request body too large", _body_limit(route))
            raise _Stop
        self._reading = request
        self._queue.append(request)
        self._idle(self.server.settings.request_timeout_s, "http.request_timeout_s")
        self._serve_next()

    def on_body(self, body: bytes) -> None:
        request = self._reading
        if request is None:
            return
        if not request._feed(body):
            self._error = (413, "request body too large", _body_limit(request.route))
            raise _Stop
        if request._buffered > BODY_BUFFER:
            self._pause()

    def on_message_complete(self) -> None:
        request = self._reading
        self._reading = None
        if request is not None:
            request._done()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- serving ------------------------------------------------------------------------------

    def _serve_next(self) -> None:
        if self._serving is not None or not self._queue or self._closing:
            return
        request = self._serving = self._queue.popleft()
        task = self._task = asyncio.ensure_future(self._serve(request))
        task.add_done_callback(_log_task_error)

    async def _serve(self, request: HTTPRequest) -> None:
        route = request.route
        try:
            if route is None:
                raise HTTPError(404, "not found")
            allowed = route.methods
            if allowed is not None and request.method not in allowed and not (
                    request.method == "HEAD" and "GET" in allowed):
                raise HTTPError(405, "method not allowed", {"Allow": ", ".join(allowed)})
            result = route.handler(request)
            if isinstance(result, Awaitable):
                result = await result
        except HTTPError as exc:
            result = _error_response(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP handler for %s failed", request.path)
            result = _error_response(HTTPError(500, "internal server error"))
        if self.closed:
            return
        if isinstance(result, Upgrade):
            self._take_over(request, result)
            return
        if not isinstance(result, Response):
            log.error("HTTP handler for %s returned %r, not a Response", request.path, result)
            result = _error_response(HTTPError(500, "internal server error"))
        await self._respond(request, result)

    async def _respond(self, request: HTTPRequest, response: Response) -> None:
        # Close after the answer unless the client keeps the connection alive and the
        # request was read to its end (an unread body would be parsed as the next request).
        keep = request.keep_alive and self._upgrade is None and not self._closing
        body = response.body
        if isinstance(body, bytes):  # a streamed answer may still read the request body
            keep = keep and request._complete
        head_only = request.method == "HEAD"
        chunked = response.length is None and not head_only
        if request._continue and not isinstance(body, bytes):
            # the streamed answer may read the request body: the client waits for this
            request._continue = False
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.write(_head(response, self.server.date(), keep, chunked))
        if isinstance(body, bytes):
            if body and not head_only:
                self.write(body)
        elif not head_only:
            try:
                async for chunk in body:
                    if self.closed:
                        return
                    if chunk:
                        self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    if self._write_paused:
                        self._drain = self.loop.create_future()
                        await self._drain
                if chunked:
                    self.write(b"0\r\n\r\n")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("streaming the answer to %s failed", request.path)
                self._close()  # the status line is out: only a cut tells the client
                return
        self._serving = None
        self._task = None
        if not keep or not request._complete or request._error is not None:
            self._close()
            return
        if self._queue:
            self._serve_next()
        else:
            self._idle(self.server.settings.keepalive_timeout_s, None)
        self._resume()

    def _take_over(self, request: HTTPRequest, upgrade: Upgrade) -> None:
        transport = self.transport
        lines = ["HTTP/1.1 101 Switching Protocols"]
        lines += [f"{k}: {v}" for k, v in upgrade.headers.items()]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closing = True  # nothing of ours runs on this connection any more
        self.server.release(self)  # it counts as whatever the new protocol is now
        leftover, self._upgrade = self._upgrade or b"", None
        protocol = upgrade.protocol
        transport.set_protocol(protocol)
        transport.resume_reading()
        protocol.connection_made(transport)
        if leftover and not transport.is_closing():
            protocol.data_received(leftover)

    # -- output and closing -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.server.traffic.bytes_out += len(data)
            self.transport.write(data)

    def body_drained(self) -> None:
        """The handler took buffered body bytes: read again."""
        if self._queue and self._serving is not None:
            return  # a pipelined request waits
        self._resume()

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self.transport is not None and not self._closing:
            self._paused = False
            self.transport.resume_reading()

    def _idle(self, seconds: float, limit: str | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._timeout, seconds, limit)

    def _timeout(self, seconds: float, limit: str | None) -> None:
        self._timer = None
        if limit is None:  # an idle keep-alive connection: just close it
            self._close()
            return
        self._fail(408, "request not received in time", limit)

    def _fail(self, status: int, text: str, limit: str) -> None:
        """Answer a request that cannot be served (a limit, a malformed request) and close."""
        if self._closing or self.closed:
            return
        if limit:
            self.server.traffic.limit(limit)
            log.info("limit %s reached for %s: %d %s", limit, address_text(self.peer),
                     status, text)
        else:
            log.info("HTTP %d to %s: %s", status, address_text(self.peer), text)
        if self._serving is not None and self._task is not None:
            self._task.cancel()  # its answer can no longer be sent in order
        if self._reading is not None:
            self._reading._fail(HTTPError(status, text))
        self.write(_simple(status, text, self.server.date()))
        self._close()

    def _close(self) -> None:
        if self._closing and self.closed:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.closed:
            self.transport.close()
            # A TLS close waits for the peer's close_notify: do not hold the slot long.
            self.loop.call_later(2.0, self._abort)

    def _abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """The server stops: close now (a running handler is cancelled)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._close()


def _body_limit(route: Route | None) -> str:
    """The name of the body limit that applies, for the log line."""
    if route is None or route.max_body_bytes is None:
        return "http.max_body_bytes"
    return f"the body limit of {route.path} ({route.max_body_bytes})"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(response: Response, date: str, keep: bool, chunked: bool) -> bytes:
    status = response.status
    lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Date: {date}", "Server: xmppd"]
    headers = response.headers
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif "Content-Length" not in headers and status not in (204, 304):
        lines.append(f"Content-Length: {response.length or 0}")
    if not keep:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _error_response(exc: HTTPError) -> Response:
    text = exc.text or _reason(exc.status)
    return Response(exc.status, (text + "\n").encode(), exc.headers,
                    content_type="text/plain; charset=utf-8")


def _simple(status: int, text: str, date: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete error answer that closes the connection."""
    response = _error_response(HTTPError(status, text, headers))
    return _head(response, date, False, False) + response.body  # type: ignore[operator]


def _log_task_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("HTTP connection task failed", exc_info=task.exception())


def cors_headers(request: HTTPRequest, allowed: Sequence[str],
                 headers: dict[str, str]) -> dict[str, str]:
    """An endpoint's ``Access-Control-*`` ``headers`` plus the origin it allows: ``*``, or
    the request's ``Origin`` when ``allowed`` lists it (then ``Vary: Origin``)."""
    origin = request.headers.get("origin")
    if "*" in allowed:
        headers["Access-Control-Allow-Origin"] = "*"
    elif origin is not None and origin in allowed:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    return headers
