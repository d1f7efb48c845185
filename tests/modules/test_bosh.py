"""BOSH (XEP-0124/0206) on /http-bind end to end: raw HTTP requests against a real server,
one rule or error per test, and a BOSH login talking to a slixmpp client over TCP."""

from __future__ import annotations

import asyncio
import base64
import http.client
import random
import re
import ssl
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest
from slixmpp import ClientXMPP
from support import connect as raw_connect

from xmppd.jid import JID

BOSH = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
USERS = {"alice": "secret", "bob": "secret"}


class BoshClient:
    """A blocking BOSH client: one HTTP connection per request (so that requests can be
    held side by side); requests made from threads with :meth:`later`."""

    def __init__(self, port: int, *, tls: bool = False, timeout: float = 10.0) -> None:
        self.port = port
        self.tls = tls
        self.timeout = timeout
        self.rid = random.randint(1, 2**40)
        self.sid: str | None = None
        self.pool = ThreadPoolExecutor(4)

    def post(self, data: bytes | str, headers: dict | None = None,
             method: str = "POST") -> tuple[int, dict, bytes]:
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=self.timeout,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, "/http-bind", body=data.encode() if isinstance(data, str) else data,
                         headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def body(self, inner: str = "", rid: int | None = None, **attrs: str) -> str:
        if rid is None:
            self.rid += 1
            rid = self.rid
        text = f"<body xmlns='{BOSH}' xmlns:xmpp='{XBOSH}' rid='{rid}'"
        if self.sid is not None:
            text += f" sid='{self.sid}'"
        for name, value in attrs.items():
            text += f" {name.replace('__', ':').replace('_', '-')}='{value}'"
        return text + (f">{inner}</body>" if inner else "/>")

    def request(self, inner: str = "", rid: int | None = None, **attrs: str) -> ET.Element:
        status, _, data = self.post(self.body(inner, rid, **attrs))
        assert status == 200, (status, data)
        return ET.fromstring(data)

    def later(self, inner: str = "", rid: int | None = None, **attrs: str):
        """Send a request from a thread; returns the future of its answer."""
        data = self.body(inner, rid, **attrs)
        return self.pool.submit(lambda: ET.fromstring(self.post(data)[2]))

    def create(self, to: str = "localhost", wait: int = 30, hold: int = 1, **attrs: str):
        root = self.request(to=to, wait=str(wait), hold=str(hold), ver="1.6",
                            xmpp__version="1.0", **attrs)
        self.sid = root.get("sid")
        return root

    def login(self, user: str = "alice", resource: str = "bosh") -> str:
        """Create, SASL PLAIN, restart, bind; returns the bound JID."""
        root = self.create()
        assert root.find(f".//{{{SASL}}}mechanism") is not None
        token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
        out = self.request(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        assert out.find(f"{{{SASL}}}success") is not None, ET.tostring(out)
        out = self.request(xmpp__restart="true")
        assert out.find(f".//{{{BIND}}}bind") is not None, ET.tostring(out)
        out = self.request("<iq xmlns='jabber:client' type='set' id='b1'>"
                           f"<bind xmlns='{BIND}'><resource>{resource}</resource></bind></iq>")
        jid = out.find(f".//{{{BIND}}}jid")
        assert jid is not None, ET.tostring(out)
        return jid.text

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def terminated(root: ET.Element, condition: str | None = None) -> bool:
    return root.get("type") == "terminate" and root.get("condition") == condition


@pytest.fixture
def bosh_server(make_server):
    def factory(**bosh_options):
        return make_server(users=USERS, allow_plain=True,
                           modules_options={"bosh": bosh_options} if bosh_options else {})
    return factory


@pytest.fixture
def client_of():
    made = []

    def factory(server, **kw):
        made.append(BoshClient(server.http_port, **kw))
        return made[-1]

    yield factory
    for client in made:
        client.close()


def sessions(server) -> list[str]:
    async def get():
        return [str(s.jid) for s in server.server.router.sessions.all()]
    return server.call(get())


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- session creation ---------------------------------------------------------------------------


def test_session_creation_answers_the_terms_and_the_features(bosh_server, client_of):
    server = bosh_server(max_wait_s=20, max_hold=1)
    client = client_of(server)
    root = client.create(wait=600, hold=3)
    assert root.tag == f"{{{BOSH}}}body"
    assert len(root.get("sid")) >= 24
    assert root.get("wait") == "20" and root.get("hold") == "1" and root.get("requests") == "2"
    assert root.get("inactivity") == "60" and root.get("polling") == "2"
    assert root.get("maxpause") == "300" and root.get("from") == "localhost"
    assert root.get("authid") and root.get(f"{{{XBOSH}}}version") == "1.0"
    assert root.get(f"{{{XBOSH}}}restartlogic") == "true"
    mechs = [m.text for m in root.iter(f"{{{SASL}}}mechanism")]
    assert "PLAIN" in mechs and "SCRAM-SHA-256" in mechs
    assert "starttls" not in ET.tostring(root).decode()  # no STARTTLS inside BOSH
    assert BoshClient(server.http_port).create().get("sid") != root.get("sid")


def test_cors_headers_and_preflight(bosh_server, client_of):
    server = bosh_server(cors_origins=["https://app.example"])
    client = client_of(server)
    status, headers, _ = client.post(b"", {"Origin": "https://app.example",
                                           "Access-Control-Request-Method": "POST"}, "OPTIONS")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in headers["access-control-allow-methods"]
    assert "Content-Type" in headers["access-control-allow-headers"]
    status, headers, _ = client.post(client.body(to="localhost", wait="5", hold="1"),
                                     {"Origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = client.post(client.body(to="localhost", wait="5", hold="1"),
                                     {"Origin": "https://app.example"})
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["content-type"].startswith("text/xml")


def test_creation_errors(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    assert terminated(client.request(to="nowhere.example", wait="5", hold="1"), "host-unknown")
    assert terminated(client.request(to="localhost"), "bad-request")  # no wait/hold
    status, _, data = client.post(b"<body xmlns='wrong' rid='1'/>")
    assert status == 400 and terminated(ET.fromstring(data), "bad-request")
    status, _, data = client.post(b"<body xmlns='http://jabber.org/protocol/httpbind'")
    assert status == 400 and terminated(ET.fromstring(data), "bad-request")
    status, _, data = client.post(f"<body xmlns='{BOSH}' to='localhost' wait='5' hold='1'/>")
    assert status == 400  # no rid


def test_body_size_limit(bosh_server, client_of):
    server = bosh_server(max_body_bytes=2048)
    client = client_of(server)
    client.create()
    status, _, _ = client.post(client.body("<message xmlns='jabber:client'><body>"
                                           + "x" * 4096 + "</body></message>"))
    assert status == 413


def test_unencrypted_sessions_are_refused_from_untrusted_addresses(bosh_server, client_of):
    server = bosh_server(trusted_proxies=[])
    assert terminated(client_of(server).create(), "policy-violation")
    secure = client_of(server, tls=True)
    secure.port = server.https_port
    assert secure.create().get("sid")  # over HTTPS it is encrypted


def test_bad_sid_is_item_not_found(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    client.create()
    client.sid = "not-a-session"
    assert terminated(client.request(), "item-not-found")


# -- login, messages, long polling ------------------------------------------------------------


def test_login_and_long_poll_returns_when_a_message_arrives(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    jid = client.login()
    assert JID(jid).bare == JID("alice@localhost")
    assert jid in sessions(server)
    held = client.later()  # an empty request: held until there is something to send
    time.sleep(0.2)
    assert not held.done()
    bob = raw_connect(server, "bob", roster=False)
    bob.send(f"<message to='{jid}' type='chat' id='m1'><body>hello bosh</body></message>")
    answer = held.result(10)
    message = answer.find("{jabber:client}message")
    assert message is not None and message.findtext("{jabber:client}body") == "hello bosh"
    assert message.get("from").startswith("bob@localhost/")
    # and back: a stanza in a request goes to the router
    client.later("<message xmlns='jabber:client' to='bob@localhost/r' type='chat'>"
                 "<body>hi over http</body></message>")
    bob.read_until("hi over http")
    bob.close()


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
    return xmpp, messages


def test_bosh_client_and_slixmpp_client_exchange_messages(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    jid = client.login(resource="web")

    async def main():
        bob, messages = await slixmpp_client(server.port, "bob@localhost/phone")
        poll = asyncio.get_running_loop().run_in_executor(None, client.request)
        bob.send_message(mto=jid, mbody="from slixmpp", mtype="chat")
        answer = await asyncio.wait_for(poll, 10)
        assert answer.findtext("{jabber:client}message/{jabber:client}body") == "from slixmpp"
        client.later("<message xmlns='jabber:client' to='bob@localhost/phone' type='chat'>"
                     "<body>from bosh</body></message>")
        got = await asyncio.wait_for(messages.get(), 10)
        assert got["body"] == "from bosh" and str(got["from"]) == jid
        await asyncio.wait_for(bob.disconnect(), 10)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_requests_are_processed_in_rid_order(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    jid = client.login()
    bob = raw_connect(server, "bob", roster=False)
    first, second = client.rid + 1, client.rid + 2
    client.rid += 2
    client.later("<message xmlns='jabber:client' to='bob@localhost/r'><body>two</body>"
                 "</message>", rid=second)
    time.sleep(0.2)
    bob.send(f"<message to='{jid}'><body>ping</body></message>")
    earlier = client.later("<message xmlns='jabber:client' to='bob@localhost/r'><body>one"
                           "</body></message>", rid=first)
    text = bob.read_until("two")
    assert text.index("one") < text.index("two")
    # answered in rid order: the first request carries what was waiting
    assert "ping" in ET.tostring(earlier.result(10)).decode()
    bob.close()


# -- rid window, retransmission, overactivity --------------------------------------------------


def test_retransmitted_rid_gets_the_cached_response(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    jid = client.login()
    bob = raw_connect(server, "bob", roster=False)
    bob.send(f"<message to='{jid}' type='chat'><body>keep me</body></message>")
    first = client.body()
    status, _, data = client.post(first)
    assert b"keep me" in data
    status2, _, again = client.post(first)  # the answer got lost: the client resends
    assert status2 == 200 and again == data
    bob.close()


def test_rid_beyond_the_window_is_item_not_found(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    client.login()
    assert terminated(client.request(rid=client.rid + 5), "item-not-found")
    assert wait_until(lambda: sessions(server) == [])  # the session ended
    assert terminated(client.request(), "item-not-found")


def test_forgotten_rid_is_item_not_found(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    client.create()
    old = client.rid
    for _ in range(3):  # answered at once; only the last 'requests' answers are kept
        assert client.request(f"<abort xmlns='{SASL}'/>").find(f"{{{SASL}}}failure") is not None
    assert terminated(client.request(rid=old), "item-not-found")


def test_too_many_requests_is_policy_violation(bosh_server, client_of):
    server = bosh_server(polling_s=5)
    client = client_of(server)
    jid = client.login()
    held = client.later()  # the one request the session may hold
    time.sleep(0.2)
    answer = client.request()  # another empty one right away: overactivity
    assert terminated(answer, "policy-violation")
    assert terminated(held.result(10), "policy-violation")
    assert wait_until(lambda: jid not in sessions(server))


# -- pause, terminate, restart, inactivity ------------------------------------------------------


def test_inactivity_ends_the_session(bosh_server, client_of):
    server = bosh_server(inactivity_s=1)
    client = client_of(server)
    jid = client.login()
    assert wait_until(lambda: jid not in sessions(server))
    assert terminated(client.request(), "item-not-found")


def test_pause_answers_held_requests_and_extends_inactivity(bosh_server, client_of):
    server = bosh_server(inactivity_s=1, max_pause_s=60)
    client = client_of(server)
    jid = client.login()
    held = client.later()
    time.sleep(0.2)
    assert client.request(pause="30").get("type") is None
    assert held.result(10).get("type") is None  # answered at once
    time.sleep(2.5)  # well past the inactivity time, within the pause
    assert jid in sessions(server)
    assert client.request("<iq xmlns='jabber:client' type='get' id='p'>"
                          "<ping xmlns='urn:xmpp:ping'/></iq>").find("{jabber:client}iq") is not None


def test_pause_over_maxpause_is_policy_violation(bosh_server, client_of):
    server = bosh_server(max_pause_s=10)
    client = client_of(server)
    client.login()
    assert terminated(client.request(pause="100"), "policy-violation")


def test_terminate_ends_the_session_after_its_payload(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    jid = client.login()
    bob = raw_connect(server, "bob", roster=False)
    answer = client.request("<message xmlns='jabber:client' to='bob@localhost/r'>"
                            "<body>bye</body></message>", type="terminate")
    assert terminated(answer)
    bob.read_until("bye")
    assert wait_until(lambda: jid not in sessions(server))
    assert client.request().get("type") == "terminate"
    bob.close()


def test_restart_only_after_authentication(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    client.create()
    assert terminated(client.request(xmpp__restart="true"), "bad-request")


def test_failed_auth_and_stanzas_before_auth(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    client.create()
    token = base64.b64encode(b"\0alice\0wrong").decode()
    out = client.request(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert out.find(f"{{{SASL}}}failure/{{{SASL}}}not-authorized") is not None
    out = client.request("<message xmlns='jabber:client' to='bob@localhost'/>")
    assert terminated(out, "remote-stream-error")
    assert out.find("{http://etherx.jabber.org/streams}error") is not None
    assert "not-authorized" in ET.tostring(out).decode()


def test_stream_error_reaches_a_held_request(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    jid = client.login(resource="same")
    held = client.later()
    time.sleep(0.2)
    tcp = raw_connect(server, "alice", resource="same", roster=False)  # same full JID
    answer = held.result(10)
    assert terminated(answer, "remote-stream-error")
    assert re.search("conflict", ET.tostring(answer).decode())
    assert jid in sessions(server)  # now the TCP one
    tcp.close()


def test_stanza_size_limits_before_and_after_authentication(make_server, client_of):
    from xmppd.core.config import Limits

    server = make_server(users=USERS, allow_plain=True,
                         limits=Limits(max_stanza_size_preauth_bytes=1024))
    client = client_of(server)
    client.create()
    big = "<message xmlns='jabber:client' to='bob@localhost'><body>" + "x" * 2000 + "</body></message>"
    assert terminated(client.request(big), "policy-violation")
    assert terminated(client.request(), "policy-violation")  # the session ended
    client = client_of(server)
    jid = client.login()
    echo = client.later(big.replace("bob@localhost", jid))  # to itself
    assert "xxxx" in ET.tostring(echo.result(10)).decode()


def test_sessions_per_address_are_limited(bosh_server, client_of):
    server = bosh_server(max_sessions_per_ip=1)
    first = client_of(server)
    assert first.create().get("sid")
    assert terminated(client_of(server).create(), "policy-violation")
    first.request(type="terminate")
    assert client_of(server).create().get("sid")  # the slot is free again


def test_unauthenticated_session_times_out(make_server, client_of):
    from xmppd.core.config import Limits

    server = make_server(users=USERS, allow_plain=True, limits=Limits(auth_timeout_s=1))
    client = client_of(server)
    client.create()
    time.sleep(1.5)
    answer = client.request()
    assert terminated(answer, "remote-stream-error")
    assert "connection-timeout" in ET.tostring(answer).decode()


def test_stream_management_over_bosh(bosh_server, client_of):
    server = bosh_server()
    client = client_of(server)
    client.login()
    sm = "urn:xmpp:sm:3"
    out = client.request(f"<enable xmlns='{sm}' resume='true'/>")
    enabled = out.find(f"{{{sm}}}enabled")
    assert enabled is not None and enabled.get("resume") == "true"
    out = client.request("<iq xmlns='jabber:client' type='get' id='p1'>"
                         f"<ping xmlns='urn:xmpp:ping'/></iq><r xmlns='{sm}'/>")
    assert out.find("{jabber:client}iq") is not None
    assert out.find(f"{{{sm}}}a").get("h") == "1"


def test_forwarded_for_from_a_trusted_proxy_names_the_client(bosh_server, client_of):
    server = bosh_server(max_sessions_per_ip=1)
    client = client_of(server)
    create = client.body(to="localhost", wait="5", hold="1")
    for address in ("192.0.2.1", "192.0.2.2"):  # two clients behind the proxy
        _, _, data = client.post(create, {"X-Forwarded-For": f"10.0.0.9, {address}"})
        assert ET.fromstring(data).get("sid")
    _, _, data = client.post(create, {"X-Forwarded-For": "192.0.2.2"})
    assert terminated(ET.fromstring(data), "policy-violation")


def test_bosh_sessions_and_logins_show_in_the_metrics(bosh_server, client_of):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    server = bosh_server()
    client_of(server).login()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics") as answer:
        text = answer.read().decode()
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(text) for s in f.samples}
    login = (("kind", "bosh"), ("mechanism", "PLAIN"), ("outcome", "success"))
    assert found[("xmppd_logins_total", login)] == 1
    assert found[("xmppd_bosh_sessions", ())] == 1
    assert found[("xmppd_sessions", (("kind", "c2s"),))] == 1  # bound: in the session table
