"""Hardening: hostile input, floods, slow and silent peers, secrets and shutdown.

Every misbehaving connection is checked for the exact stream (or SASL) error, and a session
bound before the misbehaviour (the bystander) must still answer a ping afterwards.  Cases
that ``test_c2s_negative.py`` already covers exactly are not repeated here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import resource
import selectors
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from support import STREAM_HEADER, RawClient
from test_c2s_negative import (
    SASL,
    assert_alive,
    expect_stream_error,
    ping,
    plain_auth,
    stream_error,
    tls_client,
)

from xmppd.core.config import Limits
from xmppd.jid import JID

USERS = {"alice": "secret", "bob": "secret", "carol": "secret"}


def rss_bytes() -> int:
    """Resident memory of this process (the test server runs in a thread of it)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start(make_server, **limits):
    """A server with ``limits`` overridden, and a bound bystander on it."""
    srv = make_server(users=USERS, allow_plain=True, limits=Limits(**limits))
    bystander = RawClient(srv.port)
    bystander.login("carol", "secret", resource="bystander")
    return srv, bystander


@pytest.fixture
def server_and_bystander(make_server):
    srv, bystander = start(make_server)
    yield srv, bystander
    bystander.close()


def send_ignoring_reset(client: RawClient, data: bytes | str) -> None:
    """Send what the server may refuse half-way by closing the connection."""
    try:
        client.send(data)
    except OSError:
        pass


# -- restricted and malformed XML ----------------------------------------------------------


@pytest.mark.parametrize("prologue", [
    # billion laughs: entities that expand exponentially
    "<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]>",
    # external entity (XXE)
    "<!DOCTYPE stream [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>",
])
def test_doctype_with_entities_is_restricted_xml(server_and_bystander, prologue):
    srv, bystander = server_and_bystander
    client = RawClient(srv.port)
    client.send("<?xml version='1.0'?>" + prologue
                + STREAM_HEADER.format(to="localhost").replace("<?xml version='1.0'?>", ""))
    text = expect_stream_error(client, "restricted-xml")
    assert "root:" not in text and "lol" not in text
    assert_alive(bystander)


@pytest.mark.parametrize("junk", ["<!-- c -->", "<?pi x?>", "<a>&undefined;</a>"])
def test_restricted_xml_before_authentication(server_and_bystander, junk):
    """``test_c2s_negative`` checks these on a bound stream; here on a fresh one."""
    srv, bystander = server_and_bystander
    client = RawClient(srv.port)
    client.header()
    client.send(junk)
    expect_stream_error(client, "restricted-xml")
    assert_alive(bystander)


BAD_UTF8 = {
    "overlong-slash": b"<message><body>\xc0\xaf</body></message>",
    "overlong-3-byte": b"<message><body>\xe0\x80\xaf</body></message>",
    "invalid-byte": b"<message><body>\xff</body></message>",
    "surrogate": b"<message><body>\xed\xa0\x80</body></message>",
    "truncated": b"<message><body>\xe2\x82</body></message>",
    "in-tag-name": b"<mes\xc0\xafsage/>",
    "in-attribute-name": b"<message a\xff='1'/>",
    "in-attribute-value": b"<message to='\xc1\xbf'/>",
}


@pytest.mark.parametrize("bound", [False, True], ids=["preauth", "bound"])
@pytest.mark.parametrize("payload", list(BAD_UTF8.values()), ids=list(BAD_UTF8))
def test_invalid_utf8_is_not_well_formed(server_and_bystander, payload, bound):
    srv, bystander = server_and_bystander
    client = RawClient(srv.port)
    if bound:
        client.login("alice", "secret")
    else:
        client.header()
    client.send(payload)
    expect_stream_error(client, "not-well-formed")
    assert_alive(bystander)


def test_newline_in_stream_xmlns_is_invalid_namespace(server_and_bystander):
    srv, bystander = server_and_bystander
    client = RawClient(srv.port)
    client.send(STREAM_HEADER.format(to="localhost").replace("xmlns='jabber:client'",
                                                             "xmlns='jabber:\nclient'"))
    expect_stream_error(client, "invalid-namespace")
    assert_alive(bystander)


