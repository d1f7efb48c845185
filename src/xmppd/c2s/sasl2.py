"""XEP-0388 SASL2 and XEP-0386 Bind2 for :class:`~xmppd.c2s.negotiation.ClientNegotiation`.

SASL2 runs the same mechanisms as RFC 6120 SASL (the same :class:`SASLServer`, channel
binding included) plus the XEP-0484 FAST ``HT-*`` token mechanisms, in the
``urn:xmpp:sasl:2`` syntax.  It is offered only when the ``sasl2`` module provides its
service (:class:`SASL2Provider`): the module owns the options, the FAST token store and the
inline features (carbons, stream management), so c2s imports no module.

After ``<success/>`` the stream is not restarted (XEP-0388 §2.6.3): the features of the
authenticated stream follow at once.  With an inline ``<bind/>`` the resource is already
bound; without it the client binds as in RFC 6120, on the same stream.  An inline XEP-0198
``<resume/>`` is tried first: resumed, the ``<success/>`` carries ``<resumed/>`` and the
stream carries on where the old one stopped (no features); refused, it carries ``<failed/>``
and the ``<bind/>`` is processed as if there had been no ``<resume/>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from xmppd.c2s.fast import FAST_NS, HT_MECHANISMS, TokenAuth, TokenStore, ht_mechanisms
from xmppd.c2s.sasl import SASLFailure, decode_payload, encode_payload
from xmppd.jid import JID, JIDError
from xmppd.transport.connections import address_text
from xmppd.xml.element import Element, escape_attr, escape_text
from xmppd.xml.framing import StreamErrorCondition

if TYPE_CHECKING:
    from xmppd.c2s.negotiation import ClientNegotiation

log = logging.getLogger("xmppd.c2s")

SASL2_NS = "urn:xmpp:sasl:2"
BIND2_NS = "urn:xmpp:bind:0"
SM_NS = "urn:xmpp:sm:3"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
MAX_AGENT_ID = 128
MAX_TAG = 64


class SASL2Provider(TokenStore, Protocol):
    """The ``sasl2`` module's service, as c2s sees it."""

    fast: bool  # offer FAST tokens

    def bind2_features(self) -> list[str]:
        """Namespaces of the features that can be enabled inline in ``<bind/>``."""

    def bind2_inline(self, stream: Any, session: Any, bind: Element) -> bytes:
        """Enable what ``bind`` asks for on the new session; the answers for ``<bound/>``."""

    def resume_inline(self, stream: Any, resume: Element,
                      reply: Callable[[bytes], None]) -> Awaitable | None:
        """Resume the XEP-0198 session ``resume`` names on ``stream`` (authenticated, not
        bound); ``reply`` gets the ``<resumed/>`` or ``<failed/>`` (it writes a
        ``<resumed/>`` at once, before the session's unacknowledged stanzas are re-sent)."""

    async def fast_issue(self, username: str, domain: str, agent: str) -> tuple[str, str]:
        """A new token for (account, agent): ``(token, expiry as XEP-0082 datetime)``."""

    async def fast_invalidate(self, username: str, domain: str, agent: str) -> None: ...


@dataclass(slots=True)
class Request:
    """One ``<authenticate/>`` and what it asked for inline."""

    mechanism: str
    mech: Any  # SASLServer or TokenAuth
    agent: str | None = None
    bind: Element | None = None
    resume: Element | None = None  # XEP-0198 inline resumption
    request_token: str | None = None
    invalidate: bool = False


def failure_bytes(condition: str, text: str | None = None) -> bytes:
    body = f"<{condition} xmlns='{SASL_NS}'/>"
    if text:
        body += f"<text>{escape_text(text)}</text>"
    return f"<failure xmlns='{SASL2_NS}'>{body}</failure>".encode()


def feature(provider: SASL2Provider, mechs: tuple[str, ...],
            fast_mechs: tuple[str, ...]) -> Element:
    """``<authentication/>`` with its mechanisms and the inline features."""
    auth = Element("authentication", SASL2_NS, {}, [])
    for name in mechs:
        auth.subelement("mechanism", text=name)
    inline = auth.subelement("inline")
    bind = inline.subelement("bind", BIND2_NS)
    features = provider.bind2_features()
    if features:
        bind_inline = bind.subelement("inline")
        for ns in features:
            bind_inline.subelement("feature", attrs={"var": ns})
    if fast_mechs:
        fast = inline.subelement("fast", FAST_NS)
        for name in fast_mechs:
            fast.subelement("mechanism", text=name)
    if SM_NS in features:  # stream management resumes inline (XEP-0198 §10.2)
        inline.subelement("sm", SM_NS)
    return auth


