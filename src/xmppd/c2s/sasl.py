"""Sans-IO server-side SASL (RFC 6120 §6): SCRAM-SHA-{1,256,512}[-PLUS] and PLAIN.

The :class:`SASLServer` works on *decoded* payloads (raw bytes).  The caller (c2s) turns
the base64 text of ``<auth/>``/``<response/>`` into bytes with :func:`decode_payload`
(which raises ``incorrect-encoding``) and the challenge/additional data back into text
with :func:`encode_payload`.  Every failure is a :class:`SASLFailure` carrying the
RFC 6120 §6.5 condition name; the caller sends ``<failure><{condition}/></failure>``.

Passwords are never stored: only SCRAM keys (:class:`ScramCredentials`), one set per
hash.  A SCRAM login never runs PBKDF2 on the server; PLAIN does, in a worker thread.
Nothing here logs passwords or SASL payloads.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import precis_i18n

from xmppd.randompool import random_bytes
from xmppd.storage.credentials import HASH_NAMES, ScramCredentials

__all__ = [
    "CONDITIONS",
    "CredentialStore",
    "HASHES",
    "MIN_ITERATIONS",
    "SASLFailure",
    "SASLServer",
    "SASLStep",
    "ScramCredentials",
    "decode_payload",
    "derive_all",
    "derive_credentials",
    "encode_payload",
    "normalize_username",
    "prepare_password",
]

#: RFC 6120 §6.5 failure conditions.
CONDITIONS = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    }
)

#: SCRAM hash name (as in the mechanism name) -> hashlib name.
#: hashlib names of the SCRAM hashes.
HASHES: dict[str, str] = dict(zip(HASH_NAMES, ("sha1", "sha256", "sha512"), strict=True))

#: RFC 5802 §5.1 / RFC 7677 §4: at least 4096 iterations.
MIN_ITERATIONS = 4096

#: Channel-binding types we can offer, preferred first.  ``tls-unique`` is offered only on
#: TLS 1.2 connections, where it is defined (RFC 5929); it is undefined for TLS 1.3
#: (RFC 9266), and a request for it there fails with a text that says so.
CB_TYPES = ("tls-exporter", "tls-server-end-point", "tls-unique")

# Larger payloads are never legitimate for these mechanisms; refusing them early bounds
# the work an unauthenticated peer can cause.
MAX_PAYLOAD = 4096

_PREFERENCE = ("SHA-512", "SHA-256", "SHA-1")
#: Every mechanism this module implements (whether a stream offers it or not).
ALL_MECHANISMS = frozenset(
    [f"SCRAM-{h}{plus}" for h in _PREFERENCE for plus in ("", "-PLUS")] + ["PLAIN"]
)
_CB_NAME = re.compile(r"[A-Za-z0-9.-]+\Z")
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+\Z")  # printable ASCII except ','

_OPAQUE = precis_i18n.get_profile("OpaqueString")
_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")


class SASLFailure(Exception):
    """An authentication failure with its RFC 6120 §6.5 condition name.

    ``credentials`` is True only when the credentials were checked and found wrong (a
    bad proof or password, an unknown user): only those count toward lockouts.  A
    negotiation error (malformed message, unknown mechanism or channel-binding type) says
    nothing about the password and is not counted.
    """

    def __init__(self, condition: str, text: str | None = None, *,
                 credentials: bool = False) -> None:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown SASL condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.credentials = credentials


@dataclass
class SASLStep:
    """What to send after a step: a challenge, or success (with optional additional data)."""

    challenge: bytes | None = None
    success: bool = False
    additional_data: bytes | None = None
    username: str | None = None


class CredentialStore(Protocol):
    """Where SCRAM keys come from; :class:`xmppd.storage.Storage` satisfies it."""

    async def get_scram(
        self, username: str, domain: str, hash_name: str
    ) -> ScramCredentials | None: ...

    async def account_disabled(self, username: str, domain: str) -> bool:
        """True for a disabled account (its right credentials fail with account-disabled)."""
        ...


# -- payload encoding -----------------------------------------------------------------


def decode_payload(text: str | None) -> bytes | None:
    """Decode the base64 text of ``<auth/>`` or ``<response/>``.

    ``None`` or ``""`` (no text) means "no data" and gives ``None``; ``"="`` is an
    explicitly empty payload (RFC 6120 §6.4.2) and gives ``b""``.
    """
    if text is None:
        return None
    text = "".join(text.split())  # whitespace between base64 characters is harmless
    if not text:
        return None
    if text == "=":
        return b""
    if len(text) > MAX_PAYLOAD * 4 // 3 + 4:
        raise SASLFailure("malformed-request", "payload too large")
    try:
        # base64.b64decode(text, validate=True) is this, behind two Python calls
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise SASLFailure("incorrect-encoding") from None


def encode_payload(data: bytes | None) -> str:
    """Encode a challenge or additional data; an empty payload is ``"="``, none is ``""``."""
    if data is None:
        return ""
    if not data:
        return "="
    return binascii.b2a_base64(data, newline=False).decode("ascii")


# -- credentials ----------------------------------------------------------------------


def prepare_password(password: str) -> bytes:
    """PRECIS OpaqueString (RFC 8265, the successor of SASLprep) then UTF-8."""
    try:
        return _OPAQUE.enforce(password).encode("utf-8")
    except UnicodeError:
        raise ValueError("password is not a valid PRECIS OpaqueString") from None


def normalize_username(username: str) -> str:
    """PRECIS UsernameCaseMapped, as for a JID localpart (RFC 7622 §3.3)."""
    if username.isascii() and username.isprintable() and " " not in username and username:
        # Printable ASCII but space is all PVALID in the IdentifierClass (RFC 8264 §9.11),
        # and width mapping, NFC and the bidi rule change nothing in it: the profile
        # reduces to lower-casing.  The full profile costs ~20 us a login.
        return username.lower()
    try:
        return _USERNAME.enforce(username)
    except UnicodeError:
        raise ValueError("invalid username") from None


def _keys(hash_name: str, salted: bytes) -> tuple[bytes, bytes]:
    algo = HASHES[hash_name]
    client_key = hmac.digest(salted, b"Client Key", algo)
    stored_key = hashlib.new(algo, client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", algo)
    return stored_key, server_key


def derive_credentials(
    password: str, hash_name: str, iterations: int = MIN_ITERATIONS, salt: bytes | None = None
) -> ScramCredentials:
    """Derive the stored SCRAM keys for ``password`` (slow: PBKDF2; keep it off the loop)."""
    if hash_name not in HASHES:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}")
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"SCRAM iteration count must be >= {MIN_ITERATIONS}")
    if salt is None:
        salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac(HASHES[hash_name], prepare_password(password), salt, iterations)
    stored_key, server_key = _keys(hash_name, salted)
    return ScramCredentials(hash_name, salt, iterations, stored_key, server_key)


def derive_all(password: str, iterations: int = MIN_ITERATIONS) -> dict[str, ScramCredentials]:
    """Credentials for every supported hash, each with its own salt."""
    return {name: derive_credentials(password, name, iterations) for name in HASHES}


# -- SCRAM message parsing ------------------------------------------------------------


def _unescape_saslname(value: str) -> str:
    # RFC 5802 §5.1: ',' and '=' are sent as '=2C' and '=3D'; any other '=' is invalid.
    if "=" in value.replace("=2C", "").replace("=3D", ""):
        raise SASLFailure("malformed-request", "bad saslname escape")
    return value.replace("=2C", ",").replace("=3D", "=")


def _attributes(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise SASLFailure("malformed-request", "bad SCRAM attribute")
        pairs.append((part[0], part[2:]))
    return pairs


def _b64(value: str) -> bytes:
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise SASLFailure("incorrect-encoding") from None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLFailure("malformed-request", "not UTF-8") from None


# -- the server -----------------------------------------------------------------------


def _new_nonce() -> str:
    """The server's half of a SCRAM nonce: 18 unpredictable bytes as URL-safe base64,
    as ``secrets.token_urlsafe(18)`` gives, from the pooled CSPRNG (``xmppd.randompool``:
    one OpenSSL call per ~200 logins rather than a system call per login)."""
    return binascii.b2a_base64(random_bytes(18), newline=False).decode("ascii").translate(
        _URLSAFE)


_URLSAFE = str.maketrans("+/", "-_")


def _offer(bound: bool, plain: bool, enabled: frozenset[str] | None) -> tuple[str, ...]:
    """The mechanisms offered with (``bound``) and without channel bindings, with or
    without PLAIN, restricted to ``enabled``; strongest first."""
    mechs: list[str] = []
    if bound:
        mechs += [f"SCRAM-{h}-PLUS" for h in _PREFERENCE]
    mechs += [f"SCRAM-{h}" for h in _PREFERENCE]
    if plain:
        mechs.append("PLAIN")
    if enabled is not None:
        mechs = [m for m in mechs if m in enabled]
    return tuple(mechs)


#: What :func:`_offer` answered, by its arguments (a few combinations per server).
_OFFERED: dict[tuple[bool, bool, frozenset[str] | None], tuple[str, ...]] = {}


class SASLServer:
    """One SASL negotiation for one stream (sans-IO; ``await`` only for the store).

    ``secure`` says whether the stream is TLS-protected; ``channel_bindings`` maps the
    channel-binding types available on this connection to their data (see
    :func:`xmppd.transport.tls.channel_bindings`).  ``domain`` is the host the client authenticates
    to.  ``server_secret`` keys the fake salts given for unknown users, so that they look
    like real, stable accounts.
    """

    def __init__(
        self,
        store: CredentialStore,
        *,
        secure: bool,
        channel_bindings: Mapping[str, bytes] | None = None,
        allow_plain: bool = True,
        server_secret: bytes,
        domain: str,
        enabled: Collection[str] | None = None,
        fake_iterations: int = MIN_ITERATIONS,
        nonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self._store = store
        self._secure = secure
        cbs = dict(channel_bindings or {}) if secure else {}
        self._bindings = {k: v for k, v in cbs.items() if k in CB_TYPES}
        self._allow_plain = allow_plain
        self._secret = server_secret
        self._domain = domain.lower()
        self._enabled = None if enabled is None else frozenset(enabled)
        self._fake_iterations = fake_iterations
        self._nonce_factory = nonce_factory or _new_nonce
        self._state: _Scram | _Plain | None = None
        self._authenticated = False
        #: For the log line of a failed attempt: the mechanism and the username tried.
        self.mechanism = ""
        self.attempted_username = ""

    # advertisement

    def mechanisms(self) -> list[str]:
        """The mechanisms to advertise on this stream, strongest first."""
        return list(self.offered())

    def offered(self) -> tuple[str, ...]:
        """:meth:`mechanisms` as a tuple: asked three times a login, with one of a handful
        of answers, each computed once."""
        key = (bool(self._bindings), self._allow_plain and self._secure, self._enabled)
        mechs = _OFFERED.get(key)
        if mechs is None:
            mechs = _OFFERED[key] = _offer(*key)
        return mechs

    def _plus_offered(self) -> bool:
        """A -PLUS mechanism is offered (they come first: strongest first)."""
        offered = self.offered()
        return bool(offered) and offered[0].endswith("-PLUS")

    def channel_binding_types(self) -> list[str]:
        """Types for XEP-0440 ``<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>``."""
        if not self._bindings or not self._plus_offered():
            return []
        return [t for t in CB_TYPES if t in self._bindings]

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    # negotiation

    async def start(self, mechanism: str, initial: bytes | None) -> SASLStep:
        """Handle ``<auth mechanism=...>``; ``initial`` is the decoded initial response."""
        if self._authenticated:
            raise SASLFailure("malformed-request", "already authenticated")
        self._state = None
        self.mechanism = mechanism[:40]
        self.attempted_username = ""
        offered = self.offered()
        if mechanism not in offered:
            if mechanism == "PLAIN" and self._allow_plain and not self._secure:
                raise SASLFailure("encryption-required")
            raise SASLFailure("invalid-mechanism")
        if mechanism == "PLAIN":
            self._state = _Plain(self)
        else:
            name = mechanism[len("SCRAM-") :]
            plus = name.endswith("-PLUS")
            hash_name = name[: -len("-PLUS")] if plus else name
            advertised_plus = self._plus_offered()
            self._state = _Scram(self, hash_name, plus, advertised_plus)
        if initial is None:
            return SASLStep(challenge=b"")  # RFC 6120 §6.4.2: empty challenge, then data
        return await self._step(initial)

    async def respond(self, data: bytes) -> SASLStep:
        """Handle ``<response/>`` (decoded)."""
        if self._state is None:
            raise SASLFailure("malformed-request", "no authentication in progress")
        return await self._step(data)

    def abort(self) -> None:
        """The client sent ``<abort/>``: forget the exchange (caller replies ``aborted``)."""
        self._state = None

    async def _step(self, data: bytes) -> SASLStep:
        state = self._state
        assert state is not None
        try:
            if len(data) > MAX_PAYLOAD:
                raise SASLFailure("malformed-request", "payload too large")
            step = await state.step(data)
        except SASLFailure:
            self._state = None
            raise
        if step.success:
            self._state = None
            self._authenticated = True
        return step

    # helpers for the mechanisms

    def _fake_credentials(self, username: str, hash_name: str) -> ScramCredentials:
        # Deterministic per (user, hash): repeating a probe shows the same salt, as for
        # a real account.  The keys are random: the proof can never verify.
        mac = hmac.digest(self._secret, f"{hash_name}\0{username}".encode(), "sha256")
        size = hashlib.new(HASHES[hash_name]).digest_size
        return ScramCredentials(
            hash_name, mac[:16], self._fake_iterations, os.urandom(size), os.urandom(size)
        )

    def _check_authzid(self, authzid: str, username: str) -> None:
        if not authzid or authzid == username:
            return
        local, sep, domain = authzid.partition("@")
        if not sep or ("/" not in domain and domain.lower().rstrip(".") == self._domain):
            try:
                if normalize_username(local) == username:
                    return
            except ValueError:
                pass
        raise SASLFailure("invalid-authzid")


class _Scram:
    """SCRAM (RFC 5802) server state for one exchange."""

    def __init__(self, server: SASLServer, hash_name: str, plus: bool, advertised_plus: bool):
        self.server = server
        self.hash_name = hash_name
        self.algo = HASHES[hash_name]
        self.plus = plus
        self.advertised_plus = advertised_plus
        self.first_bare = ""
        self.server_first = ""
        self.gs2_header = b""
        self.cb_data = b""
        self.nonce = ""
        self.creds: ScramCredentials | None = None
        self.known = False
        self.username = ""
        self.authzid = ""

    async def step(self, data: bytes) -> SASLStep:
        if self.creds is None:
            return await self.client_first(data)
        return self.client_final(data)

    async def client_first(self, data: bytes) -> SASLStep:
        text = _text(data)
        flag, sep, rest = text.partition(",")
        authz, sep2, bare = rest.partition(",")
        if not (sep and sep2):
            raise SASLFailure("malformed-request", "bad GS2 header")
        self.gs2_header = f"{flag},{authz},".encode()
        self._check_gs2_flag(flag)
        if authz:
            if not authz.startswith("a="):
                raise SASLFailure("malformed-request", "bad authzid")
            self.authzid = _unescape_saslname(authz[2:])

        attrs = _attributes(bare)
        if attrs and attrs[0][0] == "m":
            raise SASLFailure("malformed-request", "mandatory extension not supported")
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise SASLFailure("malformed-request", "expected n= and r=")
        raw_user = _unescape_saslname(attrs[0][1])
        self.server.attempted_username = raw_user[:256]
        client_nonce = attrs[1][1]
        if not raw_user or not _NONCE.match(client_nonce):
            raise SASLFailure("malformed-request", "bad username or nonce")
        self.first_bare = bare

        creds = None
        try:
            self.username = normalize_username(raw_user)
        except ValueError:
            self.username = ""  # cannot exist: fail at the proof step like any unknown user
        else:
            creds = await self.server._store.get_scram(
                self.username, self.server._domain, self.hash_name
            )
        if creds is not None and creds.hash_name == self.hash_name:
            self.known = True
        else:
            creds = self.server._fake_credentials(raw_user, self.hash_name)
        self.creds = creds
        self.nonce = client_nonce + self.server._nonce_factory()
        salt = binascii.b2a_base64(creds.salt, newline=False).decode("ascii")
        self.server_first = f"r={self.nonce},s={salt},i={creds.iterations}"
        return SASLStep(challenge=self.server_first.encode())

    def _check_gs2_flag(self, flag: str) -> None:
        if flag.startswith("p="):
            cb_name = flag[2:]
            if not self.plus:
                raise SASLFailure("malformed-request", "channel binding with a non-PLUS mechanism")
            if not _CB_NAME.match(cb_name):
                raise SASLFailure("malformed-request", "bad channel-binding name")
            if cb_name not in self.server._bindings:
                if cb_name == "tls-unique":
                    raise SASLFailure("not-authorized", "tls-unique is not defined for TLS 1.3;"
                                      " use tls-exporter or tls-server-end-point")
                raise SASLFailure("not-authorized", f"unsupported channel-binding type {cb_name}")
            self.cb_data = self.server._bindings[cb_name]
        elif flag in ("n", "y"):
            if self.plus:
                raise SASLFailure("malformed-request", "a PLUS mechanism needs channel binding")
            if flag == "y" and self.advertised_plus:
                # RFC 5802 §6: the client would have bound had it seen PLUS; someone
                # stripped it from the advertisement.
                raise SASLFailure("not-authorized", "channel-binding downgrade")
        else:
            raise SASLFailure("malformed-request", "bad GS2 flag")

    def client_final(self, data: bytes) -> SASLStep:
        creds = self.creds
        assert creds is not None
        text = _text(data)
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep or "," in proof_b64:
            raise SASLFailure("malformed-request", "proof must be the last attribute")
        attrs = _attributes(without_proof)
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r":
            raise SASLFailure("malformed-request", "expected c= and r=")
        cbind = _b64(attrs[0][1])
        proof = _b64(proof_b64)

        ok = hmac.compare_digest(cbind, self.gs2_header + self.cb_data)
        ok &= hmac.compare_digest(attrs[1][1].encode(), self.nonce.encode())
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.digest(creds.stored_key, auth_message, self.algo)
        if len(proof) == len(signature):
            # XOR as integers: a generator over the bytes ran ~300 bytecodes a login
            client_key = (int.from_bytes(proof) ^ int.from_bytes(signature)).to_bytes(len(proof))
            ok &= hmac.compare_digest(hashlib.new(self.algo, client_key).digest(), creds.stored_key)
        else:
            ok = False
        if not (ok and self.known):
            raise SASLFailure("not-authorized", credentials=True)
        self.server._check_authzid(self.authzid, self.username)
        verifier = hmac.digest(creds.server_key, auth_message, self.algo)
        return SASLStep(
            success=True,
            additional_data=b"v=" + binascii.b2a_base64(verifier, newline=False),
            username=self.username,
        )


class _Plain:
    """PLAIN (RFC 4616), only over TLS; verified against the stored SCRAM keys."""

    def __init__(self, server: SASLServer) -> None:
        self.server = server

    async def step(self, data: bytes) -> SASLStep:
        parts = data.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SASLFailure("malformed-request", "expected authzid NUL authcid NUL passwd")
        authzid, authcid, password = (_text(p) for p in parts)
        server = self.server
        server.attempted_username = authcid[:256]
        try:
            username = normalize_username(authcid)
        except ValueError:
            username = ""
        creds = None
        if username:
            for hash_name in ("SHA-256", "SHA-512", "SHA-1"):
                creds = await server._store.get_scram(username, server._domain, hash_name)
                if creds is not None:
                    break
        known = creds is not None
        if creds is None:
            # Same PBKDF2 cost for unknown users, so timing does not tell them apart.
            creds = server._fake_credentials(authcid, "SHA-256")
        ok = await asyncio.to_thread(_plain_matches, password, creds)
        if not (ok and known):
            raise SASLFailure("not-authorized", credentials=True)
        server._check_authzid(authzid, username)
        return SASLStep(success=True, username=username)


def _plain_matches(password: str, creds: ScramCredentials) -> bool:
    try:
        prepared = prepare_password(password)
    except ValueError:
        return False
    salted = hashlib.pbkdf2_hmac(HASHES[creds.hash_name], prepared, creds.salt, creds.iterations)
    stored_key, _ = _keys(creds.hash_name, salted)
    return hmac.compare_digest(stored_key, creds.stored_key)
