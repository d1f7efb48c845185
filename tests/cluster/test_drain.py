"""Graceful drain (``xmppd drain``, SIGUSR1; :mod:`xmppd.drain`) of one process and of
``xmppd run --workers 2``, over TCP: the listeners close, clients get ``<system-shutdown/>``
spread over the configured time, a resumable stream-management session is detached (kept
for its resumption elsewhere) and ends at the drain's end with its unacknowledged message
stored offline, then the process exits 0.  The cluster node case (Redis) is in
``test_redis_drain.py``."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import RawClient, WSClient, connect
from test_workers import Cluster, available

from xmppd.control.client import ControlFailed, call
from xmppd.storage import open_storage

USERS = {"alice": "secret", "bob": "secret", "carol": "secret"}
SM = "urn:xmpp:sm:3"
SHUTDOWN = "<system-shutdown"


def enable_resumption(client: RawClient) -> None:
    client.send(f"<enable xmlns='{SM}' resume='true'/>")
    assert "resume='true'" in client.read_until("<enabled[^>]*/>")


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:g}s: {what}")
        time.sleep(0.05)


def stored_offline(data_dir, user: str) -> list[str]:
    """The bodies of ``user``'s offline messages, read from the stopped server's database."""
    async def read() -> list[str]:
        storage = await open_storage(f"sqlite:///{data_dir / 'xmppd.sqlite3'}")
        try:
            items = await storage.open_store("offline", "archive").query(f"{user}@localhost")
        finally:
            await storage.close()
        return [b for item in items for b in re.findall(r"<body>(.*?)</body>", item.data.decode())]

    return asyncio.run(read())


def test_drain_of_one_process(make_server):
    srv = make_server(users=USERS, allow_plain=True,
                      modules_options={"sm": {"request_every": 0, "request_after_s": 0}})
    control = srv.config.data_dir / "control.sock"
    alice = connect(srv, "alice", "a")
    bob = RawClient(srv.port)
    bob.login("bob", "secret", resource="phone")
    enable_resumption(bob)
    alice.send("<message to='bob@localhost/phone' type='chat'><body>unacked</body></message>")
    bob.read_until("unacked.*?</message>")  # never acknowledged (no <r/>, no <a/>)
    carol = WSClient(srv.https_port, tls=True)  # RFC 7395: the stream error, then <close/>
    carol.login("carol")
    negotiating = RawClient(srv.port)
    negotiating.header()

    with pytest.raises(ControlFailed, match="timeout_s must be a positive number"):
        call(control, "drain", timeout_s=0)
    state = call(control, "drain", timeout_s=8, spread_s=2)
    assert state["timeout_s"] == 8 and state["spread_s"] == 2

    # the negotiating stream at once, then the three sessions 2/3 s apart (2 s / 3)
    assert SHUTDOWN in negotiating.read_closed()

    def told(client) -> float:
        text = client.read_closed(timeout=10)
        assert SHUTDOWN in text, text
        assert ("<close " if client is carol else "</stream:stream>") in text, text
        return time.monotonic()

    with ThreadPoolExecutor(3) as pool:
        times = sorted(pool.map(told, (alice, bob, carol)))
    assert times[2] - times[0] >= 1.0  # spread, not all at once
    with pytest.raises(ConnectionRefusedError):  # no new connections
        socket.create_connection(("127.0.0.1", srv.port), 2).close()

    # bob's resumable session waits, detached, for its resumption elsewhere
    status = call(control, "status")
    assert status["draining"]["sessions_left"] == 1 and status["sessions"] == 1, status
    assert not srv.server.drained.is_set()
    wait_for(srv.server.drained.is_set, 20, "the drain's timeout ends it")
    srv.stop()  # what `xmppd run` does then
    assert stored_offline(srv.config.data_dir, "bob") == ["unacked"]


def test_a_drain_without_sessions_left_ends_before_its_timeout(make_server):
    srv = make_server(users=USERS, allow_plain=True)
    alice = connect(srv, "alice", "a")
    started = time.monotonic()
    call(srv.config.data_dir / "control.sock", "drain", timeout_s=120, spread_s=0)
    assert SHUTDOWN in alice.read_closed()
    wait_for(srv.server.drained.is_set, 30, "the drain ends once no session is left")
    assert time.monotonic() - started < 60


def xmppd(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmppd.cli", *args, "--config",
                           str(cluster.config)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("how", ["command", "SIGUSR1"])
def test_drain_of_every_worker(tmp_path, how):
    cluster = Cluster(tmp_path, extra="")
    try:
        alice = cluster.client("alice", 0, "a0")
        bob = cluster.client("bob", 1, "b1")
        available(alice)
        available(bob)
        if how == "command":
            done = xmppd(cluster, "drain", "--timeout", "5", "--spread", "0.5", "--wait")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "drained: the server has stopped" in done.stdout
        else:
            cluster.proc.send_signal(signal.SIGUSR1)
        for client in (alice, bob):  # both workers told theirs
            assert SHUTDOWN in client.read_closed(timeout=15)
        assert cluster.proc.wait(30) == 0  # no worker restarted: the supervisor ends
        logged = cluster.logged()
        assert "drained" in logged and "restarting it" not in logged, logged
        assert "Traceback" not in logged, logged
    finally:
        cluster.stop()


def test_drain_without_a_server_is_one_line(tmp_path):
    config = tmp_path / "x.toml"
    config.write_text('[server]\ndata_dir = "d"\n')
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "drain", "--config", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "no server is running" in done.stderr
    assert "Traceback" not in done.stderr
