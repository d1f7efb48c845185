"""Minimal XMPP c2s client: login by pattern matching on bytes, then a pluggable hot path.

Login is a callback-driven state machine inside the protocol (no coroutine per step: the
generator's own cost per login caps the logins/s it can measure). Each state waits for one
regular expression over the receive buffer. After login, ``Session.on_data`` replaces the
buffer entirely, so counting delivered messages costs one ``bytes.count`` per read.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .scram import SCRAM_MECHANISMS, ScramClient

# Element patterns without a lazy ``.*?``: that one tries the closing tag at every byte, and
# was the generator's largest cost per login.  ``(?:[^<]+|<(?!/name>))*`` skips text in runs.
# Features are found by their end: everything before it on a fresh stream is the features.
_FEATURES = re.compile(rb"</(?:[\w.-]+:)?features>|<(?:[\w.-]+:)?features\s*/>")
_SASL_REPLY = re.compile(rb"<(challenge|success|failure)\b[^>]*?(?:/>|>((?:[^<]+|<(?!/\1>))*)</\1>)")
_TLS_REPLY = re.compile(rb"<(proceed|failure)\b[^>]*?(?:/>|>(?:[^<]+|<(?!/\1>))*</\1>)")
_IQ = re.compile(rb"<iq\b[^>]*?(?:/>|>(?:[^<]+|<(?!/iq>))*</iq>)")
_STREAM_ERROR = re.compile(rb"<(?:[\w.-]+:)?error\b.*?</(?:[\w.-]+:)?error>", re.S)
_MECHANISM = re.compile(rb"<mechanism>\s*([^<\s]+)\s*</mechanism>")
_JID = re.compile(rb"<jid>([^<]+)</jid>")
_SESSION = re.compile(rb"<session\b[^>]*?(?:/>|>((?:[^<]+|<(?!/session>))*)</session>)")
_SM_REPLY = re.compile(rb"<(enabled|resumed|failed)\b[^>]*?(?:/>|>(?:[^<]+|<(?!/\1>))*</\1>)")
_SM_ID = re.compile(rb"""\bid=(['"])([^'"]+)\1""")

SM_NS = "urn:xmpp:sm:3"
SM_REQUEST = b"<r xmlns='urn:xmpp:sm:3'/>"

CLOSE = b"</stream:stream>"


class XmppError(Exception):
    """Login failed: stream error, SASL failure, unexpected reply or timeout."""


def stream_header(domain: str) -> bytes:
    """Opening c2s stream header for ``domain``."""
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' "
        f"to='{domain}' version='1.0'>"
    ).encode()


