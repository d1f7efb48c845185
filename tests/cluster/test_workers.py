"""``xmppd run --workers 2``, real processes over TCP: clients on different workers
exchange messages (full and bare JID), presence, subscriptions with roster pushes, IQs and
carbons; a resource conflict across workers; offline storage; kill -9 of a worker.

Which worker a client lands on is decided by the kernel (SO_REUSEPORT hashes the
connection); the tests log in until a client is on the worker they want, asking the control
socket (``workers``) where each session lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RawClient, _creds, stop_process

from xmppd.control.client import ControlUnavailable, call
from xmppd.storage import open_storage

MODULES = ["disco", "ping", "message", "roster", "presence", "offline", "carbons", "csi",
           "sm", "keepalive", "private", "version"]
PASSWORD = "secret"
USERS = ("alice", "bob", "carol", "dave")


class Client(RawClient):
    """A raw client that remembers everything it read (pushes read past by a wait)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.seen = ""

    def read_until(self, pattern: str, timeout: float | None = None) -> str:
        text = super().read_until(pattern, timeout)
        self.seen += text
        return text

    def read_closed(self, timeout: float | None = None) -> str:
        text = super().read_closed(timeout)
        self.seen += text
        return text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """``xmppd run --workers 2`` in a subprocess, with a handful of accounts."""

    def __init__(self, tmp: Path, modules: list[str] = MODULES, extra: str = "",
                 http: bool = False) -> None:
        self.tmp = tmp
        self.http_port = free_port() if http else None
        http_listen = f'"127.0.0.1:{self.http_port}"' if http else ""
        self.port = free_port()
        self.data = tmp / "data"
        self.config = tmp / "xmppd.toml"
        self.config.write_text(
            f'{extra}[server]\ndomains = ["localhost"]\ndata_dir = "data"\nlog_level = "info"\n'
            f'[c2s]\nlisten = ["127.0.0.1:{self.port}"]\ndirect_tls = []\nallow_plain = true\nrequire_encryption = false\n'
            f'[http]\nlisten = [{http_listen}]\nlisten_tls = []\n'
            f'[modules]\nenabled = {modules!r}\n'.replace("'", '"'))
        asyncio.run(self._accounts())
        self.log = open(tmp / "xmppd.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xmppd.cli", "run", "--workers", "2",
             "--config", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_up()

    async def _accounts(self) -> None:
        self.data.mkdir(mode=0o700)
        storage = await open_storage(f"sqlite:///{self.data / 'xmppd.sqlite3'}")
        for user in USERS:
            await storage.create_account(user, "localhost", _creds(PASSWORD))
        await storage.close()

    def control(self, command: str, **args):
        return call(self.data / "control.sock", command, **args)

    def wait_up(self, timeout: float = 30, pids: set[int] | None = None) -> dict:
        """Until both workers are up (and, with ``pids``, none of them is one of those)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"xmppd exited: {self.logged()}")
            try:
                workers = self.control("status")["workers"]
                if all(w["up"] for w in workers.values()) and not (
                        pids and {w["pid"] for w in workers.values()} & pids):
                    return workers
            except (ControlUnavailable, OSError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the workers did not come up: {self.logged()}")
            time.sleep(0.05)

    def where(self, jid: str, timeout: float = 5) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for worker, jids in self.control("workers").items():
                if jid in jids:
                    return int(worker)
            time.sleep(0.02)
        raise AssertionError(f"{jid} is on no worker")

    def client(self, user: str, worker: int, resource: str = "r") -> Client:
        """A client of ``user`` bound as ``resource`` on ``worker``."""
        for _attempt in range(40):
            client = Client(self.port)
            jid = client.login(user, PASSWORD, resource=f"{resource}")
            if self.where(jid) == worker:
                self.wait_known(jid)
                return client
            client.close()
            self.wait_gone(jid)
        raise AssertionError(f"no connection of 40 landed on worker {worker}")

    def wait_known(self, jid: str) -> None:
        """Until ``jid`` is in both workers' tables (worker 0 answers for the one it has)."""
        self.where(jid)

    def wait_gone(self, jid: str, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while any(jid in jids for jids in self.control("workers").values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{jid} is still bound")
            time.sleep(0.02)

    def logged(self) -> str:
        self.log.flush()
        return (self.tmp / "xmppd.log").read_text()

    def stop(self) -> int:
        try:
            return stop_process(self.proc, 30)
        finally:
            self.log.close()


@contextlib.contextmanager
def running(tmp_path: Path, modules: list[str] = MODULES) -> Iterator[Cluster]:
    """A :class:`Cluster` of ``modules``, stopped (cleanly, or the test fails) after."""
    c = Cluster(tmp_path, modules)
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


@pytest.fixture
def cluster(tmp_path):
    with running(tmp_path) as c:
        yield c


def available(client: RawClient, priority: int = 0) -> None:
    client.send(f"<presence><priority>{priority}</priority></presence>")
    client.read_until(r"<presence[^>]*>.*?</presence>|<presence[^>]*/>")  # its own echo


def online(*clients: RawClient) -> None:
    """Each client asks for its roster (so roster pushes reach it), then is available."""
    for c in clients:
        c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        c.read_until("</iq>|<iq[^>]*/>")
    for c in clients:
        available(c)


def subscribe(cluster: Cluster, a: RawClient, a_user: str, b: RawClient, b_user: str) -> None:
    """``a_user`` subscribes to ``b_user``, who approves (both ways: mutual presence)."""
    for x, x_user, y, y_user in ((a, a_user, b, b_user), (b, b_user, a, a_user)):
        x.send(f"<presence type='subscribe' to='{y_user}@localhost'/>")
        y.read_until(f"<presence[^>]*type=.subscribe.[^>]*from=.{x_user}@localhost.|"
                     f"<presence[^>]*from=.{x_user}@localhost.[^>]*type=.subscribe.")
        y.send(f"<presence type='subscribed' to='{x_user}@localhost'/>")
        x.read_until("<presence[^>]*type=.subscribed.")


def test_routing_across_workers(cluster):
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    online(alice, bob)  # roster pushes go to resources that asked, on either worker

    # message to a full JID on the other worker, both ways
    alice.send("<message to='bob@localhost/b1' type='chat' id='m1'><body>hi bob</body></message>")
    assert "hi bob" in bob.read_until("</message>")
    bob.send("<message to='alice@localhost/a0' type='chat' id='m2'><body>hi alice</body></message>")
    assert "hi alice" in alice.read_until("</message>")

    # an IQ between users on different workers, and its answer
    alice.send("<iq type='get' to='bob@localhost/b1' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
    ping = bob.read_until("</iq>")
    assert "urn:xmpp:ping" in ping and "alice@localhost/a0" in ping
    bob.send("<iq type='result' to='alice@localhost/a0' id='ping1'/>")
    assert "ping1" in alice.read_until(r"<iq[^>]*ping1[^>]*/>|<iq[^>]*ping1.*?</iq>")

    # a subscription across workers: roster pushes and presence both ways
    subscribe(cluster, alice, "alice", bob, "bob")
    time.sleep(0.2)
    for c in (alice, bob):  # roster pushes reached alice (worker 0) and bob (worker 1)
        c.read_closed(0.2)
        assert re.search(r"<iq[^>]*type=.set.*?<item[^>]*subscription=.both", c.seen, re.S)
    bob.send("<presence><show>away</show></presence>")
    assert "away" in alice.read_until(r"<presence[^>]*from=.bob@localhost/b1.*?</presence>")

    # a bare-JID chat message: every available resource, on every worker, exactly once
    bob0 = cluster.client("bob", 0, "b0")
    bob0.send("<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    bob0.read_until(r"<iq[^>]*c1")
    available(bob0)
    bob.read_until(r"<presence[^>]*from=.bob@localhost/b0")  # own resources see each other
    alice.send("<message to='bob@localhost' type='chat' id='m3'><body>to both</body></message>")
    assert "to both" in bob.read_until("</message>")
    assert "to both" in bob0.read_until("</message>")
    alice.send("<message to='bob@localhost/b1' type='chat' id='m4'><body>carbon</body></message>")
    assert "carbon" in bob.read_until("</message>")
    copy = bob0.read_until("</message>")  # bob0 (worker 0) enabled carbons: a copy
    assert "urn:xmpp:carbons:2" in copy and "carbon" in copy and "received" in copy
    for c in (bob, bob0):  # nothing delivered twice
        assert "to both" not in c.read_closed(0.3)
        c.seen = ""

    # offline storage when the user has no session anywhere, delivered at login
    alice.send("<message to='carol@localhost' type='chat' id='m5'><body>later</body></message>")
    time.sleep(0.3)
    carol = cluster.client("carol", 1, "c1")
    available(carol)
    assert "later" in carol.read_until("</message>")


def test_resource_conflict_across_workers(cluster):
    first = cluster.client("dave", 0, "same")
    # The same full JID bound again: the newer bind wins, on whichever worker it lands;
    # try until it lands on worker 1 (one that lands on worker 0 is the new first).
    for _ in range(40):
        second = Client(cluster.port)
        second.login("dave", PASSWORD, resource="same")
        ended = first.read_closed(5)  # closed once the winner's bind reached worker 0
        assert "<conflict" in ended, ended
        if cluster.where("dave@localhost/same") == 1:
            break
        first = second
    else:
        raise AssertionError("no connection of 40 landed on worker 1")
    second.send("<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    assert "xmppd" in second.read_until("</iq>")
    # worker 0 answers the control socket: a kick reaches the session on worker 1
    assert cluster.control("kick", jid="dave@localhost/same") == 1
    assert "policy-violation" in second.read_closed(5)


def test_a_worker_killed_is_restarted_and_its_users_go_offline(cluster):
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    for c in (alice, bob):
        available(c)
    subscribe(cluster, alice, "alice", bob, "bob")
    alice.read_closed(0.3)
    assert re.search(r"<presence[^>]*from=.bob@localhost/b1", alice.seen)
    workers = cluster.control("status")["workers"]
    victim = workers["1"]["pid"]
    os.kill(victim, signal.SIGKILL)
    # alice's worker saw worker 1 go: bob's unavailable presence reaches her
    gone = alice.read_until(r"<presence[^>]*type=.unavailable.[^>]*>|"
                            r"<presence[^>]*from=.bob@localhost/b1.[^>]*unavailable", timeout=10)
    assert "bob@localhost/b1" in gone
    alice.send("<message to='bob@localhost' type='chat' id='m9'><body>while away</body></message>")
    cluster.wait_up(pids={victim})  # restarted by the supervisor
    assert re.search("worker 1 .*died", cluster.logged())
    bob = cluster.client("bob", 1, "b1")
    available(bob)
    assert "while away" in bob.read_until("</message>")
