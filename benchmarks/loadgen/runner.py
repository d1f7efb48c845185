"""Worker processes with a start barrier, and the server's RSS from /proc."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .features import FEATURE_WORKLOADS
from .upload import run_upload
from .workloads import WORKLOADS, WorkerSpec

ALL_WORKLOADS = {**WORKLOADS, **FEATURE_WORKLOADS, "upload": run_upload}


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    cols = line.split()
                    # state 0A = LISTEN; local address is HEXIP:HEXPORT
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except FileNotFoundError:
            continue
    return inodes


def find_pid_by_port(port: int) -> int | None:
    """PID of the process holding the socket listening on ``port`` (needs /proc access)."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:  # closed meanwhile: the process's other descriptors still count
                continue
            if link in targets:
                return int(pid)
    return None


def _worker_main(spec: WorkerSpec, conn: Connection, use_uvloop: bool) -> None:
    if use_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        go: asyncio.Future[Any] = loop.create_future()

        def on_parent() -> None:
            loop.remove_reader(conn.fileno())
            msg = conn.recv()
            if not go.done():
                if msg == "go":
                    go.set_result(None)
                else:
                    go.set_exception(RuntimeError("aborted by parent"))

        loop.add_reader(conn.fileno(), on_parent)
        return await ALL_WORKLOADS[spec.workload](spec, lambda info: conn.send(("ready", info)), go)

    try:
        result = asyncio.run(main())
        # The loop's reader left the pipe non-blocking: a result larger than the pipe's
        # buffer (a latency run's samples) would meet EAGAIN halfway and reach the parent cut.
        os.set_blocking(conn.fileno(), True)
        conn.send(("result", result))
    except BaseException as exc:  # report to the parent instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))
    finally:
        conn.close()


def _recv(conn: Connection, timeout: float) -> tuple[str, Any]:
    if not conn.poll(timeout):
        raise TimeoutError("worker did not answer in time")
    return conn.recv()


def run_workers(
    specs: list[WorkerSpec],
    use_uvloop: bool = True,
    on_ready: Callable[[list[dict[str, Any]]], None] | None = None,
    setup_timeout: float = 600.0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run one process per spec; after all are ready call ``on_ready``, then release them together.

    Returns (ready infos, results). Raises RuntimeError with the first worker's error.
    """
    ctx = mp.get_context("fork")
    procs, conns = [], []
    for spec in specs:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(spec, child, use_uvloop), daemon=True)
        proc.start()
        child.close()
        procs.append(proc)
        conns.append(parent)
    try:
        infos = []
        deadline = time.monotonic() + setup_timeout
        for conn in conns:
            kind, payload = _recv(conn, max(0.1, deadline - time.monotonic()))
            if kind != "ready":
                raise RuntimeError(f"worker failed during setup: {payload}")
            infos.append(payload)
        if on_ready is not None:
            on_ready(infos)
        for conn in conns:
            conn.send("go")
        results = []
        for conn in conns:
            kind, payload = _recv(conn, setup_timeout)
            if kind != "result":
                raise RuntimeError(f"worker failed: {payload}")
            results.append(payload)
        return infos, results
    finally:
        for conn in conns:
            try:
                conn.send("abort")
            except OSError:
                pass
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(1)
