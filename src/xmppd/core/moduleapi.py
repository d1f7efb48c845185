"""The handle a feature module gets: everything it adds goes through it, so that unloading
the module removes all of it again (the Prosody ``module:`` pattern).

A module (:class:`xmppd.core.module.Module`) sees the core only through its handle: hooks
(notify and fold), IQ handlers, disco features and identities, its own events, listeners,
timers and background tasks, services offered to other modules, per-session state and
stores.  Each registration pushes its undo; :meth:`ModuleAPI.unload` runs them in reverse.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Set
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from xmppd.core import admin
from xmppd.core.hooks import Interest
from xmppd.eager import start_eagerly
from xmppd.jid import jid_or_none
from xmppd.xml.element import Element

if TYPE_CHECKING:
    from xmppd.c2s.negotiation import ClientPolicy
    from xmppd.core.config import Config, Limits, Listener
    from xmppd.core.router import Router
    from xmppd.core.session import Session
    from xmppd.metrics.collector import ServerMetrics
    from xmppd.server import Server
    from xmppd.transport.connections import AuthThrottle, Connections
    from xmppd.transport.http import Handler

STORE_KINDS = ("keyvalue", "archive")


class ModuleAPI:
    """One loaded module's connection to the core."""

    def __init__(
        self, core: Server, name: str, slot: int | None = None,
        options: Mapping[str, Any] | None = None,
        new_slot: Callable[[], int] | None = None,
    ) -> None:
        self._core = core
        self.name = name
        # This module's index into each session's state list, given on first use: only the
        # few modules that keep per-session state take one, so the lists stay short.
        self.slot = slot
        self._new_slot = new_slot
        self.log = logging.getLogger(f"xmppd.modules.{name}")
        #: The module's validated options, defaults filled in (read-only).
        self.options: Mapping[str, Any] = MappingProxyType(dict(options or {}))
        self._undo: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Future] = set()
        self._stores: dict[str, Any] = {}
        self._uses_state = False
        self._quiet_bit = 0  # this module's quiet marks (ModuleAPI.quiet), once it has any

    # -- the core, narrowly ------------------------------------------------------------------

    @property
    def router(self) -> Router:
        """Sessions (``router.sessions``), ``deliver``, ``route`` and ``bounce``."""
        return self._core.router

    @property
    def storage(self) -> Any:
        """The server's storage (accounts and credentials; module data: :meth:`open_store`)."""
        return self._core.storage

    @property
    def hosts(self) -> Set[str]:
        """The domains this server serves (read-only; a reload changes it in place: hook
        ``hosts-changed`` for what was built per domain)."""
        return self._core.router.hosts

    def set_options(self, options: Mapping[str, Any]) -> None:
        """Replace the module's options (the manager, at a live reload)."""
        self.options = MappingProxyType(dict(options))

    @property
    def domains(self) -> tuple[str, ...]:
        """The served domains in config order (the first is the default)."""
        return self._core.config.domains

    @property
    def limits(self) -> Limits:
        return self._core.config.limits

    @property
    def components(self) -> Mapping[str, str]:
        """Configured external components: name -> shared secret (``[components]``)."""
        return MappingProxyType(self._core.config.components)

    def listeners(self, kind: str) -> tuple[Listener, ...]:
        """The configured listeners of ``kind``: "s2s" or "component"."""
        cfg = self._core.config
        return {"s2s": cfg.s2s, "component": cfg.component_listeners}[kind]

    @property
    def config(self) -> Config:
        """The server configuration (frozen): for modules that read sections of their own,
        such as ``[s2s]``."""
        return self._core.config

    @property
    def secret(self) -> bytes:
        """The server's persistent secret (e.g. for dialback keys)."""
        return self._core.secret

    @property
    def connections(self) -> Connections:
        """The connection accounting (per-address caps) that listener streams join."""
        return self._core.connections

    @property
    def auth_throttle(self) -> AuthThrottle:
        """Failed authentications per address (a listener's streams report failures)."""
        return self._core.auth_throttle

    def is_admin(self, jid: Any) -> bool:
        """``jid`` (any form; a string or a JID) is one of the configured ``admins``."""
        bare = getattr(jid, "bare", None)
        if bare is None:
            parsed = jid_or_none(str(jid))
            if parsed is None:
                return False
            bare = parsed.bare
        return str(bare) in self._core.config.admins

    # -- administration (the same paths as the ``xmppd`` command's) -----------------------------

    async def delete_account(self, jid: Any) -> None:
        """Delete a local account and all its data, as ``xmppd deluser`` does (its sessions
        end, ``account-deleting`` fires); :class:`xmppd.core.admin.AccountError` if refused."""
        core = self._core
        await admin.delete_account(core.router, core.hooks, core.storage, jid.bare)

    async def set_disabled(self, jid: Any, disabled: bool) -> None:
        """Disable (ending its sessions) or re-enable a local account; AccountError if none."""
        await admin.set_disabled(self._core.router, self._core.storage, jid.bare, disabled)

    def end_sessions(self, jid: Any, condition: str, text: str) -> int:
        """End ``jid``'s sessions (an account's all for a bare JID) with a stream error."""
        return admin.end_sessions(self._core.router, jid, condition, text)

    def announce(self, domain: str, body: str, subject: str | None = None) -> int:
        """A headline to every online session of ``domain``, as ``xmppd announce`` sends."""
        return admin.announce(self._core.router, domain, body, subject)

    def disco_info(self, account: bool = False) -> tuple[list[tuple[str, str, str]], set[str]]:
        """(identities, features) the server (or, with ``account``, an account) advertises."""
        core = self._core
        if account:
            return [("account", "registered", ""), *core.account_identities], core.account_features
        return core.identities, core.features

    # -- metrics --------------------------------------------------------------------------------

    def gauge(self, name: str, doc: str, read: Callable[[], Any],
              labels: tuple[str, ...] = ()) -> None:
        """Report the metric ``xmppd_<name>`` (a gauge) from ``read()`` at each scrape: a
        number, or ``{label value(s): number}`` with ``labels``; ``read`` may be a
        coroutine function (a storage count).  Removed on unload."""
        self._undo.append(self._core.metrics.add_gauge(name, doc, read, labels))

    def counter(self, name: str, doc: str, read: Callable[[], Any],
                labels: tuple[str, ...] = ()) -> None:
        """As :meth:`gauge`, for a count that only grows: ``xmppd_<name>_total``."""
        self._undo.append(self._core.metrics.add_gauge(name, doc, read, labels, counter=True))

    def count_limit(self, name: str) -> None:
        """A limit of this module fired (``name``: its config key, as in the log line)."""
        self._core.connections.limit(name)

    @property
    def metrics(self) -> ServerMetrics:
        """The server's metrics (``await metrics.render(accept)``: the exposition text)."""
        return self._core.metrics

    def send(self, stanza: Element) -> None:
        """Route a stanza generated by the server (set its ``from`` first)."""
        self._core.router.route_from_server(stanza)

    def bounce(self, stanza: Element, condition: str, text: str | None = None) -> None:
        """Answer ``stanza`` with a stanza error (nothing for errors and results)."""
        self._core.router.bounce(stanza, condition, text)

    # -- hooks and events ----------------------------------------------------------------------

    def hook(
        self, event: str, handler: Callable[..., Any], priority: int = 0, *,
        interest: Interest | None = None,
    ) -> None:
        """Run ``handler`` on ``event`` (higher ``priority`` first).  With ``interest`` the
        handler promises to do nothing outside it (no payload of it in the stanza, and,
        with ``interest.account``, an account this module declared quiet: :meth:`quiet`),
        so that the router may skip it (see :class:`~xmppd.core.hooks.Interest`)."""
        bit = self._bit() if interest is not None and interest.account else 0
        self._undo.append(self._core.hooks.hook(event, handler, priority,
                                                interest=interest, bit=bit))

    def _bit(self) -> int:
        if not self._quiet_bit:
            hooks = self._core.hooks
            bit = self._quiet_bit = hooks.new_bit()
            self._undo.append(lambda: hooks.forget_bit(bit))
        return self._quiet_bit

    def quiet(self, bare: Any, quiet: bool = True) -> None:
        """Declare that this module's ``interest=Interest(account=True)`` handlers have
        nothing to do for account ``bare`` (a bound account: the mark goes with its last
        session), or no longer.  Declare it only where that is sure, and withdraw it
        before it stops being true: a quiet account's stanzas skip those handlers."""
        if quiet and not self._core.router.sessions.count(bare):
            return
        self._core.hooks.set_quiet(bare, self._bit(), quiet)

    def quiet_without_state(self, bare: Any) -> None:
        """Account ``bare`` is quiet for this module while none of its sessions holds this
        module's state (creating the state, :meth:`state`, ends it at once)."""
        slot = self.slot
        quiet = True
        if slot is not None:
            # a loop, not all() over a generator: this runs at every bind
            for session in self._core.router.sessions.resources(bare):
                if session.get_state(slot) is not None:
                    quiet = False
                    break
        self.quiet(bare, quiet)

    def declare(self, event: str) -> None:
        """Declare an event this module fires (removed on unload unless another module
        declared it too)."""
        self._undo.append(self._core.hooks.declare(event))

    def fire(self, event: str, *args: Any) -> bool | Awaitable[bool]:
        """Notify ``event``'s handlers: True if one handled it, or an awaitable of that
        when a handler had to wait (synchronous handlers cost no coroutine)."""
        return self._core.hooks.fire_maybe_async(event, *args)

    async def fire_async(self, event: str, *args: Any) -> bool:
        """Notify ``event``'s handlers, awaiting coroutine handlers: True if one handled it."""
        return await self._core.hooks.fire(event, *args)

    def fold(self, event: str, value: Any, *args: Any) -> Any:
        """Thread ``value`` through ``event``'s handlers: the final value or
        :data:`xmppd.core.hooks.STOP`, or an awaitable of it when a handler had to wait."""
        return self._core.hooks.fold_maybe_async(event, value, *args)

    def iq_handler(
        self, type: str, ns: str, name: str, handler: Callable[..., Any], *, to: str = "host"
    ) -> None:
        """Answer IQs of ``type`` whose payload is ``{ns}name`` (``to``: "host" or "bare")."""
        self._undo.append(self._core.hooks.iq_handler(type, ns, name, handler, to=to))

    def add_feature(self, ns: str, *, account: bool = False) -> None:
        """Advertise ``ns`` in disco#info of the server (or of accounts)."""
        features = self._core.account_features if account else self._core.features
        features.add(ns)
        self._undo.append(lambda: features.discard(ns))

    def add_identity(self, category: str, type: str, name: str = "", *,
                     account: bool = False) -> None:
        """Advertise the identity in disco#info of the server (or, with ``account``, of
        every account, next to ``account/registered``)."""
        entry = (category, type, name)
        identities = self._core.account_identities if account else self._core.identities
        identities.append(entry)
        self._undo.append(lambda: identities.remove(entry))

    # -- listeners, timers, tasks -------------------------------------------------------------

    async def listen(
        self, kind: str, listener: Listener, factory: Callable[[], Any]
    ) -> list[tuple[str, int]]:
        """Open a listener whose connections ``factory`` serves; returns its addresses
        (also in the server's ``addresses[kind]``).  Closed on unload."""
        close, addresses = await self._core.listen(kind, listener, factory)
        self._undo.append(close)
        return addresses

    def add_http_route(
        self, path: str, handler: Handler, *, prefix: bool = False,
        methods: tuple[str, ...] | None = None, max_body_bytes: int | None = None,
        alt_connection: str | None = None,
    ) -> None:
        """Serve ``path`` (with ``prefix``: every path under it) on the HTTP listener with
        ``handler`` (see :mod:`xmppd.transport.http`); ``methods``: the allowed ones (else
        405; GET allows HEAD); ``max_body_bytes``: this endpoint's body limit instead of
        ``http.max_body_bytes``; ``alt_connection``: the XEP-0156 link relation under which
        connection discovery announces it.  Removed on unload."""
        self._undo.append(self._core.http_routes.add(
            path, handler, prefix=prefix, methods=methods, max_body_bytes=max_body_bytes,
            alt_connection=alt_connection))

    def http_alt_connections(self) -> list[tuple[str, str]]:
        """``(link relation, path)`` of the HTTP endpoints announced for XEP-0156."""
        return self._core.http_routes.alt_connections()

    @property
    def http_external_url(self) -> str:
        """``http.external_url`` (empty: derive the public URL from each request)."""
        return self._core.config.http_external_url

    def addresses(self, kind: str) -> list[tuple[str, int]]:
        """The bound ``(host, port)`` of the listeners of ``kind`` ("c2s", "http",
        "http-tls", ...): empty until the server listens."""
        return list(self._core.addresses.get(kind, ()))

    @property
    def client_policy(self) -> ClientPolicy | None:
        """What client transports need of the server (for a module that carries client
        streams over another transport, such as WebSocket); None until the server
        listens; a reload replaces it for new connections)."""
        return self._core.policy

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        """Run ``fn(*args)`` in ``delay`` seconds, unless the module unloads first."""
        handle = asyncio.get_running_loop().call_later(delay, fn, *args)
        self._undo.append(handle.cancel)
        return handle

    def every(self, interval: float, fn: Callable[[], Any]) -> Callable[[], None]:
        """Run ``fn()`` every ``interval`` seconds (a coroutine function runs as a task)
        until the returned function is called or the module unloads."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal handle
            handle = loop.call_later(interval, tick)
            result = fn()
            if isinstance(result, Coroutine):
                self.spawn(result)

        def cancel() -> None:
            if handle is not None:
                handle.cancel()

        handle = loop.call_later(interval, tick)
        self._undo.append(cancel)
        return cancel

    def spawn(self, coro: Coroutine[Any, Any, Any], *, eager: bool = True) -> None:
        """Run ``coro`` in the background, cancelled on unload.  ``eager``: run it now, up
        to its first real suspension, and make a task only of the rest (most storage reads
        are answered at once: no task then); else it starts in a task, later."""
        rest: Awaitable[Any] | None = coro
        if eager:
            try:
                rest = start_eagerly(coro)
            except Exception:
                self.log.exception("background work failed")
                return
        if rest is None:
            return
        task = asyncio.ensure_future(rest)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background work failed", exc_info=task.exception())

    # -- per-session state ---------------------------------------------------------------------

    def state(self, session: Session, factory: Callable[[], Any]) -> Any:
        """This module's state on ``session``, created with ``factory()`` on first use;
        cleared from every session when the module unloads."""
        slot = self.slot
        if slot is None:
            slot = self.slot = self._new_slot() if self._new_slot is not None else 0
        value = session.get_state(slot)
        if value is None:
            value = factory()
            session.set_state(slot, value)
            self._uses_state = True
            if self._quiet_bit:  # the account is no longer quiet for this module
                self._core.hooks.set_quiet(session.bare, self._quiet_bit, False)
        return value

    def share(self, session: Session, value: Any) -> None:
        """Publish this module's fact about a local ``session`` (None, a bool, an int, a
        str or an Element; None withdraws it) to the other workers, which mirror it into
        the state of their remote copy of the session (:meth:`on_mirror`).  Costs nothing
        with one worker."""
        hooks = self._core.hooks
        if hooks.has("session-share"):
            hooks.fire_sync("session-share", session, self.name, value)

    def on_mirror(self, fn: Callable[[Session, Any], None]) -> None:
        """Run ``fn(remote_session, value)`` when another worker shares this module's fact
        about one of its sessions (set the module's state of the remote session from it)."""
        name = self.name

        def mirror(session: Session, module: str, value: Any) -> None:
            if module == name:
                fn(session, value)

        self.hook("session-mirror", mirror)

    # -- worker processes (xmppd run --workers N) and cluster nodes ---------------------------

    @property
    def workers(self) -> tuple[int, int]:
        """(this worker's number, how many workers): (0, 1) in a single process."""
        worker = self._core.worker
        return (0, 1) if worker is None else (worker[0], worker[1])

    @property
    def clustered(self) -> bool:
        """Whether other processes serve the same domains (workers, or cluster nodes)."""
        return self._core.worker is not None or bool(self._core.config.cluster_redis)

    @property
    def peer(self) -> int | None:
        """This process's id among its peers, as :meth:`owner_worker` names owners: the
        worker number, or the cluster node's epoch (None until the node has joined; a
        node declared dead while cut off takes a new one); 0 in a single process."""
        node = self._core.node
        if node is not None:
            return node.me
        return None if self._core.config.cluster_redis else self.workers[0]

    @property
    def peers(self) -> tuple[int, ...]:
        """The other live processes' ids (workers, or cluster node epochs)."""
        node = self._core.node
        return () if node is None else tuple(node.links)

    def owner_worker(self, key: str) -> int | None:
        """The peer that owns ``key`` (a room service, a PubSub service, a PEP owner), the
        same answer in every process: with workers, a stable hash of ``key`` over them;
        across cluster nodes, the oldest live node (it moves only when that node is gone:
        the core event ``owners-changed`` says when to look again).  None while a cluster
        node has not joined yet."""
        node = self._core.node
        if node is not None:
            return node.owner_of(key)
        if self._core.config.cluster_redis:
            return None
        count = self.workers[1]
        return 0 if count == 1 else zlib.crc32(key.encode()) % count

    def forward(self, worker: int, stanza: Element) -> None:
        """Hand ``stanza`` as it is (its ``from`` kept) to peer ``worker``, which routes it
        again (with the sender's session as origin when it knows it); a peer that is gone
        meanwhile: routed again here."""
        self._core.node.forward(worker, stanza)

    async def changed(self, owner: str, key: str = "") -> None:
        """Tell the other workers that this module's stored data of ``owner`` (``key``)
        changed, so they drop what they cached of it (:meth:`on_changed`); returns once
        every worker that is up has done so.  Costs nothing with one worker."""
        node = self._core.node
        if node is not None:
            await node.changed(self.name, owner, key)

    def on_changed(self, fn: Callable[[str, str], Any]) -> None:
        """Run ``fn(owner, key)`` when another worker changed this module's stored data
        (:meth:`changed`): drop the cached copy, or return an awaitable that refreshes it
        (the change is acknowledged to its writer once that is done)."""
        name = self.name

        def changed(module: str, owner: str, key: str) -> Any:
            return fn(owner, key) if module == name else None

        self.hook("data-changed", changed)

    # -- handing sessions over to another worker or node ---------------------------------------

    def peer_up(self, peer: int) -> bool:
        """Is ``peer`` (a worker number, or a cluster node's epoch: a remote session's
        ``worker``) another live worker or node?  False in a single process."""
        node = self._core.node
        return node is not None and node.peer_up(peer)

    def ask(self, peer: int, name: str, args: dict[str, Any], timeout: float,
            on_reply: Callable[[Any, bool], None]) -> None:
        """Ask this module on ``peer`` (its :meth:`on_ask` handler for ``name``; ``args``
        JSON-able).  ``on_reply(answer, late)`` runs once with the answer, or with None
        when the peer is not up or did not answer within ``timeout`` seconds; an answer
        after that comes with ``late=True``.  The answer is handled before anything the
        peer sent after it."""
        node = self._core.node
        if node is None:
            asyncio.get_running_loop().call_soon(on_reply, None, False)
            return
        node.requests.ask(peer, self.name, name, args, timeout, on_reply)

    def on_ask(self, name: str, fn: Callable[[int, dict[str, Any]], Any]) -> None:
        """Answer :meth:`ask` ``name`` of this module on another worker or node:
        ``fn(peer, args)`` returns the JSON-able answer, or an awaitable of it."""
        module = self.name

        def answer(value: Any, peer: int, to: str, what: str, args: dict[str, Any]) -> Any:
            return fn(peer, args) if to == module and what == name else value

        self.hook("cluster-request", answer)

    def hand_over(self, session: Session, peer: int) -> int:
        """``session``'s state was sent to ``peer``, which takes it over: it leaves this
        process quietly (no ``session-closed``) once the peer's bind arrives, and what
        reaches it meanwhile is forwarded there.  Returns its bind stamp (for
        :meth:`adopt_session` on the peer)."""
        return self._core.node.hand_over(session, peer)

    def adopt_session(self, jid: Any, transport: Any, after: int, source: int) -> Session:
        """Bind a session taken over from ``source``, another worker or node (its stamp
        there: ``after``), announced like a bind; what it displaces there is not kicked.
        Stanzas ``source`` still forwards to it come before newer ones."""
        return self._core.adopt_session(jid, transport, after, source)

    def export_session(self, session: Session) -> dict[str, Any]:
        """Every module's state of ``session`` (:meth:`on_handover`), JSON-able."""
        return self._core.hooks.fold_sync("session-export", {}, session)

    def import_session(self, session: Session, states: dict[str, Any]) -> None:
        """Give every module its piece of an adopted session's state."""
        self._core.hooks.fire_sync("session-import", session, states)

    def on_handover(self, export: Callable[[Session], Any],
                    restore: Callable[[Session, Any], None]) -> None:
        """Carry this module's state of a session that moves to another worker or node:
        ``export(session)`` returns it JSON-able (None: nothing to carry) on the old
        side, ``restore(session, value)`` sets it on the new one (share it again there)."""
        name = self.name

        def exported(states: dict[str, Any], session: Session) -> dict[str, Any]:
            value = export(session)
            if value is not None:
                states[name] = value
            return states

        def imported(session: Session, states: dict[str, Any]) -> None:
            value = states.get(name)
            if value is not None:
                restore(session, value)

        self.hook("session-export", exported)
        self.hook("session-import", imported)

    def peek_state(self, session: Session) -> Any:
        """This module's state on ``session``, or None (nothing is created)."""
        slot = self.slot
        return None if slot is None else session.get_state(slot)

    def drop_state(self, session: Session) -> None:
        if self.slot is not None:
            session.set_state(self.slot, None)

    def set_state(self, session: Session, value: Any) -> None:
        """Replace this module's state on ``session``, made before by :meth:`state` (a
        module whose state changes form: a shared marker, then an object of its own)."""
        if self.slot is None:
            raise RuntimeError("set_state before state(): no state slot yet")
        session.set_state(self.slot, value)

    # -- services and stores -------------------------------------------------------------------

    def provide(self, name: str, service: Any) -> None:
        """Offer ``service`` to other modules under ``name`` (withdrawn on unload)."""
        services = self._core.services
        if name in services:
            raise KeyError(f"service {name!r} is provided already")
        services[name] = service
        self._undo.append(lambda: services.pop(name, None))

    def service(self, name: str) -> Any:
        """The service another module provides under ``name``, or None."""
        return self._core.services.get(name)

    def open_store(self, kind: str = "keyvalue") -> Any:
        """This module's own store of ``kind`` ("keyvalue" or "archive"), in the configured
        backend under the module's name."""
        if kind not in STORE_KINDS:
            raise ValueError(f"unknown store kind {kind!r} (one of {', '.join(STORE_KINDS)})")
        store = self._stores.get(kind)
        if store is None:
            store = self._stores[kind] = self._core.storage.open_store(self.name, kind)
        return store

    @property
    def stores(self) -> Mapping[str, Any]:
        """The stores this module opened, by kind."""
        return MappingProxyType(self._stores)

    # -- unloading -----------------------------------------------------------------------------

    def on_unload(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on unload (before what was registered earlier is undone)."""
        self._undo.append(fn)

    def unload(self) -> None:
        """Undo every registration, newest first; cancel tasks; clear session state."""
        while self._undo:
            try:
                self._undo.pop()()
            except Exception:  # one failing undo must not leave the rest in place
                self.log.exception("unloading %s", self.name)
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._stores.clear()
        self._quiet_bit = 0
        if self._uses_state:
            for session in self._core.router.sessions.all():
                if session.get_state(self.slot) is not None:
                    session.set_state(self.slot, None)
            self._uses_state = False
