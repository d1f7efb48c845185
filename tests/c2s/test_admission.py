"""Who gets in from a crowded address: failed logins slow down only the (address, username)
that fails, password spraying is refused per address, and idle unauthenticated connections
make room for a fresh login instead of locking it out.  Real sockets throughout."""

from __future__ import annotations

import base64
import logging
import re
import time
from pathlib import Path

from support import RawClient
from test_c2s_negative import SASL, assert_alive, expect_stream_error, plain_auth, tls_client

from xmppd.core.config import Limits

USERS = {"alice": "secret", "bob": "secret", "mallory": "secret"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as `xmppd run` logs
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _wait_for(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# -- item 11: lockouts that do not punish the innocent ---------------------------------------


def test_one_users_failures_do_not_lock_out_another(make_server, caplog):
    """40 failures for mallory from one address: her answers are delayed (never refused),
    and alice logs in at once from the same address."""
    srv = make_server(users=USERS, limits=Limits(auth_backoff_after_failures=5,
                                                 auth_backoff_max_s=0.02))
    failures = 0
    with caplog.at_level(logging.INFO, logger="xmppd"):
        while failures < 40:
            client = tls_client(srv)
            for _ in range(3):  # max_auth_failures per connection
                assert "<not-authorized/>" in plain_auth(client, "mallory", "wrong")
                failures += 1
            expect_stream_error(client, "policy-violation")
            client.close()
        alice = RawClient(srv.port)
        assert alice.login("alice", "secret") == "alice@localhost/raw"
        assert_alive(alice)
        # mallory herself is slowed down, not locked out
        late = tls_client(srv)
        assert "<success" in plain_auth(late, "mallory", "secret")
    delayed = [r.getMessage() for r in caplog.records
               if "limit auth_backoff_after_failures (5) reached" in r.getMessage()]
    assert failures >= 40
    assert len(delayed) == failures - 5 + 1  # from the 6th failure on, and the success
    assert all(m.endswith("username=mallory") and " for 127.0.0.1: " in m for m in delayed)
    assert "temporary-auth-failure" not in caplog.text
    assert "username=alice" not in "".join(delayed)


def test_password_spraying_is_refused_but_known_users_get_in(make_server, caplog):
    srv = make_server(users=USERS, limits=Limits(auth_failed_usernames_per_ip_per_min=3))
    alice = RawClient(srv.port)
    alice.login("alice", "secret")  # alice logged in from here before the attack
    with caplog.at_level(logging.INFO, logger="xmppd"):
        for name in ("u1", "u2", "u3"):
            client = tls_client(srv)
            assert "<not-authorized/>" in plain_auth(client, name, "guess")
            client.close()
        sprayer = tls_client(srv)
        reply = plain_auth(sprayer, "bob", "secret")  # even the right password: refused
        assert "<temporary-auth-failure/>" in reply and "<success" not in reply
        again = RawClient(srv.port)
        assert again.login("alice", "secret", resource="again") == "alice@localhost/again"
    assert ("limit auth_failed_usernames_per_ip_per_min (3) reached for 127.0.0.1: "
            "refused username=bob") in caplog.text
    assert_alive(alice)


# -- item 12: idle pre-authentication floods ----------------------------------------------


def test_idle_preauth_connections_make_room_for_a_login(make_server, caplog):
    srv = make_server(users=USERS, limits=Limits(max_preauth_connections_per_ip=5))
    connections = srv.server.connections
    # authenticated sessions never count: more of them than the pre-auth cap are fine
    sessions = []
    for i in range(7):
        client = RawClient(srv.port)
        client.login("alice", "secret", resource=f"s{i}")
        sessions.append(client)
    idle = []
    for i in range(5):
        client = RawClient(srv.port)
        if i % 2:
            client.header()  # half say hello and then nothing, half say nothing at all
        idle.append(client)
        _wait_for(lambda n=i + 1: connections.preauth_count("127.0.0.1") == n,
                  "the idle connection was not counted")
    with caplog.at_level(logging.INFO, logger="xmppd"):
        fresh = RawClient(srv.port)
        assert fresh.login("bob", "secret") == "bob@localhost/raw"
        text = expect_stream_error(idle[0], "connection-timeout")  # the longest idle one
    assert "closed to make room for a newer connection" in text
    assert ("limit max_preauth_connections_per_ip (5) reached for 127.0.0.1: closing the "
            "longest idle unauthenticated connection 127.0.0.1:") in caplog.text
    assert connections.preauth_count("127.0.0.1") == 4  # bob authenticated: not counted
    for client in idle[1::2]:  # the others are still being served
        client.send(" ")
    assert idle[2].header().endswith("</stream:features>")
    for client in [*sessions, fresh]:
        assert_alive(client)


def test_every_new_connection_gets_in_while_old_idle_ones_go(make_server):
    srv = make_server(users=USERS, limits=Limits(max_preauth_connections_per_ip=3))
    clients = []
    for _ in range(8):
        client = RawClient(srv.port)
        assert "<stream:features" in client.header()
        clients.append(client)
    for client in clients[:5]:
        expect_stream_error(client, "connection-timeout")
    for client in clients[5:]:
        assert_login_possible(client)


def assert_login_possible(client: RawClient) -> None:
    client.starttls()
    client.header()
    assert "<success" in plain_auth(client, "bob", "secret")


# -- item 10: a fail2ban filter that matches the real log line ---------------------------------


def _documented_failregexes() -> list[str]:
    text = (DOCS / "fail2ban.md").read_text()
    block = re.search(r"```ini\n\[Definition\]\n(.*?)```", text, re.S).group(1)
    lines = block.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("failregex"))
    regexes = [lines[start].split("=", 1)[1].strip()]
    for line in lines[start + 1:]:
        if not line.startswith((" ", "\t")) or not line.strip():
            break
        regexes.append(line.strip())
    return [r for r in regexes if r]


def _fail2ban(regex: str) -> re.Pattern:
    """fail2ban's ``<HOST>`` as a plain group (it matches IPv4 and IPv6 addresses)."""
    return re.compile(regex.replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)"))


def test_documented_fail2ban_filter_matches_the_real_log_lines(make_server, caplog):
    srv = make_server(users=USERS, limits=Limits(auth_failed_usernames_per_ip_per_min=2))
    with caplog.at_level(logging.INFO, logger="xmppd"):
        good = RawClient(srv.port)
        good.login("mallory", "secret")  # a successful login is not for fail2ban either
        client = tls_client(srv)
        plain_auth(client, "alice", "wrong")  # a wrong password
        client.send(f"<auth xmlns='{SASL}' mechanism='X-UNKNOWN'>=</auth>")
        client.read_until("</failure>")  # a negotiation error: not for fail2ban
        plain_auth(client, "bob", "wrong")
        plain_auth(client, "carol", "wrong")  # refused: password spraying
        client.close()
    formatter = logging.Formatter(LOG_FORMAT)
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("xmppd")]
    regexes = [_fail2ban(r) for r in _documented_failregexes()]
    assert len(regexes) >= 2

    def matching(line: str) -> list[str]:
        return [m.group("host") for r in regexes if (m := r.search(line))]

    failed = [line for line in lines if "c2s authentication failed" in line]
    assert len(failed) == 3
    assert matching(failed[0]) == ["127.0.0.1"]  # alice, wrong password
    assert matching(failed[1]) == []  # the unknown mechanism
    assert matching(failed[2]) == ["127.0.0.1"]  # bob, wrong password
    refused = [line for line in lines if "refused username=carol" in line]
    assert len(refused) == 1 and matching(refused[0]) == ["127.0.0.1"]
    banned = [line for line in lines if matching(line)]
    assert len(banned) == 3, banned  # nothing else: not the successful login, not the rest
    token = base64.b64encode(b"\0alice\0wrong").decode()
    assert token not in "".join(lines)
