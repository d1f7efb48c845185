"""XEP-0363 HTTP File Upload: MB/s of PUT and GET of one file, server RSS during transfer.

One session (TCP c2s, the generator's usual login) asks the upload service for a slot per
round; the file goes up in 256 KiB pieces (the client never holds it whole) with the
headers the slot names (Prosody 0.12: ``Authorization: Bearer``), then comes back with GET,
counted and dropped.  Plain HTTP or HTTPS, as the slot's URL says (certificates not
verified), connecting to the generator's ``--host`` whatever host name the URL has (the
``Host`` header keeps it: Prosody routes by it).  A thread samples the server's VmRSS every
10 ms during the transfers: ``rss_growth_kib`` is the peak above the value before the first
one; a server that streams to and from disk stays flat, far below the file size.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import ssl
import threading
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import httptools

from .client import XmppError, login
from .workloads import Ready, WorkerSpec

NS = "urn:xmpp:http:upload:0"
PIECE = 256 * 1024
_IQ = re.compile(rb"<iq\b[^>]*?(?:/>|>.*?</iq>)", re.S)
_PUT = re.compile(r"""<put\b[^>]*\burl=(['"])(.*?)\1[^>]*?(?:/>|>(.*?)</put>)""", re.S)
_GET = re.compile(r"""<get\b[^>]*\burl=(['"])(.*?)\1""", re.S)
_HEADER = re.compile(r"""<header\b[^>]*\bname=(['"])([\w-]+)\1[^>]*>(.*?)</header>""", re.S)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Peak VmRSS of ``pid`` while running (10 ms period)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_kib(pid)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)


def parse_slot(answer: str) -> tuple[str, dict[str, str], str]:
    """(PUT URL, headers to send with it, GET URL) from a slot result."""
    put, get = _PUT.search(answer), _GET.search(answer)
    if put is None or get is None:
        raise XmppError(f"no slot in {answer[:300]!r}")
    headers = {m.group(2): html.unescape(m.group(3).strip()) for m in _HEADER.finditer(put.group(3) or "")}
    return html.unescape(put.group(2)), headers, html.unescape(get.group(2))


class _Response(asyncio.Protocol):
    """One HTTP response: status and body size (the body is counted, not kept)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[tuple[int, int, bytes]] = asyncio.get_running_loop().create_future()
        self.size = 0
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.done.done():
                self.done.set_exception(XmppError(f"bad HTTP response: {exc}"))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if len(self.head) < 300:
            self.head += body[:300]

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result((self.parser.get_status_code(), self.size, self.head))

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        if not self.done.done():
            self.done.set_exception(XmppError(f"HTTP connection lost: {exc or 'closed by server'}"))


async def _open(url: str, host: str) -> tuple[_Response, str, str]:
    parts = urlsplit(url)
    ctx = None
    if parts.scheme == "https":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    port = parts.port or (443 if ctx else 80)
    _, proto = await asyncio.get_running_loop().create_connection(
        _Response, host, port, ssl=ctx, server_hostname=parts.hostname if ctx else None)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return proto, target, parts.netloc


async def http_put(url: str, headers: dict[str, str], size: int, host: str) -> float:
    """PUT ``size`` bytes; seconds from the first byte sent to the response."""
    proto, target, netloc = await _open(url, host)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    piece = os.urandom(PIECE)
    t0 = time.perf_counter()
    proto.transport.write(f"PUT {target} HTTP/1.1\r\nHost: {netloc}\r\nContent-Length: {size}\r\n"  # type: ignore[union-attr]
                          f"Content-Type: application/octet-stream\r\n{extra}Connection: close\r\n\r\n"
                          .encode())
    left = size
    while left:
        await proto.can_write.wait()
        if proto.done.done():
            break  # answered early (an error)
        n = min(left, PIECE)
        proto.transport.write(piece if n == PIECE else piece[:n])  # type: ignore[union-attr]
        left -= n
    status, _, head = await proto.done
    elapsed = time.perf_counter() - t0
    proto.transport.close()  # type: ignore[union-attr]
    if status not in (200, 201):
        raise XmppError(f"PUT answered {status}: {head[:200]!r}")
    return elapsed


async def http_get(url: str, size: int, host: str) -> float:
    """GET the file; seconds from the request to its last byte."""
    proto, target, netloc = await _open(url, host)
    t0 = time.perf_counter()
    proto.transport.write(f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n\r\n"  # type: ignore[union-attr]
                          .encode())
    status, got, head = await proto.done
    elapsed = time.perf_counter() - t0
    proto.transport.close()  # type: ignore[union-attr]
    if status != 200 or got != size:
        raise XmppError(f"GET answered {status} with {got} bytes (expected {size}): {head[:100]!r}")
    return elapsed


async def run_upload(spec: WorkerSpec, ready: Ready, go: Awaitable[Any]) -> dict[str, Any]:
    """Rounds of slot request, PUT, GET of one ``size`` byte file."""
    x = spec.extra
    size, rounds = x["size"], x["rounds"]
    service = x.get("service") or f"upload.{spec.login.domain}"
    session = await login(spec.login, f"{spec.user_prefix}{spec.users[0] if spec.users else 0}")
    buf = bytearray()
    waiter: list[asyncio.Future[bytes]] = []

    def on_data(data: bytes) -> None:
        buf.extend(data)
        m = _IQ.search(buf)
        if m is not None and waiter and not waiter[0].done():
            waiter[0].set_result(bytes(m.group(0)))
            del buf[: m.end()]

    session.on_data = on_data

    async def slot(n: int) -> tuple[str, dict[str, str], str]:
        fut = asyncio.get_running_loop().create_future()
        waiter[:] = [fut]
        session.send(f"<iq type='get' id='slot{n}' to='{service}'><request xmlns='{NS}' "
                     f"filename='bench-{os.getpid()}-{n}.bin' size='{size}' "
                     "content-type='application/octet-stream'/></iq>".encode())
        answer = (await asyncio.wait_for(fut, spec.login.timeout)).decode()
        if "type='result'" not in answer and 'type="result"' not in answer:
            raise XmppError(f"slot refused: {answer[:300]}")
        return parse_slot(answer)

    ready({"sessions": 1})
    await go
    pid = x.get("server_pid")
    sampler = Sampler(pid) if pid else None
    before = sampler.peak if sampler else None
    if sampler:
        sampler.start()
    puts: list[float] = []
    gets: list[float] = []
    errors: list[str] = []
    try:
        for n in range(rounds):
            try:
                put_url, headers, get_url = await slot(n)
                puts.append(await http_put(put_url, headers, size, spec.login.host))
                gets.append(await http_get(get_url, size, spec.login.host))
            except (TimeoutError, XmppError, OSError) as exc:
                errors.append(f"round {n}: {exc}")
    finally:
        if sampler:
            sampler.stop.set()
            sampler.join()
    after = rss_kib(pid) if pid else None
    session.close()
    return {"size": size, "put_s": puts, "get_s": gets, "errors": len(errors), "error_samples": errors[:3],
            "rss_before_kib": before, "rss_peak_kib": sampler.peak if sampler else None, "rss_after_kib": after}