def test_newline_in_stanza_xmlns_is_invalid_namespace(server_and_bystander):
    srv, bystander = server_and_bystander
    client = RawClient(srv.port)
    client.login("alice", "secret")
    client.send("<iq type='get' id='n' to='localhost'><ping xmlns='urn:xmpp:\nping'/></iq>")
    expect_stream_error(client, "invalid-namespace")
    assert_alive(bystander)


# -- resource exhaustion through the parser ---------------------------------------------------


def _deep(n: int) -> bytes:
    return b"<message>" + b"<a>" * n


def _many_attrs(n: int) -> bytes:
    return b"<message " + b"".join(b"a%d='' " % i for i in range(n)) + b"/>"


def _big_attr(n: int) -> bytes:
    return b"<message to='" + b"x" * n + b"'/>"


BOMBS = {
    "depth-10000": (_deep(10_000), "max_depth"),
    "attrs-100000": (_many_attrs(100_000), "max_stanza_size_bytes"),
    "attrs-1000": (_many_attrs(1000), "max_attrs"),  # within the size limit: the count trips
    "attr-1MiB": (_big_attr(1 << 20), "max_stanza_size_bytes"),
}


@pytest.mark.parametrize("bound", [False, True], ids=["preauth", "bound"])
@pytest.mark.parametrize("name", list(BOMBS))
def test_parser_bombs_are_policy_violation(server_and_bystander, caplog, name, bound):
    srv, bystander = server_and_bystander
    payload, limit = BOMBS[name]
    client = RawClient(srv.port)
    if bound:
        client.login("alice", "secret")
    else:
        client.header()
        limit = limit.replace("max_stanza_size", "max_stanza_size_preauth")
    before = rss_bytes()
    with caplog.at_level(logging.WARNING, logger="xmppd"):
        # Send the bomb 16 times over (~16 MiB for the big ones): if the server kept what
        # it was sent instead of stopping at the limit, memory would grow by that much.
        for _ in range(16):
            send_ignoring_reset(client, payload)
        expect_stream_error(client, "policy-violation")
    assert f"limit {limit} reached" in caplog.text
    assert rss_bytes() - before < 12 << 20
    assert_alive(bystander)


# -- connections: per-IP limit, slowloris, shedding idle connections ---------------------------


def _raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < n:
            pytest.skip(f"needs {n} file descriptors")


def test_thousand_connections_from_one_address(make_server, caplog):
    """1000 unauthenticated connections from one address: at most the cap (100) are open at
    any time; each newcomer is served and the longest idle one is closed for it.  Each
    connection's features are awaited before the next connects, so that the server has
    read its header (its last activity) first: the longest idle is then the oldest, and
    the survivors are exactly the newest 100 (when a header could still be unread at the
    next accept, a loaded box let older ones survive and the set was a matter of timing)."""
    _raise_fd_limit(3000)
    srv, bystander = start(make_server)  # the default cap of 100 per address
    limit = srv.config.limits.max_preauth_connections_per_ip
    socks = []
    first: dict[socket.socket, bytes] = {}
    try:
        with caplog.at_level(logging.WARNING, logger="xmppd"):
            for _ in range(1000):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                socks.append(s)
                send_ignoring_reset_sock(s, STREAM_HEADER.format(to="localhost").encode())
                first[s] = _read_features(s)
            got = _collect_closed(socks, time.monotonic() + 20, expected=1000 - limit)
        got = {s: first[s] + got[s] for s in socks}
        evicted = [s for s in socks if stream_error(got[s].decode()) == "connection-timeout"]
        served = [s for s in socks if s not in evicted]
        assert len(evicted) == 1000 - limit  # the bystander is authenticated: not counted
        assert served == socks[-limit:]  # the newest ones
        assert all(b"</stream:features>" in got[s] for s in socks)  # every newcomer served
        assert srv.server.connections.preauth_count("127.0.0.1") == limit
        assert ("limit max_preauth_connections_per_ip (100) reached for 127.0.0.1: closing "
                "the longest idle unauthenticated connection") in caplog.text
        assert_alive(bystander)
    finally:
        for s in socks:
            s.close()
    # every slot comes back once the connections are gone
    deadline = time.monotonic() + 10
    while len(srv.server.streams) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(srv.server.streams) == 1
    bystander.close()


