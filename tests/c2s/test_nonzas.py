"""Non-stanza elements on an authenticated client stream (nonzas: XEP-0198, XEP-0352...) go
to the modules through :func:`stream_extension` (the core event ``stream/element``),
sans-IO; one nobody takes ends the stream with ``unsupported-stanza-type``."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from xmppd.c2s.negotiation import stream_extension
from xmppd.xml.element import Element
from xmppd.xml.framing import StreamErrorCondition

NS = "urn:example:nonza"
STREAM = object()


def policy(handler) -> SimpleNamespace:
    return SimpleNamespace(stream_element=handler)


def test_a_handled_nonza_goes_nowhere_else():
    seen = []

    def handler(stream, el: Element) -> bool:
        seen.append((stream, el.name))
        return True

    assert stream_extension(policy(handler), STREAM, Element("r", NS, {}, [])) is None
    assert seen == [(STREAM, "r")]


@pytest.mark.parametrize("handler", [None, lambda stream, el: False, lambda stream, el: None])
def test_an_unhandled_nonza_is_a_stream_error(handler):
    with pytest.raises(StreamErrorCondition) as exc:
        stream_extension(policy(handler), STREAM, Element("r", NS, {}, []))
    assert exc.value.condition == "unsupported-stanza-type"


@pytest.mark.parametrize("verdict", [True, False])
def test_a_handler_may_decide_later(verdict):
    async def decide(stream, el: Element) -> bool:
        await asyncio.sleep(0)
        return verdict

    async def main() -> None:
        pending = stream_extension(policy(decide), STREAM, Element("r", NS, {}, []))
        if verdict:
            assert await pending is None
        else:
            with pytest.raises(StreamErrorCondition, match="unsupported-stanza-type|unexpected"):
                await pending

    asyncio.run(main())
