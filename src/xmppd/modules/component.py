"""External components (XEP-0114): the component listener and routing to components.

Component names in the config are full domains; a name without a dot is taken as a
subdomain of the first served domain (``pubsub`` -> ``pubsub.example.org``).  The listener
opens only when components are configured: on ``[components] listen``, else on
127.0.0.1:5347.  A stanza to a configured component that is not connected bounces with
``service-unavailable``; a second connection for a connected component gets ``conflict``.
"""

from __future__ import annotations

from xmppd.component.stream import ComponentStream
from xmppd.core.config import Listener
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element

NAME = "component"
XEPS = ("XEP-0114",)
DEFAULT_LISTENER = Listener("127.0.0.1", 5347)


def load(api: ModuleAPI) -> None:
    cfg = api.server.config
    secrets = {
        (name if "." in name else f"{name}.{cfg.domains[0]}"): secret
        for name, secret in cfg.components.items()
    }
    if not secrets:
        return
    connected: dict[str, ComponentStream] = {}

    def attach(stream: ComponentStream) -> bool:
        if stream.domain in connected:
            return False
        connected[stream.domain] = stream
        return True

    def detach(stream: ComponentStream) -> None:
        if connected.get(stream.domain) is stream:
            del connected[stream.domain]

    def route(stanza: Element, origin: object) -> bool:
        try:
            domain = JID(stanza.get("to", "")).domain
        except JIDError:
            return False
        if domain not in secrets:
            return False
        stream = connected.get(domain)
        if stream is None:
            api.router.bounce(stanza, "service-unavailable", f"{domain} is not connected")
        else:
            stream.send_stanza(stanza)
        return True

    # before the s2s handler: a component's domain is never looked up in DNS
    api.hook("route/remote", route, priority=10)

    from xmppd.modules.s2s import manager_for  # optional: s2s may be disabled

    manager = manager_for(api.server)
    if manager is not None:
        manager.extra_domains.update(secrets)
        api.on_unload(lambda: manager.extra_domains.difference_update(secrets))

    async def open_listeners(_server: object) -> None:
        for listener in cfg.component_listeners or (DEFAULT_LISTENER,):
            await api.listen(
                "component", listener,
                lambda: ComponentStream(api.server, secrets, attach, detach),
            )

    api.hook("server-started", open_listeners)
