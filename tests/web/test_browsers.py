"""Real browser clients in headless Chromium against a real server: xmpp.js (``@xmpp/client``)
over WebSocket and Converse.js over BOSH, each exchanging messages with a slixmpp TCP client,
and an XEP-0363 upload (slot over XMPP, PUT and GET with fetch()) from a page.

The clients are npm packages pinned in ``tests/web/browser/package-lock.json``
(``npm ci --prefix tests/web/browser``); ``tests/web/browser/driver.mjs`` drives the system
Chromium (``/usr/bin/chromium``, or ``$CHROMIUM``) with playwright-core, one browser for the
whole module. Without them the tests skip, unless ``XMPPD_BROWSER_TESTS=1`` (CI) makes a
missing piece a failure.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import http.client
import http.server
import json
import os
import queue
import re
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from slixmpp import ClientXMPP

BROWSER_DIR = Path(__file__).parent / "browser"
REQUIRED = os.environ.get("XMPPD_BROWSER_TESTS") == "1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
USERS = {"alice": "secret", "bob": "secret"}
#: Plain ws:// from loopback may authenticate (the browser talks to 127.0.0.1 without TLS);
#: BOSH trusts loopback by default (its ``trusted_proxies``).
WEB_OPTIONS = {"websocket": {"plain_is_secure": True}}
TIMEOUT = 20.0


def _missing() -> str | None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
    if shutil.which("node") is None:
        return "no node on PATH"
    for package in ("playwright-core", "@xmpp/client", "converse.js"):
        if not (BROWSER_DIR / "node_modules" / package / "package.json").is_file():
            return f"npm package {package} not installed (npm ci --prefix tests/web/browser)"
    return None


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium behind ``driver.mjs``; requests and answers are JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", "driver.mjs"], cwd=BROWSER_DIR, env={**os.environ, "CHROMIUM": CHROMIUM},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []  # the driver's stderr: page console, page errors
        self.answers: dict[int, queue.Queue] = {}
        self.lock = threading.Lock()
        self.next_id = 0
        self.ready: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            hello = self.ready.get(timeout=30)
        except queue.Empty:
            hello = None
        if not hello or not hello.get("ready"):
            self.close()
            raise BrowserError(f"the browser driver did not start: {self.tail()}")
        self.version = hello["version"]

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "id" not in msg:
                self.ready.put(msg)
                continue
            with self.lock:
                box = self.answers.setdefault(msg["id"], queue.Queue())
            box.put(msg)
        self.ready.put(None)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log[-n:])

    def call(self, op: str, timeout: float = TIMEOUT, **kw) -> dict:
        with self.lock:
            self.next_id += 1
            rid = self.next_id
            box = self.answers.setdefault(rid, queue.Queue())
            self.proc.stdin.write(json.dumps({"id": rid, "op": op, **kw}) + "\n")
            self.proc.stdin.flush()
        try:
            msg = box.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"{op}: no answer in {timeout} s\n{self.tail()}") from None
        finally:
            with self.lock:
                self.answers.pop(rid, None)
        if "error" in msg:
            raise BrowserError(f"{op}: {msg['error']}\n{self.tail()}")
        return msg

    def open(self, url: str) -> Page:
        return Page(self, self.call("open", url=url)["page"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the driver closes the browser and exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Page:
    def __init__(self, browser: Browser, n: int) -> None:
        self.browser, self.n = browser, n

    def eval(self, fn: str, arg=None, timeout: float = TIMEOUT):
        """Run the JavaScript function source ``fn`` on ``arg`` in the page; its (awaited)
        result, as JSON."""
        return self.browser.call("eval", timeout, page=self.n, fn=fn, arg=arg).get("result")

    async def aeval(self, fn: str, arg=None, timeout: float = TIMEOUT):
        return await asyncio.to_thread(self.eval, fn, arg, timeout)

    def close(self) -> None:
        self.browser.call("close", page=self.n)


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"XMPPD_BROWSER_TESTS=1 but {reason}")
        pytest.skip(reason)
    b = Browser()
    yield b
    b.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site():
    """The base URL of a tiny HTTP server for ``tests/web/browser`` (the pages and the npm
    packages' bundles)."""
    handler = functools.partial(_Quiet, directory=str(BROWSER_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def page_of(browser, site):
    """Factory: ``page_of("xmpp.html")`` -> an open page (closed after the test). The pages'
    console output is printed, so a failing test shows it."""
    opened: list[Page] = []
    start = len(browser.log)

    def factory(name: str) -> Page:
        opened.append(browser.open(site + name))
        return opened[-1]

    yield factory
    for page in opened:
        page.close()
    print("\n".join(browser.log[start:]))


async def slixmpp_client(port: int, jid: str) -> tuple[ClientXMPP, asyncio.Queue]:
    xmpp = ClientXMPP(jid, "secret")
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.enable_direct_tls = False
    messages: asyncio.Queue = asyncio.Queue()
    xmpp.add_event_handler("message", messages.put_nowait)
    started = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    xmpp.connect("127.0.0.1", port)
    await asyncio.wait_for(started, 10)
    xmpp.send_presence()  # available: a message to the bare JID reaches this resource
    return xmpp, messages


# -- xmpp.js ------------------------------------------------------------------------------------

#: Log in with xmpp.js over WebSocket; incoming messages collect in window.inbox. -> full JID
XMPPJS_LOGIN = """async ({service, resource}) => {
  const {client, xml} = XMPP;
  window.xml = xml;
  window.inbox = [];
  window.waiters = [];
  const xmpp = client({service, domain: "localhost", username: "alice", password: "secret",
                       resource});
  window.xmpp = xmpp;
  xmpp.on("error", (err) => console.error("xmpp.js:", err.toString()));
  xmpp.on("stanza", (stanza) => {
    if (!stanza.is("message")) return;
    window.inbox.push({from: stanza.attrs.from, type: stanza.attrs.type,
                       body: stanza.getChildText("body")});
    for (const wake of window.waiters.splice(0)) wake();
  });
  const address = await xmpp.start();
  await xmpp.send(xml("presence"));
  return address.toString();
}"""

#: The first message in window.inbox (waiting for one).
NEXT_MESSAGE = """async () => {
  while (!window.inbox.length) await new Promise((wake) => window.waiters.push(wake));
  return window.inbox.shift();
}"""

SEND_MESSAGE = """async ({to, body}) => {
  await window.xmpp.send(xml("message", {to, type: "chat"}, xml("body", {}, body)));
}"""


def test_xmppjs_over_websocket_exchanges_messages_with_slixmpp(make_server, page_of):
    server = make_server(users=USERS, modules_options=WEB_OPTIONS)
    page = page_of("xmpp.html")
    service = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
    jid = page.eval(XMPPJS_LOGIN, {"service": service, "resource": "browser"})
    # xmpp.js logs in with SASL2 + Bind2 (XEP-0386): the server appends to the resource tag
    assert re.fullmatch(r"alice@localhost/browser\.[0-9a-f]+", jid), jid

    async def main():
        bob, messages = await slixmpp_client(server.port, "bob@localhost/phone")
        bob.send_message(mto=jid, mbody="from slixmpp to xmpp.js", mtype="chat")
        got = await page.aeval(NEXT_MESSAGE)
        assert got == {"from": "bob@localhost/phone", "type": "chat",
                       "body": "from slixmpp to xmpp.js"}
        await page.aeval(SEND_MESSAGE, {"to": "bob@localhost/phone",
                                        "body": "from xmpp.js to slixmpp"})
        msg = await asyncio.wait_for(messages.get(), 10)
        assert msg["body"] == "from xmpp.js to slixmpp" and str(msg["from"]) == jid
        await asyncio.wait_for(bob.disconnect(), 10)

    asyncio.run(asyncio.wait_for(main(), 60))
    page.eval("async () => { await window.xmpp.stop(); }")


# -- XEP-0363 upload from a page ----------------------------------------------------------------

#: Ask for a slot over XMPP (xmpp.js), PUT the bytes with fetch(), GET them back.
UPLOAD = """async ({size, type}) => {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 8)) & 255;
  const answer = await window.xmpp.iqCaller.request(
    xml("iq", {type: "get", to: "upload.localhost"},
        xml("request", {xmlns: "urn:xmpp:http:upload:0", filename: "page.bin", size,
                        "content-type": type})));
  const slot = answer.getChild("slot", "urn:xmpp:http:upload:0");
  const put = slot.getChild("put").attrs.url, get = slot.getChild("get").attrs.url;
  const stored = await fetch(put, {method: "PUT", body: data, headers: {"Content-Type": type}});
  await stored.arrayBuffer();
  const back = await fetch(get);
  const bytes = new Uint8Array(await back.arrayBuffer());
  let same = bytes.length === data.length;
  for (let i = 0; same && i < size; i++) same = bytes[i] === data[i];
  let b64 = "";
  for (let i = 0; i < bytes.length; i += 0x8000)
    b64 += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return {put, get, putStatus: stored.status, getStatus: back.status, same,
          type: back.headers.get("content-type"), data: btoa(b64)};
}"""


def expected_bytes(size: int) -> bytes:
    return bytes((i * 7 + (i >> 8)) & 255 for i in range(size))


def https_get(url: str, port: int) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        parts = urlsplit(url)
        conn.request("GET", parts.path, headers={"Host": parts.netloc})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_upload_from_a_browser_page(make_server, page_of):
    server = make_server(users=USERS, modules_options=WEB_OPTIONS)
    page = page_of("xmpp.html")
    service = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
    page.eval(XMPPJS_LOGIN, {"service": service, "resource": "upload"})
    size = 100_000
    got = page.eval(UPLOAD, {"size": size, "type": "application/octet-stream"})
    assert got["put"].startswith(f"https://localhost:{server.https_port}/upload/")
    assert got["putStatus"] == 201 and got["getStatus"] == 200, got
    assert got["same"] and got["type"] == "application/octet-stream"
    data = base64.b64decode(got["data"])
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected_bytes(size)).digest()
    # What the server stored is what the page sent, for any other client too.
    assert https_get(got["get"], server.https_port) == (200, expected_bytes(size))
    page.eval("async () => { await window.xmpp.stop(); }")


# -- Converse.js --------------------------------------------------------------------------------

CONVERSE_LOGIN = """async ({bosh}) => {
  const connected = new Promise((resolve) => {
    window.converseReady = resolve;
  });
  converse.plugins.add("xmppd-wait", {
    initialize() {
      const api = this._converse.api;
      window.inbox = [];
      window.waiters = [];
      api.listen.on("message", (data) => {
        if (!data.attrs.body) return;  // chat states
        window.inbox.push({from: data.attrs.from, type: data.attrs.type,
                           body: data.attrs.body});
        for (const wake of window.waiters.splice(0)) wake();
      });
      api.listen.on("connected", () => window.converseReady());
    },
  });
  await converse.initialize({
    bosh_service_url: bosh, jid: "alice@localhost/converse", password: "secret",
    auto_login: true, discover_connection_methods: false, allow_non_roster_messaging: true,
    whitelisted_plugins: ["xmppd-test", "xmppd-wait"], view_mode: "fullscreen",
    assets_path: "node_modules/converse.js/dist/", loglevel: "info",
    play_sounds: false, show_desktop_notifications: false,
  });
  await connected;
  return window._converse.api.connection.get().jid;
}"""

CONVERSE_SEND = """async ({to, body}) => {
  const chat = await window._converse.api.chats.open(to, {}, true);
  await chat.sendMessage({body});
}"""


def test_converse_over_bosh_exchanges_messages_with_slixmpp(make_server, page_of):
    server = make_server(users=USERS, modules_options=WEB_OPTIONS)
    page = page_of("converse.html")
    bosh = f"http://127.0.0.1:{server.http_port}/http-bind"
    jid = page.eval(CONVERSE_LOGIN, {"bosh": bosh})
    assert jid == "alice@localhost/converse"

    async def main():
        bob, messages = await slixmpp_client(server.port, "bob@localhost/phone")
        bob.send_message(mto="alice@localhost", mbody="from slixmpp to converse", mtype="chat")
        got = await page.aeval(NEXT_MESSAGE)
        assert got["body"] == "from slixmpp to converse", got
        assert got["from"].startswith("bob@localhost"), got
        await page.aeval(CONVERSE_SEND, {"to": "bob@localhost",
                                         "body": "from converse to slixmpp"})
        while True:
            msg = await asyncio.wait_for(messages.get(), 10)
            if msg["body"]:  # skip chat states
                break
        assert msg["body"] == "from converse to slixmpp" and str(msg["from"]) == jid
        await asyncio.wait_for(bob.disconnect(), 10)

    asyncio.run(asyncio.wait_for(main(), 60))
    page.eval("async () => { await window._converse.api.user.logout(); }")
