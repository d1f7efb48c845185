"""The four workloads, each run inside one worker process on its shard of accounts/pairs.

Every workload has two phases: setup (untimed: log sessions in, warm the SCRAM cache), then,
after the parent's "go" (a barrier across worker processes), the measured phase.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .client import LoginConfig, Session, XmppError, client_tls_context, login
from .scram import cache_size


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

END = b"</message>"
_TAIL = len(END) - 1
_STAMP = re.compile(rb"<body>L(\d+) ")

Ready = Callable[[dict[str, Any]], None]


@dataclass
class WorkerSpec:
    """One worker's share of a run."""

    workload: str
    login: LoginConfig
    user_prefix: str = "user"
    users: list[int] = field(default_factory=list)  # logins, memory
    pairs: list[int] = field(default_factory=list)  # throughput, latency
    concurrency: int = 100
    window: int = 16
    body_size: int = 64
    duration: float = 5.0
    warmup: float = 1.0
    rate: float = 0.0  # this worker's share of the offered rate (latency)
    drain_timeout: float = 10.0
    warm_logins: bool = True
    sm_every: int = 0  # throughput --sm: the generator sends <r/> every N messages (0: never)
    extra: dict[str, Any] = field(default_factory=dict)  # feature workloads' options


def percentiles(samples: list[float], points: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus max; empty input gives an empty dict."""
    if not samples:
        return {}
    data = sorted(samples)
    out = {f"p{p:g}": data[min(len(data) - 1, int(len(data) * p / 100))] for p in points}
    out["max"] = data[-1]
    return out


class _Waiter:
    """What a pooled ``Session`` reports to instead of a future (``done``/``set_result``/
    ``set_exception``, the three calls it makes): no future, timer or coroutine per login."""

    __slots__ = ("pool", "user", "t0", "finished")

    def __init__(self, pool: _LoginPool, user: str) -> None:
        self.pool = pool
        self.user = user
        self.t0 = time.perf_counter()
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, session: Session) -> None:
        self.finished = True
        self.pool.finished(self, session, None)

    def set_exception(self, exc: BaseException) -> None:
        self.finished = True
        self.pool.finished(self, None, exc)


class _LoginPool:
    """Keeps ``concurrency`` logins in flight: each one that ends starts the next.

    The only coroutine per login is the transport's own ``create_connection``; one watchdog
    per second fails logins older than the configured timeout (instead of a timer each).
    """

    def __init__(self, cfg: LoginConfig, users: list[str], concurrency: int, close: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.cfg = cfg
        self.users = iter(users)
        self.concurrency = concurrency
        self.close = close
        self.tls_ctx = client_tls_context() if cfg.tls else None
        self.in_flight: dict[_Waiter, Session | None] = {}
        self.sessions: list[Session] = []
        self.times: list[float] = []
        self.errors: list[str] = []
        self.all_done: asyncio.Future[None] = self.loop.create_future()
        self.watchdog: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        for _ in range(self.concurrency):
            if not self._start_next():
                break
        if not self.in_flight:
            return
        self.watchdog = self.loop.call_later(1.0, self._watch)
        try:
            await self.all_done
        finally:
            self.watchdog.cancel()

    def _start_next(self) -> bool:
        user = next(self.users, None)
        if user is None:
            return False
        waiter = _Waiter(self, user)
        self.in_flight[waiter] = None

        def protocol() -> Session:
            session = Session(self.cfg, user, self.tls_ctx, waiter)  # type: ignore[arg-type]
            self.in_flight[waiter] = session
            return session

        task = self.loop.create_task(self.loop.create_connection(protocol, self.cfg.host, self.cfg.port))
        task.add_done_callback(lambda t: self._connected(waiter, t))
        return True

    def _connected(self, waiter: _Waiter, task: asyncio.Task[Any]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not waiter.finished:
            waiter.set_exception(exc)

    def finished(self, waiter: _Waiter, session: Session | None, exc: BaseException | None) -> None:
        self.in_flight.pop(waiter, None)
        if session is not None:
            self.times.append(time.perf_counter() - waiter.t0)
            if self.close:
                session.close()
            else:
                self.sessions.append(session)
        else:
            self.errors.append(f"{waiter.user}: {exc}")
        if not self._start_next() and not self.in_flight and not self.all_done.done():
            self.all_done.set_result(None)

    def _watch(self) -> None:
        now = time.perf_counter()
        for waiter, session in list(self.in_flight.items()):
            if now - waiter.t0 > self.cfg.timeout and session is not None:
                session.fail(XmppError(f"login timeout for {waiter.user}"))
        self.watchdog = self.loop.call_later(1.0, self._watch)


async def login_many(
    cfg: LoginConfig, users: list[str], concurrency: int, close: bool
) -> tuple[list[Session], list[float], list[str]]:
    """Log ``users`` in with at most ``concurrency`` handshakes in flight.

    Returns (open sessions, per-login seconds, error strings); with ``close`` each session is
    closed right after login and the list of sessions is empty.  TCP only: WebSocket and
    BOSH carriers log in through ``login`` one coroutine each.
    """
    if cfg.websocket or cfg.bosh:
        return await _login_many_carried(cfg, users, concurrency, close)
    pool = _LoginPool(cfg, users, concurrency, close)
    await pool.run()
    return pool.sessions, pool.times, pool.errors


async def _login_many_carried(
    cfg: LoginConfig, users: list[str], concurrency: int, close: bool
) -> tuple[list[Session], list[float], list[str]]:
    """``login_many`` over a WebSocket or BOSH carrier: one coroutine per login."""
    sem = asyncio.Semaphore(concurrency)
    tls_ctx = client_tls_context() if cfg.tls else None
    sessions: list[Session] = []
    times: list[float] = []
    errors: list[str] = []

    async def one(user: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            try:
                session = await login(cfg, user, tls_ctx)
            except (XmppError, OSError, ValueError) as exc:
                errors.append(f"{user}: {exc}")
                return
            times.append(time.perf_counter() - t0)
            if close:
                session.close()
            else:
                sessions.append(session)

    await asyncio.gather(*(one(u) for u in users))
    return sessions, times, errors


def _names(spec: WorkerSpec, indices: list[int]) -> list[str]:
    return [f"{spec.user_prefix}{i}" for i in indices]


async def run_logins(spec: WorkerSpec, ready: Ready, go: Awaitable[Any]) -> dict[str, Any]:
    """Untimed warm-up login per account (fills the SCRAM cache), then the timed logins."""
    users = _names(spec, spec.users)
    warm_errors: list[str] = []
    if spec.warm_logins:
        _, _, warm_errors = await login_many(spec.login, users, spec.concurrency, close=True)
    ready({"pbkdf2_runs": cache_size(), "warm_errors": warm_errors[:5]})
    await go
    pid = spec.extra.get("server_pid")
    cpu0 = proc_cpu_s(pid) if pid else 0.0
    t0, own0 = time.perf_counter(), time.process_time()
    _, times, errors = await login_many(spec.login, users, spec.concurrency, close=True)
    elapsed, own = time.perf_counter() - t0, time.process_time() - own0
    cpu = proc_cpu_s(pid) - cpu0 if pid else None
    # The generator's own CPU (user + system) over the timed logins: its ceiling on one core
    # is ok / own, reported beside every result whether or not a stub run exists.
    return {"ok": len(times), "errors": len(errors), "error_samples": errors[:5],
            "elapsed": elapsed, "login_times": times, "generator_cpu_s": own, "server_cpu_s": cpu}


class _Flow:
    """Closed loop for one direction of a pair: the receiver's reads release the sender's window."""

    __slots__ = ("received", "sent", "tail", "sender", "msg", "state")

    def __init__(self, sender: Session, msg: bytes, state: _RunState) -> None:
        self.received = 0
        self.sent = 0
        self.tail = b""
        self.sender = sender.transport
        self.msg = msg
        self.state = state

    def on_data(self, data: bytes) -> None:
        # Hot path: count closing tags; a tag split across reads is caught via the 9-byte tail.
        n = data.count(END)
        tail = self.tail
        if tail:
            n += (tail + data[:_TAIL]).count(END)
        self.tail = data[-_TAIL:] if len(data) >= _TAIL else (tail + data)[-_TAIL:]
        if n:
            self.received += n
            if self.state.running:
                self.sender.write(self.msg * n)
                self.sent += n


class _RunState:
    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running = False


def _message(to: str, body: bytes) -> bytes:
    return b"<message to='" + to.encode() + b"' type='chat'><body>" + body + b"</body></message>"


async def _pairs(spec: WorkerSpec) -> tuple[list[tuple[Session, Session]], list[str]]:
    """Log both sessions of each pair in (pair k = users 2k and 2k+1), presence optional."""
    users = [u for k in spec.pairs for u in (2 * k, 2 * k + 1)]
    sessions, _, errors = await login_many(spec.login, _names(spec, users), spec.concurrency, close=False)
    if errors:
        for s in sessions:
            s.close()
        raise XmppError(f"{len(errors)} logins failed, e.g. {errors[0]}")
    by_user = {s.jid.split("@", 1)[0]: s for s in sessions}
    pairs = [(by_user[f"{spec.user_prefix}{2 * k}"], by_user[f"{spec.user_prefix}{2 * k + 1}"]) for k in spec.pairs]
    return pairs, errors


async def _drain(outstanding: Callable[[], int], timeout: float) -> float:
    t0 = time.perf_counter()
    while outstanding() > 0 and time.perf_counter() - t0 < timeout:
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0


async def run_throughput(spec: WorkerSpec, ready: Ready, go: Awaitable[Any]) -> dict[str, Any]:
    """Both directions of each pair keep ``window`` messages in flight; count deliveries."""
    pairs, _ = await _pairs(spec)
    state = _RunState()
    body = b"x" * spec.body_size
    flows: list[Any] = []
    for a, b in pairs:
        for sender, receiver in ((a, b), (b, a)):
            msg = _message(receiver.jid, body)
            if spec.login.sm:
                from .features import SmFlow

                flow: Any = SmFlow(sender, receiver, msg, state, spec.sm_every)
            else:
                flow = _Flow(sender, msg, state)
            receiver.on_data = flow.on_data
            flows.append(flow)
    ready({"sessions": 2 * len(pairs), "pbkdf2_runs": cache_size()})
    await go
    state.running = True
    for flow in flows:
        flow.sender.write(flow.msg * spec.window)
        flow.sent = spec.window
    await asyncio.sleep(spec.warmup)
    pid = spec.extra.get("server_pid")
    cpu0 = proc_cpu_s(pid) if pid else 0.0
    t0, r0 = time.perf_counter(), sum(f.received for f in flows)
    await asyncio.sleep(spec.duration)
    t1, r1 = time.perf_counter(), sum(f.received for f in flows)
    cpu = proc_cpu_s(pid) - cpu0 if pid else None
    state.running = False
    requests = sum(s.transport.carrier.requests for p in pairs for s in p) if spec.login.bosh else None  # type: ignore[union-attr]
    drain = await _drain(lambda: sum(f.sent - f.received for f in flows), spec.drain_timeout)
    sent, received = sum(f.sent for f in flows), sum(f.received for f in flows)
    for a, b in pairs:
        a.close()
        b.close()
    return {"delivered": r1 - r0, "window_s": t1 - t0, "sent": sent, "received": received,
            "lost": sent - received, "drain_s": drain, "server_cpu_s": cpu, "http_requests": requests}


class _LatencyReceiver:
    """Extracts send timestamps from complete messages; keeps partial ones for the next read."""

    __slots__ = ("buf", "received", "samples", "record_from")

    def __init__(self, samples: list[int]) -> None:
        self.buf = b""
        self.received = 0
        self.samples = samples
        self.record_from = 1 << 62

    def on_data(self, data: bytes) -> None:
        buf = self.buf + data
        end = buf.rfind(END)
        if end < 0:
            self.buf = buf
            return
        now = time.monotonic_ns()
        self.buf = buf[end + len(END):]
        stamps = _STAMP.findall(buf, 0, end)
        self.received += len(stamps)
        frm = self.record_from
        self.samples.extend(now - t for t in map(int, stamps) if t >= frm)


async def run_latency(spec: WorkerSpec, ready: Ready, go: Awaitable[Any]) -> dict[str, Any]:
    """Send at a fixed aggregate rate round-robin over all flows; latency from body stamps."""
    pairs, _ = await _pairs(spec)
    samples: list[int] = []
    flows: list[tuple[asyncio.Transport, bytes, bytes]] = []
    receivers: list[_LatencyReceiver] = []
    pad = b" " + b"x" * max(0, spec.body_size - 21)
    for a, b in pairs:
        for sender, receiver in ((a, b), (b, a)):
            rx = _LatencyReceiver(samples)
            receiver.on_data = rx.on_data
            receivers.append(rx)
            head = b"<message to='" + receiver.jid.encode() + b"' type='chat'><body>L"
            flows.append((sender.transport, head, pad + b"</body></message>"))  # type: ignore[arg-type]
    ready({"sessions": 2 * len(pairs), "pbkdf2_runs": cache_size()})
    await go
    rate, nflows = spec.rate, len(flows)
    t0 = time.monotonic_ns()
    warm_end = t0 + int(spec.warmup * 1e9)
    stop = warm_end + int(spec.duration * 1e9)
    for rx in receivers:
        rx.record_from = warm_end
    sent = k = 0
    max_lag = 0
    while True:
        await asyncio.sleep(0.0005)
        now = time.monotonic_ns()
        if now >= stop:
            break
        due = int((now - t0) * rate / 1e9) - sent
        if due <= 0:
            continue
        if now >= warm_end:  # how far the generator itself fell behind the schedule
            max_lag = max(max_lag, now - (t0 + int(sent * 1e9 / rate)))
        batches: dict[int, list[bytes]] = {}
        for _ in range(due):
            batches.setdefault(k % nflows, []).append(b"%d" % time.monotonic_ns())
            k += 1
        for idx, stamps in batches.items():
            transport, head, tail = flows[idx]
            transport.write(b"".join(head + s + tail for s in stamps))
        sent += due
    measured_sent = int(spec.duration * rate)
    drain = await _drain(lambda: sent - sum(r.received for r in receivers), spec.drain_timeout)
    received = sum(r.received for r in receivers)
    for a, b in pairs:
        a.close()
        b.close()
    return {"sent": sent, "received": received, "lost": sent - received, "drain_s": drain,
            "latencies_ns": samples, "expected_in_window": measured_sent, "max_send_lag_ns": max_lag}


class _IdleAcker:
    """An idle XEP-0198 session that answers the server's ``<r/>`` with ``<a h/>`` (h: the
    stanzas received since ``<enabled/>``; an idle session gets presence and IQs only, so
    their start tags are counted) and acknowledges what it got during the login at once."""

    _STANZA = re.compile(rb"<(?:presence|message|iq)[\s/>]")
    _REQUEST = b"<r xmlns='urn:xmpp:sm:3'/>"

    def __init__(self, session: Any) -> None:
        self.session = session
        self.h = session.h_base
        session.on_data = self.on_data
        self.on_data(bytes(session.buf))
        session.buf.clear()
        self.ack()

    def on_data(self, data: bytes) -> None:
        self.h += len(self._STANZA.findall(data))
        if b"<r xmlns=" in data:
            self.ack()

    def ack(self) -> None:
        self.session.send(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % (self.h & 0xFFFFFFFF))


async def run_memory(spec: WorkerSpec, ready: Ready, go: Awaitable[Any]) -> dict[str, Any]:
    """Hold ``users`` logged-in sessions open until the parent has read the server's RSS."""
    sessions, _, errors = await login_many(spec.login, _names(spec, spec.users), spec.concurrency, close=False)
    if spec.login.sm:  # idle, but acknowledging as a real client does: no queue held for us
        for s in sessions:
            _IdleAcker(s)
        await asyncio.sleep(0.5)
    info: dict[str, Any] = {"sessions": len(sessions), "errors": len(errors), "error_samples": errors[:5]}
    if spec.login.bosh:  # sessions with their long poll held by the server right now
        info["held"] = sum(1 for s in sessions if s.transport.carrier.outstanding > 0)  # type: ignore[union-attr]
    ready(info)
    await go
    alive = sum(1 for s in sessions if not s.closed)  # none cut while the RSS was read
    for s in sessions:
        s.close()
    await asyncio.sleep(0.2)  # let the close tags leave before the process exits
    return {"sessions": len(sessions), "errors": len(errors), "alive": alive}


WORKLOADS: dict[str, Callable[[WorkerSpec, Ready, Awaitable[Any]], Awaitable[dict[str, Any]]]] = {
    "logins": run_logins,
    "throughput": run_throughput,
    "latency": run_latency,
    "memory": run_memory,
}

