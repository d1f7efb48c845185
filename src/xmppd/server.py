"""The server: configuration, storage, TLS, listeners, modules and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from xmppd import __version__
from xmppd._impl import implementation
from xmppd.c2s.negotiation import BindError, ClientPolicy
from xmppd.c2s.stream import C2SStream
from xmppd.cluster.node import Node
from xmppd.cluster.redisnode import RedisNode
from xmppd.cluster.resp import RedisError
from xmppd.cluster.scrape import WorkerScrape
from xmppd.control.commands import commands as control_commands
from xmppd.control.protocol import socket_path
from xmppd.control.server import ControlServer
from xmppd.core.config import Config, Listener
from xmppd.core.hooks import Hooks
from xmppd.core.manager import ModuleManager, plan
from xmppd.core.router import Router
from xmppd.core.session import Session, Transport
from xmppd.drain import Drain
from xmppd.eager import start_eagerly
from xmppd.jid import JID
from xmppd.metrics.collector import ServerMetrics
from xmppd.preflight import PreflightError, listen_error
from xmppd.secretfile import load_or_create
from xmppd.storage import storage_from_spec
from xmppd.transport.connections import AuthThrottle, Connections, address_text
from xmppd.transport.http import HTTPServer, HTTPSettings, Routes
from xmppd.transport.tls import (
    SNISelector,
    certificate_fingerprint,
    ensure_certificate,
    server_context,
    sni_context,
)
from xmppd.xml.element import Element

log = logging.getLogger(__name__)


class Server:
    """One xmppd instance serving the configured domains."""

    def __init__(self, config: Config, config_path: Path | None = None, *,
                 worker: tuple[int, int, Path] | None = None) -> None:
        """Raises ConfigError when the ``[modules]`` config does not fit the modules.
        ``config_path``: the file ``config`` came from, read again by :meth:`reload`.
        ``worker``: (index, count, socket directory) when this process is one worker of
        ``xmppd run --workers N`` (:mod:`xmppd.cluster`)."""
        self.config = config
        self.config_path = config_path
        self.worker = worker
        #: this worker's links and registry replica (None with one process)
        self.node: Node | None = None
        self._modules_planned = plan(config)
        self.hooks = Hooks()
        self.storage = storage_from_spec(config.storage_url)
        if worker is not None and hasattr(self.storage, "multi_process"):
            self.storage.multi_process = True  # the other workers write the same database
        self.router = Router(self.hooks, config.domains)
        self.features: set[str] = set()
        self.account_features: set[str] = set()
        self.identities: list[tuple[str, str, str]] = [("server", "im", "xmppd")]
        self.account_identities: list[tuple[str, str, str]] = []  # besides account/registered
        self.modules = ModuleManager(self)
        self.services: dict[str, Any] = {}  # what modules offer each other (ModuleAPI.provide)
        self.connections = Connections(config.limits.max_preauth_connections_per_ip)
        self.auth_throttle = AuthThrottle.from_limits(config.limits)
        self.secret = b""
        self.tls_context: ssl.SSLContext | None = None
        self.direct_tls_context: ssl.SSLContext | None = None
        self.https_context: ssl.SSLContext | None = None
        # The HTTP listener's endpoints: the core's and the modules' (ModuleAPI.add_http_route).
        self.http_routes = Routes()
        self.http = HTTPServer(self.http_routes, HTTPSettings.from_config(config),
                               self.connections.traffic_for("http"))
        # What the listening contexts hand new handshakes (a reload replaces their tables),
        # and the fingerprint of each domain's certificate in use.
        self._sni: list[tuple[SNISelector, bool | str]] = []
        self.certificate_fingerprints: dict[str, str] = {}
        # What new client connections get; a reload replaces it (established streams keep
        # the one they started with).
        self._client_policy: ClientPolicy | None = None
        self._reloading = asyncio.Lock()
        self._peer_reloads: set[asyncio.Future] = set()
        self._listeners: list[asyncio.AbstractServer] = []
        self.control: ControlServer | None = None
        #: the drain under way (:mod:`xmppd.drain`), if any
        self.draining: Drain | None = None
        self._drain_task: asyncio.Task | None = None
        self.drained = asyncio.Event()  # set when a drain is over: then stop
        self._stopped = asyncio.Event()
        self.addresses: dict[str, list[tuple[str, int]]] = defaultdict(list)
        # Read at scrape time from the objects above (router, connections, throttle,
        # storage); a registry of this server's own.
        self.metrics = ServerMetrics(self)

    @property
    def streams(self) -> dict[Any, None]:
        """Every open stream (client, server and component): the keys, in opening order."""
        return self.connections.streams

    # -- start and stop -----------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Open storage, load the modules and (with ``listen``) start serving.

        Without ``listen`` the server only runs its modules over its storage, for the
        ``xmppd`` command to make account changes the way a running server would.
        """
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.secret = load_or_create(cfg.data_dir / "secret")
        await self.storage.open()
        self.modules.load_all(self._modules_planned)
        if not listen:
            return
        if cfg.cluster_redis:  # with workers, each is a cluster member of its own
            node = RedisNode(cfg, self.router, self.hooks, end_session=self._end_session,
                             worker=self.worker[0] if self.worker else None,
                             reload=self._reload_from_peer)
            self._wire_worker(node)
            self.node = node  # (what peers send while it loads them may need it already)
            try:
                await node.start()
            except (OSError, RedisError, TimeoutError, RuntimeError) as exc:  # (no hiredis)
                self.node = None
                raise PreflightError(f"cluster.redis: cannot register with Redis at "
                                     f"{cfg.cluster_redis}: {exc or type(exc).__name__}") from None
        elif self.worker is not None:
            index, count, directory = self.worker
            self.node = Node(index, count, directory, self.router, self.hooks,
                             end_session=self._end_session, reload=self._reload_from_peer)
            self._wire_worker(self.node)
            await self.node.start()
            await self.node.wait_peers(2.0)  # not required: a late peer gets a snapshot
        self._setup_tls()
        self._client_policy = self.client_policy()
        for listener in cfg.c2s:
            await self.listen("c2s", listener, partial(self._client_stream, listener.direct_tls))
        http_here = self.worker is None or self.worker[0] == 0 or not any(
            type(m.module).http_in_one_worker for m in self.modules.loaded.values())
        for listener in cfg.http:
            tls = listener.direct_tls
            if not http_here:  # worker 0 serves HTTP; the URLs built here still name it
                self.addresses["http-tls" if tls else "http"].append(
                    (listener.host, listener.port))
                continue
            await self.listen("http", listener, self.http.factory(tls),
                              context=self.https_context if tls else None)
        if self.worker is None or self.worker[0] == 0:  # worker 0 answers for all
            self.control = ControlServer(socket_path(cfg.data_dir), control_commands(self))
            await self.control.start()
        self.metrics.start(asyncio.get_running_loop())
        await self.hooks.fire("server-started", self)
        log.info(
            "xmppd %s started%s: domains %s, storage %s, implementation %s",
            __version__, f" as worker {self.worker[0]}" if self.worker
            else f" as cluster node {cfg.cluster_node}" if cfg.cluster_redis else "",
            ", ".join(cfg.domains), _redact(cfg.storage_url), implementation(),
        )

    def _wire_worker(self, node: Node) -> None:
        """What a worker's node does for the whole server: a peer's drain, and the other
        workers' samples in a scrape of this one (:mod:`xmppd.metrics.workers`)."""
        if self.worker is None:
            return
        node.on_drain = self._drain_from_peer
        self.metrics.worker = str(self.worker[0])
        self.metrics.gather = WorkerScrape(node, self.metrics.snapshot).gather

    @property
    def policy(self) -> ClientPolicy | None:
        """What new client transports get (TCP, and the modules' BOSH and WebSocket);
        None until the server listens.  A reload renews it."""
        return self._client_policy

    def renew_client_policy(self) -> None:
        """New client connections get a policy built from the current configuration
        (a stream keeps the one it started with)."""
        if self._client_policy is not None:
            self._client_policy = self.client_policy()

    def _client_stream(self, direct_tls: bool) -> C2SStream:
        assert self._client_policy is not None
        return C2SStream(self._client_policy, direct_tls=direct_tls)

    def _setup_tls(self) -> None:
        tls = build_tls(self.config)
        for domain in self.config.domains:
            log.info("TLS certificate for %s: %s", domain, self.config.certificate_for(domain).cert)
        self.tls_context = sni_context(tls.contexts[False], tls.default)
        self.direct_tls_context = sni_context(tls.contexts[True], tls.default)
        self._sni = [(self.tls_context.sni_callback, False),  # type: ignore[list-item]
                     (self.direct_tls_context.sni_callback, True)]
        if self.config.http:
            self.https_context = sni_context(tls.contexts["https"], tls.default)
            self._sni.append((self.https_context.sni_callback, "https"))  # type: ignore[arg-type]
        self.certificate_fingerprints = dict(tls.fingerprints)

    def install_tls(self, tls: TLSSet) -> list[str]:
        """Serve ``tls`` (from :func:`build_tls`) to new handshakes; established
        connections keep theirs.  Returns the domains whose certificate changed."""
        for selector, direct in self._sni:
            selector.update(tls.contexts[direct], tls.contexts[direct][tls.default])
        changed = [d for d, fp in tls.fingerprints.items()
                   if self.certificate_fingerprints.get(d) != fp]
        self.certificate_fingerprints = dict(tls.fingerprints)
        return changed

    async def listen(
        self, kind: str, listener: Listener, factory: Any, *,
        context: ssl.SSLContext | None = None,
    ) -> tuple[Callable[[], None], list[tuple[str, int]]]:
        """Open a listener; returns a function that closes it, and its addresses.  A direct
        TLS listener uses ``context``, else the c2s direct TLS context."""
        loop = asyncio.get_running_loop()
        ctx = (context or self.direct_tls_context) if listener.direct_tls else None
        try:
            srv = await loop.create_server(
                factory, listener.host, listener.port, ssl=ctx, backlog=1024, reuse_address=True,
                reuse_port=self.worker is not None,  # the workers share every listener
                ssl_handshake_timeout=15 if ctx else None,
            )
        except OSError as exc:  # e.g. the port is in use: name the config key
            raise listen_error(kind, listener, exc) from None
        self._listeners.append(srv)
        key = kind + ("-tls" if listener.direct_tls else "")
        addresses = [sock.getsockname()[:2] for sock in srv.sockets]
        for addr in addresses:
            self.addresses[key].append(addr)
            log.info("listening for %s on %s:%d%s", kind, addr[0], addr[1],
                     " (direct TLS)" if listener.direct_tls else "")

        def close() -> None:
            srv.close()
            if srv in self._listeners:
                self._listeners.remove(srv)
            for addr in addresses:
                if addr in self.addresses[key]:
                    self.addresses[key].remove(addr)

        return close, addresses

    def close_listeners(self) -> None:
        """Accept no new connection (what is connected stays)."""
        for srv in self._listeners:
            srv.close()

    def drain(self, timeout_s: float | None = None, spread_s: float | None = None) -> Drain:
        """Start a graceful drain (:mod:`xmppd.drain`; defaults: ``server.drain_timeout_s``
        and ``server.drain_spread_s``); a drain under way is returned as it is."""
        if self.draining is None:
            self.draining = Drain(self, self.config.drain_timeout_s if timeout_s is None
                                  else timeout_s,
                                  self.config.drain_spread_s if spread_s is None else spread_s)
            self._drain_task = asyncio.ensure_future(self.draining.run())
            self._drain_task.add_done_callback(self._drain_done)
        return self.draining

    def _drain_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the drain failed; stopping now", exc_info=task.exception())
        self.drained.set()

    async def stop(self) -> None:
        """Close every stream with ``<system-shutdown/>`` and the storage cleanly."""
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()  # SIGTERM during a drain: stop now
        await self.hooks.fire("server-stopping", self)
        self.metrics.stop()
        if self.control is not None:
            await self.control.close()
        for srv in self._listeners:
            srv.close()
        self.http.close_all()
        for stream in list(self.streams):
            stream.stream_error("system-shutdown", "the server is shutting down")
        # Let the closing bytes and the session-closed handlers (unavailable presence,
        # pending storage writes) run before the storage goes away.
        for _ in range(50):
            if not self.streams:
                break
            await asyncio.sleep(0.02)
        for srv in self._listeners:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1)
            except TimeoutError:
                pass
        if self.node is not None:
            self.node.close()
        self.modules.unload_all()
        await self.storage.close()
        self._stopped.set()
        log.info("xmppd stopped")

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        # Before start(): a SIGTERM that arrives while the listeners open (they accept
        # connections before start() returns) is a clean shutdown once started, not a kill.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        started = asyncio.Event()
        reloads: set[asyncio.Task] = set()  # referenced until done (the loop's are weak)

        def hangup() -> None:
            task = asyncio.ensure_future(self._reload_on_signal(started))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        # SIGHUP: reload, once started (installed now: its default action ends the process)
        loop.add_signal_handler(signal.SIGHUP, hangup)
        # SIGUSR1: drain (xmppd.drain) with the configured times, then stop and exit 0
        drain_asked = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, drain_asked.set)
        await self.start()
        started.set()
        loop.add_signal_handler(signal.SIGUSR1, self.drain)  # (replaces the one above)
        if drain_asked.is_set():  # it came while starting
            self.drain()
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.drained.wait())}
        _done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        log.info("drained, shutting down" if self.drained.is_set()
                 else "signal received, shutting down")
        await self.stop()

    async def reload(self, config: Config | None = None) -> dict[str, Any]:
        """Apply ``config`` (default: :attr:`config_path` read again) to the running
        server: see :mod:`xmppd.reload`.  Raises ReloadRefused for an invalid one."""
        from xmppd.reload import reload

        async with self._reloading:  # SIGHUP and `xmppd reload` at once: one after the other
            return (await reload(self, config)).as_dict()

    async def _reload_on_signal(self, started: asyncio.Event | None) -> None:
        from xmppd.reload import ReloadRefused

        if started is not None:
            await started.wait()
        log.info("SIGHUP received: reloading %s", self.config_path or "the default configuration")
        try:
            await self.reload()
        except ReloadRefused as exc:
            log.error("reload refused, the running configuration stays in force: %s", exc)
        except Exception:
            log.exception("reload failed")

    # -- client sessions ----------------------------------------------------------------------

    def client_policy(self) -> ClientPolicy:
        """What client streams get of the server (storage, secret and TLS must be ready)."""
        cfg = self.config
        return ClientPolicy(
            hosts=self.router.hosts,
            default_domain=cfg.domains[0],
            credentials=self.storage,
            secret=self.secret,
            limits=cfg.limits,
            tls_context=self.tls_context,
            require_encryption=cfg.require_encryption,
            allow_plain=cfg.allow_plain,
            throttle=self.auth_throttle,
            bind=self.bind_session,
            bound=partial(self.hooks.fire_sync, "resource-bound"),
            unbind=self.session_ended,
            route=self.route_from_client,
            stream_features=partial(self.hooks.fire_sync, "stream-features"),
            features_key=partial(self.hooks.handler_key, "stream-features"),
            connections=self.connections,
            stream_element=partial(self.hooks.fire_maybe_async, "stream/element"),
            services=self.services,
        )

    def bind_session(self, jid: JID, transport: Transport) -> Session:
        """Enter a session for ``jid`` carried by ``transport`` in the session table; a
        session bound to the same full JID before is ended with ``conflict``."""
        if jid.domain not in self.router.hosts:  # a reload removed it after the stream began
            raise BindError("not-allowed", "this domain is no longer served here")
        sessions = self.router.sessions
        limit = self.config.limits.max_resources_per_account
        if sessions.get(jid) is None and sessions.count(jid.bare) >= limit:
            self.connections.limit("max_resources_per_account")
            log.info("limit max_resources_per_account (%d) reached for %s: bind refused "
                     "account=%s", limit, address_text(getattr(transport, "peer", None)),
                     jid.bare)
            raise BindError("resource-constraint", "too many resources bound")
        session = Session(jid, transport)
        old = sessions.add(session)
        if self.node is not None:
            self.node.bound(session, old)
        if old is not None:
            old.stream_error("conflict", "replaced by a new session")
        return session

    def adopt_session(self, jid: JID, transport: Transport, after: int, source: int) -> Session:
        """Enter a session taken over from ``source`` (another worker or node: stream
        management resumed here; its bind stamp there: ``after``).  Announced like a bind;
        the remote session it displaces leaves quietly there (no conflict), a local one
        of the same full JID is ended with ``conflict`` as by a bind."""
        session = Session(jid, transport)
        old = self.router.sessions.add(session)
        if self.node is not None:
            self.node.bound(session, old, after)
            self.node.taken_over(session, source)
        if old is not None and not old.remote:
            old.stream_error("conflict", "replaced by a new session")
        return session

    def _end_session(self, session: Session, condition: str, text: str | None) -> None:
        """End a local session's stream and unbind it now (another worker's bind won)."""
        session.stream_error(condition, text)
        self.session_ended(session, False)

    def _drain_from_peer(self, args: dict[str, Any]) -> None:
        """``xmppd drain`` asked worker 0, which tells every worker (its times or None)."""
        timeout, spread = args.get("timeout_s"), args.get("spread_s")
        self.drain(float(timeout) if isinstance(timeout, (int, float)) else None,
                   float(spread) if isinstance(spread, (int, float)) else None)

    def _reload_from_peer(self) -> None:
        """Another worker was asked to reload (``xmppd reload``): so is this one."""
        task = asyncio.ensure_future(self._reload_on_signal(None))
        self._peer_reloads.add(task)
        task.add_done_callback(self._peer_reloads.discard)

    def session_ended(self, session: Session, abrupt: bool) -> None:
        """Unbind ``session`` and fire ``session-closed`` (once).

        Called as soon as the stream closes, not when the transport is finally gone (a TLS
        close can wait for the peer): stanzas for it must bounce or go offline meanwhile,
        not be written into a closing transport and lost.
        """
        if self.router.sessions.remove(session):
            if self.node is not None:
                self.node.unbound(session)
            result = self.hooks.fire_maybe_async("session-closed", session, abrupt)
            if type(result) is bool:  # all handlers done (the ABC checks below cost frames)
                return
            if isinstance(result, Coroutine):
                # Run now (the unavailable broadcast's storage read is usually answered
                # at once); a task only for what has to wait.
                try:
                    result = start_eagerly(result)
                except Exception:
                    log.exception("session-closed handler failed for %s", session.jid)
                    return
            if result is not None:  # what has to wait
                asyncio.ensure_future(result)

    def route_from_client(self, stanza: Element, session: Any) -> Awaitable | None:
        """A stanza from a bound local session: outbound hooks, then the router."""
        name = stanza.name
        hooks = self.hooks
        if name == "message":
            gate = hooks.message_gate
            if gate is not None:
                # The payload check once for the three chains on the way (outbound, full,
                # inbound), the sender's quiet bits here, the recipient's in the router;
                # a message that fails either is checked chain by chain as before
                need, need_to, payloads, encoded = gate
                if (not need or hooks.quiet.get(session.bare, 0) & need == need) and \
                        not (payloads and stanza.carries(payloads, encoded)):
                    return self.router.route_quiet_message(stanza, session, need_to)
            event = "message/outbound"
        else:
            event = "presence/outbound" if name == "presence" else "iq/outbound"
        if not hooks.idle(event, stanza, session.bare):
            result = hooks.fire_maybe_async(event, stanza, session)
            if result is True:
                return None
            if result is not False:
                return self._route_after(result, stanza, session)
        return self.router.route(stanza, session)

    async def _route_after(self, pending: Awaitable, stanza: Element, session: Any) -> None:
        if await pending:
            return
        result = self.router.route(stanza, session)
        if result is not None:
            await result