def feature_key(provider: SASL2Provider | None, neg: ClientNegotiation) -> tuple | None:
    """What the SASL2 feature depends on (for the serialized features cache)."""
    if provider is None:
        return None
    fast = tuple(ht_mechanisms(neg.bindings if neg.secure else None)) if provider.fast else ()
    return (tuple(provider.bind2_features()), fast)


def resource_for(secret: bytes, tag: str, agent: str | None) -> str:
    """XEP-0386: ``tag.hash`` — stable per client install (user-agent id), else random."""
    if agent is None:
        suffix = secrets.token_hex(4)
    else:
        suffix = hmac.digest(secret, b"bind2\0" + agent.encode(), "sha256")[:4].hex()
    return f"{tag}.{suffix}" if tag else suffix


def handle(neg: ClientNegotiation, el: Element):
    """A ``urn:xmpp:sasl:2`` element before authentication."""
    if neg.username is not None:
        raise StreamErrorCondition("policy-violation", "already authenticated")
    provider = neg.provider()
    if provider is None:
        raise StreamErrorCondition("unsupported-stanza-type", f"unexpected <{el.name}/>")
    io = neg.io
    name = el.name
    if name == "abort":
        if neg.sasl2 is not None:
            neg.sasl2.mech.abort()
        neg.sasl2 = None
        io.send_bytes(failure_bytes("aborted"))
        return None
    if neg.sasl is None:  # TLS required and not yet negotiated
        io.send_bytes(failure_bytes("encryption-required"))
        return None
    if name == "authenticate":
        return _authenticate(neg, provider, el)
    if name == "response":
        req = neg.sasl2
        if req is None:
            io.send_bytes(failure_bytes("malformed-request", "no authentication in progress"))
            return None
        return step(neg, req, el, start=False)
    raise StreamErrorCondition("unsupported-stanza-type", f"unexpected SASL2 <{name}/>")


def _authenticate(neg: ClientNegotiation, provider: SASL2Provider, el: Element):
    mechanism = el.get("mechanism", "")
    agent_el = el.find("user-agent", SASL2_NS)
    agent = None if agent_el is None else agent_el.get("id")
    if agent is not None and not (0 < len(agent) <= MAX_AGENT_ID):
        neg.io.send_bytes(failure_bytes("malformed-request", "bad user-agent id"))
        return None
    fast = el.find("fast", FAST_NS)
    count: int | None = None
    if fast is not None and fast.get("count") is not None:
        text = fast.get("count") or ""
        if not text.isdigit() or len(text) > 20:
            neg.io.send_bytes(failure_bytes("malformed-request", "bad FAST count"))
            return None
        count = int(text)
    if mechanism.startswith("HT-"):
        if not provider.fast:
            neg.io.send_bytes(failure_bytes("invalid-mechanism"))
            return None
        mech: Any = TokenAuth(provider, domain=neg.domain or neg.policy.default_domain,
                              bindings=neg.bindings if neg.secure else None,
                              agent=agent, count=count)
    else:
        mech = neg.sasl
    token_req = el.find("request-token", FAST_NS)
    req = Request(
        mechanism=mechanism, mech=mech, agent=agent, bind=el.find("bind", BIND2_NS),
        resume=el.find("resume", SM_NS),
        request_token=None if token_req is None or not provider.fast
        else token_req.get("mechanism", ""),
        invalidate=fast is not None and fast.get("invalidate") in ("true", "1"),
    )
    neg.sasl2 = req
    return step(neg, req, el.find("initial-response", SASL2_NS), start=True)


