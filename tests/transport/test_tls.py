"""TLS helpers: certificates, contexts, SNI, channel bindings (real handshakes)."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from xmppd.transport import _tlsexport
from xmppd.transport.tls import (
    certificate_names,
    channel_bindings,
    check_certificate,
    ensure_certificate,
    generate_self_signed,
    server_context,
    sni_context,
    tls_server_end_point,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("certs")
    out = {}
    for domain in ("a.example", "b.example"):
        pair = (base / f"{domain}.crt", base / f"{domain}.key")
        generate_self_signed(domain, *pair)
        out[domain] = pair
    return out


def client_context(cafile: Path | None = None, **kw) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=cafile)
    for name, value in kw.items():
        setattr(ctx, name, value)
    return ctx


def handshake(server_ctx, client_ctx, server_hostname=None):
    """A full handshake over memory BIOs; returns (server SSLObject, client SSLObject)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for key, obj in (("c", client), ("s", server)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server, client
    raise AssertionError("handshake did not finish")


# -- certificates -----------------------------------------------------------------------


def test_generate_self_signed(certs):
    cert_path, key_path = certs["a.example"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) & 0o044 == 0o044
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert certificate_names(cert) == ["a.example", "*.a.example", "a.example"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert check_certificate(cert_path, key_path, "a.example") == []
    assert check_certificate(cert_path, key_path, "muc.a.example") == []
    assert list(cert_path.parent.glob(".*.tmp")) == []


def test_ensure_certificate_only_once(tmp_path):
    cert, key = ensure_certificate("c.example", tmp_path)
    first = cert.read_bytes(), key.read_bytes()
    assert ensure_certificate("c.example", tmp_path) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == first
    with pytest.raises(ValueError):
        ensure_certificate("../evil", tmp_path)


def _expired_cert(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "old.crt", tmp_path / "old.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_check_certificate_problems(certs, tmp_path):
    a_cert, a_key = certs["a.example"]
    b_cert, b_key = certs["b.example"]
    missing = check_certificate(tmp_path / "x.crt", tmp_path / "x.key", "a.example")
    assert len(missing) == 2 and all("missing" in p for p in missing)
    (wrong,) = check_certificate(a_cert, a_key, "b.example")
    assert "does not cover b.example" in wrong
    assert check_certificate(a_cert, a_key, "x.y.a.example")  # wildcard is one label only
    assert any("does not match" in p for p in check_certificate(a_cert, b_key, "a.example"))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    assert any("cannot be read" in p for p in check_certificate(garbage, a_key, "a.example"))
    old_cert, old_key = _expired_cert(tmp_path)
    assert [p for p in check_certificate(old_cert, old_key, "old.example")][0].startswith(
        "certificate expired"
    )
    old_key.chmod(0o644)
    assert any("other users" in p for p in check_certificate(old_cert, old_key, "old.example"))


# -- contexts -------------------------------------------------------------------------


def test_server_context_hardening(certs):
    ctx = server_context(*certs["a.example"], alpn=["xmpp-client"])
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    assert all("ECDHE" in c["name"] or c["protocol"] == "TLSv1.3" for c in ctx.get_ciphers())
    server, client = handshake(
        ctx, client_context(certs["a.example"][0]), server_hostname="a.example"
    )
    assert server.version() == "TLSv1.3"
    assert server.selected_alpn_protocol() is None  # the client offered none

    # A TLS 1.2 client offering only static-RSA key exchange finds no common suite.
    no_fs = client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    no_fs.set_ciphers("AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        handshake(ctx, no_fs)


def test_client_certificate_optional(certs):
    ctx = server_context(*certs["a.example"], client_ca=certs["b.example"][0])
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    server, _ = handshake(ctx, client_context())
    assert server.getpeercert() is None
    with_cert = client_context()
    with_cert.load_cert_chain(*certs["b.example"])
    server, _ = handshake(ctx, with_cert)
    assert server.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(
        certs["b.example"][0].read_text()
    )


def _peer_names(client: ssl.SSLObject) -> list[str]:
    return certificate_names(x509.load_der_x509_certificate(client.getpeercert(True)))


def test_sni_picks_certificate(certs):
    contexts = {d: server_context(*certs[d]) for d in certs}
    listen = sni_context(contexts, "a.example")
    for name, expected in [
        ("b.example", "b.example"),
        ("B.Example.", "b.example"),
        ("muc.b.example", "b.example"),
        ("a.example", "a.example"),
        ("unknown.test", "a.example"),
    ]:
        _, client = handshake(listen, client_context(), server_hostname=name)
        assert _peer_names(client)[0] == expected, name


def test_sni_table_replaced_for_new_handshakes_only(certs, tmp_path):
    """What a live reload does: the listening context stays, its table changes; a client
    with no SNI gets the new default too."""
    contexts = {d: server_context(*certs[d]) for d in certs}
    listen = sni_context(contexts, "a.example")
    before, old_client = handshake(listen, client_context(), server_hostname="a.example")
    renewed = tmp_path / "a2.crt", tmp_path / "a2.key"
    generate_self_signed("a.example", *renewed)
    new = {**contexts, "a.example": server_context(*renewed)}
    listen.sni_callback.update(new, new["a.example"])
    for name in ("a.example", None, "unknown.test"):
        _, client = handshake(listen, client_context(), server_hostname=name)
        assert client.getpeercert(True) == ssl.PEM_cert_to_DER_cert(renewed[0].read_text()), name
    _, client = handshake(listen, client_context(), server_hostname="b.example")
    assert _peer_names(client)[0] == "b.example"
    assert old_client.getpeercert(True) == ssl.PEM_cert_to_DER_cert(
        certs["a.example"][0].read_text())  # the established connection keeps its own
    assert before.context is contexts["a.example"]


# -- channel binding --------------------------------------------------------------------


def _signed(algorithm, key=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h.example")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def test_tls_server_end_point_hash_choice():
    der256, der384 = _signed(hashes.SHA256()), _signed(hashes.SHA384())
    assert tls_server_end_point(der256) == hashlib.sha256(der256).digest()
    assert tls_server_end_point(der384) == hashlib.sha384(der384).digest()
    with pytest.raises(ValueError):
        tls_server_end_point(_signed(None, ed25519.Ed25519PrivateKey.generate()))


# An ECDSA-with-SHA1 certificate (made with `openssl req -x509 -sha1`): modern
# cryptography builds refuse to sign with SHA-1, so it is kept here as a fixture.
SHA1_CERT = """\
-----BEGIN CERTIFICATE-----
MIIBgTCCASigAwIBAgIUI3vEFqbDQAJciXo4BTZY750aIv4wCQYHKoZIzj0EATAX
MRUwEwYDVQQDDAxzaGExLmV4YW1wbGUwHhcNMjYxMTI1MTAwMDUwWhcNMjYxMTI2
MTAwMDUwWjAXMRUwEwYDVQQDDAxzaGExLmV4YW1wbGUwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAAReNYuUs+O+SNMY7mCqy4RhkrqWPzuoAfc6SSOeRV8Lh/qYo1f1
+dRR9MQOt+EnE3Ou2powtUUDtEqqU1SXLkS6o1MwUTAdBgNVHQ4EFgQUY5xrmFWg
dee15fn17yDhkCiH9ewwHwYDVR0jBBgwFoAUY5xrmFWgdee15fn17yDhkCiH9eww
DwYDVR0TAQH/BAUwAwEB/zAJBgcqhkjOPQQBA0gAMEUCIQD+I9LsCmc3HvWFl87F
vghhioxJW2/XL4iHHHsAw7TbMwIgfh6/S9sLNL2LXxHkiTIhYx87Ib7pVMF07eNy
9N6idyk=
-----END CERTIFICATE-----
"""


def test_tls_server_end_point_sha1_upgraded():
    der = ssl.PEM_cert_to_DER_cert(SHA1_CERT)
    sig_hash = x509.load_der_x509_certificate(der).signature_hash_algorithm
    assert isinstance(sig_hash, hashes.SHA1)
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


needs_exporter = pytest.mark.skipif(
    not _tlsexport.available(), reason="SSL_export_keying_material not reachable"
)


@needs_exporter
def test_channel_bindings_memory_bio(certs):
    ctx = server_context(*certs["a.example"])
    server, client = handshake(ctx, client_context())
    bindings = channel_bindings(server)
    assert set(bindings) == {"tls-exporter", "tls-server-end-point"}
    assert bindings["tls-server-end-point"] == hashlib.sha256(client.getpeercert(True)).digest()
    assert len(bindings["tls-exporter"]) == 32
    assert _tlsexport.tls_exporter(client) == bindings["tls-exporter"]
    server2, client2 = handshake(ctx, client_context())
    assert channel_bindings(server2)["tls-exporter"] != bindings["tls-exporter"]
    assert _tlsexport.tls_exporter(client2) == channel_bindings(server2)["tls-exporter"]


@needs_exporter
def test_channel_bindings_follow_sni(certs):
    contexts = {d: server_context(*certs[d]) for d in certs}
    server, client = handshake(
        sni_context(contexts, "a.example"), client_context(), server_hostname="b.example"
    )
    expected = hashlib.sha256(client.getpeercert(True)).digest()
    assert channel_bindings(server)["tls-server-end-point"] == expected
    assert _peer_names(client)[0] == "b.example"


def test_no_exporter_on_tls12(certs):
    ctx = server_context(*certs["a.example"])
    server, _ = handshake(ctx, client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert server.version() == "TLSv1.2"
    assert "tls-exporter" not in channel_bindings(server)
    assert "tls-server-end-point" in channel_bindings(server)


@needs_exporter
def test_exporter_over_real_sockets(certs):
    ctx = server_context(*certs["a.example"])
    left, right = socket.socketpair()
    result: dict[str, bytes | None] = {}

    def serve() -> None:
        with ctx.wrap_socket(left, server_side=True) as tls:
            result["server"] = _tlsexport.tls_exporter(tls)
            tls.sendall(b"x")

    thread = threading.Thread(target=serve)
    thread.start()
    with client_context().wrap_socket(right) as tls:
        assert tls.recv(1) == b"x"
        result["client"] = _tlsexport.tls_exporter(tls)
    thread.join(timeout=10)
    assert result["server"] is not None and len(result["server"]) == 32
    assert result["server"] == result["client"]


def test_exporter_refuses_foreign_objects():
    class Fake:
        _sslobj = object()

        def version(self) -> str:
            return "TLSv1.3"

    assert _tlsexport.tls_exporter(Fake()) is None  # type: ignore[arg-type]
    unconnected = client_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    assert _tlsexport.export_keying_material(unconnected, b"EXPORTER-x", 32) is None
