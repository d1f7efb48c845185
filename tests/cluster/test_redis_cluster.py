"""Two xmppd nodes (separate ``xmppd run`` processes on their own ports) sharing one
PostgreSQL database and one Redis: messages to full and bare JIDs and presence across
nodes; kill -9 of a node (its users' contacts get unavailable presence within the bound,
messages to them go offline, the restarted node has a new epoch); Redis restarted under
running nodes; ``xmppd cluster status``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import _creds, stop_process
from test_workers import MODULES, Client, free_port, online, subscribe
from test_workers_metrics import at, scraped

from xmppd.control.client import ControlUnavailable, call
from xmppd.storage import open_storage

PASSWORD = "secret"
USERS = ("alice", "bob", "carol")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
log = logging.getLogger(__name__)


class RedisServer:
    """A throwaway redis-server on a loopback port, no persistence (as a crash loses all)."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with __import__("socket").create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if not os.path.exists(REDIS_SERVER):
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: CI installs it (.ci/run)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class XmppNode:
    """``xmppd run`` as cluster node ``name``."""

    def __init__(self, tmp: Path, name: str, redis: str, storage: str,
                 modules: list[str] = MODULES, workers: int = 1) -> None:
        self.tmp, self.name, self.storage = tmp, name, storage
        self.port = free_port()
        self.http_port = free_port()  # /metrics
        self.data = tmp / "data"
        self.config = tmp / "xmppd.toml"
        self.config.write_text(
            f'[server]\ndomains = ["localhost"]\ndata_dir = "data"\nlog_level = "info"\n'
            f'storage = "{storage}"\nworkers = {workers}\n'
            f'[c2s]\nlisten = ["127.0.0.1:{self.port}"]\ndirect_tls = []\nallow_plain = true\n'
            f'require_encryption = false\n[http]\nlisten = ["127.0.0.1:{self.http_port}"]\n'
            f'listen_tls = []\n[cluster]\nredis = "{redis}"\nnode = "{name}"\n'
            f'[modules]\nenabled = {[*modules, "metrics"]!r}\n'.replace("'", '"'))
        self.log = open(tmp / "xmppd.log", "a")  # noqa: SIM115 - closed in stop()
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "xmppd.cli", "run", "--config",
                                      str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"xmppd exited: {self.logged()}")
            try:
                self.epoch = self.control("cluster")["epoch"]
                return
            except (ControlUnavailable, OSError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.name} did not come up: {self.logged()}")
            time.sleep(0.05)

    def control(self, command: str, **args):
        return call(self.data / "control.sock", command, **args)

    def knows(self, jid: str, node: str, timeout: float = 10) -> None:
        """Until this node's replica has ``jid`` on ``node``."""
        deadline = time.monotonic() + timeout
        while jid not in self.control("cluster")["nodes"].get(node, ()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} does not know {jid} on {node}: "
                                     f"{self.control('cluster')}\n{self.logged()}")
            time.sleep(0.05)

    def client(self, user: str, resource: str) -> Client:
        client = Client(self.port)
        client.login(user, PASSWORD, resource=resource)
        return client

    def logged(self) -> str:
        self.log.flush()
        return (self.tmp / "xmppd.log").read_text()[-6000:]

    def stop(self) -> int:
        return stop_process(self.proc, 30)


def run_nodes(tmp: Path, redis: RedisServer, postgresql_server, names: tuple[str, ...],
              modules: list[str] = MODULES, users: tuple[str, ...] = USERS,
              workers: dict[str, int] | None = None):
    """A fixture's body: a new database with ``users``, then ``names`` started in that
    order (the first is the oldest; ``workers``: how many a node runs, default 1); yields
    them, stops them (kill -9 ones are fine)."""
    url = postgresql_server.create_database()

    async def accounts() -> None:
        storage = await open_storage(url)
        for user in users:
            await storage.create_account(user, "localhost", _creds(PASSWORD))
        await storage.close()

    asyncio.run(accounts())
    started = []
    try:
        for name in names:
            (tmp / name).mkdir()
            started.append(XmppNode(tmp / name, name, redis.url, url, modules,
                                    (workers or {}).get(name, 1)))
        yield started
    finally:
        for node in started:
            code = node.stop()
            node.log.close()
            assert code in (0, -signal.SIGKILL), node.logged()


