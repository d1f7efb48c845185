"""Test support: a server in a background thread, and a raw-socket XMPP client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xmppd.c2s.sasl import derive_all
from xmppd.component.stream import handshake_digest
from xmppd.core.config import Config, Listener, load
from xmppd.server import Server
from xmppd.web import _wsframe_pure as wsframe
from xmppd.web._wsbase import CLOSE, TEXT, parse_close

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams'>"
)


class ServerThread:
    """An xmppd :class:`Server` running in its own thread and event loop."""

    def __init__(self, data_dir: Path, users: dict[str, str], overrides: dict,
                 config_path: Path | None = None) -> None:
        """With ``config_path`` the configuration is that file (as ``xmppd run --config``
        reads it, and a reload reads it again); else ``overrides`` of the defaults."""
        overrides.setdefault("c2s", (Listener("127.0.0.1", 0), Listener("127.0.0.1", 0, True)))
        overrides.setdefault("http", (Listener("127.0.0.1", 0), Listener("127.0.0.1", 0, True)))
        self.config_path = config_path
        self.config = load(config_path) if config_path else Config(data_dir=Path(data_dir),
                                                                   **overrides)
        self.users = users
        self.loop = asyncio.new_event_loop()
        self.server: Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.server = Server(self.config, self.config_path)
        await self.server.storage.open()
        domain = self.config.domains[0]
        for user, password in self.users.items():
            await self.server.storage.create_account(user, domain, _creds(password))
        await self.server.start()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def call(self, coro, timeout: float = 10):
        """Run a coroutine in the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.server is not None and self.loop.is_running():
            try:
                self.call(self.server.stop(), timeout=10)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)

    @property
    def port(self) -> int:
        return self.server.addresses["c2s"][0][1]

    @property
    def tls_port(self) -> int:
        return self.server.addresses["c2s-tls"][0][1]

    @property
    def http_port(self) -> int:
        return self.server.addresses["http"][0][1]

    @property
    def https_port(self) -> int:
        return self.server.addresses["http-tls"][0][1]


_CREDS_CACHE: dict[str, dict] = {}


#: The pure twin of each compiled module (``xmppd._speedups.<name>``).
PURE_TWINS = {"tokenizer": "xmppd.xml._tokenizer_pure", "jid": "xmppd.jid._pure",
              "wsframe": "xmppd.web._wsframe_pure",
              "clustercodec": "xmppd.cluster.codec", "serialize": "xmppd.xml.element"}


def twins(name: str) -> tuple[Any, Any]:
    """The pure module of ``name`` and the compiled one (None when it is not built), for
    the differential tests that run both side by side."""
    pure = importlib.import_module(PURE_TWINS[name])
    try:
        compiled = importlib.import_module(f"xmppd._speedups.{name}")
    except ImportError:  # depends on the build
        compiled = None
    return pure, compiled


