"""XMPP over WebSocket (RFC 7395) end to end: a raw WebSocket client against a real server,
every framing rule and its error, the shared c2s negotiation and limits, keepalive,
see-other-uri, Origin checks, and a TCP (slixmpp) client on the other side."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
import ssl
import time

import pytest
from slixmpp import ClientXMPP
from support import FRAMING_NS, RawClient, WSClient, scram_sha256

from xmppd.core.config import Limits
from xmppd.web._wsbase import BINARY, CLOSE, PING, PONG, close_payload

USERS = {"alice": "secret", "bob": "secret"}
OPEN = f"<open xmlns='{FRAMING_NS}' to='localhost' version='1.0'/>"
SM = "urn:xmpp:sm:3"


def stream_error(text: str) -> str | None:
    m = re.search(r"<stream:error[^>]*>\s*<([a-z-]+) xmlns=['\"]urn:ietf:params:xml:ns:"
                  r"xmpp-streams", text)
    return m.group(1) if m else None


def ends_cleanly(client: WSClient, condition: str, code: int = 1000) -> str:
    """The stream error, then <close/>, then the close frame with ``code``."""
    text = client.read_closed()
    assert stream_error(text) == condition, text
    assert text.rstrip().endswith(f"<close xmlns='{FRAMING_NS}'/>"), text
    assert client.close_code == code
    return text


@pytest.fixture
def web(make_server):
    return make_server(users=USERS)


def ws(srv, **kwargs) -> WSClient:
    return WSClient(srv.https_port, tls=True, **kwargs)


# -- the opening handshake --------------------------------------------------------------------


def test_handshake_needs_the_xmpp_subprotocol(web):
    c = ws(web, protocol=None)
    assert c.status == 400 and "sec-websocket-accept" not in c.headers
    c = ws(web, protocol="chat, superchat")
    assert c.status == 400
    c = ws(web, protocol="chat, xmpp")
    assert c.status == 101 and c.headers["sec-websocket-protocol"] == "xmpp"


def test_handshake_accept_key_and_plain_http(web):

    sock = socket.create_connection(("127.0.0.1", web.http_port), timeout=5)
    sock.sendall(b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
    head = sock.recv(4096).decode()
    assert head.startswith("HTTP/1.1 101")
    expected = base64.b64encode(hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ=="
                                             b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert f"Sec-WebSocket-Accept: {expected.decode()}" in head
    sock = socket.create_connection(("127.0.0.1", web.http_port), timeout=5)
    sock.sendall(b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\n\r\n")  # plain GET
    assert sock.recv(4096).startswith(b"HTTP/1.1 426")


def test_origin_checks_when_configured(make_server):
    srv = make_server(users=USERS, modules_options={
        "websocket": {"allowed_origins": ["https://chat.example.org"]}})
    assert ws(srv, origin="https://evil.example").status == 403
    assert ws(srv, origin="https://chat.example.org").status == 101
    assert ws(srv).status == 101  # not a browser: no Origin


# -- framing ----------------------------------------------------------------------------------


def test_open_features_and_close(web):
    c = ws(web)
    text = c.open()
    assert re.match(rf"<open xmlns='{FRAMING_NS}' id='[0-9a-f]+' version='1.0' xml:lang='en' "
                    r"from='localhost'/>", text)
    assert "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>" in text
    assert "starttls" not in text  # TLS is the WebSocket connection's
    c.send(f"<close xmlns='{FRAMING_NS}'/>")
    assert c.read_closed() == f"<close xmlns='{FRAMING_NS}'/>" and c.close_code == 1000


def test_open_checks(web):
    c = ws(web)
    c.send(f"<open xmlns='{FRAMING_NS}' to='elsewhere.example' version='1.0'/>")
    ends_cleanly(c, "host-unknown")
    c = ws(web)
    c.send(f"<open xmlns='{FRAMING_NS}' to='localhost'/>")
    ends_cleanly(c, "unsupported-version")
    c = ws(web)
    c.send("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>")
    assert stream_error(c.read_closed()) == "not-well-formed"


def test_elements_before_open_are_refused(web):
    c = ws(web)
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
    text = ends_cleanly(c, "bad-format")
    assert "<success" not in text
    c = ws(web)  # after SASL success, a new <open/> must come first again
    c.open()
    assert "<success" in scram_sha256(c, "alice", "secret", eol="")
    c.send("<iq type='set' id='b' xmlns='jabber:client'><bind "
           "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    ends_cleanly(c, "bad-format")


def test_binary_message_is_refused(web):
    c = ws(web)
    c.open()
    c.send_frame(BINARY, OPEN.encode())
    ends_cleanly(c, "bad-format", code=1003)


def test_two_elements_in_one_message(web):
    c = ws(web)
    c.open()
    c.send("<iq type='get' id='a'/><iq type='get' id='b'/>")
    ends_cleanly(c, "not-well-formed")


def test_stanza_split_across_messages(web):
    c = ws(web)
    c.open()
    c.send("<iq type='get' id='a'>")
    ends_cleanly(c, "not-well-formed")
    c = ws(web)
    c.open()
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><iq")
    ends_cleanly(c, "not-well-formed")


def test_whitespace_only_message(web):
    c = ws(web)
    c.open()
    c.send(" \n")
    ends_cleanly(c, "not-well-formed")


def test_text_outside_an_element(web):
    c = ws(web)
    c.open()
    c.send("hello")
    ends_cleanly(c, "not-well-formed")


def test_whitespace_around_an_element_is_fine(web):
    c = ws(web)
    c.send("\n" + OPEN + "\n")
    assert "</stream:features>" in c.read_until("</stream:features>")


def test_ping_is_answered_with_pong(web):
    c = ws(web)
    c.send_frame(PING, b"are you there")
    deadline = time.monotonic() + 5
    while (PONG, b"are you there") not in c.frames:
        assert time.monotonic() < deadline
        c._receive(deadline)


def test_a_silent_connection_is_pinged_then_cut(make_server):
    srv = make_server(users=USERS, modules_options={"websocket": {"ping_interval_s": 0.2}})
    c = ws(srv)
    c.read_closed(timeout=10)
    assert (PING, b"") in c.frames  # it never answered, so it was cut


def test_invalid_frames_fail_the_websocket(web):
    c = ws(web)
    c.open()
    c.sock.sendall(b"\x81\x05hello")  # not masked
    ends_cleanly(c, "bad-format", code=1002)
    c = ws(web)
    c.open()
    c.send(b"<message>\xc3\x28</message>")
    ends_cleanly(c, "not-well-formed", code=1007)


def test_close_frame_from_the_client_is_answered(web):
    c = ws(web)
    c.open()
    c.send_frame(CLOSE, close_payload(1001, "tab closed"))
    c.read_closed()
    assert c.close_code == 1001


# -- limits: the same as TCP ------------------------------------------------------------------


def test_oversized_stanza_before_and_after_authentication(make_server):
    srv = make_server(users=USERS, limits=Limits(max_stanza_size_bytes=4096,
                                                 max_stanza_size_preauth_bytes=1024))
    c = ws(srv)
    c.open()
    c.send("<iq type='get' id='x'>" + "a" * 2000 + "</iq>")
    ends_cleanly(c, "policy-violation", code=1009)
    c = ws(srv)
    c.login("alice")  # then the full limit applies
    c.send("<message to='alice@localhost/ws' id='big'><body>" + "a" * 3000 + "</body></message>")
    assert len(c.read_until("</message>")) > 3000
    c.send("<message to='alice@localhost/ws'><body>" + "a" * 5000 + "</body></message>")
    ends_cleanly(c, "policy-violation", code=1009)


def test_plain_ws_follows_require_encryption(make_server):
    srv = make_server(users=USERS)
    c = WSClient(srv.http_port)
    assert "<mechanism>" not in c.open()  # unencrypted: nothing to authenticate with
    srv = make_server(users=USERS, modules_options={"websocket": {"plain_is_secure": True}})
    c = WSClient(srv.http_port)
    features = c.open()
    assert "<mechanism>SCRAM-SHA-256</mechanism>" in features
    assert "-PLUS" not in features  # no TLS here to bind to


def test_see_other_uri(make_server):
    uri = "wss://ws2.example.org/xmpp-websocket"
    srv = make_server(users=USERS, modules_options={"websocket": {"see_other_uri": uri}})
    c = ws(srv)
    c.send(OPEN)
    text = c.read_closed()
    assert text == f"<close xmlns='{FRAMING_NS}' see-other-uri='{uri}'/>"
    assert c.close_code == 1000


def test_see_other_uri_must_be_a_uri(make_server):
    from xmppd.core.config import ConfigError

    with pytest.raises(ConfigError, match="see_other_uri"):
        make_server(modules_options={"websocket": {"see_other_uri": "elsewhere"}})


# -- sessions ---------------------------------------------------------------------------------


def test_websocket_login_and_message_to_a_tcp_slixmpp_client(web):
    async def scenario() -> None:
        bob = ClientXMPP("bob@localhost/tcp", "secret")
        bob.enable_direct_tls = False
        bob.ssl_context.check_hostname = False
        bob.ssl_context.verify_mode = ssl.CERT_NONE
        messages: asyncio.Queue = asyncio.Queue()
        started = asyncio.get_running_loop().create_future()
        bob.add_event_handler("message", messages.put_nowait)
        bob.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
        bob.connect("127.0.0.1", web.port)
        await asyncio.wait_for(started, 10)

        def alice() -> str:
            c = ws(web)
            jid = c.login("alice", resource="browser")
            c.send("<message to='bob@localhost/tcp' type='chat' id='m1'><body>over WebSocket"
                   "</body></message>")
            return jid

        assert await asyncio.to_thread(alice) == "alice@localhost/browser"
        msg = await asyncio.wait_for(messages.get(), 10)
        assert msg["body"] == "over WebSocket" and str(msg["from"]) == "alice@localhost/browser"
        bob.send_message(mto="alice@localhost/browser", mbody="back")
        await asyncio.wait_for(bob.disconnect(), 10)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def _enable_sm(client) -> str:
    client.send(f"<enable xmlns='{SM}' resume='true'/>")
    return re.search(r"id='([^']+)'", client.read_until("<enabled[^>]*/>")).group(1)


def test_sm_resumes_a_websocket_session_over_tcp_and_back(web):
    bob = RawClient(web.port)
    bob.login("bob", "secret", resource="b")
    c = ws(web)
    c.login("alice", resource="phone")
    previd = _enable_sm(c)
    c.send_frame(CLOSE, close_payload(1001))  # the tab went away: no <close/>
    c.read_closed()
    for i in range(3):  # queued while detached
        bob.send(f"<message to='alice@localhost/phone' type='chat' id='q{i}'><body>n{i}</body>"
                 "</message>")
    tcp = RawClient(web.port)
    tcp.header()
    tcp.starttls()
    tcp.header()
    token = base64.b64encode(b"\0alice\0secret").decode()
    tcp.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    tcp.read_until("<success")
    tcp.header()
    tcp.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    text = tcp.read_until("<body>n2</body></message>")
    assert f"<resumed xmlns='{SM}' previd='{previd}'" in text and "n0" in text
    tcp.send(f"<a xmlns='{SM}' h='3'/>")
    tcp.sock.close()  # lost again: detached
    w = ws(web)
    w.open()
    assert "<success" in scram_sha256(w, "alice", "secret", eol="")
    w.open()
    bob.send("<message to='alice@localhost/phone' type='chat' id='q3'><body>n3</body></message>")
    w.send(f"<resume xmlns='{SM}' previd='{previd}' h='3'/>")
    text = w.read_until("<body>n3</body>")
    assert "<resumed" in text and "n0" not in text  # acknowledged over TCP, not re-sent
    assert 'from="bob@localhost/b"' in text
