"""``xmppd run --workers N``: the supervisor process.

It prepares what the workers share and must not race to create (the data directory and
its lock, which it holds; the server secret; generated certificates; the database
schema), creates the owner-only directory of the workers' sockets, starts N workers
(``python -m xmppd.cli run --worker I --workers N``, the same interpreter and
environment), restarts one that dies with a growing delay, forwards SIGHUP (reload) and
stops them all on SIGTERM/SIGINT.  Worker 0 answers the control socket.  A drain
(:mod:`xmppd.drain`): SIGUSR1 is forwarded to every worker; SIGUSR2 (what worker 0 sends
when ``xmppd drain`` asked it, having told the others itself) only means "they drain";
either way no worker is restarted from then on, and the supervisor exits 0 once all
have exited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from xmppd.core.config import Config, ConfigError
from xmppd.core.manager import plan

log = logging.getLogger(__name__)

#: Restart delays (seconds) of a worker that keeps dying soon after its start.
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: A worker that ran this long before dying is restarted after the shortest delay.
STABLE_AFTER_S = 30.0
#: A worker that fails at its first start within this time is a start-up error: stop all.
FIRST_START_S = 10.0
STOP_TIMEOUT_S = 20.0


def socket_dir(config: Config) -> Path:
    """The owner-only directory of the workers' Unix sockets."""
    return config.data_dir / "workers"


def worker_problems(config: Config, workers: int) -> list[str]:
    """Why ``config`` cannot run with ``workers`` processes (empty: it can)."""
    if workers <= 1:
        return []
    problems = []
    where = f"server.workers = {workers}"
    if config.storage_url.startswith("memory:"):
        problems.append(f"{where} needs storage the workers share: with `memory:` each "
                        "would keep its own accounts (use sqlite)")
    try:
        unsafe = [p.cls.name for p in plan(config) if not p.cls.workers_safe]
    except ConfigError:
        unsafe = []  # reported on its own
    if unsafe:
        problems.append(f"{where}: these modules cannot run in several workers yet: "
                        f"{', '.join(unsafe)} (disable them, or run one worker)")
    if config.components:
        problems.append(f"{where}: external components (XEP-0114) cannot be served by "
                        "several workers yet (a component connects to one of them)")
    listeners = [("c2s", config.c2s), ("http", config.http), ("s2s", config.s2s),
                 ("components", config.component_listeners)]
    for kind, entries in listeners:
        for listener in entries:
            if listener.port == 0:
                problems.append(f"{where}: {kind} listener {listener.host}:0: each worker "
                                "would get another port; give a port number")
    return problems


class Supervisor:
    """Starts ``count`` workers and keeps them running until told to stop."""

    def __init__(self, count: int, config_path: str | None) -> None:
        self.count = count
        self.config_path = config_path
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.started: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.ever_ran: set[int] = set()
        self.stopping = asyncio.Event()
        self.draining = False
        self.status = 0

    def command(self, index: int) -> list[str]:
        cmd = [sys.executable, "-m", "xmppd.cli", "run", "--worker", str(index),
               "--workers", str(self.count)]
        if self.config_path:
            cmd += ["--config", self.config_path]
        return cmd

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGUSR1, self._drain, True)
        loop.add_signal_handler(signal.SIGUSR2, self._drain, False)
        tasks = [asyncio.ensure_future(self._keep(i)) for i in range(self.count)]
        await self.stopping.wait()
        log.info("stopping %d workers", self.count)
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for index, proc in list(self.procs.items()):
            try:
                await asyncio.wait_for(proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("worker %d (pid %d) did not stop in time: killed", index, proc.pid)
                proc.kill()
                await proc.wait()
        for task in tasks:
            task.cancel()
        log.info("xmppd supervisor stopped")
        return self.status

    def _drain(self, forward: bool) -> None:
        if not self.draining:
            log.info("the workers drain: none is restarted; stopping after the last")
        self.draining = True
        if forward:
            self._forward(signal.SIGUSR1)

    def _forward(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    async def _keep(self, index: int) -> None:
        """Run worker ``index``; start it again whenever it dies (until stopping)."""
        while not self.stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*self.command(index))
            self.procs[index] = proc
            log.info("worker %d started (pid %d)", index, proc.pid)
            ended = asyncio.ensure_future(proc.wait())
            stop = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait({ended, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if self.stopping.is_set():
                await ended
                return
            code = proc.returncode
            if self.draining:
                log.info("worker %d (pid %d) drained (status %s)", index, proc.pid, code)
                break
            ran = time.monotonic() - started
            how = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
            if index not in self.ever_ran and ran < FIRST_START_S and code == 1:
                log.error("worker %d could not start (%s): stopping", index, how)
                self.status = 1
                self.stopping.set()
                return
            self.ever_ran.add(index)
            failures = 0 if ran >= STABLE_AFTER_S else self.failures.get(index, 0) + 1
            self.failures[index] = failures
            delay = BACKOFF[min(max(failures - 1, 0), len(BACKOFF) - 1)]
            log.error("worker %d (pid %d) died (%s) after %.1fs: restarting it in %gs",
                      index, proc.pid, how, ran, delay)
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except TimeoutError:
                pass
            if self.draining:
                break
        # drained (or died while the others drain): the supervisor ends after the last
        self.procs.pop(index, None)
        if not self.procs and not self.stopping.is_set():
            self.stopping.set()


def prepare_shared(config: Config) -> Path:
    """What the workers share and must not race to create: the secret, generated
    certificates, the database schema, the sockets' directory (returned)."""
    from xmppd.secretfile import load_or_create
    from xmppd.storage import open_storage
    from xmppd.transport.tls import ensure_certificate

    load_or_create(config.data_dir / "secret")
    for domain in config.domains:
        if domain not in config.certificates:
            ensure_certificate(domain, config.data_dir)

    async def migrate() -> None:
        storage = await open_storage(config.storage_url)
        await storage.close()

    asyncio.run(migrate())
    directory = socket_dir(config)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)  # an existing one too: the sockets take messages as anyone
    return directory
