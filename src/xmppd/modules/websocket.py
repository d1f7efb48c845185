"""XMPP over WebSocket (RFC 7395) on the HTTP listener, at ``/xmpp-websocket``.

The ``xmpp`` subprotocol is required; each client then negotiates, authenticates and sends
stanzas exactly as over TCP (see :mod:`xmppd.web.stream`), with the same limits.  A plain
(``ws://``) connection counts as unencrypted, so with ``c2s.require_encryption`` it offers
no authentication, unless ``plain_is_secure`` says a TLS-terminating proxy is in front.
Connections silent for ``ping_interval_s`` get a WebSocket ping and are cut (a lost
connection: stream management can resume the session) if still silent one interval later.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.transport.http import HTTPError, HTTPRequest, Upgrade
from xmppd.web.framing import handshake, origin_allowed
from xmppd.web.stream import WebSocketC2S

PATH = "/xmpp-websocket"
ALT_CONNECTION = "urn:xmpp:alt-connections:websocket"


def _origins(value: list) -> str | None:
    for origin in value:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            return f"{origin!r} is not an origin such as \"https://example.org\""
    return None


def _uri(value: str) -> str | None:
    if value and not value.startswith(("ws://", "wss://", "http://", "https://")):
        return f"{value!r} is not a ws://, wss:// (or BOSH http(s)://) URI"
    return None


class WebSocket(Module):
    """Serves ``/xmpp-websocket`` and announces it for XEP-0156 connection discovery."""

    name = "websocket"
    workers_safe = True
    xeps = ("RFC 7395",)
    options = {
        "allowed_origins": Option(list, (), "browser origins allowed to connect (e.g. "
                                  "\"https://chat.example.org\"); empty: any (logins are SASL, "
                                  "never cookies); a listed origin is refused 403 otherwise",
                                  item=str, check=_origins),
        "see_other_uri": Option(str, "", "send every client to this endpoint instead "
                                "(<close see-other-uri/>, RFC 7395 §3.6.1); empty: serve "
                                "here", check=_uri),
        "ping_interval_s": Option(float, 30.0, "WebSocket ping to a connection silent this "
                                  "long (keeps proxies from cutting it); cut if still silent "
                                  "one interval later; 0: never", min=0, max=86400),
        "plain_is_secure": Option(bool, False, "treat ws:// on the plain HTTP listener as "
                                  "encrypted (only behind a TLS-terminating reverse proxy)"),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        opts = api.options
        self.origins = tuple(o.rstrip("/").lower() for o in opts["allowed_origins"])
        self.redirect: str = opts["see_other_uri"]
        self.plain_is_secure: bool = opts["plain_is_secure"]
        self.streams: set[WebSocketC2S] = set()
        self._policy: Any = None
        api.add_http_route(PATH, self.upgrade, alt_connection=ALT_CONNECTION)
        if opts["ping_interval_s"]:
            api.every(opts["ping_interval_s"], self.sweep)

    def policy(self) -> Any:
        """The c2s policy, without STARTTLS (TLS over WebSocket is the connection's)."""
        if self._policy is None:
            base = self.api.client_policy
            if base is None:
                raise HTTPError(503, "the server is starting")
            self._policy = dataclasses.replace(base, tls_context=None)
        return self._policy

    def upgrade(self, request: HTTPRequest) -> Upgrade:
        origin = request.headers.get("origin")
        if not origin_allowed(origin, self.origins):
            self.api.log.info("websocket: origin %s refused (modules.websocket."
                              "allowed_origins)", origin)
            raise HTTPError(403, "this origin may not connect (modules.websocket."
                            "allowed_origins)")
        headers = handshake(request.method, request.headers)
        stream = WebSocketC2S(self.policy(), secure=request.secure or self.plain_is_secure,
                              redirect=self.redirect, on_gone=self.streams.discard)
        self.streams.add(stream)
        return Upgrade(headers, stream)

    def sweep(self) -> None:
        """Ping the silent, cut those silent since the last ping."""
        for stream in list(self.streams):
            if stream.closed:
                self.streams.discard(stream)
            elif stream.ws_heard:
                stream.ws_heard = False
                stream.ws_pinged = False
            elif stream.ws_pinged:
                self.api.log.info("websocket: no answer to a ping from %s: dropping",
                                  stream.jid or stream.peer)
                stream.drop("no answer to a WebSocket ping")
            else:
                stream.ping()
