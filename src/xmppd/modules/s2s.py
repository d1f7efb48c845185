"""Federation: the s2s listeners and the ``route/remote`` handler (RFC 6120, XEP-0220,
XEP-0185, XEP-0178, XEP-0368).

Listeners open only for the configured ``[s2s] listen`` / ``direct_tls`` addresses (none by
default: a server does not federate inbound unless asked to); outbound federation works
whenever this module is loaded.  Direct TLS listeners are opened as plain sockets whose
streams start TLS themselves, so that they use the s2s TLS policy (client certificates,
the ``xmpp-server`` ALPN) rather than the c2s one.
"""

from __future__ import annotations

import weakref

from xmppd.core.config import Listener
from xmppd.core.moduleapi import ModuleAPI
from xmppd.s2s.streams import S2SInStream, S2SManager

NAME = "s2s"
XEPS = ("XEP-0178", "XEP-0185", "XEP-0220", "XEP-0368")

_managers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def manager_for(server: object) -> S2SManager | None:
    """The S2S manager of a running server (for the component module and tests)."""
    return _managers.get(server)


def load(api: ModuleAPI) -> None:
    manager = S2SManager(api.server)
    _managers[api.server] = manager
    api.hook("route/remote", manager.route)

    async def open_listeners(_server: object) -> None:
        for listener in api.server.config.s2s:
            direct = listener.direct_tls
            await api.listen(
                "s2s-tls" if direct else "s2s",
                Listener(listener.host, listener.port),
                lambda direct=direct: S2SInStream(manager, direct_tls=direct),
            )

    api.hook("server-started", open_listeners)
    api.hook("server-stopping", manager.close_all)
    api.on_unload(manager.close_all)