def stop_process(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM ``proc`` (an ``xmppd run``) and wait for it; killed if it is still there
    after ``timeout`` seconds (or the wait failed).  Its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def _creds(password: str) -> dict:
    # PBKDF2 for three hashes costs ~10 ms; tests create the same passwords over and over.
    if password not in _CREDS_CACHE:
        _CREDS_CACHE[password] = derive_all(password)
    return _CREDS_CACHE[password]


class RawClient:
    """A blocking raw-socket XMPP client for protocol and negative tests."""

    def __init__(self, port: int, *, tls: bool = False, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self._wrap()
        self.buffer = b""
        self.timeout = timeout

    def _wrap(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def header(self, to: str = "localhost") -> str:
        self.send(STREAM_HEADER.format(to=to))
        return self.read_until(r"</stream:features>|<stream:error>.*?</stream:error>")

    def read_until(self, pattern: str, timeout: float | None = None) -> str:
        """Read until ``pattern`` (a regex over the decoded text) matches; consume up to it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        regex = re.compile(pattern, re.S)
        while True:
            text = self.buffer.decode(errors="replace")
            m = regex.search(text)
            if m:
                end = len(text[: m.end()].encode())
                self.buffer = self.buffer[end:]
                return text[: m.end()]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {pattern!r} in {text!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError(f"closed while waiting for {pattern!r}; got {text!r}")
            self.buffer += chunk

    def read_closed(self, timeout: float | None = None) -> str:
        """Read everything until the server closes the connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                break
            if not chunk:
                break
            self.buffer += chunk
        text, self.buffer = self.buffer.decode(errors="replace"), b""
        return text

    def starttls(self) -> None:
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until("<proceed[^>]*/>")
        self.buffer = b""
        self._wrap()

    def login(self, user: str, password: str, *, resource: str = "raw", tls: bool = True,
              domain: str = "localhost") -> str:
        """STARTTLS (unless already TLS), SASL PLAIN, bind; returns the bound full JID."""
        self.header(domain)
        if tls and not isinstance(self.sock, ssl.SSLSocket):
            self.starttls()
            self.header(domain)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        self.read_until("<success[^>]*(/>|>.*?</success>)")
        self.header(domain)
        self.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        reply = self.read_until("</iq>")
        return re.search(r"<jid>(.*?)</jid>", reply).group(1)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


COMPONENT_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{to}'>"
)


class RawComponent(RawClient):
    """A raw XEP-0114 external component."""

    def open(self, to: str) -> str:
        self.send(COMPONENT_HEADER.format(to=to))
        header = self.read_until(r"<stream:stream[^>]*>|</stream:error>")
        match = re.search(r" id=['\"]([^'\"]+)", header)
        return match.group(1) if match else ""

    def connect(self, to: str, secret: str) -> None:
        stream_id = self.open(to)
        self.send(f"<handshake>{handshake_digest(stream_id, secret)}</handshake>")
        self.read_until("<handshake/>")


def component_port(srv) -> int:
    return srv.server.addresses["component"][0][1]


def sm_authenticate(client: RawClient, user: str, password: str = "secret") -> str:
    """Up to the post-SASL features (returned): STARTTLS, PLAIN, the new header (a stream
    about to resume a stream-management session, or to bind)."""
    client.header()
    client.starttls()
    client.header()
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    client.read_until("<success[^>]*(/>|>.*?</success>)")
    return client.header()


def sm_enable(client: RawClient, resume: bool = True) -> str:
    """Enable XEP-0198 stream management on a bound client; the resumption id."""
    client.send("<enable xmlns='urn:xmpp:sm:3'" + (" resume='true'/>" if resume else "/>"))
    answer = client.read_until("<enabled[^>]*/>|</failed>")
    assert "<enabled" in answer, answer
    m = re.search(r"id='([^']+)'", answer)
    return m.group(1) if m else ""


SLIX_TIMEOUT = 10


async def slixmpp_client(port: int, jid: str, sm: bool) -> tuple[Any, asyncio.Queue]:
    """A slixmpp client logged in as ``jid`` (password "secret"), with XEP-0198 (ready
    once enabled) when ``sm``; the queue of the bodies of the messages it receives."""
    from slixmpp import ClientXMPP  # only the tests that drive a real client load it

    xmpp = ClientXMPP(jid, "secret")
    xmpp.register_plugin("xep_0199")
    if sm:
        xmpp.register_plugin("xep_0198")
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.enable_direct_tls = False
    messages: asyncio.Queue = asyncio.Queue()
    xmpp.add_event_handler("message", lambda msg: messages.put_nowait(msg["body"]))
    ready = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("sm_enabled" if sm else "session_start",
                           lambda _: ready.done() or ready.set_result(True))
    xmpp.connect("127.0.0.1", port)
    await asyncio.wait_for(ready, SLIX_TIMEOUT)
    return xmpp, messages


async def drain(queue: asyncio.Queue, settle: float = 0.3) -> list[str]:
    """What arrives in ``queue`` until it stays empty for ``settle`` seconds."""
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(queue.get(), settle))
        except TimeoutError:
            return got


SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SUCCESS = r"<success[^>]*(/>|>.*?</success>)|</failure>"
FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_sha256(client: RawClient | WSClient, user: str, password: str, eol: str = "\n") -> str:
    """SCRAM-SHA-256 (no channel binding), each SASL element followed by ``eol``; returns
    the server's answer (``<success>``, its signature verified, or ``<failure>``)."""
    first_bare = f"n={user},r={secrets.token_urlsafe(18)}"
    client.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>"
                f"{b64(b'n,,' + first_bare.encode())}</auth>{eol}")
    answer = client.read_until(r"</challenge>|</failure>")
    assert "<challenge" in answer, answer
    server_first = base64.b64decode(re.search(r">([^<]*)</challenge>", answer).group(1)).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    client.send(f"<response xmlns='{SASL}'>{b64(f'{final_bare},p={b64(proof)}'.encode())}"
                f"</response>{eol}")
    answer = client.read_until(SUCCESS)
    if "<success" in answer:
        verifier = base64.b64decode(re.search(r">([^<]*)</success>", answer).group(1))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        assert verifier == b"v=" + b64(hmac.digest(server_key, auth_message, "sha256")).encode()
    return answer



