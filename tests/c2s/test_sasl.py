"""SASL server: full SCRAM/PLAIN exchanges driven by a small test client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmppd.c2s.sasl import (
    HASHES,
    SASLFailure,
    SASLServer,
    ScramCredentials,
    decode_payload,
    derive_all,
    derive_credentials,
    encode_payload,
)

DOMAIN = "example.org"
SECRET = b"server-secret"
CB = {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}


class DictStore:
    """A CredentialStore backed by a dict {(user, domain, hash): creds}."""

    def __init__(self) -> None:
        self.creds: dict[tuple[str, str, str], ScramCredentials] = {}
        self.lookups: list[tuple[str, str, str]] = []

    def add(self, user: str, password: str) -> None:
        for name, c in derive_all(password).items():
            self.creds[(user, DOMAIN, name)] = c

    async def get_scram(self, username: str, domain: str, hash_name: str):
        self.lookups.append((username, domain, hash_name))
        return self.creds.get((username, domain, hash_name))


class ScramClient:
    """Client side of RFC 5802, with knobs to misbehave."""

    def __init__(
        self,
        hash_name: str,
        user: str,
        password: str,
        *,
        nonce: str = "fyko+d2lbbFgONRv9qkxdawL",
        gs2: str = "n,,",
        cb_data: bytes = b"",
    ) -> None:
        self.algo = HASHES[hash_name]
        self.user, self.password, self.nonce = user, password, nonce
        self.gs2, self.cb_data = gs2, cb_data

    def first(self) -> bytes:
        self.bare = f"n={self.user},r={self.nonce}"
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, *, nonce: str | None = None, cbind: bytes | None = None):
        sf = server_first.decode()
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            self.algo, self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", self.algo)
        stored_key = hashlib.new(self.algo, client_key).digest()
        cbind = self.gs2.encode() + self.cb_data if cbind is None else cbind
        without = f"c={base64.b64encode(cbind).decode()},r={nonce or attrs['r']}"
        auth = f"{self.bare},{sf},{without}".encode()
        sig = hmac.digest(stored_key, auth, self.algo)
        proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.algo)
        self.expected_v = b"v=" + base64.b64encode(hmac.digest(server_key, auth, self.algo))
        return f"{without},p={base64.b64encode(proof).decode()}".encode()


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def store() -> DictStore:
    s = DictStore()
    s.add("juliet", "r0m30myr0m30")
    return s


def server(store, *, secure=True, cb=None, plain=True, **kw) -> SASLServer:
    return SASLServer(
        store,
        secure=secure,
        channel_bindings=cb,
        allow_plain=plain,
        server_secret=SECRET,
        domain=DOMAIN,
        **kw,
    )


async def scram_login(srv: SASLServer, mech: str, client: ScramClient, **final_kw):
    step = await srv.start(mech, client.first())
    assert step.challenge and not step.success
    step = await srv.respond(client.final(step.challenge, **final_kw))
    return step


# -- test vectors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "hash_name,salt,cnonce,snonce,proof,verifier",
    [
        (  # RFC 5802 §5
            "SHA-1",
            "QSXCR+Q6sek8bf92",
            "fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
        (  # RFC 7677 §3
            "SHA-256",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
    ],
)
def test_rfc_vectors(hash_name, salt, cnonce, snonce, proof, verifier):
    creds = derive_credentials("pencil", hash_name, 4096, base64.b64decode(salt))
    st = DictStore()
    st.creds[("user", DOMAIN, hash_name)] = creds
    srv = server(st, nonce_factory=lambda: snonce)
    mech = f"SCRAM-{hash_name}"

    async def go():
        first = await srv.start(mech, f"n,,n=user,r={cnonce}".encode())
        assert first.challenge == f"r={cnonce}{snonce},s={salt},i=4096".encode()
        final = f"c=biws,r={cnonce}{snonce},p={proof}".encode()
        return await srv.respond(final)

    step = run(go())
    assert step.success and step.username == "user"
    assert step.additional_data == b"v=" + verifier.encode()


def test_rfc5802_stored_keys():
    # Independent computation of StoredKey / ServerKey from RFC 5802 §3 definitions.
    salt = base64.b64decode("QSXCR+Q6sek8bf92")
    creds = derive_credentials("pencil", "SHA-1", 4096, salt)
    salted = hashlib.pbkdf2_hmac("sha1", b"pencil", salt, 4096)
    assert creds.stored_key == hashlib.sha1(hmac.digest(salted, b"Client Key", "sha1")).digest()
    assert creds.server_key == hmac.digest(salted, b"Server Key", "sha1")
    assert creds.iterations == 4096 and creds.salt == salt


def test_derive_rules():
    with pytest.raises(ValueError):
        derive_credentials("pencil", "SHA-256", iterations=4095)
    with pytest.raises(ValueError):
        derive_credentials("pencil", "MD5")
    all_ = derive_all("pencil")
    assert set(all_) == {"SHA-1", "SHA-256", "SHA-512"}
    assert len({c.salt for c in all_.values()}) == 3
    # PRECIS OpaqueString maps non-ASCII spaces to ASCII space before hashing.
    salt = b"s" * 16
    assert (
        derive_credentials("a\u00a0b", "SHA-1", salt=salt).stored_key
        == derive_credentials("a b", "SHA-1", salt=salt).stored_key
    )


# -- mechanism advertisement ------------------------------------------------------------


def test_mechanisms(store):
    assert server(store, secure=False, cb=CB).mechanisms() == [
        "SCRAM-SHA-512",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
    ]
    secure = server(store, cb=CB)
    assert secure.mechanisms()[:3] == [
        "SCRAM-SHA-512-PLUS",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
    ]
    assert secure.mechanisms()[-1] == "PLAIN"
    assert secure.channel_binding_types() == ["tls-exporter", "tls-server-end-point"]
    no_cb = server(store, plain=False)
    assert "PLAIN" not in no_cb.mechanisms()
    assert not any(m.endswith("-PLUS") for m in no_cb.mechanisms())
    assert no_cb.channel_binding_types() == []
    # tls-unique is offered when the connection has it (the caller passes it on TLS 1.2
    # only), after the types that are defined for every TLS version.
    assert server(store, cb={**CB, "tls-unique": b"x"}).channel_binding_types() == [
        "tls-exporter", "tls-server-end-point", "tls-unique"]
    assert server(store, enabled={"SCRAM-SHA-256"}).mechanisms() == ["SCRAM-SHA-256"]


# -- SCRAM exchanges -----------------------------------------------------------------


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256", "SHA-512"])
def test_scram_success(store, hash_name):
    srv = server(store, secure=False)
    client = ScramClient(hash_name, "juliet", "r0m30myr0m30")
    step = run(scram_login(srv, f"SCRAM-{hash_name}", client))
    assert step.success and step.username == "juliet"
    assert step.additional_data == client.expected_v
    assert srv.authenticated


@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256", "SHA-512"])
def test_scram_plus_success(store, hash_name, cb_type):
    srv = server(store, cb=CB)
    client = ScramClient(
        hash_name, "juliet", "r0m30myr0m30", gs2=f"p={cb_type},,", cb_data=CB[cb_type]
    )
    step = run(scram_login(srv, f"SCRAM-{hash_name}-PLUS", client))
    assert step.success and step.additional_data == client.expected_v


def test_username_is_normalized(store):
    client = ScramClient("SHA-256", "Juliet", "r0m30myr0m30")
    step = run(scram_login(server(store), "SCRAM-SHA-256", client))
    assert step.username == "juliet"


def failure(coro) -> str:
    with pytest.raises(SASLFailure) as info:
        run(coro)
    return info.value.condition


def test_wrong_password_and_unknown_user_look_alike(store):
    srv = server(store)
    bad_pw = failure(scram_login(srv, "SCRAM-SHA-256", ScramClient("SHA-256", "juliet", "x")))
    srv2 = server(store)
    unknown = failure(scram_login(srv2, "SCRAM-SHA-256", ScramClient("SHA-256", "romeo", "x")))
    assert bad_pw == unknown == "not-authorized"
    # The fake salt is stable per user and looks like a real one.
    firsts = []
    for _ in range(2):
        s = server(store, nonce_factory=lambda: "N")
        firsts.append(run(s.start("SCRAM-SHA-256", b"n,,n=romeo,r=abc")).challenge)
    assert firsts[0] == firsts[1]
    attrs = dict(a.split("=", 1) for a in firsts[0].decode().split(","))
    assert len(base64.b64decode(attrs["s"])) == 16 and attrs["i"] == "4096"
    other = server(store).start("SCRAM-SHA-256", b"n,,n=tybalt,r=abc")
    assert run(other).challenge.split(b",")[1] != firsts[0].split(b",")[1]


def test_failed_exchange_can_restart(store):
    srv = server(store)
    failure(scram_login(srv, "SCRAM-SHA-256", ScramClient("SHA-256", "juliet", "x")))
    assert not srv.authenticated
    step = run(scram_login(srv, "SCRAM-SHA-256", ScramClient("SHA-256", "juliet", "r0m30myr0m30")))
    assert step.success


def test_changed_nonce(store):
    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30")

    async def go():
        srv = server(store)
        step = await srv.start("SCRAM-SHA-256", client.first())
        r = dict(a.split("=", 1) for a in step.challenge.decode().split(","))["r"]
        return await srv.respond(client.final(step.challenge, nonce=r + "x"))

    assert failure(go()) == "not-authorized"


def test_wrong_channel_binding(store):
    client = ScramClient(
        "SHA-256", "juliet", "r0m30myr0m30", gs2="p=tls-exporter,,", cb_data=b"F" * 32
    )
    assert failure(scram_login(server(store, cb=CB), "SCRAM-SHA-256-PLUS", client)) == (
        "not-authorized"
    )
    # c= must carry the GS2 header too, even without channel binding.
    plain_client = ScramClient("SHA-256", "juliet", "r0m30myr0m30")
    assert (
        failure(scram_login(server(store), "SCRAM-SHA-256", plain_client, cbind=b"y,,"))
        == "not-authorized"
    )


def test_gs2_y_downgrade(store):
    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="y,,")
    assert failure(scram_login(server(store, cb=CB), "SCRAM-SHA-256", client)) == "not-authorized"
    # Without PLUS on offer, 'y' is honest and accepted.
    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="y,,")
    assert run(scram_login(server(store), "SCRAM-SHA-256", client)).success


def test_plus_offered_only_as_enabled(store):
    """Whether PLUS was offered (the downgrade check, the channel-binding types) follows
    the mechanisms actually offered, ``enabled`` included."""
    no_plus = server(store, cb=CB, enabled={"SCRAM-SHA-256"})
    assert no_plus.channel_binding_types() == []
    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="y,,")
    assert run(scram_login(no_plus, "SCRAM-SHA-256", client)).success
    one_plus = server(store, cb=CB, enabled={"SCRAM-SHA-256", "SCRAM-SHA-1-PLUS"})
    assert one_plus.mechanisms() == ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256"]
    assert one_plus.channel_binding_types() == ["tls-exporter", "tls-server-end-point"]
    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="y,,")
    assert failure(scram_login(one_plus, "SCRAM-SHA-256", client)) == "not-authorized"


def test_server_nonce_is_fresh_urlsafe_base64(store):
    """The server's half of the nonce: 24 URL-safe base64 characters, new every time."""
    seen = set()
    for _ in range(200):
        first = run(server(store).start("SCRAM-SHA-256", b"n,,n=juliet,r=abc")).challenge
        nonce = first.decode().split(",")[0][len("r=abc"):]
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", nonce)
        seen.add(nonce)
    assert len(seen) == 200


