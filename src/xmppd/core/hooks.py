"""The registry through which modules plug into the core.

The core fires named events; modules hook them with a priority (higher runs first).  Event
names are declared up front and hooking an undeclared name is an error, so a typo cannot
silently never fire.  Handlers may be plain functions or coroutines; a handler that returns
``True`` (or a coroutine resolving to ``True``) stops the event: it was handled.

IQ payload handlers are kept apart, keyed by (type, namespace, element name), the way
Prosody's ``iq-get/host/<xmlns>:<name>`` events work but without building names from strings.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[..., Any]

#: Events the core fires, with the arguments each receives.
CORE_EVENTS = {
    "server-started": "(server)",
    "server-stopping": "(server)",
    "stream-features": "(session, features: Element) -- add elements to the features",
    "resource-bound": "(session)",
    "session-closed": "(session, abrupt: bool)",
    "account-deleting": "(bare JID) -- sessions ended, data not yet deleted: clean up",
    "message/bare": "(stanza, origin) -- message to a local bare JID; unhandled: bounced",
    "message/full": "(stanza, origin, target_session)",
    "message/host": "(stanza, origin) -- message to the server itself",
    "presence/bare": "(stanza, origin) -- presence to a local bare JID",
    "presence/full": "(stanza, origin, target_session or None)",
    "presence/host": "(stanza, origin) -- presence to the server (incl. broadcasts)",
    "presence/outbound": "(stanza, origin) -- presence from a local client, before routing",
    "iq/bare": "(stanza, origin) -- iq to a local bare JID, no payload handler took it",
    "message/outbound": "(stanza, origin) -- message from a local client, before routing",
    "iq/outbound": "(stanza, origin) -- iq from a local client, before routing",
    "route/remote": "(stanza, origin) -- stanza for a non-local domain",
    "stanza/inbound": "(stanza, origin) -- stanza about to be delivered to a local session",
    "disco-info/host": "(features: set, identities: list) -- add server features",
    "disco-info/account": "(features: set, identities: list) -- add account features",
}


class Hooks:
    """Named events with prioritised handlers, plus the IQ payload handler table."""

    def __init__(self) -> None:
        self._events: dict[str, list[tuple[int, int, Handler]]] = {n: [] for n in CORE_EVENTS}
        self._iq: dict[tuple[str, str, str, str], Handler] = {}
        self._seq = 0

    def declare(self, name: str) -> None:
        """Declare an event a module fires itself."""
        self._events.setdefault(name, [])

    def hook(self, name: str, handler: Handler, priority: int = 0) -> Callable[[], None]:
        """Run ``handler`` on ``name``; returns a function that removes it again."""
        if name not in self._events:
            raise KeyError(f"unknown event {name!r}")
        self._seq += 1
        entry = (priority, -self._seq, handler)
        handlers = self._events[name]
        handlers.append(entry)
        handlers.sort(key=lambda e: (e[0], e[1]), reverse=True)
        return lambda: handlers.remove(entry) if entry in handlers else None

    def has(self, name: str) -> bool:
        return bool(self._events.get(name))

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
            if inspect.isawaitable(result):
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
            if inspect.isawaitable(result):
                result = await result
            if result is True:
                return True
        return False

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
