"""Non-stanza elements from a bound client (nonzas) go to the ``element`` callback of
:func:`client_stanza` (the core event ``stream/element``), sans-IO."""

from __future__ import annotations

import asyncio

import pytest

from xmppd.c2s.stanzas import client_stanza
from xmppd.core.session import Session
from xmppd.jid import JID
from xmppd.xml.element import Element
from xmppd.xml.framing import StreamErrorCondition

NS = "urn:example:nonza"


class Transport:
    closed = False
    peer = None

    def __init__(self) -> None:
        self.sent: list[Element] = []
        self.send = self.sent.append

    def flush(self) -> None:
        pass

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.closed = True


def never_routed(stanza: Element, session: Session) -> None:
    raise AssertionError("a nonza reached the router")


@pytest.fixture
def session() -> Session:
    return Session(JID("alice@localhost/a"), Transport())


def test_a_handled_nonza_goes_nowhere_else(session):
    seen = []

    def element(sess: Session, el: Element) -> bool:
        seen.append((sess, el.name))
        return True

    nonza = Element("r", NS, {}, [])
    assert client_stanza(nonza, session, never_routed, session.send, element) is None
    assert seen == [(session, "r")] and session.transport.sent == []


@pytest.mark.parametrize("element", [None, lambda sess, el: False])
def test_an_unhandled_nonza_is_a_stream_error(session, element):
    with pytest.raises(StreamErrorCondition) as exc:
        client_stanza(Element("r", NS, {}, []), session, never_routed, session.send, element)
    assert exc.value.condition == "unsupported-stanza-type"


@pytest.mark.parametrize("verdict", [True, False])
def test_a_handler_may_decide_later(session, verdict):
    async def element(sess: Session, el: Element) -> bool:
        await asyncio.sleep(0)
        return verdict

    async def main() -> None:
        pending = client_stanza(Element("r", NS, {}, []), session, never_routed, session.send,
                                lambda sess, el: element(sess, el))
        if verdict:
            assert await pending is None
        else:
            with pytest.raises(StreamErrorCondition, match="unsupported-stanza-type|not a stanza"):
                await pending

    asyncio.run(main())