def test_gs2_flag_mismatches(store):
    c = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="p=tls-exporter,,")
    assert failure(server(store, cb=CB).start("SCRAM-SHA-256", c.first())) == "malformed-request"
    c = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="n,,")
    assert failure(server(store, cb=CB).start("SCRAM-SHA-256-PLUS", c.first())) == (
        "malformed-request"
    )
    c = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="p=tls-unique,,")
    assert failure(server(store, cb=CB).start("SCRAM-SHA-256-PLUS", c.first())) == (
        "not-authorized"
    )
    # PLUS is not even offered without channel bindings.
    c = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="p=tls-exporter,,")
    assert failure(server(store).start("SCRAM-SHA-256-PLUS", c.first())) == "invalid-mechanism"


@pytest.mark.parametrize(
    "first",
    [
        b"n,,r=abc",  # no username
        b"x,,n=juliet,r=abc",  # bad flag
        b"n,,m=ext,n=juliet,r=abc",  # mandatory extension
        b"n,,n=ju=liet,r=abc",  # bad escape
        b"n,,n=juliet,r=a,b",  # garbage attribute
        b"n,n=juliet,r=abc",  # truncated GS2 header
        b"n,,n=juliet,r=\xff",  # not UTF-8
    ],
)
def test_malformed_client_first(store, first):
    assert failure(server(store).start("SCRAM-SHA-1", first)) == "malformed-request"


