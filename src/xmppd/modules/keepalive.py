"""Keepalive and dead-peer detection: XEP-0199 pings from the server to silent clients.

One timer for the whole server, not one per connection: every ``interval_s`` a sweep goes
over the bound sessions.  A connection that received something since the last sweep is
alive (the stream sets a flag on every read: no clock read, no per-stanza work); one that
stayed silent for a whole interval gets ``<iq type='get'><ping xmlns='urn:xmpp:ping'/>``
(through ``session.send``, so stream management counts it).  If it still has received
nothing ``timeout_s`` later, the connection is cut as a dead peer: without a closing
handshake, so a session with stream management (XEP-0198) is detached and can be resumed,
and any other session ends as on a lost connection.  Silence is thus noticed between one
and two intervals after the last byte.
"""

from __future__ import annotations

import asyncio
from itertools import count
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS

PING_NS = "urn:xmpp:ping"


class Keepalive(Module):
    """Pings clients that went silent, and cuts those that do not answer."""

    name = "keepalive"
    workers_safe = True
    stateful = True  # pings awaiting an answer
    xeps = ("XEP-0199",)
    options = {
        "interval_s": Option(float, 300.0, "ping a client silent for this long; 0: never",
                             min=0, max=86400),
        "timeout_s": Option(float, 60.0, "cut a pinged client that sent nothing for this "
                            "long (its session is detached if it uses stream management)",
                            min=0.01, max=3600),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.timeout: float = api.options["timeout_s"]
        self.ids = count(1)
        self.checks: set[asyncio.TimerHandle] = set()
        self.waiting: set[Any] = set()  # pinged sessions whose answer is awaited
        api.on_unload(self._unloaded)
        self.stop_sweeps: Any = None
        self._schedule()

    def _schedule(self) -> None:
        if self.stop_sweeps is not None:
            self.stop_sweeps()
        interval = self.api.options["interval_s"]
        self.stop_sweeps = self.api.every(interval, self.sweep) if interval else None

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        """Pings sent from now on use the new timeout; a new interval starts now."""
        self.timeout = api.options["timeout_s"]
        if api.options["interval_s"] != old["interval_s"]:
            self._schedule()
        return True

    def sweep(self) -> None:
        pinged = []
        waiting = self.waiting
        for session in self.api.router.sessions.all():
            if session in waiting:
                continue  # its check clears the flag's meaning, not this sweep
            transport = session.transport
            heard = getattr(transport, "heard", None)
            if heard is None or transport.closed:
                continue  # detached (stream management), or not a connection
            if heard:
                transport.heard = False
                continue
            jid = session.jid
            session.send(Element("iq", CLIENT_NS, {
                "type": "get", "id": f"keepalive-{next(self.ids)}", "from": jid.domain,
                "to": jid.full}, [Element("ping", PING_NS, {}, [])]))
            pinged.append(session)
        if pinged:
            waiting.update(pinged)
            handle = asyncio.get_running_loop().call_later(self.timeout, self.check, pinged)
            self.checks.add(handle)

    def check(self, pinged: list[Any]) -> None:
        now = asyncio.get_running_loop().time()
        self.checks = {h for h in self.checks if h.when() > now}
        self.waiting.difference_update(pinged)
        for session in pinged:
            transport = session.transport
            if getattr(transport, "heard", None) is False and not transport.closed:
                self.api.log.info("keepalive: no answer from %s within %gs: dropping",
                                  session.jid, self.timeout)
                transport.drop("no answer to a keepalive ping")

    def _unloaded(self) -> None:
        for handle in self.checks:
            handle.cancel()
        self.checks.clear()
        self.waiting.clear()
