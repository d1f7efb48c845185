"""XEP-0313 end to end with slixmpp (xep_0313 + xep_0059): paging a 2000-message archive."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from support import connect
from test_mam import ping

from xmppd.core.manager import DEFAULT_MODULES

WITH_MAM = (*DEFAULT_MODULES, "mam")
TOTAL = 2000

@pytest.fixture
def make_server(make_server):
    """Servers with the archive (not in the default module set) enabled."""
    def factory(**kw):
        kw.setdefault("modules_enabled", WITH_MAM)
        return make_server(**kw)
    return factory



def test_slixmpp_pages_a_large_archive_forward_and_backward(make_server):
    from slixmpp import ClientXMPP

    server = make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True)
    alice = connect(server, "alice", "raw")
    alice.send("<presence/>")
    ping(alice)

    bob = connect(server, "bob", "b")
    bob.send("".join(f"<message to='alice@localhost' type='chat'><body>m{i}</body></message>"
                     for i in range(TOTAL)))
    assert "error" not in ping(bob)  # all routed and delivered: archive writes started
    alice.read_until(f"<body>m{TOTAL - 1}</body>")

    async def main() -> None:
        xmpp = ClientXMPP("alice@localhost/sl", "secret")
        for plugin in ("xep_0030", "xep_0059", "xep_0313", "xep_0359"):
            xmpp.register_plugin(plugin)
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        xmpp.enable_direct_tls = False
        started = asyncio.get_running_loop().create_future()
        xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
        xmpp.connect("127.0.0.1", server.port)
        await asyncio.wait_for(started, 10)
        mam = xmpp.plugin["xep_0313"]

        forward = [m["mam_result"]["forwarded"]["stanza"]["body"]
                   async for m in mam.iterate(rsm={"max": 100})]
        assert forward == [f"m{i}" for i in range(TOTAL)]
        backward = [m["mam_result"]["forwarded"]["stanza"]["body"]
                    async for m in mam.iterate(rsm={"max": 250}, reverse=True)]
        assert backward == [f"m{i}" for i in reversed(range(TOTAL))]

        first = await mam.retrieve(rsm={"max": 50}, timeout=10)
        assert first["mam_fin"]["complete"] in ("false", False)
        assert first["mam_fin"]["rsm"]["count"] == str(TOTAL)
        last_id = first["mam_fin"]["rsm"]["last"]
        nxt = await mam.retrieve(rsm={"max": 50, "after": last_id}, timeout=10)
        assert len(nxt["mam"]["results"]) == 50
        back = await mam.retrieve(rsm={"max": 50, "before": nxt["mam_fin"]["rsm"]["first"]},
                                  timeout=10)
        assert back["mam_fin"]["complete"] in ("true", True)  # the first page, backwards
        assert [m["mam_result"]["id"] for m in back["mam"]["results"]] == \
            [m["mam_result"]["id"] for m in first["mam"]["results"]]
        await asyncio.wait_for(xmpp.disconnect(), 5)

    asyncio.run(asyncio.wait_for(main(), 120))