def test_bad_base64(store):
    with pytest.raises(SASLFailure) as info:
        decode_payload("not*base64")
    assert info.value.condition == "incorrect-encoding"
    assert decode_payload("=") == b"" and decode_payload(None) is None
    assert decode_payload(" bi w s\n") == b"n,,"
    assert encode_payload(b"") == "=" and encode_payload(b"n,,") == "biws"

    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30")

    async def go():
        srv = server(store)
        step = await srv.start("SCRAM-SHA-256", client.first())
        final = client.final(step.challenge)
        return await srv.respond(final[: final.rindex(b"p=") + 2] + b"!!!")

    assert failure(go()) == "incorrect-encoding"


@pytest.mark.parametrize(
    "authzid,expected",
    [
        ("juliet@example.org", None),
        ("juliet", None),
        ("Juliet", None),
        ("romeo", "invalid-authzid"),
        ("Juliet@Example.ORG", None),
        ("romeo@example.org", "invalid-authzid"),
        ("juliet@example.com", "invalid-authzid"),
        ("juliet@example.org/balcony", "invalid-authzid"),
    ],
)
def test_authzid(store, authzid, expected):
    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2=f"n,a={authzid},")
    coro = scram_login(server(store), "SCRAM-SHA-256", client)
    if expected is None:
        assert run(coro).success
    else:
        assert failure(coro) == expected


