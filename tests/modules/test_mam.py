"""XEP-0313 message archive with XEP-0359 stanza ids: raw-socket protocol tests."""

from __future__ import annotations

import re
import time

import pytest
from support import RawClient, connect

from xmppd.core.config import Limits
from xmppd.core.manager import DEFAULT_MODULES
from xmppd.core.session import Session
from xmppd.xml.stanza import encode_stanza, message

USERS = {"alice": "secret", "bob": "secret", "carol": "secret"}
MAM = "urn:xmpp:mam:2"
WITH_MAM = (*DEFAULT_MODULES, "mam")
FORM = ("<x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{}</x>")

@pytest.fixture
def make_server(make_server):
    """Servers with the archive (not in the default module set) enabled."""
    def factory(**kw):
        kw.setdefault("modules_enabled", WITH_MAM)
        return make_server(**kw)
    return factory



def field(var: str, *values: str) -> str:
    return f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"


def ping(client: RawClient, id: str = "end") -> str:
    """Everything the client got before the server answered a ping (a barrier)."""
    client.send(f"<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return client.read_until(f"id=.{id}.[^>]*/?>")


def query(client: RawClient, fields: str = "", rsm: str = "", id: str = "q",
          queryid: str = "qid") -> tuple[list[tuple[str, str]], str]:
    """Run a MAM query: ([(archive id, forwarded message xml)], the IQ answer)."""
    form = FORM.format(fields) if fields else ""
    rsm = f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>" if rsm else ""
    client.send(f"<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='{queryid}'>"
                f"{form}{rsm}</query></iq>")
    text = client.read_until(rf"<iq[^>]*id=.{id}.[^>]*(/>|>.*?</iq>)")
    results = re.findall(r"<result xmlns=\"urn:xmpp:mam:2\" id=\"([^\"]+)\" queryid=\"qid\">"
                         r"(.*?)</result>", text)
    return results, text[text.rindex("<iq"):]


def bodies(results) -> list[str]:
    return [re.search(r"<body>(.*?)</body>", xml).group(1) for _id, xml in results]


def _module(server):
    return server.server.services["mam"]


def fill(server, owner: str, count: int, peer: str = "bob@localhost", start: float = 1e9):
    """Append ``count`` messages to ``owner``'s archive directly (concurrently: grouped)."""
    import asyncio

    mod = _module(server)

    async def run():
        writes = []
        for i in range(count):
            msg = message(owner, f"m{i}", **{"from": f"{peer}/r"})
            writes.append(mod.archive.append(owner, encode_stanza(msg), stamp=start + i,
                                             with_jid=peer, id=f"id{i:05d}"))
        await asyncio.gather(*writes)

    server.call(run(), timeout=60)


def test_messages_are_archived_both_ways_with_a_stanza_id(make_server):
    server = make_server(users=USERS, allow_plain=True)
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    alice.send("<message to='bob@localhost/b' type='chat' id='m1'><body>hi</body>"
               "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>")
    got = bob.read_until("</message>")
    sid = re.search(r"<stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"bob@localhost\" id=\"([^\"]+)\"",
                    got)
    assert sid, got
    assert "origin-id" in got
    ping(alice)
    results, fin = query(bob)
    assert [r[0] for r in results] == [sid.group(1)]
    assert "<body>hi</body>" in results[0][1] and "urn:xmpp:delay" in results[0][1]
    assert 'complete="true"' in fin and "<count>1</count>" in fin
    mine, _ = query(alice)
    assert bodies(mine) == ["hi"] and mine[0][0] != sid.group(1)
    # not archived: no body, a no-store hint, headline
    alice.send("<message to='bob@localhost/b' type='chat'>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    alice.send("<message to='bob@localhost/b' type='chat'><body>x</body>"
               "<no-permanent-store xmlns='urn:xmpp:hints'/></message>")
    alice.send("<message to='bob@localhost/b' type='headline'><body>x</body></message>")
    got = ping(bob)
    assert "stanza-id" not in got
    assert len(query(bob)[0]) == 1


def test_offline_recipient_gets_archive_and_offline_store(make_server):
    server = make_server(users=USERS, allow_plain=True)
    alice = connect(server, "alice", "a")
    alice.send("<message to='bob@localhost' type='chat'><body>later</body></message>")
    alice.send("<message to='nobody@localhost' type='chat'><body>x</body></message>")
    assert "service-unavailable" in alice.read_until("</message>")
    ping(alice)
    bob = connect(server, "bob", "b")
    bob.send("<presence/>")
    got = ping(bob)
    sid = re.search(r"stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"bob@localhost\" id=\"([^\"]+)\"",
                    got)
    assert sid and "<body>later</body>" in got and "urn:xmpp:delay" in got
    results, _ = query(bob)
    assert [r[0] for r in results] == [sid.group(1)]
    assert server.call(_module(server).archive.owners()) == ["alice@localhost",
                                                               "bob@localhost"]


def test_forged_stanza_ids_are_stripped(server):
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    alice.send("<message to='bob@localhost/b' type='chat'><body>hi</body>"
               "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/>"
               "<stanza-id xmlns='urn:xmpp:sid:0' by='localhost' id='forged2'/>"
               "<stanza-id xmlns='urn:xmpp:sid:0' by='muc.example.org' id='theirs'/>"
               "<origin-id xmlns='urn:xmpp:sid:0' id='orig'/></message>")
    got = bob.read_until("</message>")
    assert "forged" not in got
    assert 'id="theirs"' in got and 'id="orig"' in got
    assert got.count('by="bob@localhost"') == 1
    ping(alice)
    for client in (alice, bob):
        results, _ = query(client)
        assert "forged" not in results[0][1]
    # a message with no body is not archived, but forged ids go all the same
    alice.send("<message to='bob@localhost/b' type='headline'>"
               "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged3'/></message>")
    assert "forged3" not in bob.read_until("</message>|<message[^>]*/>")


def test_paging_forward_backward_and_count(make_server):
    server = make_server(users=USERS, allow_plain=True)
    fill(server, "alice@localhost", 25)
    alice = connect(server, "alice", "a")
    results, fin = query(alice, rsm="<max>10</max>")
    assert bodies(results) == [f"m{i}" for i in range(10)]
    assert 'complete="false"' in fin and "<count>25</count>" in fin
    assert "<first>id00000</first>" in fin and "<last>id00009</last>" in fin
    results, fin = query(alice, rsm="<max>10</max><after>id00019</after>")
    assert bodies(results) == [f"m{i}" for i in range(20, 25)] and 'complete="true"' in fin
    results, fin = query(alice, rsm="<max>10</max><before/>")  # the last page
    assert bodies(results) == [f"m{i}" for i in range(15, 25)] and 'complete="false"' in fin
    results, fin = query(alice, rsm="<max>10</max><before>id00005</before>")
    assert bodies(results) == [f"m{i}" for i in range(5)] and 'complete="true"' in fin
    # form filters: start/end (inclusive), with, ids, after-id + RSM after (the later wins)
    results, _ = query(alice, field("start", "2001-09-09T01:46:45Z")
                       + field("end", "2001-09-09T01:46:47Z"))
    assert bodies(results) == ["m5", "m6", "m7"]
    assert query(alice, field("with", "carol@localhost"))[0] == []
    assert len(query(alice, field("with", "bob@localhost"))[0]) == 25
    assert bodies(query(alice, field("with", "bob@localhost/r"), "<max>3</max>")[0]) == \
        ["m0", "m1", "m2"]
    assert query(alice, field("with", "bob@localhost/other"))[0] == []
    results, _ = query(alice, field("ids", "id00003", "id00001", "nope"))
    assert bodies(results) == ["m1", "m3"]
    results, _ = query(alice, field("after-id", "id00020"), "<after>id00010</after>")
    assert bodies(results) == ["m21", "m22", "m23", "m24"]
    results, fin = query(alice, field("before-id", "id00003"), "<before/>")
    assert bodies(results) == ["m0", "m1", "m2"] and 'complete="true"' in fin
    # max 0: only the count
    results, fin = query(alice, rsm="<max>0</max>")
    assert results == [] and "<count>25</count>" in fin and "<first" not in fin


def test_max_is_capped(make_server):
    server = make_server(users=USERS, allow_plain=True,
                         modules_options={"mam": {"max_page": 20, "default_page": 5}})
    fill(server, "alice@localhost", 30)
    alice = connect(server, "alice", "a")
    results, fin = query(alice, rsm="<max>1000</max>")
    assert len(results) == 20 and 'complete="false"' in fin
    assert len(query(alice)[0]) == 5


@pytest.mark.parametrize("fields,rsm,condition", [
    ("", "<after>unknown</after>", "item-not-found"),
    ("", "<before>unknown</before>", "item-not-found"),
    (field("after-id", "unknown"), "", "item-not-found"),
    (field("before-id", "unknown"), "", "item-not-found"),
    (field("after-id", "id00001"), "<after>unknown</after>", "item-not-found"),
    (field("start", "yesterday"), "", "bad-request"),
    (field("colour", "red"), "", "bad-request"),
    (field("with", "@bad"), "", "jid-malformed"),
    (field("with", "a", "b"), "", "bad-request"),
    ("", "<index>3</index>", "feature-not-implemented"),
    ("", "<max>-1</max>", "bad-request"),
    ("", "<max>ten</max>", "bad-request"),
])
def test_query_errors(make_server, fields, rsm, condition):
    server = make_server(users=USERS, allow_plain=True)
    fill(server, "alice@localhost", 3)
    alice = connect(server, "alice", "a")
    results, fin = query(alice, fields, rsm)
    assert results == [] and 'type="error"' in fin and condition in fin, fin


def test_wrong_form_type_and_other_accounts(server):
    alice = connect(server, "alice", "a")
    alice.send(f"<iq type='set' id='f'><query xmlns='{MAM}'><x xmlns='jabber:x:data' "
               "type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>"
               "</query></iq>")
    assert "bad-request" in alice.read_until("</iq>")
    alice.send(f"<iq type='set' id='o' to='bob@localhost'><query xmlns='{MAM}'/></iq>")
    assert "forbidden" in alice.read_until("</iq>")


def test_form_discovery_and_features(server):
    alice = connect(server, "alice", "a")
    alice.send(f"<iq type='get' id='f'><query xmlns='{MAM}'/></iq>")
    got = alice.read_until("</iq>")
    for var in ("FORM_TYPE", "with", "start", "end", "after-id", "before-id", "ids"):
        assert f'var="{var}"' in got
    assert "<value>urn:xmpp:mam:2</value>" in got
    alice.send("<iq type='get' id='d' to='alice@localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    got = alice.read_until("</iq>")
    for feature in (MAM, MAM + "#extended", "urn:xmpp:sid:0"):
        assert f'var="{feature}"' in got
    alice.send("<iq type='get' id='d2' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert 'var="urn:xmpp:carbons:2"' in alice.read_until("</iq>")


def prefs(client: RawClient, body: str, id: str = "p") -> str:
    client.send(f"<iq type='set' id='{id}'><prefs xmlns='{MAM}' {body}</prefs></iq>")
    return client.read_until(f"id=.{id}.[^>]*(/>|>.*?</iq>)")


def test_prefs_never_always_and_roster(make_server):
    server = make_server(users=USERS, allow_plain=True)
    alice, bob, carol = (connect(server, u, u[0]) for u in ("alice", "bob", "carol"))
    got = prefs(alice, "default='never'><always><jid>carol@localhost</jid></always>"
                "<never/>")
    assert 'default="never"' in got and "<jid>carol@localhost</jid>" in got
    alice.send("<iq type='get' id='g'><prefs xmlns='urn:xmpp:mam:2'/></iq>")
    assert "<jid>carol@localhost</jid>" in alice.read_until("</iq>")
    bob.send("<message to='alice@localhost/a' type='chat'><body>from bob</body></message>")
    carol.send("<message to='alice@localhost/a' type='chat'><body>from carol</body></message>")
    got = alice.read_until("from carol.*?</message>")
    assert got.count("stanza-id") == 1  # only carol's message is archived (and stamped)
    alice.send("<message to='bob@localhost/b' type='chat'><body>to bob</body></message>")
    ping(alice)
    assert bodies(query(alice)[0]) == ["from carol"]
    # roster: only contacts in alice's roster
    alice.send("<iq type='set' id='r'><query xmlns='jabber:iq:roster'>"
               "<item jid='bob@localhost'/></query></iq>")
    alice.read_until("id=.r.")
    prefs(alice, "default='roster'>", "p2")
    bob.send("<message to='alice@localhost/a' type='chat'><body>bob again</body></message>")
    carol.send("<message to='alice@localhost/a' type='chat'><body>carol again</body></message>")
    alice.read_until("carol again.*?</message>")
    ping(alice)
    assert bodies(query(alice)[0]) == ["from carol", "bob again"]
    # never beats the default; a bad default is refused
    prefs(alice, "default='always'><never><jid>bob@localhost</jid></never>", "p3")
    bob.send("<message to='alice@localhost/a' type='chat'><body>bob 3</body></message>")
    alice.read_until("bob 3.*?</message>")
    ping(alice)
    assert "bob 3" not in bodies(query(alice)[0])
    assert "bad-request" in prefs(alice, "default='sometimes'>", "p4")
    # the prefs are stored: a restart-free reload reads them back
    _module(server).prefs.clear()
    alice.send("<iq type='get' id='g2'><prefs xmlns='urn:xmpp:mam:2'/></iq>")
    assert "<jid>bob@localhost</jid>" in alice.read_until("</iq>")


def nested(levels: int) -> str:
    return "<x xmlns='urn:example:deep'>" * levels + "</x>" * levels


def test_deeply_nested_message_is_archived_intact(make_server):
    server = make_server(users=USERS, allow_plain=True, limits=Limits(max_depth=200))
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    alice.send(f"<message to='bob@localhost/b' type='chat'><body>deep</body>{nested(126)}"
               "</message>")
    got = bob.read_until("</message>")
    assert got.count("<x") == 126 and "stanza-id" in got
    ping(alice)
    results, _ = query(bob)
    assert bodies(results) == ["deep"] and results[0][1].count("<x") == 126


def test_message_too_deep_to_archive_is_refused(make_server):
    server = make_server(users=USERS, allow_plain=True, limits=Limits(max_depth=128))
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    alice.send(f"<message to='bob@localhost/b' type='chat' id='d'><body>deep</body>"
               f"{nested(126)}</message>")
    got = alice.read_until("</message>")
    assert 'type="error"' in got and "policy-violation" in got
    assert "<message" not in ping(bob)
    assert query(bob)[0] == [] and query(alice)[0] == []
    # from a peer (here: a local sender to a bare JID with no archive refusal on the
    # sending side, as with prefs never): the recipient's archive refuses, the sender hears
    prefs(alice, "default='never'>")
    alice.send(f"<message to='bob@localhost' type='chat' id='e'><body>deep</body>"
               f"{nested(126)}</message>")
    assert "policy-violation" in alice.read_until("</message>")
    assert "<message" not in ping(bob)


def test_retention_deletes_old_items(make_server):
    server = make_server(users=USERS, allow_plain=True,
                         modules_options={"mam": {"retention_days": 2}})
    now = time.time()
    fill(server, "alice@localhost", 10, start=now - 5 * 86400)  # 5 days old
    alice = connect(server, "alice", "a")
    alice.send("<message to='bob@localhost' type='chat'><body>new</body></message>")
    ping(alice)
    mod = _module(server)
    assert server.call(mod.expire()) == 10
    assert bodies(query(alice)[0]) == ["new"]
    assert server.call(mod.expire(now=now + 3 * 86400)) == 2  # alice's and bob's copy


def test_daily_retention_job_runs_only_in_the_owning_process(make_server):
    server = make_server(users=USERS, allow_plain=True,
                         modules_options={"mam": {"retention_days": 2}})
    fill(server, "alice@localhost", 4, start=time.time() - 5 * 86400)
    mod = _module(server)
    owner = mod.api.owner_worker
    mod.api.owner_worker = lambda key: 1  # another worker or node owns the job
    try:
        server.call(mod._daily_expire())
    finally:
        mod.api.owner_worker = owner
    assert server.call(mod.archive.count("alice@localhost")) == 4
    server.call(mod._daily_expire())  # a single process owns it
    assert server.call(mod.archive.count("alice@localhost")) == 0


def test_account_deletion_removes_the_archive(make_server):
    server = make_server(users=USERS, allow_plain=True)
    alice = connect(server, "alice", "a")
    alice.send("<message to='bob@localhost' type='chat'><body>x</body></message>")
    prefs(alice, "default='always'>")
    ping(alice)
    alice.close()
    mod = _module(server)
    assert server.call(mod.archive.count("alice@localhost")) == 1
    assert server.call(server.server.storage.delete_account("alice", "localhost"))
    assert server.call(mod.archive.count("alice@localhost")) == 0
    assert server.call(mod.prefs_store.items("alice@localhost")) == {}
    assert server.call(mod.archive.count("bob@localhost")) == 1  # bob's copy is bob's


def test_sender_session_tracks_the_archive_write(make_server, monkeypatch):
    server = make_server(users=USERS, allow_plain=True)
    alice = connect(server, "alice", "a")
    ping(alice)
    tracked = []
    original = Session.track

    def track(self, write):
        tracked.append((self.jid.full, write))
        original(self, write)

    monkeypatch.setattr(Session, "track", track)
    alice.send("<message to='bob@localhost' type='chat'><body>x</body></message>")
    ping(alice)
    assert [jid for jid, _w in tracked] == ["alice@localhost/a"]  # not bob's copy
    assert tracked[0][1].done() and tracked[0][1].result() == []  # durable, no failure
