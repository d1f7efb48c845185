"""XEP-0156 connection discovery over real HTTP: host-meta (XRD) and host-meta.json (JRD),
per virtual host, with CORS."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from support import HTTPClient

from xmppd.transport.http import Response

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"


@pytest.fixture
def srv(make_server):
    return make_server(domains=("localhost", "example.net"))


def get(port: int, path: str, host: str, *, tls: bool = False, method: str = "GET",
        extra: str = "") -> tuple[int, dict[str, str], bytes]:
    c = HTTPClient(port, tls=tls, sni=host.partition(":")[0])
    c.send(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    try:
        return c.response()
    finally:
        c.close()


def test_xrd_lists_the_websocket_and_bosh_endpoints_per_host(srv):
    for host in ("localhost", "example.net"):
        status, headers, body = get(srv.https_port, "/.well-known/host-meta",
                                    f"{host}:{srv.https_port}", tls=True)
        assert status == 200 and headers["content-type"] == "application/xrd+xml"
        assert headers["access-control-allow-origin"] == "*"
        links = {link.get("rel"): link.get("href")
                 for link in ET.fromstring(body).iter(f"{XRD}Link")}
        assert links == {
            "urn:xmpp:alt-connections:websocket": f"wss://{host}:{srv.https_port}/xmpp-websocket",
            "urn:xmpp:alt-connections:xbosh": f"https://{host}:{srv.https_port}/http-bind",
        }


def test_jrd_over_plain_http(srv):
    status, headers, body = get(srv.http_port, "/.well-known/host-meta.json", "example.net")
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    links = {link["rel"]: link["href"] for link in json.loads(body)["links"]}
    assert links == {"urn:xmpp:alt-connections:websocket": "ws://example.net/xmpp-websocket",
                     "urn:xmpp:alt-connections:xbosh": "http://example.net/http-bind"}


def test_every_alt_connection_route_is_listed(srv):
    srv.server.http_routes.add("/xmpp-other", lambda r: Response(200),
                               alt_connection="urn:example:alt-connections:other")
    _, _, body = get(srv.http_port, "/.well-known/host-meta.json", "localhost")
    assert {link["rel"]: link["href"] for link in json.loads(body)["links"]} == {
        "urn:xmpp:alt-connections:websocket": "ws://localhost/xmpp-websocket",
        "urn:xmpp:alt-connections:xbosh": "http://localhost/http-bind",
        "urn:example:alt-connections:other": "http://localhost/xmpp-other",
    }


def test_unknown_host_is_404_and_preflight_is_answered(srv):
    assert get(srv.http_port, "/.well-known/host-meta", "other.example")[0] == 404
    status, headers, _ = get(srv.http_port, "/.well-known/host-meta.json", "localhost",
                             method="OPTIONS", extra="Origin: https://app.example\r\n"
                             "Access-Control-Request-Method: GET\r\n")
    assert status == 204 and headers["access-control-allow-origin"] == "*"
    assert "GET" in headers["access-control-allow-methods"]
    assert get(srv.http_port, "/.well-known/host-meta", "localhost", method="POST")[0] == 405


def test_external_url(make_server):
    srv = make_server(domains=("localhost", "example.net"),
                      http_external_url="https://xmpp.{host}:8443")
    _, _, body = get(srv.http_port, "/.well-known/host-meta.json", "example.net")
    assert json.loads(body)["links"][0]["href"] == "wss://xmpp.example.net:8443/xmpp-websocket"