def _read_features(sock: socket.socket) -> bytes:
    """What ``sock`` receives up to the end of its first ``<stream:features>``."""
    data = b""
    while b"</stream:features>" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _collect_closed(socks: list[socket.socket], deadline: float, expected: int) -> dict:
    """Read every socket until ``expected`` of them were closed by the server (or the
    deadline); the others are read until they show their features."""
    sel = selectors.DefaultSelector()
    got = {s: b"" for s in socks}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    while closed < expected and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            got[s] += chunk
            if not chunk:
                sel.unregister(s)
                closed += 1
    # the survivors' features may still be on their way
    end = time.monotonic() + 2
    while time.monotonic() < end and any(b"</stream:features>" not in got[k.fileobj]
                                         for k in sel.get_map().values()):
        for key, _ in sel.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            got[key.fileobj] += chunk
            if not chunk:
                sel.unregister(key.fileobj)
    sel.close()
    return got


def send_ignoring_reset_sock(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_slowloris_is_cut_at_the_auth_timeout(make_server, caplog):
    srv, bystander = start(make_server, auth_timeout_s=0.5)
    client = RawClient(srv.port)
    header = STREAM_HEADER.format(to="localhost").encode() + b" " * 1000
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="xmppd"):
        for i in range(len(header)):  # bounded: 50 s of bytes, far past the timeout
            try:
                client.sock.sendall(header[i:i + 1])
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > 3:
                break
        expect_stream_error(client, "connection-timeout")
    assert time.monotonic() - started < 3, "still served long after the auth timeout"
    assert "limit auth_timeout_s (0.5) reached" in caplog.text
    assert_alive(bystander)