def client_tls_context() -> ssl.SSLContext:
    """TLS context with verification off: benchmarks use self-signed loopback certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class LoginConfig:
    """Everything needed to log one account in."""

    host: str
    port: int
    domain: str
    password: str
    tls: bool = False
    presence: bool = False
    roster: bool = False  # roster get after bind (and SM/carbons), its result awaited
    resource: str = "load"
    mechanism: str | None = None  # force one SASL mechanism; None picks the best offered
    timeout: float = 30.0
    sm: bool = False  # XEP-0198: <enable/> after bind
    sm_resume: bool = False  # ... with resume='true'
    carbons: bool = False  # XEP-0280: enable carbons after bind (and after <enabled/>)
    csi: bool = False  # XEP-0352: <inactive/> once online (a phone in a pocket)
    websocket: str = ""  # XMPP over WebSocket (RFC 7395) at this HTTP path instead of TCP
    bosh: str = ""  # XMPP over BOSH (XEP-0206) at this HTTP path instead of TCP


def _choose_mechanism(offered: list[str], forced: str | None) -> str:
    if forced is not None:
        if forced not in offered:
            raise XmppError(f"server does not offer {forced} (offers {offered})")
        return forced
    for mech in (*SCRAM_MECHANISMS, "PLAIN"):
        if mech in offered:
            return mech
    raise XmppError(f"no supported SASL mechanism in {offered}")


_WAIT_FOR: dict[str, re.Pattern[bytes]] = {
    "features": _FEATURES, "proceed": _TLS_REPLY, "sasl": _SASL_REPLY, "bind": _IQ, "session": _IQ,
    "sm": _SM_REPLY, "resume": _SM_REPLY, "carbons": _IQ, "roster": _IQ,
}

ROSTER_GET = b"<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>"


class Session(asyncio.Protocol):
    """One client connection: login state machine, then ``on_data`` for the workload."""

    def __init__(self, cfg: LoginConfig, user: str, tls_ctx: ssl.SSLContext | None,
                 done: asyncio.Future[Session], resource: str | None = None,
                 resume: tuple[str, int] | None = None) -> None:
        self.cfg = cfg
        self.resource = resource or cfg.resource
        self.resume = resume  # (previd, h): resume this SM session instead of binding
        self.sm_id = ""  # SM-ID from <enabled/> (resumable sessions)
        self.h_base = 0  # stanzas received between <enabled/> and the end of login (XEP-0198 h)
        self.user = user
        self.tls_ctx = tls_ctx
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.on_data: Callable[[bytes], None] | None = None
        self.jid = ""
        self.closed = False
        self.state = "features"
        self.secure = False
        self.authed = False
        self.scram: ScramClient | None = None
        self.session_required = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send(stream_header(self.cfg.domain))

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        self.buf += data
        self._advance()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.done.done():  # not after a login: no exception built for nothing
            self.fail(XmppError(f"connection lost: {exc or 'closed by server'}"))

    # -- helpers ----------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Write raw bytes (no-op once closed)."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Send the stream close tag and close the socket (the server sees a clean close)."""
        if not self.closed and self.transport is not None:
            self.transport.write(CLOSE)
            self.transport.close()
        self.closed = True

    def fail(self, exc: Exception) -> None:
        """Abort a login in progress (no effect once logged in)."""
        if not self.done.done():
            self.done.set_exception(exc)
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    # -- login state machine ----------------------------------------------------------------
    def _advance(self) -> None:
        while not self.done.done():
            pattern = _WAIT_FOR.get(self.state)
            if pattern is None:  # waiting for the TLS handshake
                return
            # Search a bytes snapshot: a match on the bytearray would see the deletion below.
            data = bytes(self.buf)
            match = pattern.search(data)
            if match is None:
                if b"error" in data and _STREAM_ERROR.search(data):
                    self.fail(XmppError("stream error: " + data[:300].decode(errors="replace")))
                return
            del self.buf[: match.end()]
            try:
                getattr(self, "_on_" + self.state)(match)
            except (XmppError, ValueError, KeyError) as exc:
                self.fail(exc if isinstance(exc, XmppError) else XmppError(f"{type(exc).__name__}: {exc}"))

    def _on_features(self, match: re.Match[bytes]) -> None:
        features = match.string[: match.end()]  # the stream header, then the features
        if self.authed and self.resume is not None:
            previd, h = self.resume
            self.send(f"<resume xmlns='{SM_NS}' h='{h}' previd='{previd}'/>".encode())
            self.state = "resume"
        elif self.authed:
            self.session_required = False
            required = _SESSION.search(features)
            if required is not None and b"optional" not in (required.group(1) or b""):
                self.session_required = True
            self.send(b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                      b"<resource>" + self.resource.encode() + b"</resource></bind></iq>")
            self.state = "bind"
        elif self.cfg.tls and not self.secure:
            if b"starttls" not in features:
                raise XmppError("server does not offer STARTTLS")
            self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            self.state = "proceed"
        else:
            offered = [m.decode() for m in _MECHANISM.findall(features)]
            mech = _choose_mechanism(offered, self.cfg.mechanism)
            if mech == "PLAIN":
                payload = base64.b64encode(f"\0{self.user}\0{self.cfg.password}".encode())
            else:
                self.scram = ScramClient(mech, self.user, self.cfg.password)
                payload = base64.b64encode(self.scram.first())
            self.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech.encode()
                      + b"'>" + payload + b"</auth>")
            self.state = "sasl"

    def _on_proceed(self, match: re.Match[bytes]) -> None:
        if match.group(1) != b"proceed":
            raise XmppError("STARTTLS refused")
        self.state = "tls"
        asyncio.ensure_future(self._start_tls())

    async def _start_tls(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self.transport, self, self.tls_ctx or client_tls_context(),
                                             server_hostname=self.cfg.domain)
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self.fail(XmppError(f"TLS handshake failed: {exc}"))
            return
        if transport is None:
            self.fail(XmppError("TLS handshake failed"))
            return
        self.transport = transport  # type: ignore[assignment]
        self.secure = True
        self.buf.clear()
        self.state = "features"
        self.send(stream_header(self.cfg.domain))

    def _on_sasl(self, match: re.Match[bytes]) -> None:
        kind, payload = match.group(1), base64.b64decode(match.group(2) or b"")
        if kind == b"failure":
            raise XmppError(f"SASL failed for {self.user}: {match.group(0)[:200]!r}")
        scram = self.scram
        if kind == b"challenge":
            if scram is None:
                raise XmppError("unexpected SASL challenge")
            if not scram.expected_signature:
                final = base64.b64encode(scram.final(payload))
                self.send(b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + final + b"</response>")
                return
            # RFC 6120 6.3.10: the server-final message may come as a challenge.
            if not scram.verify(payload):
                raise XmppError(f"bad SCRAM server signature for {self.user}")
            self.scram = None
            self.send(b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            return
        if scram is not None and not scram.verify(payload):
            raise XmppError(f"bad SCRAM server signature for {self.user}")
        self.authed = True
        self.state = "features"
        self.send(stream_header(self.cfg.domain))

    def _on_bind(self, match: re.Match[bytes]) -> None:
        reply = match.group(0)
        jid = _JID.search(reply)
        if (b"type='result'" not in reply and b'type="result"' not in reply) or jid is None:
            raise XmppError(f"bind failed for {self.user}: {reply[:200]!r}")
        self.jid = jid.group(1).decode()
        if self.session_required:
            self.send(b"<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
            self.state = "session"
        else:
            self._after_bind()

    def _on_session(self, match: re.Match[bytes]) -> None:
        self._after_bind()

    def _after_bind(self) -> None:
        if self.cfg.sm:
            resume = " resume='true'" if self.cfg.sm_resume else ""
            self.send(f"<enable xmlns='{SM_NS}'{resume}/>".encode())
            self.state = "sm"
        else:
            self._after_sm()

    def _on_sm(self, match: re.Match[bytes]) -> None:
        if match.group(1) != b"enabled":
            raise XmppError(f"stream management refused for {self.user}: {match.group(0)[:200]!r}")
        sm_id = _SM_ID.search(match.group(0))
        self.sm_id = sm_id.group(2).decode() if sm_id else ""
        if self.cfg.sm_resume and not self.sm_id:
            raise XmppError("server enabled stream management without resumption")
        self._after_sm()

    def _after_sm(self) -> None:
        if self.cfg.carbons:
            self.send(b"<iq type='set' id='carb1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            self.state = "carbons"
        else:
            self._finish()

    def _iq_result(self, match: re.Match[bytes], failed: str) -> None:
        """The answer to a login step's IQ: a result (counted towards h), else ``failed``."""
        reply = match.group(0)
        if b"type='result'" not in reply and b'type="result"' not in reply:
            raise XmppError(f"{failed} for {self.user}: {reply[:200]!r}")
        if self.cfg.sm:
            self.h_base += 1  # the iq result counts towards h
        self._finish()

    def _on_carbons(self, match: re.Match[bytes]) -> None:
        self._iq_result(match, "carbons refused")

    def _on_roster(self, match: re.Match[bytes]) -> None:
        self._iq_result(match, "roster get failed")

    def _on_resume(self, match: re.Match[bytes]) -> None:
        if match.group(1) != b"resumed":
            raise XmppError(f"resumption failed for {self.user}: {match.group(0)[:200]!r}")
        self.sm_id = self.resume[0] if self.resume else ""
        self.state = "online"
        self.done.set_result(self)

    def _finish(self) -> None:
        if self.cfg.roster and self.state != "roster":
            # RFC 6121 2.2: the roster before initial presence.  A client need not wait for
            # the answer to send presence, so both leave in one write (as clients do).
            self.send(ROSTER_GET + b"<presence/>" if self.cfg.presence else ROSTER_GET)
            self.state = "roster"
            return
        if self.cfg.presence and self.state != "roster":
            self.send(b"<presence/>")
        self.state = "online"
        if self.cfg.csi:
            self.send(b"<inactive xmlns='urn:xmpp:csi:0'/>")
        self.done.set_result(self)


async def login(cfg: LoginConfig, user: str, tls_ctx: ssl.SSLContext | None = None, *,
                resource: str | None = None, resume: tuple[str, int] | None = None) -> Session:
    """Connect and log ``user`` in (STARTTLS, SASL, bind, session, SM, carbons, presence);
    with ``resume=(previd, h)`` resume that XEP-0198 session instead of binding."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    if cfg.bosh:
        from .bosh import BOSHCarrier

        session = Session(cfg, user, tls_ctx, done, resource, resume)
        await BOSHCarrier(session, cfg).start()
    elif cfg.websocket:
        from .websocket import WSCarrier

        session = Session(cfg, user, tls_ctx, done, resource, resume)
        await loop.create_connection(
            lambda: WSCarrier(session, f"{cfg.host}:{cfg.port}", cfg.websocket),
            cfg.host, cfg.port)
    else:
        _, session = await loop.create_connection(
            lambda: Session(cfg, user, tls_ctx, done, resource, resume), cfg.host, cfg.port)
    timer = loop.call_later(cfg.timeout, session.fail, XmppError(f"login timeout for {user}"))
    try:
        return await done
    finally:
        timer.cancel()
