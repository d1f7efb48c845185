#!/usr/bin/env python3
"""Trivial XMPP-ish server used to measure the load generator's own ceiling.

Accepts any account (PLAIN accepts anything; SCRAM does not check the proof but signs with
``--password`` so the client's server-signature check passes), binds, and routes
``<message to=...>`` by byte scanning. Stanzas are forwarded unchanged (no ``from`` stamping).
A read holding only complete messages to one recipient is forwarded in a single write.

    python benchmarks/stub_server.py --port 5299 [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import hmac
import os
import re
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loadgen.scram import SCRAM_MECHANISMS, derived_keys, parse_attrs  # noqa: E402

END = b"</message>"
_HEADER = re.compile(rb"<(?:stream:)?stream\b[^>]*>")
_NAME = re.compile(rb"<([\w:.-]+)")
_TO = re.compile(rb"""\bto=(['"])([^'"]+)\1""")
_ID = re.compile(rb"""\bid=(['"])([^'"]*)\1""")
_MECH = re.compile(rb"""mechanism=['"]([^'"]+)['"]""")
_RESOURCE = re.compile(rb"<resource>([^<]*)</resource>")
_PAYLOAD = re.compile(rb">([^<]*)</")

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class Stub:
    """Shared state: the routing table and the configuration."""

    def __init__(self, domain: str, password: str, mechanisms: list[str], tls: ssl.SSLContext | None,
                 iterations: int) -> None:
        self.domain = domain
        self.password = password
        self.mechanisms = mechanisms
        self.tls = tls
        self.iterations = iterations
        self.salt = hashlib.sha256(b"stub-salt").digest()[:16]  # shared: one PBKDF2 per hash
        self.routes: dict[bytes, StubSession] = {}

    def header(self) -> bytes:
        return (
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' "
            f"from='{self.domain}' id='{os.urandom(6).hex()}' version='1.0'>"
        ).encode()

    def features(self, authed: bool, secure: bool) -> bytes:
        if authed:
            inner = ("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                     "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>")
        else:
            tls = f"<starttls xmlns='{NS_TLS}'/>" if self.tls is not None and not secure else ""
            mechs = "".join(f"<mechanism>{m}</mechanism>" for m in self.mechanisms)
            inner = f"{tls}<mechanisms xmlns='{NS_SASL}'>{mechs}</mechanisms>"
        return f"<stream:features>{inner}</stream:features>".encode()


class StubSession(asyncio.Protocol):
    """One c2s connection."""

    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need_header = True
        self.authed = False
        self.secure = False
        self.user = ""
        self.jid: bytes = b""
        self.scram: tuple[str, str, str] | None = None  # mechanism, client-first-bare, server-first

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        routes = self.stub.routes
        for key in (self.jid, self.jid.split(b"/", 1)[0]):
            if key and routes.get(key) is self:
                del routes[key]

    def data_received(self, data: bytes) -> None:
        if self.jid and not self.buf and data.startswith(b"<message"):
            # Fast path: a run of complete messages to one recipient goes out in one write.
            end = data.rfind(END)
            if end > 0:
                chunk = data[: end + len(END)]
                to = _TO.search(chunk)
                if to is not None:
                    n = chunk.count(b"<message")
                    if (chunk.count(END) == n and chunk.count(to.group(0)) == n and b"<presence" not in chunk
                            and b"<iq" not in chunk and b"</stream" not in chunk and b"urn:xmpp:sm:3" not in chunk):
                        target = self.stub.routes.get(to.group(2))
                        if target is not None and target.transport is not None:
                            target.transport.write(chunk)
                        data = data[end + len(END):]
                        if not data:
                            return
        self.buf += data
        self._process()

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _process(self) -> None:
        buf = self.buf
        while buf:
            if self.need_header:
                m = _HEADER.search(buf)
                if m is None:
                    return
                del buf[: m.end()]
                self.need_header = False
                self._send(self.stub.header() + self.stub.features(self.authed, self.secure))
                continue
            start = buf.find(b"<")
            if start < 0:
                buf.clear()
                return
            del buf[:start]
            if buf.startswith(b"</"):
                self._send(b"</stream:stream>")
                if self.transport is not None:
                    self.transport.close()
                buf.clear()
                return
            m = _NAME.match(buf)
            gt = buf.find(b">")
            if m is None or gt < 0:
                return
            name = m.group(1)
            if buf[gt - 1] == ord("/"):
                end = gt + 1
            else:
                close = buf.find(b"</" + name + b">", gt)
                if close < 0:
                    return
                end = close + len(name) + 3
            elem = bytes(buf[:end])
            del buf[:end]
            self._handle(name, elem)
            if self.transport is None or self.transport.is_closing():
                return

    def _handle(self, name: bytes, elem: bytes) -> None:
        if name == b"message":
            to = _TO.search(elem)
            target = self.stub.routes.get(to.group(2)) if to is not None else None
            if target is not None and target.transport is not None:
                target.transport.write(elem)
        elif name == b"iq":
            self._iq(elem)
        elif name == b"auth":
            self._auth(elem)
        elif name == b"response":
            self._response(elem)
        elif name == b"enable" and b"urn:xmpp:sm:3" in elem:
            # XEP-0198 with resumption, without acknowledgement bookkeeping (<r/> and <a/> are
            # ignored): enough for the generator's --sm and resume workloads.
            self._send(b"<enabled xmlns='urn:xmpp:sm:3' id='" + self.jid.hex().encode() + b"' resume='true'/>")
        elif name == b"resume" and b"urn:xmpp:sm:3" in elem:
            previd = re.search(rb"""previd=(['"])([^'"]+)\1""", elem)
            jid = bytes.fromhex(previd.group(2).decode()) if previd else b""
            if not jid or b"/" not in jid:
                self._send(b"<failed xmlns='urn:xmpp:sm:3'><item-not-found "
                           b"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")
                return
            self.jid = jid
            self.stub.routes[jid] = self
            self.stub.routes[jid.split(b"/", 1)[0]] = self
            self._send(b"<resumed xmlns='urn:xmpp:sm:3' h='0' previd='" + previd.group(2) + b"'/>")
        elif name == b"r" and b"urn:xmpp:sm:3" in elem:
            self._send(b"<a xmlns='urn:xmpp:sm:3' h='0'/>")
        elif name == b"starttls" and self.stub.tls is not None:
            self._send(f"<proceed xmlns='{NS_TLS}'/>".encode())
            asyncio.ensure_future(self._start_tls())
        # presence and anything else: ignored

    async def _start_tls(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None and self.stub.tls is not None
        try:
            self.transport = await loop.start_tls(self.transport, self, self.stub.tls, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError):
            self.transport = None
            return
        self.secure, self.need_header = True, True
        self.buf.clear()

    def _success(self, additional: bytes = b"") -> None:
        payload = base64.b64encode(additional).decode() if additional else ""
        self._send(f"<success xmlns='{NS_SASL}'>{payload}</success>".encode())
        self.authed, self.need_header = True, True

    def _auth(self, elem: bytes) -> None:
        mech_m = _MECH.search(elem)
        payload_m = _PAYLOAD.search(elem)
        mech = mech_m.group(1).decode() if mech_m else ""
        payload = base64.b64decode(payload_m.group(1)) if payload_m else b""
        if mech == "PLAIN" and mech in self.stub.mechanisms:
            self.user = payload.split(b"\0")[1].decode()
            self._success()
        elif mech in SCRAM_MECHANISMS and mech in self.stub.mechanisms:
            bare = payload.split(b",", 2)[2].decode()
            attrs = parse_attrs(bare.encode())
            self.user = attrs["n"].decode()
            salt = base64.b64encode(self.stub.salt).decode()
            server_first = f"r={attrs['r'].decode()}{os.urandom(9).hex()},s={salt},i={self.stub.iterations}"
            self.scram = (mech, bare, server_first)
            self._send(f"<challenge xmlns='{NS_SASL}'>{base64.b64encode(server_first.encode()).decode()}"
                       f"</challenge>".encode())
        else:
            self._send(f"<failure xmlns='{NS_SASL}'><invalid-mechanism/></failure>".encode())

    def _response(self, elem: bytes) -> None:
        payload_m = _PAYLOAD.search(elem)
        if self.scram is None or payload_m is None:
            self._send(f"<failure xmlns='{NS_SASL}'><malformed-request/></failure>".encode())
            return
        mech, bare, server_first = self.scram
        final = base64.b64decode(payload_m.group(1)).decode()
        without_proof = final.rsplit(",p=", 1)[0]
        hash_name = SCRAM_MECHANISMS[mech]
        _, _, server_key = derived_keys(hash_name, self.stub.password, self.stub.salt, self.stub.iterations)
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(server_key, auth_message, hash_name)
        self._success(b"v=" + base64.b64encode(signature))

    def _iq(self, elem: bytes) -> None:
        id_m = _ID.search(elem)
        iq_id = id_m.group(2).decode() if id_m else ""
        if b"<bind" in elem and self.authed:
            res = _RESOURCE.search(elem)
            resource = res.group(1).decode() if res and res.group(1) else os.urandom(4).hex()
            bare = f"{self.user}@{self.stub.domain}"
            self.jid = f"{bare}/{resource}".encode()
            self.stub.routes[self.jid] = self
            self.stub.routes[bare.encode()] = self
            self._send(f"<iq type='result' id='{iq_id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                       f"<jid>{bare}/{resource}</jid></bind></iq>".encode())
        else:
            self._send(f"<iq type='result' id='{iq_id}'/>".encode())


def self_signed_context(domain: str) -> ssl.SSLContext:
    """Server TLS context with a throwaway ECDSA P-256 certificate (cheap handshakes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert_path, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


async def serve(args: argparse.Namespace) -> None:
    """Listen until cancelled (or for ``--lifetime`` seconds when given)."""
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    elif args.tls:
        tls = self_signed_context(args.domain)
    stub = Stub(args.domain, args.password, args.mechanisms.split(","), tls, args.iterations)
    server = await asyncio.get_running_loop().create_server(
        lambda: StubSession(stub), args.host, args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"stub listening on {args.host}:{port} pid {os.getpid()}", flush=True)
    async with server:
        if args.lifetime:
            await asyncio.sleep(args.lifetime)
        else:
            await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5299, help="0 picks a free port (printed)")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--password", default="bench", help="SCRAM signs with this password")
    p.add_argument("--mechanisms", default="SCRAM-SHA-256,SCRAM-SHA-1,PLAIN")
    p.add_argument("--iterations", type=int, default=4096)
    p.add_argument("--tls", action="store_true", help="offer STARTTLS with a throwaway certificate")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--lifetime", type=float, default=0.0, help="exit after this many seconds (0: never)")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
