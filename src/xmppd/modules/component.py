"""External components (XEP-0114): the component listener and routing to components.

Component names in the config are full domains; a name without a dot is taken as a
subdomain of the first served domain (``pubsub`` -> ``pubsub.example.org``).  The listener
opens only when components are configured: on ``[components] listen``, else on
127.0.0.1:5347.  A stanza to a configured component that is not connected bounces with
``service-unavailable``; a second connection for a connected component gets ``conflict``.
"""

from __future__ import annotations

from collections.abc import Mapping

from xmppd.component.stream import ComponentStream
from xmppd.core.config import Listener
from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element

DEFAULT_LISTENER = Listener("127.0.0.1", 5347)


def component_domains(components: Mapping[str, str], default_domain: str) -> dict[str, str]:
    """Configured component names as full domains -> their secrets (``pubsub`` ->
    ``pubsub.<default_domain>``)."""
    return {(name if "." in name else f"{name}.{default_domain}"): secret
            for name, secret in components.items()}


class Component(Module):
    """Routes stanzas for configured component domains to their connected streams."""

    name = "component"
    workers_safe = True
    stateful = True  # connected components
    xeps = ("XEP-0114",)
    soft_depends = ("s2s",)  # tells the s2s manager which domains are ours

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.secrets = component_domains(api.components, api.domains[0])
        self.connected: dict[str, ComponentStream] = {}
        if not self.secrets:
            return
        api.gauge("components_connected", "external components connected",
                  lambda: len(self.connected))
        # before the s2s handler: a component's domain is never looked up in DNS
        api.hook("route/remote", self.route, priority=10)
        manager = api.service("s2s")  # optional: s2s may be disabled
        if manager is not None:
            manager.extra_domains.update(self.secrets)
            api.on_unload(lambda: manager.extra_domains.difference_update(self.secrets))
        api.hook("server-started", self.open_listeners)

    def attach(self, stream: ComponentStream) -> bool:
        if stream.domain in self.connected:
            return False
        self.connected[stream.domain] = stream
        return True

    def detach(self, stream: ComponentStream) -> None:
        if self.connected.get(stream.domain) is stream:
            del self.connected[stream.domain]

    def route(self, stanza: Element, origin: object) -> bool:
        try:
            domain = JID(stanza.get("to", "")).domain
        except JIDError:
            return False
        if domain not in self.secrets:
            return False
        stream = self.connected.get(domain)
        if stream is None:
            self.api.bounce(stanza, "service-unavailable", f"{domain} is not connected")
        else:
            stream.send_stanza(stanza)
        return True

    async def open_listeners(self, _server: object) -> None:
        api = self.api
        for listener in api.listeners("component") or (DEFAULT_LISTENER,):
            await api.listen(
                "component", listener,
                lambda: ComponentStream(
                    api.router, api.limits, self.secrets, self.attach, self.detach,
                    connections=api.connections, throttle=api.auth_throttle,
                ),
            )
