"""HTTP-borne modules across ``xmppd run --workers 2``: with BOSH enabled only worker 0
binds the HTTP listener (a BOSH session's requests come on several connections), and a
BOSH user talks to a TCP user on worker 1; an upload slot asked for on worker 1 names the
HTTP listener and its PUT and GET are served (by worker 0)."""

from __future__ import annotations

import base64
import http.client
import re
from html import unescape

import pytest
from test_workers import MODULES, PASSWORD, Cluster, available

BOSH = "http://jabber.org/protocol/httpbind"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, MODULES + ["bosh", "upload"], http=True)
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


class Bosh:
    """A minimal BOSH client: one HTTP connection per request."""

    def __init__(self, port: int) -> None:
        self.port, self.rid, self.sid = port, 1000, ""

    def request(self, inner: str = "", **attrs: str) -> str:
        self.rid += 1
        extra = "".join(f" {k.replace('__', ':')}='{v}'" for k, v in attrs.items())
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = (f"<body xmlns='{BOSH}' xmlns:xmpp='urn:xmpp:xbosh' rid='{self.rid}'{sid}"
                f"{extra}>{inner}</body>")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/http-bind", body=body.encode(),
                         headers={"Content-Type": "text/xml; charset=utf-8"})
            resp = conn.getresponse()
            assert resp.status == 200, resp.status
            return resp.read().decode()
        finally:
            conn.close()

    def login(self, user: str) -> None:
        created = self.request(to="localhost", wait="5", hold="1", ver="1.6",
                               xmpp__version="1.0")
        self.sid = re.search(r"sid=.([^'\"]+)", created).group(1)
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        assert "success" in self.request(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        self.request(xmpp__restart="true")
        bound = self.request("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns="
                             "'urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource>"
                             "</bind></iq>")
        assert f"{user}@localhost/web" in bound, bound


def test_bosh_on_worker_0_and_uploads_from_any_worker(cluster):
    bob = cluster.client("bob", 1, "b1")
    available(bob)
    alice = Bosh(cluster.http_port)
    alice.login("alice")  # several connections, all to worker 0: the only one listening
    assert cluster.where("alice@localhost/web") == 0
    alice.request("<message xmlns='jabber:client' to='bob@localhost/b1' type='chat'>"
                  "<body>over bosh</body></message>")
    assert "over bosh" in bob.read_until("</message>")
    bob.send("<message to='alice@localhost/web' type='chat'><body>to the web</body></message>")
    for _ in range(5):  # held requests answer with what arrived
        if "to the web" in alice.request():
            break
    else:
        raise AssertionError("the BOSH session got nothing")

    # a slot from worker 1 (its URLs name the HTTP listener), the file through worker 0
    bob.send("<iq type='get' to='upload.localhost' id='s1'><request xmlns='urn:xmpp:http:"
             "upload:0' filename='a.txt' size='5' content-type='text/plain'/></iq>")
    slot = bob.read_until(r"<iq[^>]*s1.*?</iq>")
    put = unescape(re.search(r"<put[^>]*url=.([^'\"]+)", slot).group(1))
    get = unescape(re.search(r"<get[^>]*url=.([^'\"]+)", slot).group(1))
    assert f":{cluster.http_port}/" in put
    path = put.split(str(cluster.http_port), 1)[1]
    for method, where, body, status in (("PUT", path, b"hello", 201),
                                        ("PUT", path, b"again", 409),
                                        ("GET", get.split(str(cluster.http_port), 1)[1], None,
                                         200)):
        conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=10)
        conn.request(method, where, body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status == status, (method, resp.status, data)
    assert data == b"hello"