def test_empty_challenge_without_initial_response(store):
    client = ScramClient("SHA-256", "juliet", "r0m30myr0m30")

    async def go():
        srv = server(store)
        assert (await srv.start("SCRAM-SHA-256", None)).challenge == b""
        step = await srv.respond(client.first())
        return await srv.respond(client.final(step.challenge))

    assert run(go()).success


def test_abort_and_state_errors(store):
    async def go():
        srv = server(store)
        await srv.start("SCRAM-SHA-256", b"n,,n=juliet,r=abc")
        srv.abort()
        return await srv.respond(b"c=biws,r=abc,p=AAAA")

    assert failure(go()) == "malformed-request"
    assert failure(server(store).start("DIGEST-MD5", None)) == "invalid-mechanism"
    assert failure(server(store).start("SCRAM-SHA-1", b"x" * 5000)) == "malformed-request"


# -- PLAIN ----------------------------------------------------------------------------


def test_plain(store):
    srv = server(store)
    step = run(srv.start("PLAIN", b"\0juliet\0r0m30myr0m30"))
    assert step.success and step.username == "juliet"
    assert failure(server(store).start("PLAIN", b"\0juliet\0wrong")) == "not-authorized"
    assert failure(server(store).start("PLAIN", b"\0romeo\0wrong")) == "not-authorized"
    assert failure(server(store).start("PLAIN", b"juliet\0r0m30myr0m30")) == "malformed-request"
    assert (
        failure(server(store).start("PLAIN", b"romeo@example.org\0juliet\0r0m30myr0m30"))
        == "invalid-authzid"
    )
    assert run(server(store).start("PLAIN", b"juliet@example.org\0juliet\0r0m30myr0m30")).success


