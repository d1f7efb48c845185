"""Test support: a server in a background thread, and a raw-socket XMPP client."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import threading
import time
from pathlib import Path

from xmppd.c2s.sasl import derive_all
from xmppd.core.config import Config, Listener, load
from xmppd.server import Server

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


ROSTER_NS = "jabber:iq:roster"


def connect(server, user: str, resource: str = "r", roster: bool = True) -> RawClient:
    """A logged-in raw client; with ``roster``, it has fetched the roster (so gets pushes)."""
    client = RawClient(server.port)
    client.login(user, "secret", resource=resource)
    if roster:
        client.send(f"<iq type='get' id='get0'><query xmlns='{ROSTER_NS}'/></iq>")
        client.read_until(r"id=.get0.[^>]*>.*?</iq>|id=.get0.[^>]*/>")
    return client


def offline_count(srv, user: str) -> int:
    """How many offline messages ``user@localhost`` has stored (the offline module's archive)."""
    return srv.call(srv.server.storage.open_store("offline", "archive").count(f"{user}@localhost"))
