"""XEP-0363 HTTP File Upload end to end: slots over XMPP (raw client), PUT and GET over
HTTPS with http.client against a real server."""

from __future__ import annotations

import html
import http.client
import re
import socket
import ssl
import stat
import time
from urllib.parse import urlsplit

import pytest
from support import connect

NS = "urn:xmpp:http:upload:0"
USERS = {"alice": "secret", "bob": "secret"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def upload_server(make_server):
    def factory(**options):
        return make_server(users=USERS, allow_plain=True,
                           modules_options={"upload": options} if options else {})
    return factory


class Uploader:
    """A logged-in raw XMPP client that asks for slots."""

    def __init__(self, server, user: str = "alice") -> None:
        self.xmpp = connect(server, user, roster=False)
        self.n = 0

    def ask(self, filename: str = "a.png", size: int = len(PNG),
            content_type: str | None = "image/png", to: str = "upload.localhost") -> str:
        self.n += 1
        ctype = f" content-type='{content_type}'" if content_type is not None else ""
        self.xmpp.send(f"<iq type='get' id='u{self.n}' to='{to}'><request xmlns='{NS}' "
                       f"filename='{filename}' size='{size}'{ctype}/></iq>")
        return self.xmpp.read_until(rf"id=.u{self.n}.(.*?)</iq>")

    def slot(self, *args, **kw) -> tuple[str, str]:
        answer = self.ask(*args, **kw)
        put = re.search(r'<put[^>]*url="([^"]+)"', answer)
        get = re.search(r'<get[^>]*url="([^"]+)"', answer)
        assert put and get, answer
        return html.unescape(put.group(1)), html.unescape(get.group(1))

    def close(self) -> None:
        self.xmpp.close()


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", parts.port, context=ctx, timeout=10)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def upload(uploader: Uploader, data: bytes = PNG, filename: str = "a.png",
           content_type: str = "image/png") -> str:
    put, get = uploader.slot(filename, len(data), content_type)
    status, _, _ = request(put, "PUT", data, {"Content-Type": content_type})
    assert status == 201
    return get


