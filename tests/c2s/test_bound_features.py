"""Post-authentication stream features: serialized once per set of module handlers.

Every login used to build and serialize the same ``<stream:features>`` (bind, session and
what the modules add through ``stream-features``); now c2s keeps the bytes, keyed by the
handlers, and a module loaded or unloaded (a handler added or removed) gives a new entry.
"""

from __future__ import annotations

from support import RawClient, sm_authenticate

TEST_NS = "urn:example:bound-features"


def _hook(server, handler):
    async def add():
        return server.server.hooks.hook("stream-features", handler)

    return server.call(add())


def _features(server, user: str) -> str:
    client = RawClient(server.port)
    try:
        return sm_authenticate(client, user)
    finally:
        client.close()


def test_features_built_once_while_the_handlers_stay_the_same(server):
    calls = []

    def feature(stream, feats):
        calls.append(stream)
        feats.subelement("extra", TEST_NS)

    undo = _hook(server, feature)
    first, second = _features(server, "alice"), _features(server, "bob")
    for text in (first, second):
        assert f"<extra xmlns='{TEST_NS}'/>" in text or f'<extra xmlns="{TEST_NS}"/>' in text
        assert "urn:ietf:params:xml:ns:xmpp-bind" in text
    assert len(calls) == 1  # the second login got the bytes the first one built

    async def remove():
        undo()

    server.call(remove())
    third = _features(server, "carol")
    assert TEST_NS not in third  # the handler is gone: the features are built anew
    assert "urn:ietf:params:xml:ns:xmpp-bind" in third
    assert len(calls) == 1
