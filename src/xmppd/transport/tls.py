"""TLS: certificates, server contexts (with SNI), channel bindings, certificate checks."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
import ssl
import stat
import weakref
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from xmppd.transport import _tlsexport

__all__ = [
    "ID_ON_XMPPADDR",
    "SNISelector",
    "certificate_fingerprint",
    "certificate_names",
    "channel_bindings",
    "check_certificate",
    "ensure_certificate",
    "generate_self_signed",
    "server_context",
    "sni_context",
    "tls_server_end_point",
]

#: RFC 6120 §13.7.1.4: id-on-xmppAddr otherName.
ID_ON_XMPPADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")

# TLS 1.2 suites: forward secrecy and AEAD only.  TLS 1.3 suites are all fine as is.
_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1"

# The leaf certificate (DER) each context serves, for tls-server-end-point: the ssl
# module cannot tell a server which certificate it presented.
_SERVED_CERT: weakref.WeakKeyDictionary[ssl.SSLContext, bytes] = weakref.WeakKeyDictionary()


# -- generating certificates ------------------------------------------------------------


def _der_utf8string(text: str) -> bytes:
    data = text.encode("utf-8")
    n = len(data)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x0c" + length + data


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically: a new file created with ``mode`` (never chmod'ed later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_self_signed(domain: str, cert_path: Path, key_path: Path, *, days: int = 3650) -> None:
    """Create an EC P-256 key (0600) and a self-signed certificate (0644) for ``domain``.

    The certificate names ``domain`` and ``*.domain`` (dNSName) and ``domain`` as an
    XMPP address (id-on-xmppAddr), and allows both server and client authentication
    (the latter for s2s).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    sans: list[x509.GeneralName] = [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
    sans.append(x509.OtherName(ID_ON_XMPPADDR, _der_utf8string(domain)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(Path(key_path), key_pem, 0o600)
    _write_private(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_certificate(domain: str, data_dir: Path) -> tuple[Path, Path]:
    """``(cert, key)`` under ``data_dir/certs``, generated self-signed on first start only."""
    if not domain or "/" in domain or "\\" in domain or domain.startswith("."):
        raise ValueError(f"unusable domain for a file name: {domain!r}")
    certs = Path(data_dir) / "certs"
    certs.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = certs / f"{domain}.crt", certs / f"{domain}.key"
    if not (cert_path.exists() and key_path.exists()):
        generate_self_signed(domain, cert_path, key_path)
    return cert_path, key_path


# -- contexts -------------------------------------------------------------------------


def _leaf_der(cert_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())[0]
    return cert.public_bytes(serialization.Encoding.DER)


def server_context(
    cert_path: Path,
    key_path: Path,
    *,
    alpn: list[str] | None = None,
    client_ca: Path | None = None,
) -> ssl.SSLContext:
    """A hardened server context: TLS >= 1.2, ECDHE+AEAD, no compression/renegotiation.

    With ``client_ca`` the server requests (but does not require) a client certificate,
    verified against that CA, for SASL EXTERNAL.  ``alpn`` e.g. ``["xmpp-client"]`` for
    XEP-0368 direct TLS.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_CIPHERS)
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    ctx.load_cert_chain(cert_path, key_path)
    _SERVED_CERT[ctx] = _leaf_der(cert_path)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=client_ca)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SNISelector:
    """The ``sni_callback`` of a listening context: during each handshake it switches the
    connection to the context of the name the client asked for (SNI).  The table can be
    replaced while listeners run (:meth:`update`, a live reload): new handshakes use the new
    certificates, established connections keep theirs."""

    __slots__ = ("table", "default")

    def __init__(self, contexts: Mapping[str, ssl.SSLContext], default: ssl.SSLContext) -> None:
        self.table: dict[str, ssl.SSLContext] = {}
        self.default = default
        self.update(contexts, default)

    def update(self, contexts: Mapping[str, ssl.SSLContext], default: ssl.SSLContext) -> None:
        """Serve ``contexts`` (by name) and ``default`` from the next handshake on."""
        self.table = {name.lower().rstrip("."): ctx for name, ctx in contexts.items()}
        self.default = default

    def __call__(self, sslobj: ssl.SSLObject, server_name: str | None,
                 _ctx: ssl.SSLContext) -> None:
        # Called for every handshake, with None when the client sent no SNI: the
        # listening context's own certificate may be an old one, so always switch.
        chosen = None
        if server_name:
            name = server_name.lower().rstrip(".")
            table = self.table
            chosen = table.get(name) or table.get(name.partition(".")[2])
        chosen = chosen or self.default  # unknown names get the default, not an alert
        if chosen is not sslobj.context:
            sslobj.context = chosen
        return None


def sni_context(
    contexts: Mapping[str, ssl.SSLContext], default: str | ssl.SSLContext
) -> ssl.SSLContext:
    """The context to listen with: it switches to ``contexts[server_name]`` during the
    handshake (SNI).  A name not found falls back to its parent domain (so
    ``muc.example.org`` uses ``example.org``, whose certificate covers ``*.example.org``),
    then to ``default`` (a key of ``contexts`` or a context).  Its ``sni_callback`` is an
    :class:`SNISelector`, whose table a reload replaces."""
    table = {name.lower().rstrip("."): ctx for name, ctx in contexts.items()}
    base = table[default.lower().rstrip(".")] if isinstance(default, str) else default
    base.sni_callback = SNISelector(table, base)
    return base


def certificate_fingerprint(cert_path: Path) -> str:
    """SHA-256 of the leaf certificate of a PEM chain, as colon-separated hex."""
    return hashlib.sha256(_leaf_der(cert_path)).digest().hex(":").upper()


# -- channel binding --------------------------------------------------------------------


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1: hash of the certificate with its signature hash (MD5/SHA-1 -> SHA-256).

    Raises ValueError for signatures without a separate hash (e.g. Ed25519), for which
    RFC 5929 defines no binding.
    """
    cert = x509.load_der_x509_certificate(cert_der)
    algo = cert.signature_hash_algorithm
    if algo is None:
        raise ValueError("certificate signature has no hash: tls-server-end-point undefined")
    name = algo.name
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, cert_der).digest()


def channel_bindings(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, bytes]:
    """The channel bindings available on an established server-side TLS connection."""
    bindings: dict[str, bytes] = {}
    der = _SERVED_CERT.get(ssl_object.context)
    if der is not None:
        try:
            bindings["tls-server-end-point"] = tls_server_end_point(der)
        except ValueError:
            pass
    exporter = _tlsexport.tls_exporter(ssl_object)
    if exporter is not None:
        bindings["tls-exporter"] = exporter
    if ssl_object.version() == "TLSv1.2":
        # Defined for TLS 1.2 only (RFC 5929; RFC 9266 excludes TLS 1.3); some deployed
        # clients (slixmpp 1.8) still ask for it.
        unique = ssl_object.get_channel_binding("tls-unique")
        if unique:
            bindings["tls-unique"] = unique
    return bindings


# -- checking ---------------------------------------------------------------------------


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and XMPP addresses a certificate presents (SAN; CN if no SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    names = list(san.get_values_for_type(x509.DNSName))
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == ID_ON_XMPPADDR and other.value[:1] == b"\x0c":
            body = (
                other.value[2:]
                if other.value[1] < 0x80
                else other.value[2 + (other.value[1] & 0x7F) :]
            )
            names.append(body.decode("utf-8", "replace"))
    return names


def _covers(pattern: str, domain: str) -> bool:
    pattern, domain = pattern.lower().rstrip("."), domain.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, tail = domain.partition(".")
        return bool(head) and tail == pattern[2:]
    return pattern == domain


def check_certificate(cert_path: Path, key_path: Path, domain: str) -> list[str]:
    """Problems with a certificate/key pair for ``domain`` (empty list: all good)."""
    problems: list[str] = []
    cert_path, key_path = Path(cert_path), Path(key_path)
    cert = key = None
    if not cert_path.is_file():
        problems.append(f"certificate file {cert_path} is missing")
    else:
        try:
            cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        except (ValueError, OSError) as exc:
            problems.append(f"certificate {cert_path} cannot be read: {exc}")
    if not key_path.is_file():
        problems.append(f"key file {key_path} is missing")
    else:
        mode = key_path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            problems.append(
                f"key file {key_path} is accessible to other users (mode {mode & 0o777:o})"
            )
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            problems.append(f"key {key_path} cannot be read: {exc}")
    if cert is None:
        return problems
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        problems.append(f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        problems.append(f"certificate not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    if key is not None:
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
            problems.append("private key does not match the certificate")
    try:
        ipaddress.ip_address(domain)
        is_ip = True
    except ValueError:
        is_ip = False
    names = certificate_names(cert)
    if is_ip or not any(_covers(n, domain) for n in names):
        problems.append(
            f"certificate does not cover {domain} (names: {', '.join(names) or 'none'})"
        )
    return problems