def test_disco_lists_the_service_and_its_limit(upload_server):
    server = upload_server(max_file_size=1234)
    client = connect(server, "alice", roster=False)
    client.send("<iq type='get' id='i1' to='localhost'>"
                "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert "upload.localhost" in client.read_until("id=.i1.*?</iq>")
    client.send("<iq type='get' id='i2' to='upload.localhost'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    info = client.read_until("id=.i2.*?</iq>")
    assert 'category="store"' in info and 'type="file"' in info and NS in info
    assert re.search(r'var="max-file-size"><value>1234</value>', info)
    assert re.search(rf'var="FORM_TYPE" type="hidden"><value>{NS}</value>', info)
    client.close()


def test_put_then_get_round_trip_with_safe_headers(upload_server):
    server = upload_server()
    alice = Uploader(server)
    put, get = alice.slot("photo one.png", len(PNG), "image/png")
    assert put.startswith(f"https://localhost:{server.https_port}/upload/")
    assert get.endswith("/photo%20one.png") and "?" not in get
    assert request(get)[0] == 404  # nothing there before the PUT
    status, headers, _ = request(put, "PUT", PNG, {"Content-Type": "image/png"})
    assert status == 201 and headers["access-control-allow-origin"] == "*"
    status, headers, data = request(get)
    assert status == 200 and data == PNG
    assert headers["content-type"] == "image/png"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert "content-disposition" not in headers  # an image may show inline
    assert request(put, "PUT", PNG, {"Content-Type": "image/png"})[0] == 409  # used once
    # stored on disk under the data directory; the signing key is owner-only
    slot = urlsplit(get).path.split("/")[2]
    data_dir = server.config.data_dir
    assert (data_dir / "upload" / slot / "data").read_bytes() == PNG
    assert stat.S_IMODE((data_dir / "upload.key").stat().st_mode) == 0o600
    # bob can fetch it too (the URL is the capability)
    status, _, data = request(get)
    assert status == 200 and data == PNG
    alice.close()


def test_unsafe_types_are_attachments(upload_server):
    server = upload_server()
    alice = Uploader(server)
    page = b"<html><script>alert(1)</script></html>"
    get = upload(alice, page, "x.html", "text/html")
    status, headers, data = request(get)
    assert status == 200 and data == page
    assert headers["content-disposition"].startswith("attachment")
    assert headers["content-security-policy"].startswith("default-src 'none'")
    alice.close()


def test_range_requests(upload_server):
    server = upload_server()
    alice = Uploader(server)
    get = upload(alice)
    status, headers, data = request(get, headers={"Range": "bytes=2-5"})
    assert status == 206 and data == PNG[2:6]
    assert headers["content-range"] == f"bytes 2-5/{len(PNG)}"
    status, headers, data = request(get, headers={"Range": "bytes=-10"})
    assert status == 206 and data == PNG[-10:]
    status, headers, data = request(get, headers={"Range": f"bytes=100-{10**9}"})
    assert status == 206 and data == PNG[100:]
    status, headers, _ = request(get, headers={"Range": f"bytes={len(PNG)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(PNG)}"
    status, headers, data = request(get, "HEAD")
    assert status == 200 and headers["content-length"] == str(len(PNG)) and data == b""
    assert headers["accept-ranges"] == "bytes"
    alice.close()


def test_bad_signature_and_tampering_are_forbidden(upload_server):
    server = upload_server()
    alice = Uploader(server)
    put, _ = alice.slot()
    bad = re.sub(r"s=[0-9a-f]{4}", "s=0000", put)
    assert request(bad, "PUT", PNG, {"Content-Type": "image/png"})[0] == 403
    later = re.sub(r"e=(\d+)", lambda m: f"e={int(m.group(1)) + 3600}", put)
    assert request(later, "PUT", PNG, {"Content-Type": "image/png"})[0] == 403
    nosig = put.split("?")[0]
    assert request(nosig, "PUT", PNG, {"Content-Type": "image/png"})[0] == 403
    assert request(put, "PUT", PNG, {"Content-Type": "image/png"})[0] == 201  # the real one
    alice.close()


def test_expired_slot_is_forbidden(upload_server):
    server = upload_server(slot_lifetime_s=1)
    alice = Uploader(server)
    put, get = alice.slot()
    time.sleep(2.1)
    status, _, body = request(put, "PUT", PNG, {"Content-Type": "image/png"})
    assert status == 403 and b"expired" in body
    assert request(get)[0] == 404
    alice.close()


def test_size_and_type_must_match_the_slot(upload_server):
    server = upload_server()
    alice = Uploader(server)
    put, get = alice.slot()
    assert request(put, "PUT", PNG + b"x", {"Content-Type": "image/png"})[0] == 400
    assert request(put, "PUT", PNG[:-1], {"Content-Type": "image/png"})[0] == 400
    assert request(put, "PUT", PNG, {"Content-Type": "text/html"})[0] == 400
    # no Content-Length at all (chunked): 411
    parts = urlsplit(put)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", parts.port), timeout=10),
                         server_hostname="localhost") as sock:
        sock.sendall(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: localhost\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 411")
    assert request(put, "PUT", PNG, {"Content-Type": "image/png"})[0] == 201
    alice.close()


def test_file_too_large_names_the_limit(upload_server):
    server = upload_server(max_file_size=1000)
    alice = Uploader(server)
    answer = alice.ask(size=1001)
    assert "type=\"error\"" in answer and "not-acceptable" in answer
    assert re.search(rf'<file-too-large xmlns="{NS}"><max-file-size>1000</max-file-size>', answer)
    alice.close()


def test_bad_requests(upload_server):
    server = upload_server()
    alice = Uploader(server)
    assert "bad-request" in alice.ask(filename="a/b.png")
    assert "bad-request" in alice.ask(size=0)
    assert "bad-request" in alice.ask(content_type="not a type")
    assert "service-unavailable" in alice.ask(to="someone@upload.localhost")
    alice.close()


def test_quota_is_per_user_with_retry(upload_server):
    server = upload_server(quota_bytes=len(PNG) * 2)
    alice, bob = Uploader(server), Uploader(server, "bob")
    upload(alice)
    upload(alice)
    answer = alice.ask()
    assert "resource-constraint" in answer and 'type="wait"' in answer
    assert re.search(rf'<retry xmlns="{NS}" stamp="\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ"/>', answer)
    upload(bob)  # bob has his own quota
    alice.close()
    bob.close()


def test_unused_slots_count_until_they_expire(upload_server):
    server = upload_server(quota_bytes=len(PNG), slot_lifetime_s=2)
    alice = Uploader(server)
    alice.slot()
    assert "resource-constraint" in alice.ask()
    time.sleep(3.1)  # the lifetime, plus the rounding up to a whole second
    upload(alice)
    alice.close()


def test_stored_files_expire(upload_server):
    server = upload_server(expire_after_s=1, sweep_interval_s=0.2, quota_bytes=len(PNG))
    alice = Uploader(server)
    get = upload(alice)
    slot_dir = server.config.data_dir / "upload" / urlsplit(get).path.split("/")[2]
    assert slot_dir.is_dir()
    deadline = time.monotonic() + 10
    while slot_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not slot_dir.exists()  # the sweep deleted it
    assert request(get)[0] == 404
    upload(alice)  # and the quota is free again
    alice.close()


def test_configured_base_url(upload_server):
    server = upload_server(base_url="https://files.example.org/")
    alice = Uploader(server)
    put, get = alice.slot()
    assert put.startswith("https://files.example.org/upload/")
    assert get.startswith("https://files.example.org/upload/")
    alice.close()


def test_cors_preflight(upload_server):
    server = upload_server(cors_origins=["https://web.example"])
    status, headers, _ = request(f"https://localhost:{server.https_port}/upload/x/y", "OPTIONS",
                                 headers={"Origin": "https://web.example"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://web.example"
    assert "PUT" in headers["access-control-allow-methods"]
