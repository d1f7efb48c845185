"""A client connection that ends is freed by reference counting, not left as a reference
cycle for the garbage collector: at thousands of logins a second, cycles made the
collector run three times as often (and a full collection now and then) on the login path.
"""

from __future__ import annotations

import gc
import time

from support import RawClient

from xmppd.c2s.stream import C2SStream
from xmppd.core.session import Session


def _live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def _wait_unbound(srv, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(srv.server.router.sessions) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the closes' last callbacks


def test_closed_connections_leave_no_cycles(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True)
    gc.collect()
    streams, sessions = _live(C2SStream), _live(Session)
    gc.disable()  # from here on, only reference counting frees anything
    try:
        for i in range(5):
            client = RawClient(srv.port)
            client.login("alice", "secret", resource=f"r{i}")
            client.close()
        failed = RawClient(srv.port)  # a login that fails: the negotiation goes too
        failed.header()
        failed.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                    "AGFsaWNlAHdyb25n</auth>")
        failed.read_until("</failure>")
        failed.close()
        _wait_unbound(srv)
        assert _live(C2SStream) == streams
        assert _live(Session) == sessions
    finally:
        gc.enable()
