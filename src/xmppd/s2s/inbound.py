"""Inbound s2s streams: a peer server connects to us (RFC 6120, XEP-0220, XEP-0178, XEP-0288).

An inbound stream carries a peer's stanzas to us, for every (remote, local) domain pair it
authenticated, by SASL EXTERNAL (a certificate valid for the remote domain) or by dialback
(checked with the remote domain's authoritative server).  A stanza whose ``from``/``to``
pair is not authorized ends the stream with ``invalid-from``.  When the peer asked for a
bidirectional stream (XEP-0288 ``<bidi/>``), our stanzas to it go back over this stream.

Stanzas cross the wire in ``jabber:server`` and are handed to the router in
``jabber:client``.  An inbound stream is the router's ``origin``: ``jid = None`` and
``remote = True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from xmppd.c2s.sasl import SASLFailure, decode_payload
from xmppd.s2s import dialback
from xmppd.s2s.common import (
    BIDI_FEATURE_NS,
    BIDI_NS,
    DB_DECL,
    SASL_NS,
    TLS_NS,
    Traced,
    domain_of,
    log,
    log_failure,
    renamespace,
    stanza_bytes,
    tls_version,
)
from xmppd.s2s.dialback import DIALBACK_NS, dialback_bytes
from xmppd.transport.stream import StreamErrorCondition, XMLStream, limits_kwargs
from xmppd.xml.element import Element
from xmppd.xml.events import STREAM_NS, StreamOpen
from xmppd.xml.framing import check_stream_header
from xmppd.xml.stanza import CLIENT_NS, SERVER_NS, STANZA_NAMES

if TYPE_CHECKING:
    from xmppd.s2s.manager import S2SManager


#: How a peer authenticated (as logged) -> the ``mechanism`` label of the login metrics.
_MECHANISMS = {"SASL EXTERNAL": "EXTERNAL", "dialback": "dialback",
               "certificate (dialback request)": "dialback-certificate"}


class S2SInStream(Traced, XMLStream):
    """A stream a peer server opened to us."""

    default_ns = SERVER_NS
    kind = "s2s_in"
    jid = None  # not a local client session
    remote = True  # for modules: stanzas from this origin come from another server

    def __init__(self, manager: S2SManager, direct_tls: bool = False) -> None:
        super().__init__(**limits_kwargs(manager.limits), connections=manager.connections)
        self.manager = manager
        self.size_limit_name = "max_stanza_size_preauth_bytes"
        self.direct_tls = direct_tls
        self.local: str | None = None  # the 'to' of the stream header
        self.claimed: str | None = None  # the 'from' of the stream header
        self.authorized: set[tuple[str, str]] = set()  # (remote domain, local domain)
        self.sasl_done = False
        self.bidi = False  # the peer asked for a bidirectional stream (XEP-0288)
        self.last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._closing:
            return  # refused: too many connections from this address
        self.last_activity = self.loop.time()
        self._timer = self.loop.call_later(self.manager.timeout, self._check_timers)
        if self.direct_tls:
            self._wait(self._handshake(), [])

    @property
    def usable(self) -> bool:
        """Open, and not closing: our stanzas may go over it."""
        return not (self.closed or self._closing)

    def _check_timers(self) -> None:
        self._timer = None
        if self.closed or self._closing:
            return
        if not self.authorized:
            log.info("s2s inbound from %s (%s): not authenticated in time",
                     self.peer, self.claimed or "no domain")
            self.stream_error("connection-timeout", "not authenticated in time")
            return
        idle = self.manager.idle_timeout
        left = self.last_activity + idle - self.loop.time()
        if left <= 0:
            log.info("closing idle inbound s2s stream from %s", self.claimed)
            self.close()
            return
        self._timer = self.loop.call_later(left, self._check_timers)

    def on_closed(self, abrupt: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.bidi:
            self.manager.bidi_detach(self)
        log.info("s2s inbound from %s (%s) closed: %s", self.peer, self.claimed or "no domain",
                 self.close_reason)

    def local_domain(self) -> str | None:
        return self.local or self.manager.default_domain

    # -- header and features ----------------------------------------------------------------

    def handle_stream_open(self, header: StreamOpen) -> None:
        to = check_stream_header(header, SERVER_NS)
        if not to or not self.manager.served(to):
            raise StreamErrorCondition("host-unknown", f"{to or 'no domain'} is not served here")
        if self.local is not None and to != self.local:
            raise StreamErrorCondition("host-unknown", "'to' changed across a stream restart")
        self.local = to
        claimed = header.attrs.get("from", "").lower().rstrip(".")
        if claimed:
            self.claimed = claimed
        self.send_header(to, self.claimed, **DB_DECL)
        if header.attrs.get("version", "").partition(".")[0] == "1":
            self.send_features(self._features())

    def _features(self) -> Element:
        feats = Element("features", STREAM_NS, {}, [])
        settings = self.manager.settings
        if not self.secure and self.manager.tls.available:
            tls = feats.subelement("starttls", TLS_NS)
            if self.manager.require_encryption:
                tls.subelement("required")
        if self.secure or not self.manager.require_encryption:
            if not self.sasl_done and self.claimed and self._cert_valid_for(self.claimed):
                mechs = feats.subelement("mechanisms", SASL_NS)
                mechs.subelement("mechanism", text="EXTERNAL")
            if settings.dialback:
                feats.append(dialback.features_element())
            if settings.bidi and not self.authorized:
                feats.subelement("bidi", BIDI_FEATURE_NS)
        return feats

    def _cert_valid_for(self, domain: str) -> bool:
        if not self.secure or self.transport is None:
            return False
        sslobj = self.transport.get_extra_info("ssl_object")
        return sslobj is not None and self.manager.tls.peer_valid(sslobj, domain, server_side=True)

    # -- elements -----------------------------------------------------------------------------

    def handle_element(self, el: Element) -> Awaitable | None:
        self.trace_in(el, SERVER_NS)
        self.last_activity = self.loop.time()
        ns = el.ns
        if ns == SERVER_NS and el.name in STANZA_NAMES:
            return self._stanza(el)
        if ns == DIALBACK_NS:  # <db:result> or <result xmlns='jabber:server:dialback'>
            if el.name == "result":
                return self._db_result(el)
            if el.name == "verify":
                return self._db_verify(el)
        elif ns == TLS_NS and el.name == "starttls":
            return self._starttls()
        elif ns == SASL_NS:
            return self._sasl(el)
        elif ns == BIDI_NS and el.name == "bidi":
            if self.authorized or not self.manager.settings.bidi:
                raise StreamErrorCondition("policy-violation", "bidi is not allowed now")
            self.bidi = True
            return None
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{el.name}/>")

    def _stanza(self, el: Element) -> Awaitable | None:
        sender, target = domain_of(el.get("from")), domain_of(el.get("to"))
        if sender is None or target is None:
            raise StreamErrorCondition("improper-addressing", "a stanza needs 'from' and 'to'")
        if (sender, target) not in self.authorized:
            raise StreamErrorCondition("invalid-from", f"{sender} is not authenticated to send to {target}")
        return route_inbound(self, renamespace(el, SERVER_NS, CLIENT_NS), sender)

    def send_stanza(self, stanza: Element) -> None:
        """Our stanza to the peer, over this bidirectional stream."""
        self.last_activity = self.loop.time()
        self.send_bytes(stanza_bytes(stanza))

    def send_dialback(self, el: Element) -> None:
        self.send_bytes(dialback_bytes(el))

    def _authorize(self, remote: str, local: str, method: str) -> None:
        self._count_login(_MECHANISMS[method], "success")
        log.info("s2s inbound from %s: %s -> %s authenticated by %s over %s%s", self.peer,
                 remote, local, method, tls_version(self.transport), " (bidi)" if self.bidi else "")
        self.authorized.add((remote, local))
        self.tokenizer.max_stanza_size = self.manager.limits.max_stanza_size_bytes
        self.size_limit_name = "max_stanza_size_bytes"
        if self.bidi:
            self.manager.bidi_attach(local, remote, self)

    def _refused(self, remote: str, why: str, mechanism: str) -> None:
        self._count_login(mechanism, "failure")
        log.info("s2s inbound from %s: %s -> %s not authenticated: %s",
                 self.peer, remote, self.local, why)

    def _count_login(self, mechanism: str, outcome: str) -> None:
        if self.connections is not None:
            self.connections.login(self.kind, mechanism, outcome)

    # -- STARTTLS ---------------------------------------------------------------------------

    def _starttls(self) -> Awaitable | None:
        if self.secure or not self.manager.tls.available or self.authorized:
            raise StreamErrorCondition("policy-violation", "STARTTLS is not allowed now")
        self.send_bytes(f"<proceed xmlns='{TLS_NS}'/>".encode())
        self.flush()
        self.reset_stream()
        return self._handshake()

    async def _handshake(self) -> None:
        await self.start_tls(self.manager.tls.server_context(direct=self.direct_tls))

    # -- SASL EXTERNAL (XEP-0178) ---------------------------------------------------------------

    def _sasl(self, el: Element) -> None:
        if el.name != "auth":
            self._sasl_failure("aborted" if el.name == "abort" else "malformed-request")
            return
        if self.sasl_done or not self.secure:
            raise StreamErrorCondition("policy-violation", "SASL is not allowed now")
        if el.get("mechanism") != "EXTERNAL":
            self._sasl_failure("invalid-mechanism")
            return
        try:
            data = decode_payload(el.text)
        except SASLFailure as exc:
            self._sasl_failure(exc.condition)
            return
        authzid = (data or b"").decode("utf-8", "replace").lower() or self.claimed
        if not authzid or (self.claimed and authzid != self.claimed):
            self._refused(authzid or "(none)",
                          "EXTERNAL with an authzid other than the stream's 'from'", "EXTERNAL")
            self._sasl_failure("invalid-authzid")
            return
        if not self._cert_valid_for(authzid):
            self._refused(authzid, "EXTERNAL without a certificate valid for the domain",
                          "EXTERNAL")
            self._sasl_failure("not-authorized")
            return
        self.sasl_done = True
        self.claimed = authzid
        self._authorize(authzid, self.local, "SASL EXTERNAL")
        self.send_bytes(f"<success xmlns='{SASL_NS}'/>".encode())
        self.restart_stream()

    def _sasl_failure(self, condition: str) -> None:
        self.send_bytes(f"<failure xmlns='{SASL_NS}'><{condition}/></failure>".encode())

    # -- dialback ---------------------------------------------------------------------------------

    def _db_result(self, el: Element) -> None:
        if "type" in el.attrs:
            return  # an answer on an inbound stream was never asked for: ignored
        remote, local, key = el.get("from", ""), el.get("to", ""), el.text.strip()
        if not self.secure and self.manager.require_encryption:
            raise StreamErrorCondition("policy-violation", "STARTTLS is required first")
        if not self.manager.served(local):
            self.send_dialback(dialback.result_error(local, remote, "item-not-found"))
            return
        if domain_of(remote) != remote or not key:
            self.send_dialback(dialback.result_error(local, remote, "bad-request", "modify"))
            return
        if (remote, local) in self.authorized:
            self.send_dialback(dialback.result_answer(local, remote, True))
            return
        if self._cert_valid_for(remote):
            # The certificate already proves the domain (XEP-0344): no need to dial back.
            self._authorize(remote, local, "certificate (dialback request)")
            self.send_dialback(dialback.result_answer(local, remote, True))
            return
        if remote in self.manager.require_valid:
            self._refused(remote, "no valid certificate, and one is required", "dialback")
            self.send_dialback(dialback.result_error(local, remote, "not-authorized", "auth"))
            return
        if not self.manager.settings.dialback:
            self._refused(remote, "dialback is disabled", "dialback")
            self.send_dialback(dialback.result_error(local, remote, "not-authorized", "auth"))
            return
        task = asyncio.ensure_future(self._verify_result(remote, local, key))
        task.add_done_callback(log_failure)

    async def _verify_result(self, remote: str, local: str, key: str) -> None:
        valid = await self.manager.verify(local, remote, self.stream_id, key)
        if self.closed or self._closing:
            return
        if valid:
            self._authorize(remote, local, "dialback")
        else:
            self._refused(remote, "dialback key not confirmed by its authoritative server",
                          "dialback")
        self.send_dialback(dialback.result_answer(local, remote, valid))

    def _db_verify(self, el: Element) -> None:
        if "type" in el.attrs:
            return  # answers come back on our outbound streams only
        receiving, originating = el.get("from", ""), el.get("to", "")
        stream_id = el.get("id", "")
        if not self.manager.served(originating):
            raise StreamErrorCondition("host-unknown", f"{originating} is not served here")
        valid = dialback.key_matches(
            self.manager.secret, receiving, originating, stream_id, el.text
        )
        self.send_dialback(dialback.verify_answer(originating, receiving, stream_id, valid))


def route_inbound(origin: XMLStream, stanza: Element, sender: str) -> Awaitable | None:
    """Hand a peer's stanza (already in ``jabber:client``) to the router; a module failing
    on it bounces it rather than cutting off a whole domain."""
    router = origin.manager.router  # type: ignore[attr-defined]
    try:
        result = router.route(stanza, origin)
    except Exception:
        log.exception("routing a stanza from %s failed", sender)
        router.bounce(stanza, "internal-server-error")
        return None
    return None if result is None else _guard(router, result, stanza)


async def _guard(router, pending: Awaitable, stanza: Element) -> None:
    try:
        await pending
    except Exception:
        log.exception("routing a stanza from %s failed", stanza.get("from"))
        router.bounce(stanza, "internal-server-error")