async def step(neg: ClientNegotiation, req: Request, el: Element | None, *, start: bool) -> None:
    io, mech, throttle = neg.io, req.mech, neg.policy.throttle
    failure: SASLFailure | None = None
    try:
        data = None if el is None else decode_payload(el.text)
        if start:
            result = await mech.start(req.mechanism, data)
        else:
            result = await mech.respond(data if data is not None else b"")
    except SASLFailure as exc:
        failure = exc
    else:
        if not result.success:
            text = encode_payload(result.challenge or b"") or "="
            io.send_bytes(f"<challenge xmlns='{SASL2_NS}'>{text}</challenge>".encode())
            return
        if await neg.account_disabled(result.username):
            failure = SASLFailure("account-disabled")
            neg.sasl = neg._new_sasl()
    user = mech.attempted_username
    if not throttle.allowed(io.peer, user):
        neg.sasl2 = None
        neg.auth_refused(failure_bytes, req.mechanism)
        return
    wait = throttle.delay(io.peer, user)
    if wait:
        await asyncio.sleep(wait)
    if failure is not None:
        neg.sasl2 = None
        neg.auth_failed(failure, mech, failure_bytes)
        return
    throttle.succeeded(io.peer, result.username)
    neg.count_login(req.mechanism, "success")
    await _succeeded(neg, req, result)


async def _succeeded(neg: ClientNegotiation, req: Request, result: Any) -> None:
    io, policy = neg.io, neg.policy
    provider = neg.provider()
    username = neg.username = result.username
    domain = neg.domain or policy.default_domain
    neg.sasl = None
    neg.sasl2 = None
    neg.bindings = None
    log.info("c2s authenticated: address=%s username=%s@%s mechanism=%s sasl2=yes",
             address_text(io.peer), username, domain, req.mechanism)
    parts = []
    if result.additional_data is not None:
        parts.append(f"<additional-data>{encode_payload(result.additional_data)}"
                     f"</additional-data>")
    token_xml = ""
    if provider is not None and req.agent is not None:
        if req.invalidate and req.mechanism.startswith("HT-"):
            await provider.fast_invalidate(username, domain, req.agent)
        if req.request_token in HT_MECHANISMS:  # a token works with every HT mechanism
            token, expiry = await provider.fast_issue(username, domain, req.agent)
            token_xml = (f"<token xmlns='{FAST_NS}' expiry='{escape_attr(expiry)}' "
                         f"token='{escape_attr(token)}'/>")
    io.authenticated()

    def success(identifier: str, inline: str) -> bytes:
        return (f"<success xmlns='{SASL2_NS}'>{''.join(parts)}<authorization-identifier>"
                f"{escape_text(identifier)}</authorization-identifier>{inline}{token_xml}"
                f"</success>").encode()

    failed_xml = ""
    if req.resume is not None and provider is not None:
        answer = await _resume(io, provider, req.resume, success)
        if answer is None:
            return  # resumed (its <success/> written) or the stream ended
        failed_xml = answer  # refused: bind as if there had been no <resume/>
    session = None
    bound_xml = ""
    identifier = f"{username}@{domain}"
    if req.bind is not None:
        tag = (req.bind.findtext("tag") or "").strip()[:MAX_TAG]
        try:
            jid = JID(f"{identifier}/{resource_for(policy.secret, tag, req.agent)}")
        except JIDError:
            jid = JID(f"{identifier}/{resource_for(policy.secret, '', req.agent)}")
        from xmppd.c2s.negotiation import BindError
        try:
            session = policy.bind(jid, io)
        except BindError as exc:
            log.info("c2s bind2 refused: jid=%s reason=%s", jid, exc.condition)
        else:
            io.bound(session)
            identifier = str(jid)
            inner = b"" if provider is None else provider.bind2_inline(io, session, req.bind)
            bound_xml = f"<bound xmlns='{BIND2_NS}'>{inner.decode()}</bound>"
    io.send_bytes(success(identifier, failed_xml + bound_xml))
    # no stream restart: the authenticated stream's features follow (bind, unless bound)
    io.send_bytes(neg.authenticated_features(bound=session is not None))
    if session is None:
        return
    log.info("c2s session bound (bind2): jid=%s", session.jid)
    policy.bound(session)


async def _resume(io: Any, provider: SASL2Provider, resume: Element,
                  success: Callable[[str, str], bytes]) -> str | None:
    """XEP-0198 resumption inline: None once resumed (``success`` written before the
    re-sent stanzas) or when the stream ended (e.g. an ``h`` too high); else the
    ``<failed/>`` for the ``<success/>``."""
    answers: list[bytes] = []

    def reply(data: bytes) -> None:
        answers.append(data)
        if data.startswith(b"<resumed"):
            io.send_bytes(success(str(io.session.jid), data.decode()))

    pending = provider.resume_inline(io, resume, reply)
    if pending is not None:
        await pending
    if not answers or answers[0].startswith(b"<resumed"):
        return None
    return answers[0].decode()