class WSClient:
    """A blocking raw-socket client of XMPP over WebSocket (RFC 7395): the opening
    handshake, masked frames out, and the text messages in (``messages``; ``read_until``
    works on them joined, like :class:`RawClient` on its bytes)."""

    def __init__(self, port: int, *, tls: bool = False, protocol: str | None = "xmpp",
                 origin: str | None = None, host: str = "localhost",
                 path: str = "/xmpp-websocket", timeout: float = 5.0) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.timeout = timeout
        self.decoder = wsframe.FrameDecoder(1 << 24, require_mask=False)
        self.frames: list[tuple[int, bytes]] = []
        self.text = ""  # text messages received and not yet consumed by read_until
        self.close_code: int | None = None
        key = b64(os.urandom(16))
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        if origin:
            lines.append(f"Origin: {origin}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                break
            head += chunk
        status_line, *fields = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1]) if status_line else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (f.partition(":") for f in fields if f)}

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.sock.sendall(wsframe.encode_frame(opcode, payload, fin, os.urandom(4)))

    def send(self, data: str | bytes) -> None:
        """One text message."""
        self.send_frame(TEXT, data.encode() if isinstance(data, str) else data)

    def _receive(self, deadline: float) -> bool:
        """Read more frames; False once the connection is closed."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        except (ConnectionResetError, ssl.SSLError, OSError):
            return False
        if not chunk:
            return False
        for op, payload in self.decoder.feed(chunk):
            self.frames.append((op, payload))
            if op == TEXT:
                self.text += payload.decode()
            elif op == CLOSE:
                self.close_code = parse_close(payload)[0]
        return True

    def read_until(self, pattern: str, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (timeout or self.timeout)
        regex = re.compile(pattern, re.S)
        while True:
            m = regex.search(self.text)
            if m:
                found, self.text = self.text[: m.end()], self.text[m.end():]
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {pattern!r} in {self.text!r}")
            if not self._receive(deadline):
                raise ConnectionError(f"closed while waiting for {pattern!r}; got {self.text!r}")

    def read_closed(self, timeout: float | None = None) -> str:
        """Everything until the server closes the connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline and self._receive(deadline):
            pass
        text, self.text = self.text, ""
        return text

    def open(self, to: str = "localhost") -> str:
        self.send(f"<open xmlns='{FRAMING_NS}' to='{to}' version='1.0'/>")
        return self.read_until(r"</stream:features>|<close [^>]*/>")

    def login(self, user: str, password: str = "secret", *, resource: str = "ws",
              domain: str = "localhost") -> str:
        """SCRAM-SHA-256, bind; returns the bound full JID."""
        self.open(domain)
        answer = scram_sha256(self, user, password, eol="")
        assert "<success" in answer, answer
        self.open(domain)
        self.send("<iq type='set' id='bind1' xmlns='jabber:client'><bind "
                  "xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        return re.search(r"<jid>(.*?)</jid>", self.read_until("</iq>")).group(1)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class HTTPClient:
    """A blocking HTTP/1.1 client that reads answers byte-exactly (keep-alive aware)."""

    def __init__(self, port: int, *, tls: bool = False, sni: str = "localhost",
                 timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock, server_hostname=sni)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> None:
        length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT") else ""
        self.send(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{length}{headers}\r\n"
                  .encode() + body)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed; got {self.buffer!r}")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise ConnectionError(f"closed; got {self.buffer!r}")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        status = int(self._line().split()[1])
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (101, 100, 204):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._take(size)
                self._line()
            self._line()
            return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", "0")))

    def closed(self) -> bool:
        """The server closed the connection (after anything still buffered)."""
        try:
            return not self._fill()
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


ROSTER_NS = "jabber:iq:roster"


def connect(server, user: str, resource: str = "r", roster: bool = True) -> RawClient:
    """A logged-in raw client; with ``roster``, it has fetched the roster (so gets pushes)."""
    client = RawClient(server.port)
    client.login(user, "secret", resource=resource)
    if roster:
        client.send(f"<iq type='get' id='get0'><query xmlns='{ROSTER_NS}'/></iq>")
        client.read_until(r"id=.get0.[^>]*>.*?</iq>|id=.get0.[^>]*/>")
    return client


def hang_up(client: RawClient) -> None:
    """Close the stream and wait for the server to close it: the session is unbound then
    (a plain socket close may be noticed after what the test does next)."""
    client.send("</stream:stream>")
    client.read_closed()


def soon(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """``check()`` once it holds, or its answer after ``timeout`` seconds (for what the
    server does after answering, e.g. a read at bind that waits for the storage thread)."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def offline_count(srv, user: str) -> int:
    """How many offline messages ``user@localhost`` has stored (the offline module's archive)."""
    return srv.call(srv.server.storage.open_store("offline", "archive").count(f"{user}@localhost"))


def run_storage(make_storage, body) -> None:
    """Open a backend from the ``make_storage`` fixture, run ``await body(storage)``, close."""
    async def main() -> None:
        async with make_storage() as storage:
            await body(storage)

    asyncio.run(main())
