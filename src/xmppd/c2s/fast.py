"""XEP-0484 FAST tokens and the HT-* SASL mechanisms (draft-schmaus-kitten-sasl-ht), sans-IO.

A token is a random string longer than SHA-256's block size (64 bytes): HMAC then keys
with ``SHA-256(token)``, so the server stores only that hash (masked with the server
secret, see ``modules/sasl2.py``) and still verifies ``HMAC(token, "Initiator" || cb)``.

The client's message is ``authcid NUL HMAC(token, "Initiator" || cb-data)``; on success the
server's additional data is ``HMAC(token, "Responder" || cb-data)``.  ``cb-data`` is empty
for ``-NONE``, the ``tls-server-end-point`` data for ``-ENDP`` and ``tls-exporter`` for
``-EXPR``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import Protocol

from xmppd.c2s.sasl import SASLFailure, SASLStep, normalize_username

FAST_NS = "urn:xmpp:fast:0"

#: Mechanism -> channel-binding type (None: no channel binding), strongest first.
HT_MECHANISMS: dict[str, str | None] = {
    "HT-SHA-256-EXPR": "tls-exporter",
    "HT-SHA-256-ENDP": "tls-server-end-point",
    "HT-SHA-256-NONE": None,
}

#: 72 random bytes -> 96 characters: longer than the 64-byte SHA-256 block.
TOKEN_BYTES = 72


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_key(token: str) -> bytes:
    """What HMAC keys with for ``token`` (RFC 2104: a key longer than the block is hashed)."""
    data = token.encode()
    assert len(data) > 64, "FAST tokens must be longer than the SHA-256 block"
    return hashlib.sha256(data).digest()


def initiator_proof(key: bytes, cb_data: bytes) -> bytes:
    return hmac.digest(key, b"Initiator" + cb_data, "sha256")


def responder_proof(key: bytes, cb_data: bytes) -> bytes:
    return hmac.digest(key, b"Responder" + cb_data, "sha256")


def ht_mechanisms(bindings: Mapping[str, bytes] | None) -> list[str]:
    """The HT mechanisms this connection can offer (the bound ones need TLS bindings)."""
    return [m for m, cb in HT_MECHANISMS.items() if cb is None or cb in (bindings or {})]


class TokenStore(Protocol):
    """The FAST token keeper (the ``sasl2`` module's service)."""

    async def fast_check(self, username: str, domain: str, agent: str,
                         matches: Callable[[bytes], bool], count: int | None) -> bytes | None:
        """The key of a valid token of (account, agent) ``matches`` accepts, or None."""


class TokenAuth:
    """One HT-* exchange (one message: the client's, answered by success or failure)."""

    def __init__(self, store: TokenStore, *, domain: str, bindings: Mapping[str, bytes] | None,
                 agent: str | None, count: int | None) -> None:
        self.store = store
        self.domain = domain
        self.bindings = bindings or {}
        self.agent = agent
        self.count = count
        self.mechanism = ""
        self.attempted_username = ""

    async def start(self, mechanism: str, initial: bytes | None) -> SASLStep:
        self.mechanism = mechanism[:40]
        if mechanism not in ht_mechanisms(self.bindings):
            raise SASLFailure("invalid-mechanism")
        cb_type = HT_MECHANISMS[mechanism]
        cb_data = b"" if cb_type is None else self.bindings[cb_type]
        if not initial or b"\0" not in initial:
            raise SASLFailure("malformed-request", "expected authcid NUL proof")
        raw_user, _, proof = initial.partition(b"\0")
        try:
            authcid = raw_user.decode()
        except UnicodeDecodeError:
            raise SASLFailure("malformed-request", "not UTF-8") from None
        self.attempted_username = authcid[:256]
        if self.agent is None:
            raise SASLFailure("malformed-request", "FAST needs a <user-agent id=...>")
        try:
            username = normalize_username(authcid)
        except ValueError:
            raise SASLFailure("not-authorized", credentials=True) from None

        def matches(key: bytes) -> bool:
            return hmac.compare_digest(initiator_proof(key, cb_data), proof)

        key = await self.store.fast_check(username, self.domain, self.agent, matches, self.count)
        if key is None:
            raise SASLFailure("not-authorized", credentials=True)
        return SASLStep(success=True, additional_data=responder_proof(key, cb_data),
                        username=username)

    async def respond(self, data: bytes) -> SASLStep:
        raise SASLFailure("malformed-request", "HT takes one message")

    def abort(self) -> None:
        pass