def test_plain_refused_without_tls(store):
    srv = server(store, secure=False)
    assert "PLAIN" not in srv.mechanisms()
    assert failure(srv.start("PLAIN", b"\0juliet\0r0m30myr0m30")) == "encryption-required"
    assert failure(server(store, plain=False).start("PLAIN", b"\0juliet\0x")) == (
        "invalid-mechanism"
    )


def test_plain_in_two_steps(store):
    async def go():
        srv = server(store)
        assert (await srv.start("PLAIN", None)).challenge == b""
        return await srv.respond(b"\0juliet\0r0m30myr0m30")

    assert run(go()).success


def test_unknown_condition_rejected():
    with pytest.raises(ValueError):
        SASLFailure("bad-condition")


@settings(max_examples=150, deadline=None)
@given(
    mech=st.sampled_from(["SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "PLAIN"]),
    first=st.binary(max_size=200) | st.text(max_size=80).map(str.encode),
    final=st.binary(max_size=200) | st.text(max_size=80).map(str.encode),
)
def test_garbage_only_ever_fails_cleanly(mech, first, final):
    """Arbitrary client data ends in success or SASLFailure, never another exception."""
    store = DictStore()  # no accounts: nothing can succeed
    srv = server(store, cb=CB)

    async def go():
        step = await srv.start(mech, first)
        if not step.success:
            await srv.respond(final)

    try:
        run(go())
    except SASLFailure as exc:
        assert exc.condition in {"malformed-request", "not-authorized", "incorrect-encoding"}
    else:
        raise AssertionError("authenticated without an account")


def _precis_username(text: str) -> str | type[ValueError]:
    import precis_i18n

    try:
        return precis_i18n.get_profile("UsernameCaseMapped").enforce(text)
    except UnicodeError:
        return ValueError


def _ours(text: str) -> str | type[ValueError]:
    from xmppd.c2s.sasl import normalize_username

    try:
        return normalize_username(text)
    except ValueError:
        return ValueError


def test_ascii_username_fast_path_matches_precis():
    texts = [chr(a) for a in range(128)] + [chr(a) + chr(b) for a in range(128) for b in range(128)]
    texts += ["", "Juliet", "ROMEO.Montague", "a b", "x\x7f", "tab\tname", "O'Neil+tag"]
    assert [_ours(t) for t in texts] == [_precis_username(t) for t in texts]


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=12))
@settings(max_examples=300)
def test_username_normalization_matches_precis(text):
    assert _ours(text) == _precis_username(text)


def test_tls_unique_on_tls_13_fails_with_a_text_that_says_why(store):
    c = ScramClient("SHA-256", "juliet", "r0m30myr0m30", gs2="p=tls-unique,,")
    with pytest.raises(SASLFailure) as info:
        asyncio.run(server(store, cb=CB).start("SCRAM-SHA-256-PLUS", c.first()))
    assert info.value.condition == "not-authorized" and "TLS 1.3" in info.value.text
    assert not info.value.credentials


@pytest.mark.parametrize("mech, first", [
    ("SCRAM-SHA-256", b"x,,n=juliet,r=abc"),          # bad GS2 flag
    ("SCRAM-SHA-256", b"n,,r=abc"),                   # no n=
    ("SCRAM-SHA-256-PLUS", b"p=tls-unique,,n=juliet,r=abc"),  # unknown binding type
    ("SCRAM-SHA-256", b"y,,n=juliet,r=abc"),          # downgrade: PLUS was offered
    ("DIGEST-MD5", b""),                              # not offered
    ("PLAIN", b"juliet"),                             # malformed
])
def test_negotiation_errors_are_not_credential_failures(store, mech, first):
    with pytest.raises(SASLFailure) as info:
        asyncio.run(server(store, cb=CB).start(mech, first))
    assert not info.value.credentials


def test_wrong_password_is_a_credential_failure(store):
    for srv, mech, data in (
        (server(store), "PLAIN", b"\0juliet\0wrong"),
        (server(store), "PLAIN", b"\0nobody\0wrong"),
    ):
        with pytest.raises(SASLFailure) as info:
            asyncio.run(srv.start(mech, data))
        assert info.value.credentials and info.value.condition == "not-authorized"
        assert srv.attempted_username in ("juliet", "nobody") and srv.mechanism == "PLAIN"
