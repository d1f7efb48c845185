"""XEP-0388 SASL2, XEP-0386 Bind2 and XEP-0484 FAST without sockets (the negotiation fed XML
through the real tokenizer, as in test_negotiation.py), plus one end-to-end login over a
real socket.  slixmpp (1.x) has no SASL2/Bind2/FAST plugins: raw clients only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import uuid

import pytest
from support import RawClient
from test_negotiation import PASSWORD, Policy, b64

from xmppd.c2s.sasl import derive_all
from xmppd.c2s.sasl2 import resource_for
from xmppd.modules.sasl2 import SASL2, agent_key

SASL2_NS = "urn:xmpp:sasl:2"
BIND2_NS = "urn:xmpp:bind:0"
FAST_NS = "urn:xmpp:fast:0"
AGENT = "d4565fa7-4d72-4749-b3d3-740edbf87770"
USER_AGENT = f"<user-agent id='{AGENT}'><software>Test</software><device>Box</device></user-agent>"


class FakeAPI:
    """What the sasl2 module uses of its handle."""

    def __init__(self, storage, services: dict, **options) -> None:
        self.storage = storage
        self.secret = b"s" * 32
        self.services = services
        self.options = {**SASL2.defaults(), **options}

    def open_store(self, kind: str = "keyvalue"):
        return self.storage.open_store("sasl2", kind)

    def service(self, name: str):
        return self.services.get(name)

    def provide(self, name: str, obj) -> None:
        self.services[name] = obj


class FakeSM:
    def __init__(self) -> None:
        self.enabled: list = []

    def enable_inline(self, stream, el) -> bytes:
        self.enabled.append((stream, el.get("resume")))
        return b"<enabled xmlns='urn:xmpp:sm:3' id='abc' resume='true' max='300'/>"


class FakeCarbons:
    def __init__(self) -> None:
        self.sessions: list = []

    def enable_session(self, session) -> None:
        self.sessions.append(session)


class Env:
    def __init__(self, *, inline: bool = True, **options) -> None:
        self.services: dict = {}
        self.policy = Policy(services=self.services)
        self.sm, self.carbons = FakeSM(), FakeCarbons()
        if inline:
            self.services.update(sm=self.sm, carbons=self.carbons)
        self.module = SASL2()
        self.module.load(FakeAPI(self.policy.storage, self.services, **options))
        self.now = 1_700_000_000.0
        self.module.clock = lambda: self.now

    def client(self, bindings: dict | None = None):
        client = self.policy.client(secure=True)
        client.negotiation.tls_started(bindings or {})
        return client

    def run(self, coro):
        return asyncio.run(coro)

    def records(self) -> dict:
        store = self.policy.storage.open_store("sasl2", "keyvalue")
        return self.run(store.items("juliet@localhost"))


@pytest.fixture
def env() -> Env:
    return Env()


def authenticate(client, mechanism: str, initial: bytes | None, extra: str = "",
                 agent: str = USER_AGENT) -> str:
    init = "" if initial is None else f"<initial-response>{b64(initial) or '='}</initial-response>"
    return client.feed(f"<authenticate xmlns='{SASL2_NS}' mechanism='{mechanism}'>{init}"
                       f"{agent}{extra}</authenticate>")


def scram2(client, *, extra: str = "", password: str = PASSWORD, plus: str | None = None,
           cb_data: bytes = b"") -> str:
    """SCRAM-SHA-256[-PLUS] over SASL2; returns the outcome (the additional data checked)."""
    gs2 = f"p={plus},," if plus else "n,,"
    mech = "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256"
    bare = "n=juliet,r=fyko+d2lbbFgONRv9qkxdawL"
    out = authenticate(client, mech, gs2.encode() + bare.encode(), extra)
    m = re.search(r"<challenge xmlns='urn:xmpp:sasl:2'>([^<]*)</challenge>", out)
    assert m, out
    server_first = base64.b64decode(m.group(1)).decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored = hashlib.sha256(client_key).digest()
    without = f"c={b64(gs2.encode() + cb_data)},r={attrs['r']}"
    auth = f"{bare},{server_first},{without}".encode()
    proof = bytes(a ^ b for a, b in zip(client_key, hmac.digest(stored, auth, "sha256"),
                                        strict=True))
    out = client.feed(f"<response xmlns='{SASL2_NS}'>"
                      f"{b64(f'{without},p={b64(proof)}'.encode())}</response>")
    if "<success" in out:
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        data = re.search(r"<additional-data>([^<]*)</additional-data>", out).group(1)
        assert base64.b64decode(data) == b"v=" + base64.b64encode(
            hmac.digest(server_key, auth, "sha256"))
    return out


def ht(client, token: str, mechanism: str = "HT-SHA-256-NONE", cb_data: bytes = b"",
       extra: str = "", user: str = "juliet") -> str:
    key = token.encode()
    proof = hmac.digest(key, b"Initiator" + cb_data, "sha256")
    out = authenticate(client, mechanism, user.encode() + b"\0" + proof, extra)
    if "<success" in out:
        data = re.search(r"<additional-data>([^<]*)</additional-data>", out).group(1)
        assert base64.b64decode(data) == hmac.digest(key, b"Responder" + cb_data, "sha256")
    return out


def get_token(env: Env, extra: str = "") -> str:
    client = env.client()
    client.header()
    out = scram2(client, extra=f"<request-token xmlns='{FAST_NS}' mechanism='HT-SHA-256-NONE'/>"
                                f"{extra}")
    m = re.search(r"<token xmlns='urn:xmpp:fast:0' expiry='([^']+)' token='([^']+)'/>", out)
    assert m, out
    return m.group(2)


# -- SASL2 ---------------------------------------------------------------------------------------


def test_sasl2_feature_lists_mechanisms_and_inline_features(env):
    out = env.client({"tls-exporter": b"e" * 32}).header()
    feature = re.search(r"<authentication xmlns='urn:xmpp:sasl:2'>.*</authentication>", out)
    assert feature, out
    text = feature.group(0)
    assert "<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in text
    assert "<mechanism>SCRAM-SHA-256</mechanism>" in text
    assert (f"<bind xmlns='{BIND2_NS}'><inline><feature var='urn:xmpp:carbons:2'/>"
            f"<feature var='urn:xmpp:sm:3'/></inline></bind>") in text
    assert (f"<fast xmlns='{FAST_NS}'><mechanism>HT-SHA-256-EXPR</mechanism>"
            f"<mechanism>HT-SHA-256-NONE</mechanism></fast>") in text
    assert "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" in out  # legacy still there


def test_no_sasl2_without_the_module():
    policy = Policy()
    out = policy.client(secure=True).header()
    assert "urn:xmpp:sasl:2" not in out
    client = policy.client(secure=True)
    client.header()
    client.feed(f"<authenticate xmlns='{SASL2_NS}' mechanism='PLAIN'/>")
    assert client.io.error == "unsupported-stanza-type"


def test_sasl2_scram_with_bind2_binds_without_restart(env):
    client = env.client()
    client.header()
    out = scram2(client, extra=f"<bind xmlns='{BIND2_NS}'><tag>AwesomeXMPP</tag></bind>")
    resource = resource_for(b"k" * 32, "AwesomeXMPP", AGENT)
    assert re.fullmatch(r"AwesomeXMPP\.[0-9a-f]{8}", resource)
    assert (f"<authorization-identifier>juliet@localhost/{resource}</authorization-identifier>"
            f"<bound xmlns='{BIND2_NS}'></bound></success>") in out
    assert not client.io.restarted and client.io.authed
    session = client.io.session
    assert str(session.jid) == f"juliet@localhost/{resource}"
    assert env.policy.bound == [session]
    assert env.sm.enabled == [] and env.carbons.sessions == []
    # the same install gets the same resource next time (replacing the old session)
    again = env.client()
    again.header()
    scram2(again, extra=f"<bind xmlns='{BIND2_NS}'><tag>AwesomeXMPP</tag></bind>")
    assert again.io.session.jid == session.jid
    # and stanzas flow at once
    again.feed("<message to='romeo@localhost' id='m1'><body>hi</body></message>")
    assert env.policy.routed[-1].get("from") == str(session.jid)


def test_sasl2_without_bind_gets_features_at_once_for_legacy_binding(env):
    client = env.client()
    client.header()
    out = scram2(client)
    assert "<authorization-identifier>juliet@localhost</authorization-identifier>" in out
    assert "<bound" not in out
    # XEP-0388 §2.6.3: no stream restart; the features follow the <success/> at once
    assert not client.io.restarted
    features = out[out.index("</success>"):]
    assert "<stream:features" in features and "urn:ietf:params:xml:ns:xmpp-bind" in features
    assert "urn:xmpp:sasl:2" not in features
    client.feed("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>x</resource></bind></iq>")
    assert str(client.io.session.jid) == "juliet@localhost/x"


def test_sasl2_wrong_password_fails_and_counts(env):
    client = env.client()
    client.header()
    out = scram2(client, password="wrong")
    assert out == (f"<failure xmlns='{SASL2_NS}'>"
                   f"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>")
    assert client.negotiation.auth_failures == 1 and client.negotiation.username is None
    # a second try on the same stream works
    assert "<success" in scram2(client)


def test_sasl2_unknown_mechanism_is_not_counted(env):
    client = env.client()
    client.header()
    out = authenticate(client, "DIGEST-MD5", b"x")
    assert "<invalid-mechanism" in out and client.negotiation.auth_failures == 0


def test_sasl2_abort(env):
    client = env.client()
    client.header()
    authenticate(client, "SCRAM-SHA-256", b"n,,n=juliet,r=abc")
    out = client.feed(f"<abort xmlns='{SASL2_NS}'/>")
    assert "<aborted xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" in out
    out = client.feed(f"<response xmlns='{SASL2_NS}'>eA==</response>")
    assert "<malformed-request" in out


def test_sasl2_scram_plus_channel_binding(env):
    cb = b"x" * 32
    client = env.client({"tls-exporter": cb})
    client.header()
    out = scram2(client, plus="tls-exporter", cb_data=cb,
                 extra=f"<bind xmlns='{BIND2_NS}'><tag>t</tag></bind>")
    assert "<success" in out and client.io.session is not None
    # wrong channel-binding data fails
    client = env.client({"tls-exporter": cb})
    client.header()
    assert "<not-authorized" in scram2(client, plus="tls-exporter", cb_data=b"y" * 32)


def test_sasl2_encryption_required_before_tls():
    env = Env()
    policy = Policy(services=env.services, require_encryption=True)
    client = policy.client()
    out = client.header()
    assert "urn:xmpp:sasl:2" not in out
    out = client.feed(f"<authenticate xmlns='{SASL2_NS}' mechanism='SCRAM-SHA-256'/>")
    assert "<encryption-required" in out


# -- Bind2 inline features -----------------------------------------------------------------------


def test_bind2_inline_sm_and_carbons(env):
    client = env.client()
    client.header()
    out = scram2(client, extra=f"<bind xmlns='{BIND2_NS}'><tag>c</tag>"
                               f"<enable xmlns='urn:xmpp:carbons:2'/>"
                               f"<enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>")
    assert (f"<bound xmlns='{BIND2_NS}'><enabled xmlns='urn:xmpp:sm:3' id='abc' resume='true' "
            f"max='300'/></bound>") in out
    assert env.carbons.sessions == [client.io.session]
    assert env.sm.enabled == [(client.io, "true")]


def test_bind2_inline_features_not_offered_without_the_modules():
    env = Env(inline=False)
    out = env.client().header()
    assert f"<bind xmlns='{BIND2_NS}'/>" in out
    client = env.client()
    client.header()
    out = scram2(client, extra=f"<bind xmlns='{BIND2_NS}'><enable xmlns='urn:xmpp:sm:3'/></bind>")
    assert f"<bound xmlns='{BIND2_NS}'></bound>" in out


def test_bind2_without_user_agent_gets_a_random_resource(env):
    first = resource_for(b"k" * 32, "t", None)
    assert re.fullmatch(r"t\.[0-9a-f]{8}", first) and first != resource_for(b"k" * 32, "t", None)
    assert resource_for(b"k" * 32, "", AGENT) == resource_for(b"k" * 32, "", AGENT)


# -- FAST ------------------------------------------------------------------------------------------


def test_fast_token_then_one_round_trip_login(env):
    token = get_token(env)
    assert len(token) > 64
    client = env.client()
    client.header()
    out = ht(client, token, extra=f"<bind xmlns='{BIND2_NS}'><tag>fast</tag></bind>")
    assert "<success" in out and "<challenge" not in out
    assert str(client.io.session.jid).startswith("juliet@localhost/fast.")


def test_fast_bound_mechanisms(env):
    token = get_token(env)
    for mech, cbtype in (("HT-SHA-256-EXPR", "tls-exporter"),
                         ("HT-SHA-256-ENDP", "tls-server-end-point")):
        cb = cbtype.encode() * 2
        client = env.client({cbtype: cb})
        client.header()
        assert "<success" in ht(client, token, mech, cb_data=cb)
        client = env.client({cbtype: cb})
        client.header()
        assert "<not-authorized" in ht(client, token, mech, cb_data=b"other")
    client = env.client({})
    client.header()
    assert "<invalid-mechanism" in ht(client, token, "HT-SHA-256-EXPR", cb_data=b"")


def test_fast_wrong_token_fails_and_counts(env):
    get_token(env)
    client = env.client()
    client.header()
    out = ht(client, "x" * 96)
    assert "<not-authorized" in out and client.negotiation.auth_failures == 1
    assert client.negotiation.username is None
    # other account, other user agent: no token either
    client = env.client()
    client.header()
    assert "<not-authorized" in ht(client, "x" * 96, user="romeo")


def test_fast_token_of_another_user_agent_fails(env):
    token = get_token(env)
    client = env.client()
    client.header()
    proof = hmac.digest(token.encode(), b"Initiator", "sha256")
    out = authenticate(client, "HT-SHA-256-NONE", b"juliet\0" + proof,
                       agent=f"<user-agent id='{uuid.uuid4()}'/>")
    assert "<not-authorized" in out


def test_fast_expired_token(env):
    token = get_token(env)
    env.now += 14 * 86400 + 1
    client = env.client()
    client.header()
    assert "<not-authorized" in ht(client, token)


def test_fast_token_expiry_option():
    env = Env(fast_token_expiry_s=3600)
    client = env.client()
    client.header()
    out = scram2(client, extra=f"<request-token xmlns='{FAST_NS}' mechanism='HT-SHA-256-NONE'/>")
    expiry = re.search(r"expiry='([^']+)'", out).group(1)
    assert expiry == "2023-11-14T23:13:20Z"  # 1_700_000_000 + 3600


def test_password_change_invalidates_tokens(env):
    token = get_token(env)
    env.run(env.policy.storage.set_credentials("juliet", "localhost", derive_all("n3w-pass")))
    client = env.client()
    client.header()
    assert "<not-authorized" in ht(client, token)
    assert env.records() == {}  # gone for good
    # deleting the account removes them too (module data of the bare JID)
    client = env.client()
    client.header()
    assert "<success" in scram2(client, password="n3w-pass",
                                extra=f"<request-token xmlns='{FAST_NS}' mechanism='HT-SHA-256-NONE'/>")
    assert env.records()
    env.run(env.policy.storage.delete_account("juliet", "localhost"))
    assert env.records() == {}


def test_token_stored_hashed_and_masked(env):
    token = get_token(env)
    records = env.records()
    assert list(records) == [agent_key(AGENT)]
    blob = json.dumps(records)
    assert token not in blob
    assert hashlib.sha256(token.encode()).hexdigest() not in blob  # masked with the secret
    assert AGENT not in blob


def test_fast_rotation_keeps_previous_until_new_is_used(env):
    old = get_token(env)
    client = env.client()
    client.header()
    out = ht(client, old, extra=f"<request-token xmlns='{FAST_NS}' mechanism='HT-SHA-256-NONE'/>")
    new = re.search(r"token='([^']+)'", out).group(1)
    assert new != old
    client = env.client()  # the client may not have got the new one: the old still works
    client.header()
    assert "<success" in ht(client, old)
    client = env.client()
    client.header()
    assert "<success" in ht(client, new)  # first use of the new one ends the old one
    client = env.client()
    client.header()
    assert "<not-authorized" in ht(client, old)
    client = env.client()
    client.header()
    assert "<success" in ht(client, new)


def test_fast_invalidate(env):
    token = get_token(env)
    client = env.client()
    client.header()
    assert "<success" in ht(client, token, extra=f"<fast xmlns='{FAST_NS}' invalidate='true'/>")
    assert env.records() == {}
    client = env.client()
    client.header()
    assert "<not-authorized" in ht(client, token)


def test_fast_count_must_increase(env):
    token = get_token(env)
    for count, ok in ((0, True), (0, False), (5, True), (3, False), (6, True)):
        client = env.client()
        client.header()
        out = ht(client, token, extra=f"<fast xmlns='{FAST_NS}' count='{count}'/>")
        assert ("<success" in out) is ok, (count, out)


def test_fast_needs_user_agent(env):
    token = get_token(env)
    client = env.client()
    client.header()
    proof = hmac.digest(token.encode(), b"Initiator", "sha256")
    out = authenticate(client, "HT-SHA-256-NONE", b"juliet\0" + proof, agent="")
    assert "<malformed-request" in out
    # and a token is only issued to a client that names its install
    client = env.client()
    client.header()
    out = authenticate(client, "SCRAM-SHA-256", b"n,,n=juliet,r=abc",
                       f"<request-token xmlns='{FAST_NS}' mechanism='HT-SHA-256-NONE'/>",
                       agent="")
    assert "<challenge" in out


def test_fast_disabled_by_option():
    env = Env(fast=False)
    out = env.client().header()
    assert "urn:xmpp:fast:0" not in out
    client = env.client()
    client.header()
    assert "<invalid-mechanism" in ht(client, "x" * 96)


class RecordingThrottle:
    def __init__(self) -> None:
        self.failures: list = []
        self.successes: list = []

    def allowed(self, peer, username=None) -> bool:
        return len(self.failures) < 2

    def delay(self, peer, username) -> float:
        return 0

    def failed(self, peer, username=None) -> None:
        self.failures.append(username)

    def succeeded(self, peer, username) -> None:
        self.successes.append(username)


def test_sasl2_failures_go_to_the_auth_throttle():
    throttle = RecordingThrottle()
    env = Env()
    env.policy = Policy(services=env.services, throttle=throttle)
    client = env.client()
    client.header()
    authenticate(client, "DIGEST-MD5", b"x")  # a negotiation error: not counted
    assert "<not-authorized" in ht(client, "y" * 96)
    assert "<not-authorized" in scram2(client, password="bad")
    assert throttle.failures == ["juliet", "juliet"]
    # refused now, whatever the password
    out = scram2(client)
    assert "<temporary-auth-failure" in out and client.negotiation.username is None


# -- end to end --------------------------------------------------------------------------------


def _raw_sasl2_login(port: int, tag: str) -> tuple[RawClient, str]:
    client = RawClient(port)
    client.header()
    client.starttls()
    features = client.header()
    assert "urn:xmpp:sasl:2" in features and "HT-SHA-256-NONE" in features
    initial = b64(b"\0alice\0secret")
    client.send(f"<authenticate xmlns='{SASL2_NS}' mechanism='PLAIN'>"
                f"<initial-response>{initial}</initial-response>{USER_AGENT}"
                f"<bind xmlns='{BIND2_NS}'><tag>{tag}</tag>"
                f"<enable xmlns='urn:xmpp:sm:3'/><enable xmlns='urn:xmpp:carbons:2'/></bind>"
                f"<request-token xmlns='{FAST_NS}' mechanism='HT-SHA-256-NONE'/>"
                f"</authenticate>")
    out = client.read_until("</success>|</failure>")
    assert "<success" in out, out
    jid = re.search(r"<authorization-identifier>([^<]+)<", out).group(1)
    assert "urn:xmpp:sm:3" in out and "<enabled" in out
    token = re.search(r"token=.([^'\"]+)", out).group(1)
    return client, jid + "\0" + token


def test_end_to_end_sasl2_bind2_over_starttls(make_server):
    srv = make_server(users={"alice": "secret", "bob": "secret"})
    alice, jid_token = _raw_sasl2_login(srv.port, "e2e")
    jid, token = jid_token.split("\0")
    assert jid.startswith("alice@localhost/e2e.")
    bob = RawClient(srv.port)
    bob_jid = bob.login("bob", "secret", resource="legacy")
    alice.send(f"<message to='{bob_jid}' type='chat' id='a1'><body>hi bob</body></message>")
    got = bob.read_until("</message>")
    assert "hi bob" in got and jid in got
    bob.send(f"<message to='{jid}' type='chat' id='b1'><body>hi alice</body></message>")
    assert "hi alice" in alice.read_until("hi alice.*?</message>")
    alice.close()
    # FAST: a new connection logs in with the token in one round trip
    fast = RawClient(srv.port)
    fast.header()
    fast.starttls()
    fast.header()
    proof = hmac.digest(token.encode(), b"Initiator", "sha256")
    fast.send(f"<authenticate xmlns='{SASL2_NS}' mechanism='HT-SHA-256-NONE'>"
              f"<initial-response>{b64(b'alice' + bytes([0]) + proof)}</initial-response>"
              f"{USER_AGENT}<bind xmlns='{BIND2_NS}'><tag>e2e</tag></bind></authenticate>")
    out = fast.read_until("</success>|</failure>")
    assert f"<authorization-identifier>{jid}</authorization-identifier>" in out
    fast.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "p1" in fast.read_until("</iq>|<iq[^>]*/>")
    fast.close()
    bob.close()


def test_a_disabled_account_fails_sasl2_and_fast_with_account_disabled(env):
    token = get_token(env)
    env.run(env.policy.storage.set_disabled("juliet", "localhost", True))
    client = env.client()
    client.header()
    out = scram2(client)
    assert "<account-disabled xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" in out
    assert client.negotiation.username is None and client.negotiation.auth_failures == 0
    assert "<account-disabled" in ht(client, token)
    env.run(env.policy.storage.set_disabled("juliet", "localhost", False))
    assert "<success" in scram2(client)  # the same stream, once re-enabled
