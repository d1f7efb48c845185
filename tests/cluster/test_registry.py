"""The session registry replica: remote binds enter the router's table, the newer bind of
a full JID wins on every worker whatever order the binds arrive in, a lost worker's
sessions are purged."""

from __future__ import annotations

from xmppd.cluster import codec
from xmppd.cluster.link import RecordBuffer
from xmppd.cluster.registry import Registry, RemoteSession
from xmppd.core.router import SessionTable
from xmppd.core.session import Session
from xmppd.jid import JID
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS


class Link(RecordBuffer):
    """A link whose records stay in its buffer (no loop, no flush)."""

    closed = False

    def __init__(self) -> None:
        super().__init__()
        self.controls: list = []

    def schedule(self, delay: float = 0.0) -> None:
        self.scheduled = True

    def control(self, name, args):
        self.controls.append((name, args))

    def flush(self):
        pass

    @property
    def sent(self) -> list[tuple]:
        records: list[tuple] = []
        codec.parse_records(bytes(self.buffer), 0, len(self.buffer), records)
        return records


class Transport:
    closed = False
    peer = None
    heard = None

    def __init__(self) -> None:
        self.errors: list[str] = []

    def send(self, element):
        pass

    def stream_error(self, condition, text=None):
        self.errors.append(condition)


def worker(me: int, clock: list[int]):
    table = SessionTable()
    ended: list[Session] = []

    def end(session: Session) -> None:
        ended.append(session)
        table.remove(session)
        registry.unbind_local(session)

    registry = Registry(me, table, end, clock=lambda: clock[0])
    return registry, table, ended


def bind_local(registry, table, full: str) -> Session:
    session = Session(JID(full), Transport())
    registry.bind_local(session, table.add(session))
    return session


def test_a_remote_bind_is_a_session_in_the_table():
    registry, table, _ = worker(0, [1])
    link = Link()
    remote = registry.bind_remote(1, "bob@example.org/phone", 5, link)
    assert isinstance(remote, RemoteSession) and remote.remote
    assert table.get(JID("bob@example.org/phone")) is remote
    assert table.resources(JID("bob@example.org")) == [remote]
    remote.send(Element("message", CLIENT_NS, {"id": "1"}))
    assert link.sent == [(codec.STANZA, "bob@example.org/phone", b'<message id="1"/>')]
    assert link.stanzas == 1 and link.scheduled
    remote.stream_error("policy-violation", "kicked")
    assert link.controls == [("kick", {"jid": "bob@example.org/phone",
                                       "condition": "policy-violation", "text": "kicked"})]
    assert registry.unbind_remote(1, "bob@example.org/phone") is remote
    assert table.get(JID("bob@example.org/phone")) is None


def test_the_newer_bind_wins_whatever_the_order():
    clock = [100]
    w0, t0, ended0 = worker(0, clock)
    clock[0] = 200
    w1, t1, ended1 = worker(1, clock)
    clock[0] = 100
    old = bind_local(w0, t0, "bob@example.org/r")  # stamp 100 on worker 0
    clock[0] = 200
    new = bind_local(w1, t1, "bob@example.org/r")  # stamp 200 on worker 1
    # each hears of the other's bind
    assert w0.bind_remote(1, "bob@example.org/r", 200, Link()) is not None
    assert w1.bind_remote(0, "bob@example.org/r", 100, Link()) is None
    assert ended0 == [old] and ended1 == []
    assert t0.get(JID("bob@example.org/r")).remote
    assert t1.get(JID("bob@example.org/r")) is new


def test_equal_stamps_are_broken_by_the_worker_number():
    registry, table, ended = worker(1, [7])
    mine = bind_local(registry, table, "a@example.org/r")
    assert registry.bind_remote(0, "a@example.org/r", 7, Link()) is None  # (7, 1) > (7, 0)
    assert registry.bind_remote(2, "a@example.org/r", 7, Link()) is not None
    assert ended == [mine]
    # a remote bind replaced by a newer one from a third worker
    newer = registry.bind_remote(3, "a@example.org/r", 8, Link())
    assert table.get(JID("a@example.org/r")) is newer
    assert registry.find_remote(2, "a@example.org/r") is None


def test_a_lost_worker_is_purged():
    registry, table, _ = worker(0, [1])
    for resource in ("a", "b"):
        registry.bind_remote(1, f"bob@example.org/{resource}", 1, Link())
    registry.bind_remote(2, "carol@example.org/c", 1, Link())
    gone = registry.purge(1)
    assert sorted(s.jid.full for s in gone) == ["bob@example.org/a", "bob@example.org/b"]
    assert [s.jid.full for s in table.all()] == ["carol@example.org/c"]
    assert registry.count(1) == 0 and registry.count(2) == 1


def test_the_snapshot_holds_local_sessions_and_their_shared_facts():
    registry, table, _ = worker(0, [5])
    session = bind_local(registry, table, "a@example.org/r")
    registry.share_local(session, "presence", "x")
    registry.share_local(session, "carbons", True)
    registry.share_local(session, "carbons", None)
    assert list(registry.snapshot()) == [("a@example.org/r", 5, {"presence": "x"})]
    assert registry.unbind_local(session)
    assert list(registry.snapshot()) == []
