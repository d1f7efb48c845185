"""The HTTP listener over real sockets: routes, keep-alive, streaming, upgrades, limits, TLS."""

from __future__ import annotations

import asyncio

import pytest
from support import HTTPClient

from xmppd.transport.http import HTTPError, Response, Upgrade


@pytest.fixture
def web(make_server):
    """A server with a few test routes on its HTTP listener."""
    srv = make_server()
    routes = srv.server.http_routes

    def hello(request):
        return Response(200, f"hello {request.method} {request.path} {request.query} "
                        f"{request.host}".encode(), content_type="text/plain")

    async def slow(request):
        await asyncio.sleep(0.2)  # stands for a BOSH long poll
        return Response(200, b"late")

    async def echo(request):
        return Response(200, await request.read())

    async def stream(request):
        async def chunks():
            async for chunk in request.stream():
                yield chunk.upper()
        return Response(201, chunks())

    def broken(request):
        raise RuntimeError("a bug")

    def teapot(request):
        raise HTTPError(418, "short and stout")

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            transport.write(b"ready:")

        def data_received(self, data):
            self.transport.write(data[::-1])

    def upgrade(request):
        if request.headers.get("upgrade") != "reverse":
            raise HTTPError(426, "upgrade required", {"Upgrade": "reverse"})
        return Upgrade({"Upgrade": "reverse", "Connection": "Upgrade"}, Echo())

    routes.add("/hello", hello, methods=("GET",))
    routes.add("/files/", hello, prefix=True)
    routes.add("/slow", slow)
    routes.add("/echo", echo, methods=("POST",))
    routes.add("/small", echo, methods=("POST",), max_body_bytes=10)
    routes.add("/stream", stream, methods=("PUT",), max_body_bytes=10 * 1024 * 1024)
    routes.add("/broken", broken)
    routes.add("/teapot", teapot)
    routes.add("/upgrade", upgrade)
    return srv


def test_keep_alive_serves_requests_in_turn(web):
    c = HTTPClient(web.http_port)
    c.request("GET", "/hello?x=1")
    status, headers, body = c.response()
    assert status == 200 and body == b"hello GET /hello x=1 localhost"
    assert headers["content-type"] == "text/plain" and "date" in headers
    c.request("GET", "/files/a/b")
    assert c.response()[2] == b"hello GET /files/a/b  localhost"
    c.close()


def test_not_found_method_not_allowed_and_head(web):
    c = HTTPClient(web.http_port)
    c.request("GET", "/nothing")
    assert c.response()[0] == 404
    c.request("POST", "/hello", b"x")
    status, headers, _ = c.response()
    assert status == 405 and headers["allow"] == "GET"
    c.request("HEAD", "/hello")
    status, headers, body = c.response(head=True)
    assert status == 200 and int(headers["content-length"]) > 0
    c.request("GET", "/teapot")
    assert c.response()[0] == 418
    c.close()


def test_a_failing_handler_is_a_500_and_the_server_goes_on(web):
    c = HTTPClient(web.http_port)
    c.request("GET", "/broken")
    assert c.response()[0] == 500
    c.request("GET", "/hello")
    assert c.response()[0] == 200


