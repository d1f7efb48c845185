"""Fuzzing of the SASL server (``xmppd.c2s.sasl``) with arbitrary client payloads.

Input layout: one byte choosing the mechanism and the connection (TLS, channel
bindings, PLAIN allowed), one byte choosing the scenario, then scenario data:

* ``raw``: up to four length-prefixed payloads, the first to ``start()`` (or none:
  the empty-challenge path), the rest to ``respond()``;
* ``base64``: the text of ``<auth/>`` through ``decode_payload``, then as above;
* ``client``: an honest SCRAM/PLAIN client whose username, password, authzid, GS2
  flag, nonce and extensions come from the fuzzer, with optional tampering.

Invariants: nothing but :class:`~xmppd.c2s.sasl.SASLFailure` is raised; success only for
an existing account with its password (PRECIS-equal), the step names that account, and
an authzid, if any, denotes that same account.

    python fuzz/fuzz_sasl.py fuzz/corpus/sasl -dict=fuzz/sasl.dict
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import FuzzInput, instrumented, main  # noqa: E402

with instrumented(__name__ == "__main__"):
    from xmppd.c2s.sasl import (
        HASHES,
        SASLFailure,
        SASLServer,
        decode_payload,
        derive_all,
        encode_payload,
        normalize_username,
        prepare_password,
    )
    from xmppd.jid import _pure as _jid_pure
    from xmppd.storage import MemoryStorage

DOMAIN = "example.org"
#: The accounts (username as stored, i.e. already normalized) and their passwords.
ACCOUNTS = {"alice": "secret", "m\u00fcller": "p\u00e4ss w\u00f6rd"}
CB = {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}
MECHS = ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "SCRAM-SHA-1-PLUS",
         "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS", "PLAIN", "X-UNKNOWN")
SCENARIOS = ("raw", "base64", "client", "client")

USERS = ("alice", "Alice", "ALICE", "M\u00fcller", "mu\u0308ller", "nobody", "al,ice", "a=b")
PASSWORDS = ("secret", "Secret", "secret ", "\uff53ecret", "p\u00e4ss w\u00f6rd",
             "pa\u0308ss w\u00f6rd", "p\u00e4ss\u00a0w\u00f6rd", "")
AUTHZIDS = ("", "alice", "alice@example.org", "Alice@EXAMPLE.org.", "bob@example.org",
            "alice@example.org/res", "alice@other.org", "m\u00fcller@example.org")
GS2_FLAGS = ("n", "y", "p=tls-exporter", "p=tls-server-end-point", "p=tls-unique", "p=")

_loop = asyncio.new_event_loop()


async def _make_store() -> MemoryStorage:
    store = MemoryStorage()
    await store.open()
    for user, password in ACCOUNTS.items():
        await store.create_account(user, DOMAIN, derive_all(password))
    return store


STORE = _loop.run_until_complete(_make_store())


class Finding(AssertionError):
    """A broken SASL invariant."""


def _run(coro):
    return _loop.run_until_complete(coro)


def _same_password(given: str, account: str) -> bool:
    try:
        return prepare_password(given) == prepare_password(account)
    except ValueError:
        return False


def _check_success(step, *, authzid: str, password: str | None, mech: str) -> None:
    """A success must name an account, for its password, and a matching authzid."""
    user = step.username
    if user not in ACCOUNTS:
        raise Finding(f"{mech}: success for {user!r}, which is no account")
    if password is None:
        raise Finding(f"{mech}: success without the client knowing any password")
    if not _same_password(password, ACCOUNTS[user]):
        raise Finding(f"{mech}: {user!r} authenticated with wrong password {password!r}")
    if authzid and authzid != user:
        if "@" not in authzid:
            ok = _normalized(authzid) == user
        else:
            try:
                jid = _jid_pure.JID(authzid)
            except _jid_pure.JIDError:
                ok = False
            else:
                ok = jid.is_bare and jid.localpart == user and jid.domain == DOMAIN
        if not ok:
            raise Finding(f"{mech}: {user!r} authorized as {authzid!r}")


def _normalized(name: str) -> str | None:
    try:
        return normalize_username(name)
    except ValueError:
        return None


def _server(inp: FuzzInput) -> tuple[SASLServer, str]:
    conf = inp.byte()
    secure = bool(conf & 8)
    server = SASLServer(
        STORE,
        secure=secure,
        channel_bindings=CB if conf & 16 else None,
        allow_plain=bool(conf & 32),
        server_secret=b"fuzz-secret",
        domain=DOMAIN,
        nonce_factory=lambda: "srvNonce",
    )
    return server, MECHS[conf & 7]


async def _exchange(server: SASLServer, mech: str, first: bytes | None,
                    more: list[bytes]) -> object | None:
    """Run one exchange; the success step, or None when it failed cleanly."""
    try:
        step = await server.start(mech, first)
        for data in more:
            if step.success:
                break
            step = await server.respond(data)
    except SASLFailure:
        assert not server.authenticated
        try:  # a failed exchange is over
            await server.respond(b"n,,n=alice,r=x")
        except SASLFailure:
            return None
        raise Finding("respond() accepted data after a failure") from None
    if step.success:
        assert server.authenticated
        try:
            await server.start(mech, None)
        except SASLFailure:
            return step
        raise Finding("start() accepted a second authentication") from None
    return None


def _plain_password(data: bytes | None) -> tuple[str, str | None]:
    """(authzid, password) as the client sent them in a PLAIN payload."""
    parts = (data or b"").split(b"\0")
    if len(parts) != 3:
        return "", None
    try:
        return parts[0].decode(), parts[2].decode()
    except UnicodeDecodeError:
        return "", None


def _raw(server: SASLServer, mech: str, inp: FuzzInput, *, as_base64: bool) -> None:
    count = inp.byte() % 5
    if as_base64:
        text = inp.chunk().decode("utf-8", "replace")
        try:
            first = decode_payload(text)
        except SASLFailure:
            return
        payloads = [first] + [inp.chunk() for _ in range(max(count - 1, 0))]
    else:
        payloads = [inp.chunk() for _ in range(count)]
        first = payloads[0] if payloads else None
        payloads = payloads or [None]
    for p in payloads:  # what we send must come back as sent
        if p is not None and decode_payload(encode_payload(p)) != p:
            raise Finding(f"payload {p!r} does not survive encode/decode")
    step = _run(_exchange(server, mech, first, [p for p in payloads[1:] if p is not None]))
    if step is None:
        return
    if mech != "PLAIN":
        # Nobody can compute a SCRAM proof without the keys: blind payloads never pass.
        raise Finding(f"{mech} succeeded with blind payloads {payloads!r}")
    # The PLAIN message is the initial response, or the first response after the empty
    # challenge.
    sent = first if first is not None else (payloads[1] if len(payloads) > 1 else None)
    authzid, password = _plain_password(sent)
    _check_success(step, authzid=authzid, password=password, mech=mech)


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _fuzz_text(inp: FuzzInput, options: tuple[str, ...]) -> str:
    choice = inp.byte()
    if choice < 0xF0:
        return options[choice % len(options)]
    return inp.chunk().decode("utf-8", "replace")


def _client(server: SASLServer, mech: str, inp: FuzzInput) -> None:
    user = _fuzz_text(inp, USERS)
    password = _fuzz_text(inp, PASSWORDS)
    authzid = _fuzz_text(inp, AUTHZIDS)
    tamper = inp.byte()
    if mech == "PLAIN" or mech not in MECHS[:6]:
        payload = f"{authzid}\0{user}\0{password}".encode()
        step = _run(_exchange(server, mech, payload, []))
        if step is not None:
            _check_success(step, authzid=authzid, password=password, mech=mech)
        return
    hash_name = mech[len("SCRAM-"):].removesuffix("-PLUS")
    algo = HASHES[hash_name]
    flag = _fuzz_text(inp, GS2_FLAGS)
    nonce = _fuzz_text(inp, ("cNonce", "c,n", "", "c=n"))
    ext = inp.chunk().decode("utf-8", "replace") if tamper & 1 else ""
    authz = f"a={_escape(authzid)}" if authzid else ""
    gs2 = f"{flag},{authz},"
    name = _escape(user) if not tamper & 2 else user
    first_bare = f"n={name},r={nonce}" + (f",{ext}" if ext else "")

    async def run() -> object | None:
        try:
            step = await server.start(mech, (gs2 + first_bare).encode())
        except SASLFailure:
            return None
        challenge = step.challenge.decode()
        attrs = dict(a.split("=", 1) for a in challenge.split(","))
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = hashlib.pbkdf2_hmac(algo, prepare_password(password), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", algo)
        stored = hashlib.new(algo, client_key).digest()
        cb_data = CB.get(flag[2:], b"") if flag.startswith("p=") else b""
        if tamper & 4:
            cb_data = b"X" + cb_data
        cbind = base64.b64encode(gs2.encode() + cb_data).decode()
        server_nonce = attrs["r"] + ("x" if tamper & 8 else "")
        final_bare = f"c={cbind},r={server_nonce}" + (f",{ext}" if tamper & 16 and ext else "")
        auth_message = f"{first_bare},{challenge},{final_bare}".encode()
        signature = hmac.digest(stored, auth_message, algo)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        if tamper & 32:
            proof = proof[:-1] + bytes([proof[-1] ^ 1])
        final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
        try:
            return await server.respond(final)
        except SASLFailure:
            return None

    try:
        prepare_password(password)
    except ValueError:
        return  # the client itself cannot prepare this password
    step = _run(run())
    if step is not None and step.success:
        _check_success(step, authzid=authzid, password=password, mech=mech)
        if tamper & (4 | 8 | 32):
            raise Finding(f"{mech}: tampered final message accepted (tamper={tamper:#x})")


# Findings filed as xfail regression tests (tests/test_fuzz_regressions.py) that the
# harness steps over so that a run can find new ones; FUZZ_STRICT=1 re-enables them.
KNOWN: list[tuple[type[BaseException], str]] = []


def _known(exc: BaseException) -> bool:
    if os.environ.get("FUZZ_STRICT", "") not in ("", "0"):
        return False
    return any(type(exc) is t and msg in str(exc) for t, msg in KNOWN)


def test_one_input(data: bytes) -> None:
    """The harness: SASLFailure only, and no success without the right password."""
    inp = FuzzInput(data)
    server, mech = _server(inp)
    scenario = SCENARIOS[inp.byte() % len(SCENARIOS)]
    try:
        if scenario == "client":
            _client(server, mech, inp)
        else:
            _raw(server, mech, inp, as_base64=scenario == "base64")
    except Exception as exc:
        if _known(exc):
            return
        raise


def encode_raw(conf: int, payloads: list[bytes], *, as_base64: bool = False) -> bytes:
    """The fuzz input that sends ``payloads`` (each < 256 bytes) with configuration ``conf``."""
    out = bytearray([conf, 1 if as_base64 else 0, len(payloads)])
    for p in payloads:
        out += bytes([len(p)]) + p
    return bytes(out)


if __name__ == "__main__":
    main("sasl", test_one_input)
