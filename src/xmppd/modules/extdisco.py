"""XEP-0215 External Service Discovery: the STUN/TURN servers audio/video clients should
use, with time-limited TURN credentials.

Services are configured as a list of tables (``[[modules.extdisco.services]]``: ``type``,
``host``, optional ``port``, ``transport``, ``name``, and for a TURN server sharing a secret
with this one, ``secret``).  A service with a ``secret`` gets credentials of the TURN REST
API scheme (coturn's ``use-auth-secret``): username ``<expiry>:<bare JID>``, password
``base64(HMAC-SHA1(secret, username))``, valid ``credentials_ttl_s``; it is listed with
``restricted='1'`` and ``expires``.  Only local users are answered: credentials are a
resource of this server's users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import jid_or_none
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, reply

NS = "urn:xmpp:extdisco:2"
TYPES = ("stun", "stuns", "turn", "turns")
_KEYS = {"type", "host", "port", "transport", "name", "secret"}


def _check_services(services: tuple[Any, ...]) -> str | None:
    for i, service in enumerate(services):
        where = f"services[{i}]"
        if not isinstance(service, dict):
            return f"{where}: expected a table"
        unknown = set(service) - _KEYS
        if unknown:
            return f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_KEYS))})"
        if service.get("type") not in TYPES:
            return f"{where}.type: one of {', '.join(TYPES)}"
        if not isinstance(service.get("host"), str) or not service["host"]:
            return f"{where}.host: a host name or address is required"
        port = service.get("port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            return f"{where}.port: a port number"
        if service.get("transport", "udp") not in ("udp", "tcp"):
            return f"{where}.transport: udp or tcp"
        for key in ("name", "secret"):
            if key in service and not isinstance(service[key], str):
                return f"{where}.{key}: a string"
    return None


def turn_credentials(secret: str, user: str, expires: int) -> tuple[str, str]:
    """The TURN REST API credentials of ``user`` valid until ``expires`` (Unix time)."""
    username = f"{expires}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class ExternalServices(Module):
    """Answers ``<services/>`` and ``<credentials/>`` requests to the server."""

    name = "extdisco"
    workers_safe = True
    xeps = ("XEP-0215",)
    options = {
        "services": Option(list, (), "the STUN/TURN servers to announce: tables with type "
                           "(stun, stuns, turn, turns), host, port, transport (udp, tcp), "
                           "name, and secret (the TURN REST API shared secret)", item=dict,
                           check=_check_services),
        "credentials_ttl_s": Option(int, 86400, "how long generated TURN credentials stay "
                                    "valid", min=60, max=30 * 86400),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        api.add_feature(NS)
        api.iq_handler("get", NS, "services", self.services)
        api.iq_handler("get", NS, "credentials", self.credentials)

    def _requester(self, iq: Element) -> str:
        jid = jid_or_none(iq.get("from", ""))
        if jid is None or jid.domain not in self.api.hosts or jid.localpart is None:
            raise StanzaError("forbidden", "only local users may discover these services")
        return str(jid.bare)

    def services(self, iq: Element, origin: object, payload: Element) -> Element:
        user = self._requester(iq)
        wanted = payload.get("type")
        out = reply(iq)
        answer = out.subelement("services", NS)
        if wanted:
            answer.set("type", wanted)
        for service in self.api.options["services"]:
            if wanted and service["type"] != wanted:
                continue
            answer.append(self._service(service, user))
        return out

    def credentials(self, iq: Element, origin: object, payload: Element) -> Element:
        user = self._requester(iq)
        asked = payload.find("service", NS)
        if asked is None or not asked.get("host"):
            raise StanzaError("bad-request", "name the service: <service host='...'/>")
        out = reply(iq)
        answer = out.subelement("credentials", NS)
        for service in self.api.options["services"]:
            if service["host"] != asked.get("host"):
                continue
            if asked.get("type") and service["type"] != asked.get("type"):
                continue
            if asked.get("port") and str(service.get("port", "")) != asked.get("port"):
                continue
            answer.append(self._service(service, user))
        if not answer.children:
            raise StanzaError("item-not-found", "no such service")
        return out

    def _service(self, service: dict[str, Any], user: str) -> Element:
        attrs = {"type": service["type"], "host": service["host"]}
        if service.get("port"):
            attrs["port"] = str(service["port"])
        if "transport" in service or service["type"] in ("turn", "stun"):
            attrs["transport"] = service.get("transport", "udp")
        if service.get("name"):
            attrs["name"] = service["name"]
        secret = service.get("secret")
        if secret:
            expires = int(time.time()) + self.api.options["credentials_ttl_s"]
            username, password = turn_credentials(secret, user, expires)
            attrs.update(restricted="1", username=username, password=password,
                         expires=datetime.fromtimestamp(expires, UTC).strftime(
                             "%Y-%m-%dT%H:%M:%SZ"))
        return Element("service", NS, attrs, [])
