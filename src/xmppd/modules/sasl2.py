"""XEP-0388 SASL2, XEP-0386 Bind2 and XEP-0484 FAST: the module side.

The protocol runs in c2s (``c2s/sasl2.py``, ``c2s/fast.py``); this module turns it on (c2s
offers SASL2 only while the ``sasl2`` service exists), holds the options, keeps the FAST
tokens and enables the inline Bind2 features through the ``sm`` and ``carbons`` services.

FAST tokens are kept per (account, user-agent id) in this module's key-value store (owner:
the bare JID, key: ``agent:`` + SHA-256 of the user-agent id), never in plaintext: what is
stored is ``SHA-256(token)`` (what HMAC keys with, see ``c2s/fast.py``) XORed with a mask
derived from the server secret, so a copy of the database alone does not log anyone in.
Each record also holds a fingerprint of the account's SCRAM credentials: a password change
(``xmppd passwd``, any ``set_credentials``) changes it, and the account's tokens stop
working (the record is deleted on its next use).  A record keeps the current token and the
one it replaced: the previous stays valid until the new one is first used (XEP-0484 §4.3,
rotation), both until their expiry.  ``<fast count=N/>`` must increase per token (replay
protection); ``<fast invalidate='true'/>`` drops the agent's tokens after the login.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from xmppd.c2s.fast import new_token, token_key
from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.storage.stores import UNCHANGED
from xmppd.xml.element import Element

CARBONS_NS = "urn:xmpp:carbons:2"
SM_NS = "urn:xmpp:sm:3"


def agent_key(agent: str) -> str:
    return "agent:" + hashlib.sha256(agent.encode()).hexdigest()[:32]


class SASL2(Module):
    """Offers SASL2 (+ Bind2, FAST) on client streams."""

    name = "sasl2"
    workers_safe = True
    xeps = ("XEP-0388", "XEP-0386", "XEP-0484")
    soft_depends = ("sm", "carbons")
    options = {
        "fast": Option(bool, True, "offer XEP-0484 FAST tokens (HT-SHA-256-*)"),
        "fast_token_expiry_s": Option(
            int, 14 * 86400, "how long a FAST token is valid after it is issued",
            min=60, max=366 * 86400),
    }

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        """New logins see the new options (tokens issued before keep their expiry)."""
        self.fast = api.options["fast"]
        self.expiry = api.options["fast_token_expiry_s"]
        return True

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.fast: bool = api.options["fast"]
        self.expiry: int = api.options["fast_token_expiry_s"]
        self.store = api.open_store("keyvalue")
        self.clock: Callable[[], float] = time.time  # tests move it
        api.provide("sasl2", self)

    # -- Bind2 inline features ------------------------------------------------------------

    def bind2_features(self) -> list[str]:
        api = self.api
        return [ns for ns, service in ((CARBONS_NS, "carbons"), (SM_NS, "sm"))
                if api.service(service) is not None]

    def bind2_inline(self, stream: Any, session: Any, bind: Element) -> bytes:
        out = b""
        for child in bind.elements():
            if child.name != "enable":
                continue
            if child.ns == CARBONS_NS:
                carbons = self.api.service("carbons")
                if carbons is not None:
                    carbons.enable_session(session)
            elif child.ns == SM_NS:
                sm = self.api.service("sm")
                if sm is not None:
                    out += sm.enable_inline(stream, child)
        return out

    def resume_inline(self, stream: Any, resume: Element,
                      reply: Callable[[bytes], None]) -> Awaitable | None:
        """XEP-0198 resumption inside ``<authenticate/>`` (done by the ``sm`` service)."""
        sm = self.api.service("sm")
        if sm is None:  # not offered then; a client that tries anyway gets a clear no
            reply(f"<failed xmlns='{SM_NS}'><feature-not-implemented "
                  f"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>".encode())
            return None
        return sm.resume(stream, resume, reply)

    # -- FAST tokens ----------------------------------------------------------------------

    def _mask(self, owner: str, key: str) -> bytes:
        return hmac.digest(self.api.secret, f"fast\0{owner}\0{key}".encode(), "sha256")

    async def _fingerprint(self, username: str, domain: str) -> str | None:
        creds = await self.api.storage.get_scram(username, domain, "SHA-256")
        if creds is None:
            return None
        return hmac.digest(self.api.secret, b"fast-creds\0" + creds.stored_key + creds.salt,
                           "sha256")[:16].hex()

    async def fast_issue(self, username: str, domain: str, agent: str) -> tuple[str, str]:
        owner, key = f"{username}@{domain}", agent_key(agent)
        token = new_token()
        mask = self._mask(owner, key)
        stored = bytes(a ^ b for a, b in zip(token_key(token), mask, strict=True)).hex()
        now = self.clock()
        expires = now + self.expiry
        fingerprint = await self._fingerprint(username, domain)

        def rotate(rec: dict | None) -> dict:
            current = None
            if rec is not None and rec.get("fp") == fingerprint:
                current = rec.get("current")
                if current is not None and current["exp"] <= now:
                    current = None
            return {"fp": fingerprint, "current": {"k": stored, "exp": expires},
                    "previous": current}

        await self.store.update(owner, key, rotate)
        expiry = datetime.fromtimestamp(int(expires), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return token, expiry

    async def fast_check(self, username: str, domain: str, agent: str,
                         matches: Callable[[bytes], bool], count: int | None) -> bytes | None:
        owner, key = f"{username}@{domain}", agent_key(agent)
        rec = await self.store.get(owner, key)
        if rec is None:
            return None
        if rec.get("fp") is None or rec.get("fp") != await self._fingerprint(username, domain):
            await self.store.delete(owner, key)  # the password changed: tokens are gone
            return None
        mask = self._mask(owner, key)
        now = self.clock()
        for slot in ("current", "previous"):
            entry = rec.get(slot)
            if not entry or entry["exp"] <= now:
                continue
            candidate = bytes(a ^ b for a, b in zip(bytes.fromhex(entry["k"]), mask,
                                                    strict=True))
            if matches(candidate):
                return candidate if await self._used(owner, key, entry["k"], slot, count) \
                    else None
        return None

    async def _used(self, owner: str, key: str, stored: str, slot: str,
                    count: int | None) -> bool:
        """Record a use: the count must increase; using the current token ends the grace
        of the previous one."""
        accepted = []

        def use(rec: dict | None) -> Any:
            if rec is None or (rec.get(slot) or {}).get("k") != stored:
                return UNCHANGED  # rotated or invalidated meanwhile
            entry = rec[slot]
            if count is not None:
                if count <= entry.get("count", -1):
                    return UNCHANGED  # a replay
                entry["count"] = count
            if slot == "current":
                rec["previous"] = None
            accepted.append(True)
            return rec

        await self.store.update(owner, key, use)
        return bool(accepted)

    async def fast_invalidate(self, username: str, domain: str, agent: str) -> None:
        await self.store.delete(f"{username}@{domain}", agent_key(agent))