def test_waiting_handler_and_pipelined_requests_answered_in_order(web):
    c = HTTPClient(web.http_port)
    c.send(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"
           b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert c.response()[2] == b"late"
    assert c.response()[2].startswith(b"hello GET /hello")


def test_request_body_whole_and_limits(web):
    c = HTTPClient(web.http_port)
    c.request("POST", "/echo", b"some body")
    assert c.response()[2] == b"some body"
    c.request("POST", "/small", b"0123456789")
    assert c.response()[2] == b"0123456789"
    c.request("POST", "/small", b"0123456789x")  # the route's own limit
    assert c.response()[0] == 413 and c.closed()
    # http.max_body_bytes: a declared length over it is answered before any body is read
    # (and the connection closed: a client still sending its megabyte raced that in CI)
    c = HTTPClient(web.http_port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
           % (1024 * 1024 + 1))
    assert c.response()[0] == 413 and c.closed()


def test_chunked_body_over_the_limit_is_413(web):
    c = HTTPClient(web.http_port)
    c.send(b"POST /small HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n")
    assert c.response()[0] == 413


def test_streamed_upload_and_streamed_answer(web):
    c = HTTPClient(web.http_port)
    piece = b"abcdefgh" * 8192  # 64 KiB
    c.send(b"PUT /stream HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
           b"Expect: 100-continue\r\n\r\n" % (len(piece) * 40))
    assert c.response()[0] == 100
    for _ in range(40):
        c.send(piece)
    status, headers, body = c.response()
    assert status == 201 and headers["transfer-encoding"] == "chunked"
    assert body == piece.upper() * 40
    c.request("GET", "/hello")  # still usable
    assert c.response()[0] == 200


def test_upgrade_hands_over_the_connection(web):
    c = HTTPClient(web.http_port)
    c.send(b"GET /upgrade HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
           b"Upgrade: reverse\r\n\r\nabc")
    status, headers, _ = c.response()
    assert status == 101 and headers["upgrade"] == "reverse"
    assert c._take(len(b"ready:cba")) == b"ready:cba"
    c.send(b"xyz")
    assert c._take(3) == b"zyx"
    c = HTTPClient(web.http_port)
    c.send(b"GET /upgrade HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
           b"Upgrade: other\r\n\r\n")
    status, headers, _ = c.response()
    assert status == 426 and headers["connection"] == "close" and c.closed()


def test_malformed_request_is_400(web):
    c = HTTPClient(web.http_port)
    c.send(b"GET /hello HTTP/1.1\r\nHost localhost\r\n\r\n")
    assert c.response()[0] == 400 and c.closed()


def test_header_limits(make_server):
    srv = make_server(http_max_header_bytes=1024, http_max_headers=10)
    srv.server.http_routes.add("/", lambda r: Response(200, b"ok"))
    c = HTTPClient(srv.http_port)
    c.send(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(11)) + b"\r\n")
    assert c.response()[0] == 431 and c.closed()
    c = HTTPClient(srv.http_port)
    c.send(b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 2000 + b"\r\n\r\n")
    assert c.response()[0] == 431
    c = HTTPClient(srv.http_port)
    c.send(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")
    assert c.response()[0] == 414
    c = HTTPClient(srv.http_port)  # a header that never ends is cut off too
    c.send(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(2):  # past the 1024 bytes: answered and closed (more would race that)
        c.send(b"y" * 512)
    assert c.response()[0] == 431


def test_request_and_idle_timeouts(make_server):
    srv = make_server(http_request_timeout_s=0.3, http_keepalive_timeout_s=0.3)
    srv.server.http_routes.add("/", lambda r: Response(200, b"ok"))

    async def read(request):
        return Response(200, await request.read())

    srv.server.http_routes.add("/read", read)
    c = HTTPClient(srv.http_port)
    c.send(b"GET / HTTP/1.1\r\nHost: loc")  # and nothing more
    assert c.response()[0] == 408 and c.closed()
    c = HTTPClient(srv.http_port)
    c.send(b"POST /read HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n12345")
    assert c.response()[0] == 408  # the body stalled
    c = HTTPClient(srv.http_port)
    c.send(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n12345")
    assert c.response()[0] == 200 and c.closed()  # answered without its body: closed
    c = HTTPClient(srv.http_port)
    c.request("GET", "/")
    assert c.response()[0] == 200
    assert c.closed()  # idle keep-alive connection closed without an answer
    assert c.buffer == b""


def test_connections_per_address_are_limited(make_server):
    srv = make_server(http_max_connections_per_ip=2)
    srv.server.http_routes.add("/", lambda r: Response(200, b"ok"))
    first, second = HTTPClient(srv.http_port), HTTPClient(srv.http_port)
    first.request("GET", "/")
    second.request("GET", "/")
    assert first.response()[0] == second.response()[0] == 200
    third = HTTPClient(srv.http_port)
    status, headers, _ = third.response()
    assert status == 503 and headers["retry-after"] and third.closed()
    first.close()
    for _ in range(50):  # the slot is freed once the server saw the close
        fourth = HTTPClient(srv.http_port)
        fourth.request("GET", "/")
        if fourth.response()[0] == 200:
            break
    else:
        pytest.fail("the closed connection's slot was never freed")


def test_tls_listener_serves_each_domain_its_certificate(make_server):
    srv = make_server(domains=("localhost", "example.net"))
    srv.server.http_routes.add("/", lambda r: Response(200, r.host.encode() + b" %d" % r.secure))
    for domain in ("localhost", "example.net"):
        c = HTTPClient(srv.https_port, tls=True, sni=domain)
        cert = c.sock.getpeercert(binary_form=True)
        from cryptography import x509
        names = x509.load_der_x509_certificate(cert).subject.rfc4514_string()
        assert names == f"CN={domain}"
        assert c.sock.selected_alpn_protocol() in (None, "http/1.1")
        c.send(f"GET / HTTP/1.1\r\nHost: {domain}:443\r\n\r\n".encode())
        assert c.response()[2] == f"{domain} 1".encode()
