"""Client negotiation without sockets: XML in through the real tokenizer, XML out through a
recording :class:`StreamIO`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re

import pytest

from xmppd.c2s.negotiation import BindError, ClientNegotiation, ClientPolicy
from xmppd.c2s.sasl import derive_all
from xmppd.c2s.stanzas import client_stanza
from xmppd.core.config import Limits
from xmppd.core.router import SessionTable
from xmppd.core.session import Session
from xmppd.storage import MemoryStorage
from xmppd.transport.connections import AuthThrottle
from xmppd.transport.stream import plain_send
from xmppd.xml.events import StreamClose, StreamOpen
from xmppd.xml.framing import (
    StreamErrorCondition,
    new_stream_id,
    stream_error_bytes,
    stream_header,
)
from xmppd.xml.stanza import CLIENT_NS
from xmppd.xml.tokenizer import Tokenizer

HEADER = ("<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams'>")
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
PASSWORD = "r0m30myr0m30"
PEER = ("192.0.2.1", 5555)


class RecordingIO:
    """The shell's side of :class:`StreamIO`, recording what the negotiation asks for."""

    def __init__(self) -> None:
        self.peer = PEER
        self.closed = False
        self.out: list[bytes] = []
        self.ids: list[str] = []
        self.tls_requested = False
        self.restarted = False
        self.authed = False
        self.session: Session | None = None
        self.error: str | None = None

    def send_bytes(self, data: bytes) -> None:
        if not self.closed:
            self.out.append(data)

    def send(self, element) -> None:
        self.send_bytes(element.to_bytes(CLIENT_NS))

    def send_header(self, from_: str | None) -> None:
        self.ids.append(new_stream_id())
        self.send_bytes(stream_header(CLIENT_NS, self.ids[-1], from_))

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.send_bytes(stream_error_bytes(condition, text) + b"</stream:stream>")
        self.error = condition
        self.closed = True

    def begin_tls(self):
        self.tls_requested = True

    def restart_stream(self) -> None:
        self.restarted = True

    def authenticated(self) -> None:
        self.authed = True

    def bound(self, session: Session) -> None:
        self.session = session

    def flush(self) -> None:
        pass


class Client:
    """Bytes in through the tokenizer, events into the negotiation, what it sent back out."""

    def __init__(self, policy: ClientPolicy, *, secure: bool = False) -> None:
        self.policy = policy
        self.io = RecordingIO()
        self.negotiation = ClientNegotiation(policy, self.io, secure=secure)
        self.tokenizer = Tokenizer(8192, 64, 64)

    def feed(self, data: str) -> str:
        start = len(self.io.out)
        self._process(self.tokenizer.feed(data.encode()))
        # attribute quotes vary (serializer: double, literals: single); compare with single
        return b"".join(self.io.out[start:]).decode().replace('"', "'")

    def _process(self, events: list) -> None:
        io, i = self.io, 0
        while i < len(events) and not io.closed:
            event = events[i]
            i += 1
            try:
                if type(event) is StreamOpen:
                    result = self.negotiation.handle_stream_open(event)
                elif type(event) is StreamClose:
                    continue
                elif io.session is not None:
                    result = client_stanza(event, io.session, self.policy.route, io)
                else:
                    result = self.negotiation.handle_element(event)
                if result is not None:
                    asyncio.run(result)
            except StreamErrorCondition as exc:
                io.stream_error(exc.condition, exc.text)
                return
            if io.tls_requested:  # the handshake "succeeds": plaintext left over is dropped
                io.tls_requested = False
                self.tokenizer.reset()
                self.negotiation.tls_started(None)
                events, i = [], 0
            if io.restarted:
                io.restarted = False
                events, i = self.tokenizer.restart(), 0

    def header(self, to: str = "localhost") -> str:
        return self.feed(HEADER.format(to=to))