@pytest.fixture
def n1_workers() -> int:
    """How many workers node n1 runs (a test module may override it)."""
    return 1


@pytest.fixture
def nodes(tmp_path, redis_server, postgresql_server, n1_workers):
    yield from run_nodes(tmp_path, redis_server, postgresql_server, ("n1", "n2"),
                         workers={"n1": n1_workers})


def cluster_status(node: XmppNode) -> str:
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "cluster", "status", "--config",
                           str(node.config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def unavailable(jid: str) -> str:
    """The pattern of unavailable presence from ``jid``."""
    return (f"<presence[^>]*type=.unavailable.[^>]*from=.{jid}.|"
            f"<presence[^>]*from=.{jid}.[^>]*type=.unavailable.")


def pair(n1: XmppNode, n2: XmppNode) -> tuple[Client, Client]:
    """alice on n1, bob on n2, known on both nodes, subscribed to each other, available."""
    alice, bob = n1.client("alice", "a1"), n2.client("bob", "b2")
    n2.knows("alice@localhost/a1", "n1")
    n1.knows("bob@localhost/b2", "n2")
    online(alice, bob)
    subscribe(n1, alice, "alice", bob, "bob")
    return alice, bob


def test_messages_and_presence_across_nodes(nodes):
    n1, n2 = nodes
    alice, bob = pair(n1, n2)
    # presence after the subscription: each sees the other's available presence
    alice.send("<presence><show>chat</show></presence>")
    bob.read_until("<presence[^>]*from=.alice@localhost/a1.[^>]*><show>chat</show>")
    # full JID, both ways
    alice.send("<message to='bob@localhost/b2' type='chat' id='m1'><body>hi bob</body></message>")
    assert "hi bob" in bob.read_until("</message>")
    bob.send("<message to='alice@localhost/a1' type='chat' id='m2'><body>hi alice</body></message>")
    assert "hi alice" in alice.read_until("</message>")
    # bare JID: §8.5 on n1 from its replica of bob's sessions on n2
    alice.send("<message to='bob@localhost' type='chat' id='m3'><body>bare</body></message>")
    assert "bare" in bob.read_until("</message>")
    # an IQ and its answer
    alice.send("<iq type='get' to='bob@localhost/b2' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "urn:xmpp:ping" in bob.read_until("</iq>")
    bob.send("<iq type='result' to='alice@localhost/a1' id='p1'/>")
    alice.read_until(r"<iq[^>]*p1[^>]*/>|<iq[^>]*p1.*?</iq>")

    status = cluster_status(n1)
    lines = {line.split()[0]: line.split() for line in status.splitlines()[1:]}
    assert lines["n1"][1:] == [str(n1.epoch), "yes", "1"], status
    assert lines["n2"][1:] == [str(n2.epoch), "yes", "1"], status
    # the cluster layer's metrics, peers labelled by node name
    table = scraped(n1)
    assert at(table, "xmppd_cluster_peers", state="up") == 1
    assert at(table, "xmppd_cluster_redis_connected") == 1
    assert at(table, "xmppd_cluster_remote_sessions", peer="n2") == 1
    for direction in ("sent", "received"):
        assert at(table, f"xmppd_cluster_link_{direction}_stanzas_total", peer="n2") >= 3
        assert at(table, f"xmppd_cluster_link_{direction}_bytes_total", peer="n2") > 0
    assert at(table, "xmppd_cluster_link_pending_bytes", peer="n2") == 0
    assert at(table, "xmppd_cluster_overflow_bounces_total") == 0

    # bob leaves: alice gets his unavailable presence; a message to him goes offline
    bob.send("</stream:stream>")
    alice.read_until("<presence[^>]*unavailable")
    alice.close()
    bob.close()


def test_killed_node_is_purged_and_restarts_with_a_new_epoch(nodes):
    n1, n2 = nodes
    alice, bob = pair(n1, n2)
    old_epoch = n2.epoch
    killed = time.monotonic()
    os.kill(n2.proc.pid, signal.SIGKILL)
    n2.proc.wait(10)
    alice.read_until(unavailable("bob@localhost/b2"), timeout=20)
    detected = time.monotonic() - killed
    log.warning("kill -9 to bob's unavailable presence on the other node: %.1f s", detected)
    print(f"\npurge detected after {detected:.1f} s")
    assert "b2" not in str(n1.control("cluster")["nodes"])
    assert at(scraped(n1), "xmppd_cluster_purges_total", announced="true") == 1
    alice.send("<message to='bob@localhost' type='chat' id='off1'>"
               "<body>while you were down</body></message>")
    time.sleep(0.5)  # stored (no error comes back: offline storage took it)
    assert "type='error'" not in alice.seen and 'type="error"' not in alice.seen

    n2.start()
    assert n2.epoch > old_epoch
    bob = n2.client("bob", "b2")  # no conflict with a stale row: a new life
    n1.knows("bob@localhost/b2", "n2")
    bob.send("<presence/>")
    assert "while you were down" in bob.read_until("while you were down.*?</message>")
    status = cluster_status(n1)
    assert ["n2", str(n2.epoch), "yes", "1"] in [line.split() for line in status.splitlines()]
    assert str(old_epoch) not in status  # the dead life is forgotten
    alice.close()
    bob.close()


def test_redis_restart_nodes_register_again(nodes, redis_server):
    n1, n2 = nodes
    alice, bob = pair(n1, n2)
    redis_server.stop()
    # local traffic goes on without Redis
    carol = n1.client("carol", "c1")
    carol.send("<message to='alice@localhost/a1' type='chat'><body>local</body></message>")
    assert "local" in alice.read_until("</message>")
    # a stanza for the other node waits for Redis
    alice.send("<message to='bob@localhost/b2' type='chat'><body>held</body></message>")
    time.sleep(1)
    redis_server.start()
    assert "held" in bob.read_until("held.*?</message>", timeout=20)
    n2.knows("carol@localhost/c1", "n1", timeout=20)
    n1.knows("bob@localhost/b2", "n2", timeout=20)
    bob.send("<message to='alice@localhost/a1' type='chat'><body>after</body></message>")
    assert "after" in alice.read_until("after.*?</message>")
    deadline = time.monotonic() + 20
    while True:
        status = cluster_status(n1)
        if status.count(" yes ") == 2:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    table = scraped(n1)
    assert at(table, "xmppd_cluster_redis_reconnects_total") >= 1
    assert at(table, "xmppd_cluster_redis_connected") == 1
    for c in (alice, bob, carol):
        c.close()


def test_cluster_status_without_cluster_or_redis(tmp_path):
    config = tmp_path / "x.toml"
    config.write_text('[server]\ndata_dir = "d"\n')
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "cluster", "status", "--config",
                           str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "no cluster configured" in done.stderr
    config.write_text(f'[server]\ndata_dir = "d"\n[cluster]\nredis = '
                      f'"redis://127.0.0.1:{free_port()}/0"\n')
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "cluster", "status", "--config",
                           str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "cannot read the cluster" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_run_without_redis_is_one_line_and_status_1(tmp_path):
    config = tmp_path / "x.toml"
    config.write_text(
        f'[server]\ndata_dir = "d"\n[c2s]\nlisten = ["127.0.0.1:{free_port()}"]\n'
        f'direct_tls = []\n[http]\nlisten = []\nlisten_tls = []\n'
        f'[modules]\nenabled = ["disco", "message", "presence", "roster"]\n'
        f'[cluster]\nredis = "redis://127.0.0.1:{free_port()}/0"\nallow_local_storage = true\n')
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "cluster.redis: cannot register with Redis" in done.stderr
    assert "Traceback" not in done.stderr