class TLSSet:
    """The client TLS contexts of every served domain (``contexts[kind][domain]``: kind
    False for STARTTLS, True for direct TLS, "https" for the HTTP listener) and the SHA-256
    fingerprint of each domain's certificate."""

    __slots__ = ("contexts", "fingerprints", "default")

    def __init__(self, default: str) -> None:
        self.default = default  # the domain whose certificate a client without SNI gets
        self.contexts: dict[bool | str, dict[str, ssl.SSLContext]] = {
            False: {}, True: {}, "https": {}}
        self.fingerprints: dict[str, str] = {}


def build_tls(config: Config) -> TLSSet:
    """Contexts from the certificate files of ``config`` as they are now (a domain with no
    configured certificate gets its self-signed one, generated on first use)."""
    tls = TLSSet(config.domains[0])
    for domain in config.domains:
        cert = config.certificate_for(domain)
        if domain not in config.certificates:
            ensure_certificate(domain, config.data_dir)
        tls.contexts[False][domain] = server_context(cert.cert, cert.key)
        tls.contexts[True][domain] = server_context(cert.cert, cert.key, alpn=["xmpp-client"])
        if config.http:
            tls.contexts["https"][domain] = server_context(cert.cert, cert.key,
                                                           alpn=["http/1.1"])
        tls.fingerprints[domain] = certificate_fingerprint(cert.cert)
    return tls


def _redact(url: str) -> str:
    """Hide a password in a storage URL before logging it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