class Policy:
    """A :class:`ClientPolicy` over a memory storage and a session table, as the server
    builds it."""

    def __init__(self, **kw) -> None:
        self.storage = MemoryStorage()
        self.table = SessionTable()
        self.routed: list = []
        self.bound: list[Session] = []
        limits = kw.pop("limits", Limits())

        async def setup() -> None:
            await self.storage.open()
            await self.storage.create_account("juliet", "localhost", derive_all(PASSWORD))

        asyncio.run(setup())

        def bind(jid, transport) -> Session:
            if self.table.get(jid) is None and \
                    self.table.count(jid.bare) >= limits.max_resources_per_account:
                raise BindError("resource-constraint", "too many resources bound")
            session = Session(jid, transport)
            old = self.table.add(session)
            if old is not None:
                old.stream_error("conflict", "replaced by a new session")
            return session

        settings = dict(
            hosts=frozenset({"localhost", "example.org"}), default_domain="localhost",
            credentials=self.storage, secret=b"k" * 32, limits=limits,
            tls_context=object(), require_encryption=False, allow_plain=False,
            throttle=AuthThrottle(), bind=bind, bound=self.bound.append,
            unbind=lambda session, abrupt: self.table.remove(session),
            route=lambda stanza, session: self.routed.append(stanza),
            stream_features=lambda io, feats: feats.subelement("ver", "urn:xmpp:features:rosterver"),
        )
        settings.update(kw)
        self.policy = ClientPolicy(**settings)

    def client(self, **kw) -> Client:
        return Client(self.policy, **kw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_login(client: Client, password: str = PASSWORD, user: str = "juliet") -> str:
    """SCRAM-SHA-256 over ``client``; returns what the server sent last."""
    nonce = "fyko+d2lbbFgONRv9qkxdawL"
    bare = f"n={user},r={nonce}"
    out = client.feed(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{b64(b'n,,' + bare.encode())}</auth>")
    m = re.search(r"<challenge[^>]*>([^<]*)</challenge>", out)
    assert m, out
    server_first = base64.b64decode(m.group(1)).decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored = hashlib.sha256(client_key).digest()
    without = f"c={b64(b'n,,')},r={attrs['r']}"
    auth = f"{bare},{server_first},{without}".encode()
    proof = bytes(a ^ b for a, b in zip(client_key, hmac.digest(stored, auth, "sha256"), strict=True))
    out = client.feed(f"<response xmlns='{SASL}'>{b64(f'{without},p={b64(proof)}'.encode())}</response>")
    if "<success" in out:
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        expected = b"v=" + base64.b64encode(hmac.digest(server_key, auth, "sha256"))
        got = base64.b64decode(re.search(r"<success[^>]*>([^<]*)</success>", out).group(1))
        assert got == expected  # the server proved it knows the credentials too
    return out


def bind(client: Client, resource: str | None = "balcony") -> str:
    inner = f"<resource>{resource}</resource>" if resource is not None else ""
    return client.feed(f"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                       f"{inner}</bind></iq>")


def logged_in(policy: Policy, resource: str = "balcony") -> Client:
    client = policy.client(secure=True)
    client.header()
    assert "<success" in scram_login(client)
    client.header()
    bind(client, resource)
    assert client.io.session is not None
    return client


@pytest.fixture
def policy() -> Policy:
    return Policy()


# -- the stream header --------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "condition"), [
    ("<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
     "xmlns:stream='urn:example:not-streams'>", "invalid-namespace"),
    ("<stream:stream to='localhost' version='1.0' xmlns='jabber:server' "
     "xmlns:stream='http://etherx.jabber.org/streams'>", "invalid-namespace"),
    ("<stream:stream to='localhost' version='2.0' xmlns='jabber:client' "
     "xmlns:stream='http://etherx.jabber.org/streams'>", "unsupported-version"),
    ("<stream:stream to='localhost' xmlns='jabber:client' "
     "xmlns:stream='http://etherx.jabber.org/streams'>", "unsupported-version"),
    ("<stream:stream version='1.0' xmlns='jabber:client' "
     "xmlns:stream='http://etherx.jabber.org/streams'>", "improper-addressing"),
    (HEADER.format(to="example.net"), "host-unknown"),
])
def test_header_errors(policy, header, condition):
    client = policy.client()
    out = client.feed(header)
    assert client.io.error == condition
    assert f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out


def test_header_answered_with_header_and_features(policy):
    out = policy.client().header()
    assert out.startswith("<?xml version='1.0'?><stream:stream xmlns='jabber:client'")
    assert "from='localhost'" in out
    assert "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" in out
    assert "<mechanism>SCRAM-SHA-256</mechanism>" in out
    assert "PLAIN" not in out  # not over plaintext


def test_to_changed_across_restart_is_host_unknown(policy):
    client = policy.client(secure=True)
    client.header("localhost")
    assert "<success" in scram_login(client)
    out = client.header("example.org")
    assert client.io.error == "host-unknown"
    assert "changed across a stream restart" in out


# -- STARTTLS -------------------------------------------------------------------------------------


def test_encryption_required_before_auth():
    client = Policy(require_encryption=True).client()
    out = client.header()
    assert "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" in out
    assert "<mechanisms" not in out
    out = client.feed(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>biwsbj1qdWxpZXQ=</auth>")
    assert out == f"<failure xmlns='{SASL}'><encryption-required/></failure>"
    assert client.io.error is None  # a SASL failure, not a stream error
    out = client.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert out == "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    out = client.header()
    assert "starttls" not in out and "<mechanism>SCRAM-SHA-256</mechanism>" in out
    assert "<success" in scram_login(client)


def test_starttls_when_secure_is_policy_violation(policy):
    client = policy.client(secure=True)
    client.header()
    client.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert client.io.error == "policy-violation"


def test_plaintext_after_starttls_is_dropped(policy):
    client = policy.client()
    client.header()
    out = client.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                      "<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert out == "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    assert client.io.error is None


# -- SASL -------------------------------------------------------------------------------------------


def test_scram_success_restarts_into_bind_features(policy):
    client = policy.client(secure=True)
    client.header()
    out = scram_login(client)
    assert out.startswith(f"<success xmlns='{SASL}'>")
    assert client.io.authed
    out = client.header()
    assert "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>" in out
    assert "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>" in out
    assert "<ver xmlns='urn:xmpp:features:rosterver'/>" in out  # the modules' hook
    assert "<mechanisms" not in out


def test_scram_failure_then_disconnect_after_max_failures(policy, caplog):
    caplog.set_level(logging.INFO, logger="xmppd.c2s")
    client = policy.client(secure=True)
    client.header()
    for attempt in range(3):
        out = scram_login(client, password="wrong password")
        assert f"<failure xmlns='{SASL}'><not-authorized/></failure>" in out
        assert (client.io.error is None) == (attempt < 2)
    assert client.io.error == "policy-violation"
    lines = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert lines == ["c2s authentication failed: address=192.0.2.1:5555 username=juliet "
                     "mechanism=SCRAM-SHA-256 reason=not-authorized"] * 3
    assert "wrong password" not in caplog.text


def test_stanza_before_auth_is_not_authorized(policy):
    client = policy.client(secure=True)
    client.header()
    client.feed("<message to='romeo@localhost'><body>hi</body></message>")
    assert client.io.error == "not-authorized"


# -- binding ----------------------------------------------------------------------------------------


def test_bind_requested_resource(policy, caplog):
    caplog.set_level(logging.INFO, logger="xmppd.c2s")
    client = logged_in(policy)
    session = client.io.session
    assert str(session.jid) == "juliet@localhost/balcony"
    assert policy.table.get(session.jid) is session and policy.bound == [session]
    assert "c2s session bound: jid=juliet@localhost/balcony address=192.0.2.1:5555" in caplog.text


def test_bind_generated_resource(policy):
    client = policy.client(secure=True)
    client.header()
    scram_login(client)
    client.header()
    out = bind(client, resource=None)
    assert re.search(r"<jid>juliet@localhost/[0-9a-f]{12}</jid>", out), out


class PlainIO(RecordingIO):
    """A shell whose ``send`` only serializes for jabber:client (as C2SStream's)."""

    default_ns = CLIENT_NS

    @plain_send
    def send(self, element) -> None:
        self.send_bytes(element.to_bytes(CLIENT_NS))


@pytest.mark.parametrize("attrs,resource", [
    ("id='b1'", "balcony"),
    ("id='a&amp;b&lt;&quot;c&apos;' to='localhost'", "r&amp;d &lt;x&gt;"),
    ("from='juliet@localhost/x' id='\t1'", "tab"),
])
def test_bind_result_written_as_its_element_would_be(attrs, resource, monkeypatch):
    """A plain jabber:client stream gets the bind result as bytes made directly; they are
    those of the element another shell serializes."""
    from xmppd.c2s import negotiation

    made = []
    direct = negotiation._bind_result
    monkeypatch.setattr(negotiation, "_bind_result",
                        lambda iq, jid: made.append(jid) or direct(iq, jid))
    outs = []
    for io in (RecordingIO(), PlainIO()):
        policy = Policy()
        client = policy.client(secure=True)
        client.io = io
        client.negotiation = ClientNegotiation(client.policy, io, secure=True)
        client.header()
        scram_login(client)
        client.header()
        start = len(io.out)
        client.feed(f"<iq type='set' {attrs}><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    f"<resource>{resource}</resource></bind></iq>")
        assert io.session is not None
        outs.append(b"".join(io.out[start:]))
    assert outs[0] == outs[1] and b"<jid>juliet@localhost/" in outs[1]
    assert len(made) == 1  # the plain stream's (the other got the element)


def test_bind_conflict_replaces_the_old_session(policy):
    first = logged_in(policy)
    second = logged_in(policy)
    assert first.io.error == "conflict"
    assert policy.table.get(second.io.session.jid) is second.io.session


def test_bind_resource_constraint():
    policy = Policy(limits=Limits(max_resources_per_account=1))
    logged_in(policy, "one")
    client = policy.client(secure=True)
    client.header()
    scram_login(client)
    client.header()
    out = bind(client, "two")
    assert "<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" in out
    assert client.io.session is None and client.io.error is None


# -- stanzas after binding: the 'from' policy ------------------------------------------------------


def test_from_is_stamped_and_own_bare_jid_allowed(policy):
    client = logged_in(policy)
    client.feed("<message to='romeo@localhost'><body>1</body></message>"
                "<message to='romeo@localhost' from='juliet@localhost'><body>2</body></message>")
    assert [m.get("from") for m in policy.routed] == ["juliet@localhost/balcony"] * 2


def test_spoofed_from_is_invalid_from(policy):
    client = logged_in(policy)
    out = client.feed("<message to='romeo@localhost' from='nurse@localhost'><body>x</body></message>")
    assert client.io.error == "invalid-from" and "<invalid-from" in out
    assert policy.routed == []


def test_bind_after_bind_not_allowed_and_session_iq(policy):
    client = logged_in(policy)
    out = bind(client, "again")
    assert "<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" in out
    out = client.feed("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    assert "type='result'" in out and "id='s1'" in out
    assert policy.routed == []


# -- stream ids ---------------------------------------------------------------------------------------


def test_a_new_stream_id_for_every_header(policy):
    client = policy.client()
    outs = [client.header()]
    client.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    outs.append(client.header())
    scram_login(client)
    outs.append(client.header())
    ids = [re.search(r"<stream:stream [^>]*id='([0-9a-f]+)'", o).group(1) for o in outs]
    assert len(set(ids)) == 3
