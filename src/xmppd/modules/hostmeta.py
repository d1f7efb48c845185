"""XEP-0156 connection discovery: ``/.well-known/host-meta`` (XRD) and
``/.well-known/host-meta.json`` (JRD) on the HTTP listener.

They list every HTTP endpoint registered with an ``alt_connection`` relation (WebSocket,
BOSH), under the requested domain: the answer depends on the ``Host`` header, a domain
this server does not serve is a 404.  The URLs are built from ``http.external_url`` when
set (``{host}`` replaced by the domain), else from the request itself (its scheme, and
``Host`` with its port).  Both files allow any origin (CORS), so that web clients on other
sites can discover the endpoints.
"""

from __future__ import annotations

import json

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.transport.http import HTTPError, HTTPRequest, Response
from xmppd.xml.element import escape_attr

XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


class HostMeta(Module):
    """Answers ``host-meta`` and ``host-meta.json`` for every served domain."""

    name = "hostmeta"
    workers_safe = True
    xeps = ("XEP-0156",)

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        methods = ("GET", "OPTIONS")
        api.add_http_route("/.well-known/host-meta", self.xrd, methods=methods)
        api.add_http_route("/.well-known/host-meta.json", self.jrd, methods=methods)

    def links(self, request: HTTPRequest) -> list[tuple[str, str]]:
        """``(rel, href)`` for the requested domain (HTTPError 404 for another)."""
        host = request.host
        if host not in self.api.hosts:
            raise HTTPError(404, "not a domain served here", CORS)
        base = self.api.http_external_url
        if base:
            base = base.replace("{host}", host)
        else:
            scheme = "https" if request.secure else "http"
            base = f"{scheme}://{request.headers.get('host', host).strip()}"
        out = []
        for rel, path in self.api.http_alt_connections():
            href = base + path
            if rel.endswith(":websocket"):
                href = "ws" + href[4:]  # http -> ws, https -> wss
            out.append((rel, href))
        return out

    def xrd(self, request: HTTPRequest) -> Response:
        if request.method == "OPTIONS":
            return Response(204, headers=CORS)
        links = "".join(f"<Link rel='{escape_attr(rel)}' href='{escape_attr(href)}'/>"
                        for rel, href in self.links(request))
        body = f"<?xml version='1.0' encoding='utf-8'?><XRD xmlns='{XRD_NS}'>{links}</XRD>"
        return Response(200, body.encode(), CORS, content_type="application/xrd+xml")

    def jrd(self, request: HTTPRequest) -> Response:
        if request.method == "OPTIONS":
            return Response(204, headers=CORS)
        links = [{"rel": rel, "href": href} for rel, href in self.links(request)]
        return Response(200, json.dumps({"links": links}).encode(), CORS,
                        content_type="application/json")
