"""The hand-over tools of :mod:`xmppd.cluster.handover` between two real worker ``Node``s
(one event loop, real Unix-socket links): questions and answers (in time, late, to a peer
that is not up or that goes), and a session handed over (quietly taken by the peer's
newer bind; ended when the peer goes before binding it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from xmppd.cluster.handover import Forwarder
from xmppd.cluster.node import Node
from xmppd.core.hooks import Hooks
from xmppd.core.router import Router
from xmppd.core.session import Ended, Session
from xmppd.jid import JID


class Worker:
    """One worker's node with its own router and hooks; what it ended."""

    def __init__(self, me: int, directory) -> None:
        self.hooks = Hooks()
        self.router = Router(self.hooks, ["localhost"])
        self.ended: list[tuple[Session, str]] = []
        self.node = Node(me, 2, directory, self.router, self.hooks,
                         end_session=self._end, reload=lambda: None)

    def _end(self, session: Session, condition: str, text: str | None) -> None:
        self.ended.append((session, condition))
        if self.router.sessions.remove(session):
            self.node.unbound(session)


async def pair(directory) -> tuple[Worker, Worker]:
    a, b = Worker(0, directory), Worker(1, directory)
    await a.node.start()
    await b.node.start()
    await a.node.wait_peers(5)
    await b.node.wait_peers(5)
    for _ in range(200):  # each has said hello to the other
        if a.node.peer_up(1) and b.node.peer_up(0):
            return a, b
        await asyncio.sleep(0.01)
    raise AssertionError("the workers did not meet")


def answers() -> tuple[list[tuple], Callable]:
    got: list[tuple] = []
    return got, lambda answer, late: got.append((answer, late))


async def until(predicate, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_questions_answered_late_unanswered_and_to_a_peer_that_goes(tmp_path):
    async def scenario() -> None:
        a, b = await pair(tmp_path)
        slow = asyncio.get_running_loop().create_future()

        def answer(value, peer, module, name, args):
            if module != "m":
                return value
            return {"echo": args["x"], "from": peer} if name == "now" else slow

        b.hooks.hook("cluster-request", answer)
        now, on_now = answers()
        a.node.requests.ask(1, "m", "now", {"x": 7}, 2.0, on_now)
        await until(lambda: now)
        assert now == [({"echo": 7, "from": 0}, False)]

        nobody, on_nobody = answers()  # no module of that name there: None
        a.node.requests.ask(1, "other", "now", {}, 2.0, on_nobody)
        await until(lambda: nobody)
        assert nobody == [(None, False)]

        late, on_late = answers()  # the timeout first, then the answer, marked late
        a.node.requests.ask(1, "m", "slow", {}, 0.1, on_late)
        await until(lambda: late)
        assert late == [(None, False)]
        slow.set_result({"done": True})
        await until(lambda: len(late) == 2)
        assert late[1] == ({"done": True}, True)

        down, on_down = answers()  # not a live peer: None at once
        a.node.requests.ask(5, "m", "now", {"x": 1}, 2.0, on_down)
        await until(lambda: down)
        assert down == [(None, False)]

        never = asyncio.get_running_loop().create_future()
        b.hooks.hook("cluster-request", lambda v, p, m, n, args: never if m == "n" else v)
        gone, on_gone = answers()  # the peer goes: None, once
        a.node.requests.ask(1, "n", "x", {}, 30.0, on_gone)
        await asyncio.sleep(0.05)
        b.node.close()
        await until(lambda: gone)
        await asyncio.sleep(0.05)
        assert gone == [(None, False)]
        a.node.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_session_handed_over_leaves_quietly_or_ends_with_its_peer(tmp_path):
    async def scenario() -> None:
        a, b = await pair(tmp_path)
        for resource in ("moved", "lost"):
            session = Session(JID(f"alice@localhost/{resource}"), Ended(None))
            a.router.sessions.add(session)
            a.node.bound(session, None)
        await until(lambda: len(b.node.registry.remote.get(0, {})) == 2)

        moved = a.router.sessions.get(JID("alice@localhost/moved"))
        stamp = a.node.hand_over(moved, 1)
        assert isinstance(moved.transport, Forwarder)
        # the peer binds it (newer than ``stamp``): gone from worker 0 without an end
        taken = Session(moved.jid, Ended(None))
        displaced = b.router.sessions.add(taken)
        b.node.bound(taken, displaced, stamp)
        await until(lambda: a.router.sessions.get(moved.jid) is not moved)
        assert a.router.sessions.get(moved.jid).remote
        assert a.ended == [] and "alice@localhost/moved" not in a.node.registry.local

        lost = a.router.sessions.get(JID("alice@localhost/lost"))
        a.node.hand_over(lost, 1)
        b.node.close()  # before binding it: it ends on worker 0 (session-closed there)
        await until(lambda: a.ended)
        assert a.ended == [(lost, "connection-timeout")]
        assert a.router.sessions.get(lost.jid) is None
        a.node.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
