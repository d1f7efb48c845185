"""Federation: the s2s listeners and the ``route/remote`` handler (RFC 6120, XEP-0220,
XEP-0185, XEP-0178, XEP-0368, XEP-0288).

Listeners open only for the configured ``[s2s] listen`` / ``direct_tls`` addresses (none by
default: a server does not federate inbound unless asked to); outbound federation works
whenever this module is loaded.  Direct TLS listeners are opened as plain sockets whose
streams start TLS themselves, so that they use the s2s TLS policy (client certificates,
the ``xmpp-server`` ALPN) rather than the c2s one.
"""

from __future__ import annotations

from typing import Any

from xmppd.core.config import Listener
from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.s2s.inbound import S2SInStream
from xmppd.s2s.manager import S2SManager, S2SSettings, resolver, tls_policy


def manager_for(server: Any) -> S2SManager | None:
    """The S2S manager of a running server (for tests): its ``s2s`` service."""
    return server.services.get("s2s")


class S2S(Module):
    """Outbound federation on ``route/remote``; inbound listeners once the server started.
    Provides the service ``s2s`` (the :class:`S2SManager`)."""

    name = "s2s"
    workers_safe = True
    xeps = ("XEP-0178", "XEP-0185", "XEP-0220", "XEP-0288", "XEP-0368")
    stateful = True  # federation links

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        cfg = api.config
        self.manager = manager = S2SManager(
            api.router, api.secret, S2SSettings.from_config(cfg), tls_policy(cfg), resolver(cfg),
            connections=api.connections,
        )
        api.provide("s2s", manager)
        api.gauge("s2s_links", "server-to-server links by direction and state (out: "
                  "connecting or ready; in: bidirectional inbound streams carrying ours)",
                  manager.link_states, labels=("direction", "state"))
        api.hook("route/remote", manager.route)
        api.hook("server-started", self.open_listeners)
        api.hook("server-stopping", manager.close_all)
        api.hook("config-reloaded", self.reloaded)
        api.on_unload(manager.close_all)

    def reloaded(self, _old: object, new: Any) -> None:
        """New streams use the certificates (and served domains) of the reloaded
        configuration and its limits; established ones keep theirs."""
        self.manager.tls = tls_policy(new)
        self.manager.limits = new.limits

    async def open_listeners(self, _server: object) -> None:
        for listener in self.api.listeners("s2s"):
            direct = listener.direct_tls
            await self.api.listen(
                "s2s-tls" if direct else "s2s",
                Listener(listener.host, listener.port),
                lambda direct=direct: S2SInStream(self.manager, direct_tls=direct),
            )