def test_idle_unauthenticated_connections_are_shed(make_server):
    """300 connections from 30 addresses (10 each) that never authenticate: all closed
    with ``connection-timeout``, and the server forgets them (streams and per-IP counts)."""
    _raise_fd_limit(2000)
    srv, bystander = start(make_server, auth_timeout_s=0.5)
    socks = []
    try:
        for i in range(300):
            s = socket.socket()
            s.bind((f"127.0.1.{i % 30 + 1}", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", srv.port))
            if i % 2:  # half send a header, half stay silent
                s.sendall(STREAM_HEADER.format(to="localhost").encode())
            socks.append(s)
        got = _collect_until_closed(socks, time.monotonic() + 15)
        assert all(stream_error(t.decode()) == "connection-timeout" for t in got.values())
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 5
    while len(srv.server.streams) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(srv.server.streams) == 1
    connections = srv.server.connections
    assert all(connections.preauth_count(f"127.0.1.{i}") == 0 for i in range(1, 31))
    assert connections.preauth_count("127.0.0.1") == 0  # the bystander is authenticated
    assert_alive(bystander)
    bystander.close()


def _collect_until_closed(socks: list[socket.socket], deadline: float) -> dict:
    sel = selectors.DefaultSelector()
    got = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        got[s] = b""
    left = len(socks)
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            got[key.fileobj] += chunk
            if not chunk:
                sel.unregister(key.fileobj)
                left -= 1
    sel.close()
    assert left == 0, f"{left} connections still open"
    return got


# -- slow and silent peers -------------------------------------------------------------------


def test_peer_that_never_reads_is_disconnected(make_server, caplog):
    """Others keep sending to a session that never reads: once its output buffer passes
    ``max_output_buffer_bytes`` it is cut off; the senders and bystander carry on."""
    limit = 256 * 1024
    srv, bystander = start(make_server, max_output_buffer_bytes=limit, rate_limit_bytes_per_s=0)
    silent = RawClient(srv.port)
    silent.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent.login("bob", "secret", resource="silent")
    sender = RawClient(srv.port)
    sender.login("alice", "secret", resource="sender")
    jid = JID("bob@localhost/silent")
    stanza = ("<message to='bob@localhost/silent' type='chat'><body>"
              + "x" * 8000 + "</body></message>").encode()
    streams_before = len(srv.server.streams)
    with caplog.at_level(logging.WARNING, logger="xmppd"):
        for _ in range(100):  # at most 100 MiB, far more than any kernel buffers
            sender.send(stanza * 128)
            ping(sender, "sync")  # everything sent so far has been routed
            if srv.server.router.sessions.get(jid) is None:
                break
        assert srv.server.router.sessions.get(jid) is None, "the silent peer is still bound"
    assert f"limit max_output_buffer_bytes ({limit}) reached" in caplog.text
    deadline = time.monotonic() + 5
    while len(srv.server.streams) >= streams_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(srv.server.streams) == streams_before - 1
    # the stream never held much more than the limit: it was checked at every flush
    assert_alive(sender)
    assert_alive(bystander)
    silent.close()


def test_peer_that_does_not_read_its_answers_is_not_read_either(make_server):
    """A client pipelining pings without reading the results: once its transport buffer is
    full the server stops reading from it (pause_writing), so its requests stay in the
    kernel instead of becoming server memory."""
    srv, bystander = start(make_server, rate_limit_bytes_per_s=0)
    greedy = RawClient(srv.port)
    greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.login("alice", "secret", resource="greedy")
    batch = b"".join(b"<iq type='get' id='g%d' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
                     % i for i in range(1000))
    greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    greedy.sock.settimeout(0.5)
    stream = next(s for s in srv.server.streams
                  if getattr(s, "jid", None) == JID("alice@localhost/greedy"))
    deadline = time.monotonic() + 15
    while not stream._write_paused and time.monotonic() < deadline:
        try:
            greedy.sock.send(batch)
        except TimeoutError:
            pass  # the kernel buffers are full; the server catches up
    assert stream._write_paused, "the server never saw its output back up"
    limit = srv.config.limits.max_output_buffer_bytes
    time.sleep(0.1)  # the slice being handled when the buffer backed up is finished
    size = stream.transport.get_write_buffer_size()
    for _ in range(5):  # the server no longer reads, so no more answers pile up
        try:
            greedy.sock.send(batch)
        except TimeoutError:
            pass
        time.sleep(0.05)
    assert stream.transport.get_write_buffer_size() == size < limit
    assert not stream.closed and stream._write_paused
    assert_alive(bystander)
    greedy.close()


# -- flooding: the rate limit pauses reading, nothing is dropped -------------------------------


def test_flood_is_paced_not_dropped(make_server, caplog):
    rate = 100 * 1024
    srv, bystander = start(make_server, rate_limit_bytes_per_s=rate,
                           rate_limit_burst_bytes=16 * 1024)
    sink = RawClient(srv.port, timeout=30)
    sink.login("bob", "secret", resource="sink")
    flooder = RawClient(srv.port, timeout=30)
    flooder.login("alice", "secret", resource="flood")
    count = 300
    body = "f" * 900
    data = b"".join(f"<message to='bob@localhost/sink' type='chat' id='f{i}'><body>{body}"
                    f"</body></message>".encode() for i in range(count))
    assert len(data) >= 2.5 * rate  # ten times the rate for a quarter of a second, at least
    received: list[str] = []

    def read_sink() -> None:
        while len(received) < count:
            received.extend(re.findall(r"id=['\"](f\d+)['\"]", sink.read_until(
                r"(<message.*?</message>\s*)+")))

    reader = threading.Thread(target=read_sink, daemon=True)
    reader.start()
    with caplog.at_level(logging.INFO, logger="xmppd"):
        sender = threading.Thread(target=flooder.send, args=(data,), daemon=True)
        started = time.monotonic()
        sender.start()
        time.sleep(0.2)
        assert "type='result'" in ping(bystander, "during").replace('"', "'")
        answered_while_flooding = len(received) < count
        sender.join(30)
        reader.join(30)
    assert received == [f"f{i}" for i in range(count)]  # all, in order: none dropped
    assert answered_while_flooding
    assert "limit rate_limit_bytes_per_s" in caplog.text
    # reading was paused: the whole flood cannot have gone faster than burst + rate * t
    assert time.monotonic() - started >= (len(data) - 16 * 1024) / rate * 0.8
    assert_alive(flooder)
    assert_alive(bystander)


def test_rate_limit_off_with_zero(make_server, caplog):
    srv, bystander = start(make_server, rate_limit_bytes_per_s=0,
                           rate_limit_burst_bytes=1024)
    client = RawClient(srv.port)
    client.login("alice", "secret")
    with caplog.at_level(logging.INFO, logger="xmppd"):
        client.send(b"<message to='carol@localhost/bystander'><body>" + b"z" * 100_000
                    + b"</body></message>")
        assert "z" * 100_000 in bystander.read_until("</message>")
    assert "rate_limit_bytes_per_s" not in caplog.text
    assert_alive(client)


# -- authentication ---------------------------------------------------------------------------


def test_plain_with_another_users_authzid(server_and_bystander):
    srv, bystander = server_and_bystander
    client = tls_client(srv)
    token = base64.b64encode(b"bob@localhost\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert "<invalid-authzid/>" in client.read_until("</failure>")
    # one's own authzid is fine
    token = base64.b64encode(b"alice@localhost\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert "<success" in client.read_until(r"<success[^>]*(/>|>.*?</success>)|</failure>")
    assert_alive(bystander)


def _scram_exchange(client: RawClient, *, mechanism: str = "SCRAM-SHA-256", gs2: str = "n,,",
                    cbind: bytes = b"", password: str = "secret",
                    nonce_suffix: str = "") -> str:
    """One SCRAM exchange as user alice; returns the server's last reply."""
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=alice,r={cnonce}"
    payload = base64.b64encode((gs2 + first_bare).encode()).decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='{mechanism}'>{payload}</auth>")
    reply = client.read_until(r"</challenge>|</failure>")
    if "</failure>" in reply:
        return reply
    challenge = base64.b64decode(re.search(r"<challenge[^>]*>(.*?)</challenge>", reply).group(1))
    attrs = dict(kv.split("=", 1) for kv in challenge.decode().split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    channel = base64.b64encode(gs2.encode() + cbind).decode()
    without_proof = f"c={channel},r={attrs['r']}{nonce_suffix}"
    auth_message = f"{first_bare},{challenge.decode()},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    final = base64.b64encode(f"{without_proof},p={proof.decode()}".encode()).decode()
    client.send(f"<response xmlns='{SASL}'>{final}</response>")
    return client.read_until(r"<success[^>]*(/>|>.*?</success>)|</failure>")


def test_scram_control_succeeds(server_and_bystander):
    """The SCRAM client below is right: with nothing tampered, it logs in."""
    srv, _ = server_and_bystander
    assert "<success" in _scram_exchange(tls_client(srv))


@pytest.mark.parametrize("tamper,condition", [
    ({"password": "wrong"}, "not-authorized"),
    ({"nonce_suffix": "x"}, "not-authorized"),  # the combined nonce changed
    ({"gs2": "y,,"}, "not-authorized"),  # 'y' while -PLUS was advertised: a downgrade
])
def test_scram_tampering(server_and_bystander, tamper, condition):
    srv, bystander = server_and_bystander
    client = tls_client(srv)
    reply = _scram_exchange(client, **tamper)
    assert f"<{condition}/>" in reply, reply
    assert "<success" not in reply
    assert_alive(bystander)


def test_scram_plus_is_advertised_for_the_downgrade_check(server_and_bystander):
    srv, _ = server_and_bystander
    client = RawClient(srv.port)
    client.header()
    client.starttls()
    assert "SCRAM-SHA-256-PLUS" in client.header()


@pytest.mark.parametrize("forged", ["alice@localhost/other", "bob@localhost", "localhost",
                                    "alice@other.example/raw", "@@@"])
def test_forged_from_variants(server_and_bystander, forged):
    """``test_c2s_negative`` covers another user's full JID; these are the near misses."""
    srv, bystander = server_and_bystander
    client = RawClient(srv.port)
    client.login("alice", "secret", resource="raw")
    client.send(f"<message from='{forged}' to='carol@localhost/bystander'>"
                "<body>forged</body></message>")
    expect_stream_error(client, "invalid-from")
    assert "forged" not in ping(bystander, "after")


# -- TLS and stream features -------------------------------------------------------------------


def _old_tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():  # deprecated versions: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    return ctx


def test_tls_1_1_is_refused(server_and_bystander):
    srv, bystander = server_and_bystander
    ctx = _old_tls_context()
    # direct TLS
    with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError) as exc:
            ctx.wrap_socket(raw, server_hostname="localhost")
    # the refusal comes from the server (an alert or a hang-up after our hello), not
    # from a client that could not even offer TLS 1.1
    assert "NO_PROTOCOLS" not in str(exc.value), exc.value
    assert isinstance(exc.value, ssl.SSLEOFError) or "ALERT" in str(exc.value).upper()
    # STARTTLS
    client = RawClient(srv.port)
    client.header()
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    client.read_until("<proceed[^>]*/>")
    with pytest.raises((ssl.SSLError, OSError)):
        ctx.wrap_socket(client.sock, server_hostname="localhost")
    # a TLS 1.2 client on the same terms is served
    ok = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ok.check_hostname, ok.verify_mode = False, ssl.CERT_NONE
    ok.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5) as raw:
        with ok.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.compression() is None
    assert_alive(bystander)


def test_compression_is_never_offered(server_and_bystander):
    srv, _ = server_and_bystander
    client = RawClient(srv.port)
    seen = [client.header()]
    client.starttls()
    seen.append(client.header())
    assert "<success" in plain_auth(client, "alice", "secret")
    seen.append(client.header())
    assert isinstance(client.sock, ssl.SSLSocket) and client.sock.compression() is None
    for features in seen:
        assert "<stream:features" in features
        assert "compress" not in features.lower()
    client.send("<compress xmlns='http://jabber.org/protocol/compress'>"
                "<method>zlib</method></compress>")
    assert stream_error(client.read_closed()) in ("unsupported-stanza-type", "not-authorized")


# -- secrets ------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_and_database_are_owner_only(make_server, tmp_path):
    """Even with a umask of 0, nothing private is readable by others."""
    old = os.umask(0)
    try:
        srv = make_server(users={"alice": "secret"}, allow_plain=True, data_dir=tmp_path / "d")
    finally:
        os.umask(old)
    client = RawClient(srv.port)
    client.login("alice", "secret")
    client.send("<message to='bob@localhost'><body>x</body></message>")  # some writes
    assert_alive(client)
    data = tmp_path / "d"
    private = [data, data / "secret", data / "certs", data / "certs" / "localhost.key",
               data / "xmppd.sqlite3", data / "xmppd.sqlite3-wal", data / "xmppd.sqlite3-shm"]
    for path in private:
        assert path.exists(), path
        assert _mode(path) & 0o077 == 0, f"{path} is mode {_mode(path):o}"
    assert not [p for p in data.rglob("*") if _mode(p) & 0o002], "world-writable files"
    client.close()


def test_no_password_or_sasl_payload_in_logs(make_server, caplog):
    password = "Pw-9f3b7c1e-do-not-log"
    token = base64.b64encode(f"\0alice\0{password}".encode()).decode()
    with caplog.at_level(logging.DEBUG):
        srv = make_server(users={"alice": password, "bob": "secret"}, allow_plain=True)
        client = RawClient(srv.port)
        client.login("alice", password)  # PLAIN
        assert_alive(client)
        wrong = tls_client(srv)
        bad = base64.b64encode(f"\0alice\0{password}x".encode()).decode()
        wrong.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{bad}</auth>")
        wrong.read_until("</failure>")
        scram = tls_client(srv)
        scram_reply = _scram_exchange(scram, password="secret")  # as alice: wrong password
        assert "<not-authorized/>" in scram_reply
        srv.stop()
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "nothing was logged at all"
    for secret in (password, token, bad, base64.b64encode(password.encode()).decode()):
        assert secret not in logged
    assert not re.search(r"<auth\b|<response\b", logged)


# -- shutdown and the command line ---------------------------------------------------------------


def _cli(args: list[str], config: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmppd.cli", "--config", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def _write_config(tmp_path: Path) -> Path:
    config = tmp_path / "xmppd.toml"
    config.write_text(
        "[http]\nlisten = []\nlisten_tls = []\n[server]\n"
        f"data_dir = '{tmp_path / 'data'}'\n"
        "log_level = 'debug'\n"
        "[c2s]\nlisten = ['127.0.0.1:0']\ndirect_tls = []\nallow_plain = true\n"
    )
    return config


def test_account_changes_from_the_cli_are_durable(tmp_path):
    """Each CLI command commits before it reports success: a new process sees it."""
    config = _write_config(tmp_path)
    assert _cli(["adduser", "dave@localhost"], config, "first\n").returncode == 0
    assert _mode(tmp_path / "data" / "xmppd.sqlite3") & 0o077 == 0
    check = ("import asyncio, sys\n"
             "from xmppd.storage import open_storage\n"
             "async def main():\n"
             "    s = await open_storage(sys.argv[1])\n"
             "    print(await s.account_exists('dave', 'localhost'),"
             " (await s.get_scram('dave', 'localhost', 'SHA-256') or 0) and 1)\n"
             "    await s.close()\n"
             "asyncio.run(main())\n")
    url = f"sqlite:///{tmp_path / 'data' / 'xmppd.sqlite3'}"

    def seen() -> str:
        out = subprocess.run([sys.executable, "-c", check, url], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert seen() == "True 1"
    assert _cli(["passwd", "dave@localhost"], config, "second\n").returncode == 0
    assert seen() == "True 1"
    assert _cli(["deluser", "dave@localhost"], config).returncode == 0
    assert seen() == "False 0"


def test_sigterm_shuts_down_gracefully(tmp_path):
    config = _write_config(tmp_path)
    for user in ("alice", "bob"):
        assert _cli(["adduser", f"{user}@localhost"], config, "secret\n").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "xmppd.cli", "--config", str(config), "run"],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 30
        lines = []
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"listening for c2s on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        assert port, "".join(lines)
        drain = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        drain.start()
        client = RawClient(port)
        client.login("alice", "secret")
        # an acknowledged write: the result comes only once it is committed
        client.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
                    "<item jid='bob@localhost' name='Bob'/></query></iq>")
        assert "type='result'" in client.read_until(r"id=['\"]r1['\"][^>]*>").replace('"', "'")
        # offline messages in flight when the signal comes
        for i in range(20):
            client.send(f"<message to='bob@localhost' type='chat'><body>m{i}</body></message>")
        proc.send_signal(signal.SIGTERM)
        text = expect_stream_error(client, "system-shutdown")
        assert "<system-shutdown" in text
        assert proc.wait(timeout=10) == 0
        drain.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    assert "xmppd stopped" in log
    assert "Traceback" not in log
    # the database is intact and the messages that were stored are the first ones, in order
    url = f"sqlite:///{tmp_path / 'data' / 'xmppd.sqlite3'}"
    check = ("import asyncio, sys\n"
             "from xmppd.modules._rosterdata import RosterStore\n"
             "from xmppd.storage import open_storage\n"
             "async def main():\n"
             "    s = await open_storage(sys.argv[1])\n"
             "    for m in await s.open_store('offline', 'archive').query('bob@localhost'):\n"
             "        print(m.data.decode())\n"
             "    roster = await RosterStore(s.open_store('roster')).get('alice@localhost')\n"
             "    print('ROSTER', roster.get('bob@localhost'))\n"
             "    await s.close()\n"
             "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", check, url], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    stored = re.findall(r"<body>(m\d+)</body>", out.stdout)
    assert re.search(r"ROSTER RosterItem\(.*name='Bob'", out.stdout), out.stdout
    assert stored == [f"m{i}" for i in range(len(stored))]


def test_rate_limit_is_on_by_default():
    limits = Limits()
    assert limits.rate_limit_bytes_per_s == 1024 * 1024
    assert limits.rate_limit_burst_bytes >= limits.max_stanza_size_bytes
