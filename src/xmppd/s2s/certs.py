"""TLS for s2s: the contexts, and the PKIX check of a peer's certificate (RFC 6125).

Trust: a peer certificate is valid for a domain when it chains to a trusted CA and names the
domain.  The trusted CAs are the system's (``[s2s] use_system_ca``, on by default) plus those
of ``[s2s] ca_file``: the CA file adds to the system store, it never replaces it.

Inbound streams always *request* a client certificate, and a certificate that does not
verify never fails the handshake: the peer then simply cannot use SASL EXTERNAL and goes on
with dialback (unless it is in ``require_valid_certificates``).  Python's ``ssl`` cannot do
this by itself: with ``CERT_OPTIONAL`` OpenSSL still aborts the handshake on a certificate it
cannot verify, even with no CA loaded (tests/s2s/test_certs.py shows it).  So the server
contexts get an OpenSSL verify callback that accepts every certificate
(:func:`tolerate_client_certificates`), and the certificate is checked after the handshake
against the trusted CAs with ``cryptography``.  Where that callback cannot be installed
(not CPython, no OpenSSL symbols), no client certificate is requested at all: inbound
EXTERNAL is then unavailable, and dialback still works.  Outbound streams never fail the
handshake either; the peer's certificate is checked the same way afterwards.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from xmppd.transport.tls import server_context, sni_context

if TYPE_CHECKING:
    from xmppd.core.config import Certificate

log = logging.getLogger("xmppd.s2s")

_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
#: OpenSSL's verify callback: 1 = go on with the handshake, whatever the verdict.
_ACCEPT_ANY = _VERIFY_CALLBACK(lambda _preverify_ok, _store: 1)
_SSL_VERIFY_PEER = 1
_libssl: ctypes.CDLL | None | bool = False


def _openssl() -> ctypes.CDLL | None:
    """The OpenSSL library the ``ssl`` module is linked with (None if it cannot be reached)."""
    global _libssl
    if _libssl is False:
        _libssl = None
        try:
            import _ssl

            if sys.implementation.name == "cpython" and getattr(_ssl, "__file__", None):
                lib = ctypes.CDLL(_ssl.__file__)
                lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
                lib.SSL_CTX_set_verify.restype = None
                lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
                lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
                _libssl = lib
        except (ImportError, OSError, AttributeError) as exc:
            log.warning("cannot reach OpenSSL (%s): inbound s2s streams request no certificate", exc)
    return _libssl  # type: ignore[return-value]


def tolerate_client_certificates(ctx: ssl.SSLContext) -> bool:
    """Make a server context request a client certificate without ever failing the
    handshake on it; False (and ``ctx`` unchanged) where this is not possible.

    CPython's ``SSLContext`` object holds its ``SSL_CTX *`` right after the object header,
    and keeps the verify callback when ``verify_mode`` changes later.  The pointer is
    checked (its verify mode must follow ``ctx.verify_mode``) before it is used.
    """
    lib = _openssl()
    if lib is None:
        return False
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    ctx.verify_mode = ssl.CERT_OPTIONAL
    if not ptr or lib.SSL_CTX_get_verify_mode(ptr) != _SSL_VERIFY_PEER:
        ctx.verify_mode = ssl.CERT_NONE
        return False
    lib.SSL_CTX_set_verify(ptr, _SSL_VERIFY_PEER, _ACCEPT_ANY)
    return True


class TLSPolicy:
    """TLS contexts for s2s streams and the check of a peer's certificate."""

    available = True  # every served domain has a certificate (generated if need be)

    def __init__(
        self,
        domains: tuple[str, ...],
        certificate_for: Callable[[str], Certificate],
        ca_file: Path | None = None,
        use_system_ca: bool = True,
    ) -> None:
        self.domains = domains
        self.certificate_for = certificate_for
        self.ca_file = ca_file
        self.use_system_ca = use_system_ca
        self.requests_client_certificates = False  # set once the server contexts exist
        self._server: dict[bool, ssl.SSLContext] = {}
        self._client: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._store: Store | None | bool = False

    def _cert_domain(self, domain: str) -> str:
        """The configured domain whose certificate serves ``domain`` (a subdomain such as
        a component's is covered by the parent's ``*.`` name)."""
        for d in self.domains:
            if domain == d or domain.endswith("." + d):
                return d
        return self.domains[0]

    def server_context(self, direct: bool) -> ssl.SSLContext:
        ctx = self._server.get(direct)
        if ctx is None:
            alpn = ["xmpp-server"] if direct else None
            contexts = {}
            tolerant = True
            for d in self.domains:
                cert = self.certificate_for(d)
                contexts[d] = server_context(cert.cert, cert.key, alpn=alpn)
                tolerant = tolerate_client_certificates(contexts[d]) and tolerant
            if not tolerant:  # all or none: a context switched by SNI must not lock anyone out
                for c in contexts.values():
                    c.verify_mode = ssl.CERT_NONE
            self.requests_client_certificates = tolerant
            ctx = self._server[direct] = sni_context(contexts, self.domains[0])
        return ctx

    def client_context(self, local: str, direct: bool) -> ssl.SSLContext:
        key = (self._cert_domain(local), direct)
        ctx = self._client.get(key)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # checked by peer_valid, after the handshake
            cert = self.certificate_for(key[0])
            ctx.load_cert_chain(cert.cert, cert.key)  # presented for SASL EXTERNAL
            if direct:
                ctx.set_alpn_protocols(["xmpp-server"])
            self._client[key] = ctx
        return ctx

    def trust_store(self) -> Store | None:
        """The trusted CAs: the system's (if ``use_system_ca``) plus ``ca_file``'s."""
        if self._store is False:
            paths: list[str | Path] = []
            if self.use_system_ca:
                default = ssl.get_default_verify_paths()
                if default.cafile or default.openssl_cafile:
                    paths.append(default.cafile or default.openssl_cafile)
            if self.ca_file is not None:
                paths.append(self.ca_file)
            certs: list[x509.Certificate] = []
            for path in paths:
                try:
                    with open(path, "rb") as fh, warnings.catch_warnings():
                        # system bundles hold a few legacy roots cryptography frowns upon
                        warnings.simplefilter("ignore")
                        certs += x509.load_pem_x509_certificates(fh.read())
                except (OSError, ValueError) as exc:
                    log.warning("s2s CA certificates from %s unusable: %s", path, exc)
            if not certs:
                log.warning("no CA certificates for s2s: peer certificates never validate")
            self._store = Store(certs) if certs else None
        return self._store  # type: ignore[return-value]

    def peer_valid(self, sslobj: ssl.SSLObject, domain: str, server_side: bool = False) -> bool:
        """Whether the peer's certificate chains to a trusted CA and names ``domain``."""
        der = sslobj.getpeercert(binary_form=True)
        return bool(der) and self.certificate_valid(der, domain, server_side)

    def certificate_valid(self, der: bytes, domain: str, server_side: bool = False) -> bool:
        """Whether the DER certificate ``der`` chains to a trusted CA and names ``domain``."""
        store = self.trust_store()
        if store is None:
            return False
        try:
            cert = x509.load_der_x509_certificate(der)
            verifier = PolicyBuilder().store(store).build_server_verifier(DNSName(domain))
            verifier.verify(cert, [])
        except (VerificationError, ValueError) as exc:
            log.debug("certificate of %s not valid (%s side): %s",
                      domain, "server" if server_side else "client", exc)
            return False
        return True
