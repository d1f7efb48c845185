"""The stored form of a password: SCRAM keys per hash (RFC 5802 §3), never the password.

A storage type (the accounts store keeps these); :mod:`xmppd.c2s.sasl` derives and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The hashes xmppd stores SCRAM keys for.
HASH_NAMES = ("SHA-1", "SHA-256", "SHA-512")


@dataclass(frozen=True)
class ScramCredentials:
    """Stored SCRAM keys for one hash (RFC 5802 §3); never the password."""

    hash_name: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
