"""The BOSH framing and rid bookkeeping (sans-IO): requests in, decisions and bytes out."""

from __future__ import annotations

import pytest

from xmppd.web.bosh import (
    NEW,
    RETRANSMIT,
    Body,
    BOSHError,
    BOSHSession,
    Terms,
    body_bytes,
    negotiate,
    parse_body,
    stream_error_body,
    terminate_bytes,
)
from xmppd.xml.stanza import CLIENT_NS

NS = "http://jabber.org/protocol/httpbind"
LIMITS = {"max_stanza_size": 4096, "max_depth": 16, "max_attrs": 16}
TERMS = Terms(wait=30, hold=1, requests=2, inactivity=60, polling=2, maxpause=120)


def parse(text: str) -> Body:
    return parse_body(text.encode(), **LIMITS)


def body(rid: int, inner: str = "", **attrs: str) -> Body:
    extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
    return parse(f"<body xmlns='{NS}' sid='s' rid='{rid}'{extra}>{inner}</body>")


def test_parse_body_attributes_and_children():
    b = parse(f"<body xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='7' sid='abc' "
              "xmpp:restart='true'><message xmlns='jabber:client' to='a@b'/><presence/></body>")
    assert (b.rid, b.sid, b.restart, b.terminate, b.pause) == (7, "abc", True, False, None)
    assert [c.name for c in b.children] == ["message", "presence"]
    assert all(c.ns == CLIENT_NS for c in b.children)  # inherited from <body/>: jabber:client


@pytest.mark.parametrize("text, condition", [
    ("<body xmlns='other' rid='1'/>", "bad-request"),
    (f"<body xmlns='{NS}'/>", "bad-request"),  # no rid
    (f"<body xmlns='{NS}' rid='0'/>", "bad-request"),
    (f"<body xmlns='{NS}' rid='x'/>", "bad-request"),
    (f"<body xmlns='{NS}' rid='{2**53}'/>", "bad-request"),
    (f"<body xmlns='{NS}' rid='1'>", "bad-request"),  # incomplete
    (f"<body xmlns='{NS}' rid='1'><!-- c --></body>", "bad-request"),  # restricted XML
    (f"<body xmlns='{NS}' rid='1' sid='q'><m>{'x' * 5000}</m></body>", "policy-violation"),
])
def test_parse_body_errors(text, condition):
    with pytest.raises(BOSHError) as err:
        parse(text)
    assert err.value.condition == condition
    if "sid='q'" in text:
        assert err.value.sid == "q"  # the session the error ends


def test_negotiate_caps_wait_and_hold():
    b = parse(f"<body xmlns='{NS}' rid='1' wait='600' hold='4'/>")
    terms = negotiate(b, max_wait=60, max_hold=1, inactivity=30, polling=2, maxpause=100)
    assert (terms.wait, terms.hold, terms.requests) == (60, 1, 2)
    with pytest.raises(BOSHError, match="bad-request"):
        negotiate(parse(f"<body xmlns='{NS}' rid='1' wait='-1' hold='1'/>"), max_wait=60,
                  max_hold=1, inactivity=30, polling=2, maxpause=100)


def test_in_order_processing_holding_and_answers():
    s = BOSHSession("s", 10, TERMS, now=0.0)
    assert s.accept(body(12, "<a/>"), 1.0) == NEW
    assert s.ready() == []  # 11 is missing
    assert s.accept(body(11), 1.0) == NEW
    assert [b.rid for b in s.ready()] == [11, 12]
    s.hold(11)
    s.hold(12)
    answers = s.answers()  # two held, hold=1: the oldest goes back empty
    assert answers == [(11, body_bytes())]
    s.out.append(b"<message/>")
    assert s.answers() == [(12, body_bytes([b"<message/>"]))]
    assert s.out == [] and s.held == []


def test_retransmission_and_window():
    s = BOSHSession("s", 10, TERMS, now=0.0)
    s.accept(body(11), 0.0)
    s.ready()
    s.hold(11)
    assert s.accept(body(11), 0.0) == RETRANSMIT and s.replay(11) is None  # still open
    s.out.append(b"<x/>")
    [(rid, data)] = s.answers()
    assert s.accept(body(11), 0.0) == RETRANSMIT and s.replay(11) == data
    with pytest.raises(BOSHError, match="item-not-found"):
        s.accept(body(14), 0.0)  # last 11 + requests 2 = 13 at most
    with pytest.raises(BOSHError, match="item-not-found"):
        s.accept(body(5), 0.0)  # never answered here / forgotten


def test_overactivity():
    s = BOSHSession("s", 10, TERMS, now=0.0)
    s.accept(body(11), 0.0)
    s.ready()
    s.hold(11)
    with pytest.raises(BOSHError, match="policy-violation"):
        s.accept(body(12), 0.5)  # empty, 'hold' held already, sooner than 'polling'
    assert s.accept(body(12), 5.0) == NEW  # after the polling interval it is fine
    s3 = BOSHSession("s", 10, TERMS, now=0.0)
    s3.accept(body(11, "<a/>"), 0.0)
    s3.accept(body(12, "<a/>"), 0.0)
    s3.ready()
    s3.hold(11)
    s3.hold(12)
    with pytest.raises(BOSHError, match="policy-violation"):
        s3.accept(body(13, "<a/>"), 0.0)  # 11 and 12 still unanswered
    assert s3.accept(body(13, type="terminate"), 0.0) == NEW  # one more to terminate


def test_terminate_answers_every_held_request():
    s = BOSHSession("s", 10, TERMS, now=0.0)
    for rid in (11, 12):
        s.accept(body(rid, "<a/>"), 0.0)
    s.ready()
    s.hold(11)
    s.hold(12)
    s.out.append(b"<last/>")
    end = terminate_bytes()
    assert s.terminate(end) == [(11, body_bytes([b"<last/>"])), (12, end)]


def test_answer_bytes():
    assert body_bytes() == (f"<body xmlns='{NS}' "
                            "xmlns:stream='http://etherx.jabber.org/streams'/>").encode()
    assert b"condition='item-not-found'" in terminate_bytes("item-not-found")
    data = stream_error_body("conflict", "replaced")
    assert b"condition='remote-stream-error'" in data and b"<stream:error><conflict" in data
