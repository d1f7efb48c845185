"""The registry through which modules plug into the core.

The core fires named events; modules hook them with a priority (higher runs first).  Event
names are declared up front and hooking an undeclared name is an error, so a typo cannot
silently never fire.  Two kinds of event (as in ejabberd):

- *notify* (:meth:`Hooks.fire`, :meth:`Hooks.fire_sync`, :meth:`Hooks.fire_maybe_async`):
  every handler sees the arguments; one that returns ``True`` (or a coroutine resolving to
  ``True``) stops the event: it was handled.
- *fold* (:meth:`Hooks.fold`, :meth:`Hooks.fold_sync`, :meth:`Hooks.fold_maybe_async`): a
  value is threaded through the handlers, ``handler(value, *args)``; each returns the new
  value, or :data:`STOP` to end the chain (the fold then returns :data:`STOP`).

Handlers may be plain functions or coroutines; the ``maybe_async`` variants run them
synchronously until one returns an awaitable, so the common all-synchronous case costs no
coroutine or task.

A handler on a stanza event may declare its :class:`Interest`: which payloads (namespaces of
the stanza's direct children) make it act, and whether it acts for any account its module has
not declared *quiet* (:meth:`Hooks.set_quiet`).  When every handler of an event declared one
and none applies, :meth:`Hooks.idle` says so and the router skips the chain: the common
message (no payload a module cares about, between accounts with no block list, no carbons,
no inactive client) is delivered without running a line of module code.

IQ payload handlers are kept apart, keyed by (type, namespace, element name), the way
Prosody's ``iq-get/host/<xmlns>:<name>`` events work but without building names from strings.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[..., Any]


class _Stop:
    __slots__ = ()

    def __repr__(self) -> str:
        return "STOP"


#: Returned by a fold handler to end the chain; the fold then returns it too.
STOP: Any = _Stop()


@dataclass(frozen=True)
class Interest:
    """When a stanza-event handler can act (:meth:`Hooks.hook`): only for a stanza with a
    direct child in one of ``payloads``, or, with ``account``, for a stanza whose account
    (the sender's on ``*/outbound`` events, the recipient's on ``message/full`` and
    ``stanza/inbound``) its module has not declared quiet.  Otherwise the handler must be a
    no-op (return False, change nothing): the router may then not call it at all."""

    payloads: frozenset[str] = frozenset()
    account: bool = False

    def __init__(self, payloads: Iterable[str] = (), account: bool = False) -> None:
        object.__setattr__(self, "payloads", frozenset(payloads))
        object.__setattr__(self, "account", account)


#: What the router checks before firing an event all of whose handlers declared an
#: interest: the quiet bits every account must carry, the payload namespaces (and their
#: UTF-8 bytes, for the raw content check).
Gate = tuple[int, frozenset[str], tuple[bytes, ...]]

#: The gates of the three events on a message's way from a client to a local full JID in
#: one: the sender's quiet bits (``message/outbound``), the recipient's (``message/full``
#: and ``stanza/inbound``), then the union of their payloads (as in :data:`Gate`).  A
#: message that meets none of it would be skipped by each of the three :meth:`Hooks.idle`
#: checks; one that meets some of it is checked event by event.
MessageGate = tuple[int, int, frozenset[str], tuple[bytes, ...]]

#: The events folded into :attr:`Hooks.message_gate`.
MESSAGE_EVENTS = ("message/outbound", "message/full", "stanza/inbound")

#: Events the core fires, with the arguments each receives.
CORE_EVENTS = {
    "server-started": "(server)",
    "server-stopping": "(server)",
    "server-draining": "(server) -- a drain began (xmppd.drain): the listeners are closed, "
    "the clients are about to be told to reconnect elsewhere",
    "hosts-changed": "(added: tuple, removed: tuple) -- a reload changed the served domains "
    "(the sessions of removed ones are ended already)",
    "config-reloaded": "(old: Config, new: Config) -- a reload applied a new configuration "
    "(api.config is the new one): refresh what was built from the old",
    "stream-features": "(session, features: Element) -- add elements to the features "
    "(the same elements for every stream not yet bound: c2s serializes those once per set "
    "of handlers; a bound stream's, after a XEP-0386 login, are built each time)",
    "resource-bound": "(session)",
    "remote-bound": "(remote session) -- a session bound on another worker or node entered "
    "this one's replica of the session table (what a module marks quiet at resource-bound, "
    "it may mark for such an account too: messages to it then skip message/full here)",
    "session-closed": "(session, abrupt: bool)",
    "session-share": "(session, module: str, value) -- a module published a fact about a "
    "local session that other workers mirror (ModuleAPI.share)",
    "session-mirror": "(remote session, module: str, value) -- another worker published "
    "such a fact about one of its sessions (ModuleAPI.on_mirror)",
    "session-export": "(states: dict, session) -- fold: a local session is handed over to "
    "another worker or node (stream management resumed there): each module adds its "
    "JSON-able state of it under its name (ModuleAPI.on_handover)",
    "session-import": "(session, states: dict) -- a session taken over from another worker "
    "or node: each module restores its own piece (ModuleAPI.on_handover)",
    "cluster-request": "(answer, peer: int, module: str, name: str, args: dict) -- fold: "
    "another worker or node asks a module (ModuleAPI.on_ask); the answer (JSON-able)",
    "data-changed": "(module: str, owner: str, key: str) -- another worker changed the "
    "module's stored data (ModuleAPI.changed): drop cached copies",
    "worker-gone": "(worker: int, sessions: list) -- another worker ended; its sessions "
    "have left the table (fired in every surviving worker)",
    "owners-changed": "() -- cluster membership changed so that ModuleAPI.owner_worker "
    "may answer differently (an older node appeared, or this node took a new epoch; a "
    "node gone is worker-gone, then this)",
    "account-deleting": "(bare JID) -- sessions ended, data not yet deleted: clean up",
    "message/bare": "(stanza, origin) -- message to a local bare JID; unhandled: bounced",
    "message/full": "(stanza, origin, target_session)",
    "message/host": "(stanza, origin) -- message to the server itself",
    "presence/bare": "(stanza, origin) -- presence to a local bare JID",
    "presence/full": "(stanza, origin, target_session or None)",
    "presence/host": "(stanza, origin) -- presence to the server (incl. broadcasts)",
    "presence/outbound": "(stanza, origin) -- presence from a local client, before routing",
    "iq/bare": "(stanza, origin) -- iq to a local bare JID, no payload handler took it",
    "iq/response": "(stanza, origin) -- iq result/error to the server or a bare JID",
    "message/outbound": "(stanza, origin) -- message from a local client, before routing",
    "iq/outbound": "(stanza, origin) -- iq from a local client, before routing",
    "route/remote": "(stanza, origin) -- stanza for a non-local domain",
    "stanza/inbound": "(stanza, origin) -- stanza about to be delivered to a local session",
    "stream/element": "(stream, element) -- a non-stanza element on an authenticated client "
    "stream (XEP-0198, XEP-0352...); True if handled, else unsupported-stanza-type",
    "disco-info/host": "(features: set, identities: list) -- add server features",
    "disco-info/account": "(features: set, identities: list) -- add account features",
}


class Hooks:
    """Named events with prioritised handlers, plus the IQ payload handler table."""

    def __init__(self) -> None:
        self._events: dict[str, list[tuple[int, int, Handler]]] = {n: [] for n in CORE_EVENTS}
        self._iq: dict[tuple[str, str, str, str], Handler] = {}
        self._declared: dict[str, int] = {}  # module event -> how many modules declared it
        self._seq = 0
        #: (interest, quiet bit) of handlers that declared one, by their entry's sequence
        #: number (not the entry: a handler need not be hashable)
        self._interests: dict[int, tuple[Interest, int]] = {}
        #: event -> (its handler list, handler_key's answer for it); dropped whenever the
        #: list changes (_regate), so that a login does not build the tuple again
        self._keys: dict[str, tuple[list, tuple[Handler, ...]]] = {}
        #: event -> its gate, for events whose handlers all declared an interest
        self._gates: dict[str, Gate] = {n: (0, frozenset(), ()) for n in CORE_EVENTS}
        #: bare JID -> the quiet bits of the modules that declared the account quiet (only
        #: bound accounts: the session table drops the entry with the account's last session)
        self.quiet: dict[Any, int] = {}
        self._bits = 0
        #: the three gates a message from a local client to a local full JID passes
        #: (``message/outbound``, ``message/full``, ``stanza/inbound``) folded into one
        #: (:meth:`_fold_message_gates`), or None when one of them has no gate
        #: the recipient's quiet bits ``message/full`` alone needs (a message to a session
        #: on another worker runs that chain here, ``stanza/inbound`` there): kept with
        #: :attr:`message_gate`, meaningful while that is not None
        self.message_full_need = 0
        self.message_gate: MessageGate | None = self._fold_message_gates()
        #: event -> how many times :meth:`idle` let it be skipped (read by tests; one
        #: increment per skip is the whole cost)
        self.skipped: defaultdict[str, int] = defaultdict(int)
        #: messages that passed :attr:`message_gate` whole (Router.route_quiet_message):
        #: a skip of each of its three events, counted once (:meth:`skips`)
        self.skipped_all = 0
        #: messages to a session on another worker or node that passed the gate of
        #: ``message/outbound`` and ``message/full`` (Router.route_quiet_message): a skip
        #: of those two, counted once (:meth:`skips`)
        self.skipped_remote = 0

    def declare(self, name: str) -> Callable[[], None]:
        """Declare an event a module fires itself; returns the undo, which removes the
        event (and whatever still hooks it) once every module that declared it undid it."""
        if name in CORE_EVENTS:
            raise KeyError(f"{name!r} is a core event")
        if name not in self._events:
            self._events[name] = []
            self._gates[name] = (0, frozenset(), ())
        self._declared[name] = self._declared.get(name, 0) + 1
        done = False

        def undeclare() -> None:
            nonlocal done
            if done:
                return
            done = True
            self._declared[name] -= 1
            if not self._declared[name]:
                del self._declared[name]
                del self._events[name]
                self._gates.pop(name, None)

        return undeclare

    def events(self) -> list[str]:
        """The names of all events (core and declared)."""
        return list(self._events)

    def handlers(self, name: str) -> list[Handler]:
        """The handlers of ``name``, in the order they run."""
        return [h for _p, _s, h in self._events.get(name, ())]

    def hook(
        self, name: str, handler: Handler, priority: int = 0, *,
        interest: Interest | None = None, bit: int = 0,
    ) -> Callable[[], None]:
        """Run ``handler`` on ``name``; returns a function that removes it again.

        With ``interest`` the handler promises to be a no-op outside it (``bit``: its
        module's quiet bit, :meth:`new_bit`, for ``interest.account``)."""
        if name not in self._events:
            raise KeyError(f"unknown event {name!r}")
        if interest is not None and interest.account and not bit:
            raise ValueError("an interest in accounts needs the module's quiet bit")
        self._seq += 1
        entry = (priority, -self._seq, handler)
        handlers = self._events[name]
        handlers.append(entry)
        handlers.sort(key=lambda e: (e[0], e[1]), reverse=True)
        if interest is not None:
            self._interests[entry[1]] = (interest, bit if interest.account else 0)
        self._regate(name)

        def unhook() -> None:
            if entry in handlers:
                handlers.remove(entry)
                self._interests.pop(entry[1], None)
                if self._events.get(name) is handlers:
                    self._regate(name)

        return unhook

    def _regate(self, name: str) -> None:
        """The gate of ``name`` from its handlers' interests (none: one handler has none)."""
        self._keys.pop(name, None)  # the handlers changed
        bits, payloads = 0, frozenset()
        for entry in self._events[name]:
            declared = self._interests.get(entry[1])
            if declared is None:
                self._gates.pop(name, None)
                if name in MESSAGE_EVENTS:
                    self.message_gate = None
                return
            bits |= declared[1]
            payloads |= declared[0].payloads
        self._gates[name] = (bits, payloads, tuple(ns.encode() for ns in sorted(payloads)))
        if name in MESSAGE_EVENTS:
            self.message_gate = self._fold_message_gates()

    def _fold_message_gates(self) -> MessageGate | None:
        gates = [self._gates.get(name) for name in MESSAGE_EVENTS]
        if None in gates:
            return None
        out, full, inbound = gates
        self.message_full_need = full[0]
        payloads = out[1] | full[1] | inbound[1]
        return (out[0], full[0] | inbound[0], payloads,
                tuple(ns.encode() for ns in sorted(payloads)))

    def handler_key(self, name: str) -> tuple[Handler, ...]:
        """The handlers of ``name`` as a hashable value: what a result that depends on
        nothing but them (the ``stream-features`` elements) can be cached under."""
        handlers = self._events.get(name, ())
        cached = self._keys.get(name)
        if cached is not None and cached[0] is handlers:
            return cached[1]
        key = tuple(h for _p, _s, h in handlers)
        if handlers:
            self._keys[name] = (handlers, key)
        return key

    def has(self, name: str) -> bool:
        return bool(self._events.get(name))

    # -- interests: skipping what cannot act ---------------------------------------------------

    def new_bit(self) -> int:
        """A quiet bit for one loaded module (never reused: a stale mark cannot apply to
        a module loaded later)."""
        self._bits += 1
        return 1 << (self._bits - 1)

    def set_quiet(self, bare: Any, bit: int, quiet: bool) -> None:
        """Declare (or no longer) that the module with ``bit`` has nothing to do for the
        stanzas of account ``bare`` beyond its declared payloads."""
        marks = self.quiet
        old = marks.get(bare, 0)
        new = old | bit if quiet else old & ~bit
        if new:
            marks[bare] = new
        elif old:
            del marks[bare]

    def forget_bit(self, bit: int) -> None:
        """A module unloaded: its quiet marks go."""
        marks = self.quiet
        for bare in [b for b, v in marks.items() if v & bit]:
            self.set_quiet(bare, bit, False)

    def idle(self, name: str, stanza: Any, bare: Any) -> bool:
        """True when no handler of ``name`` can act on ``stanza`` for account ``bare``
        (each declared an interest this does not meet): the event need not fire."""
        gate = self._gates.get(name)
        if gate is None:
            return False
        need, payloads, encoded = gate
        if need and self.quiet.get(bare, 0) & need != need:
            return False
        if payloads and stanza.carries(payloads, encoded):
            return False
        self.skipped[name] += 1
        return True

    def need(self, name: str, stanza: Any) -> int | None:
        """The quiet bits an account must carry for ``name`` to be skipped for ``stanza``,
        or None when it must fire for every account (a handler declared no interest, or
        one wants a payload the stanza carries).  :meth:`idle` in two halves, for a
        broadcast: the payload is checked once, the account per recipient."""
        gate = self._gates.get(name)
        if gate is None:
            return None
        need, payloads, encoded = gate
        if payloads and stanza.carries(payloads, encoded):
            return None
        return need

    def gate(self, name: str) -> Gate | None:
        """The gate of ``name`` (what :meth:`idle` checks), or None when one of its
        handlers declared no interest: for a caller that checks many stanzas at once."""
        return self._gates.get(name)

    def skips(self, name: str) -> int:
        """How many times the chain of ``name`` was skipped (:meth:`idle`, or with the
        other chains of :attr:`message_gate` at once)."""
        skips = self.skipped[name] + (self.skipped_all if name in MESSAGE_EVENTS else 0)
        if name == "message/outbound" or name == "message/full":
            skips += self.skipped_remote
        return skips

    def fire_sync(self, name: str, *args: Any) -> bool:
        """Fire with synchronous handlers only (a coroutine handler is scheduled, not awaited)."""
        for _prio, _seq, handler in self._events[name]:
            result = handler(*args)
            if result is None or result is False:
                continue
            if result is True:
                return True
            if inspect.isawaitable(result):
                raise TypeError(f"{name} handler {handler!r} is a coroutine; use fire()")
        return False

    async def fire(self, name: str, *args: Any) -> bool:
        for _prio, _seq, handler in self._events[name]:
            result = handler(*args)
            # None first: inspect.isawaitable(None) asks the Awaitable ABC (a Python frame)
            if result is not None and inspect.isawaitable(result):
                result = await result
            if result is True:
                return True
        return False

    def fire_maybe_async(self, name: str, *args: Any) -> bool | Awaitable[bool]:
        """Run handlers synchronously until one returns an awaitable; then finish async.

        The fast path (all handlers synchronous) costs no coroutine or task.
        """
        handlers = self._events[name]
        for i, (_prio, _seq, handler) in enumerate(handlers):
            result = handler(*args)
            # Identity checks first: inspect.isawaitable is slow on this path.
            if result is None or result is False:
                continue
            if result is True:
                return True
            if inspect.isawaitable(result):
                return self._finish(result, handlers[i + 1 :], args)
        return False

    @staticmethod
    async def _finish(pending: Awaitable, rest: list, args: tuple) -> bool:
        if await pending is True:
            return True
        for _prio, _seq, handler in rest:
            result = handler(*args)
            if result is not None and inspect.isawaitable(result):  # (None: as in fire)
                result = await result
            if result is True:
                return True
        return False

    # -- fold events -----------------------------------------------------------------------

    def fold_sync(self, name: str, value: Any, *args: Any) -> Any:
        """Thread ``value`` through synchronous handlers; the final value or :data:`STOP`."""
        for _prio, _seq, handler in self._events[name]:
            value = handler(value, *args)
            if value is STOP:
                return STOP
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()  # never awaited: no "never awaited" warning later
                raise TypeError(f"{name} handler {handler!r} is a coroutine; use fold()")
        return value

    async def fold(self, name: str, value: Any, *args: Any) -> Any:
        """Thread ``value`` through handlers that may be coroutines."""
        return await self._fold_rest(value, self._events[name], args)

    def fold_maybe_async(self, name: str, value: Any, *args: Any) -> Any:
        """Like :meth:`fold`, synchronously until a handler returns an awaitable: then an
        awaitable of the final value is returned (values themselves must not be
        awaitable)."""
        handlers = self._events[name]
        for i, (_prio, _seq, handler) in enumerate(handlers):
            value = handler(value, *args)
            if value is STOP:
                return STOP
            if inspect.isawaitable(value):
                return self._fold_rest(value, handlers[i + 1 :], args)
        return value

    @staticmethod
    async def _fold_rest(value: Any, rest: list, args: tuple) -> Any:
        if inspect.isawaitable(value):
            value = await value
        for _prio, _seq, handler in rest:
            if value is STOP:
                return STOP
            value = handler(value, *args)
            if inspect.isawaitable(value):
                value = await value
        return value

    # -- IQ payload handlers ----------------------------------------------------------------

    def iq_handler(
        self, type: str, ns: str, name: str, handler: Handler, *, to: str = "host"
    ) -> Callable[[], None]:
        """Handle IQs of ``type`` ('get'/'set') whose payload is ``{ns}name``.

        ``to`` is "host" for IQs to the server, "bare" for IQs to an account's bare JID
        (including the user's own account, when ``to`` is absent).
        """
        key = (to, type, ns, name)
        if key in self._iq:
            raise KeyError(f"an IQ handler for {key} exists already")
        self._iq[key] = handler
        return lambda: self._iq.pop(key, None)

    def find_iq_handler(self, to: str, type: str, ns: str, name: str) -> Handler | None:
        return self._iq.get((to, type, ns, name))
