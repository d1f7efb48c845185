"""XEP-0198 stream management over raw sockets: enable, acknowledgements (with wrap-around),
resumption after a killed TCP connection, the failure conditions, expiry into offline
storage, and the keepalive that detaches a silent client's session."""

from __future__ import annotations

import re
import time

import pytest
from support import RawClient, offline_count
from support import sm_authenticate as authenticate
from support import sm_enable as enable

from xmppd.jid import JID
from xmppd.modules.sm import MASK, advance, distance, parse_h

SM = "urn:xmpp:sm:3"
USERS = {"alice": "secret", "bob": "secret"}
QUIET = {"request_every": 0, "request_after_s": 0}  # no server-initiated <r/>: exact reads


def sm_server(make_server, **sm_options):
    return make_server(users=USERS, allow_plain=True,
                       modules_options={"sm": {**QUIET, **sm_options}})


def sm_client(server, user: str = "bob", resource: str = "phone", resume: bool = True):
    client = RawClient(server.port)
    client.login(user, "secret", resource=resource)
    return client, enable(client, resume)


def resume(server, user: str, previd: str, h: int) -> tuple[RawClient, str]:
    client = RawClient(server.port)
    authenticate(client, user)
    client.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
    return client, client.read_until("<resumed[^>]*/>|</failed>")


def ack(client: RawClient) -> int:
    """Ask the server for its count of our stanzas."""
    client.send(f"<r xmlns='{SM}'/>")
    return int(re.search(r"<a xmlns='urn:xmpp:sm:3' h='(\d+)'/>",
                         client.read_until(r"<a [^>]*/>")).group(1))


def ping(client: RawClient, id: str = "end") -> str:
    client.send(f"<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return client.read_until(f"id=.{id}.[^>]*/>")


def say(client: RawClient, to: str, *bodies: str) -> None:
    client.send("".join(f"<message to='{to}' type='chat'><body>{b}</body></message>"
                        for b in bodies))


def bodies(text: str) -> list[str]:
    return re.findall(r"<body>(.*?)</body>", text)


def sm_module(server):
    return server.server.services["sm"]


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def detached(server) -> list:
    return server.call(_detached(server))


async def _detached(server):
    return sm_module(server).detached()


def session_of(server, jid: str):
    return server.server.router.sessions.get(JID(jid))


# -- the counter ----------------------------------------------------------------------------


def test_sequence_numbers_wrap_at_2_32():
    assert advance(MASK) == 0
    assert advance(MASK - 1, 3) == 1
    assert distance(1, MASK - 1) == 3
    assert distance(5, 5) == 0
    assert parse_h("4294967295") == MASK
    assert parse_h("4294967296") is None and parse_h("-1") is None and parse_h("x") is None


# -- enable, r/a ----------------------------------------------------------------------------


def test_sm_feature_and_enable_with_resumption(make_server):
    server = sm_server(make_server)
    client = RawClient(server.port)
    features = authenticate(client, "bob")
    assert re.search(r"<sm xmlns=.urn:xmpp:sm:3./>", features)
    # before binding: <enable/> is an unexpected request
    client.send(f"<enable xmlns='{SM}'/>")
    assert "unexpected-request" in client.read_until("</failed>")
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.read_until("</iq>")
    client.send(f"<r xmlns='{SM}'/>")  # <r/> before enable
    assert "unexpected-request" in client.read_until("</failed>")
    client.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = client.read_until("<enabled[^>]*/>")
    assert "resume='true'" in enabled and "max='300'" in enabled
    previd = re.search(r"id='([^']+)'", enabled).group(1)
    assert len(previd) >= 22  # unguessable: 128 random bits, base64url
    client.send(f"<enable xmlns='{SM}'/>")  # twice
    assert "unexpected-request" in client.read_until("</failed>")
    assert ack(client) == 0  # the failed <enable/> is not a stanza


def test_enable_without_resume_and_requested_max(make_server):
    server = sm_server(make_server, resume_timeout_s=100)
    client = RawClient(server.port)
    client.login("bob", "secret")
    client.send(f"<enable xmlns='{SM}'/>")
    assert "id=" not in client.read_until("<enabled[^>]*/>")
    other = RawClient(server.port)
    other.login("bob", "secret", resource="two")
    other.send(f"<enable xmlns='{SM}' resume='true' max='40'/>")
    assert "max='40'" in other.read_until("<enabled[^>]*/>")


def test_acknowledgements_count_every_stanza_both_ways(make_server):
    server = sm_server(make_server)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, _ = sm_client(server)
    # inbound: a message, a directed presence, an IQ (answered: one outbound stanza)
    say(bob, "alice@localhost/r", "hi")
    bob.send("<presence to='alice@localhost/r'/>")
    ping(bob, "p1")
    assert ack(bob) == 3
    assert ack(bob) == 3  # <r/> and <a/> are not stanzas
    say(alice, "bob@localhost/phone", "one", "two")
    assert bodies(bob.read_until("two</body></message>")) == ["one", "two"]
    # outbound: the pong and two messages; acknowledging more is an error
    bob.send(f"<a xmlns='{SM}' h='2'/>")
    assert ack(bob) == 3
    bob.send(f"<a xmlns='{SM}' h='4'/>")
    closing = bob.read_closed()
    assert "undefined-condition" in closing
    assert "handled-count-too-high" in closing and "send-count='3'" in closing


def test_counters_wrap_around(make_server):
    server = sm_server(make_server)
    sm_module(server).initial_h = MASK - 1
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, _ = sm_client(server)
    say(bob, "alice@localhost/r", "a", "b")
    ping(bob, "p")
    assert ack(bob) == 1  # 2^32 - 1 + 3, modulo 2^32
    say(alice, "bob@localhost/phone", "c", "d")
    bob.read_until("d</body></message>")
    bob.send(f"<a xmlns='{SM}' h='1'/>")  # the pong and two messages: wrapped
    assert ack(bob) == 1
    sm = session_of(server, "bob@localhost/phone").transport
    assert len(sm.queue) == 0 and sm.h_out == 1


def test_server_requests_acknowledgement_after_n_stanzas(make_server):
    server = sm_server(make_server, request_every=2)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, _ = sm_client(server)
    say(alice, "bob@localhost/phone", "1", "2")
    bob.read_until(f"<r xmlns='{SM}'/>")


def test_server_requests_acknowledgement_after_t_seconds(make_server):
    server = sm_server(make_server, request_after_s=0.2)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, _ = sm_client(server)
    say(alice, "bob@localhost/phone", "1")
    got = bob.read_until(f"<r xmlns='{SM}'/>", timeout=3)
    assert got.index("<body>1") < got.index("<r ")


# -- resumption -----------------------------------------------------------------------------


def test_resume_after_killed_connection_delivers_exactly_once(make_server):
    server = sm_server(make_server)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, previd = sm_client(server)
    bob.send("<presence/>")  # available: a message to the bare JID is for this session
    bob.read_until("<presence[^>]*/>")
    say(alice, "bob@localhost/phone", "m1")
    bob.read_until("m1</body></message>")
    say(bob, "alice@localhost/r", "from-bob")
    bob.close()  # TCP gone, no </stream:stream>
    wait_for(lambda: len(detached(server)) == 1)
    # still in the session table: messages to the full JID queue, no unavailable presence
    assert session_of(server, "bob@localhost/phone") is not None
    say(alice, "bob@localhost/phone", "m2")
    say(alice, "bob@localhost", "m3")
    assert "error" not in ping(alice, "a1")
    bob, resumed = resume(server, "bob", previd, 2)  # own presence and m1 acknowledged
    assert f"previd='{previd}'" in resumed and "h='2'" in resumed
    got = ping(bob, "after")
    assert bodies(got) == ["m2", "m3"]
    assert ack(bob) == 3  # counting goes on: presence and message before, the ping now
    assert offline_count(server, "bob") == 0
    assert detached(server) == []
    say(alice, "bob@localhost/phone", "m4")
    assert bodies(bob.read_until("m4</body></message>")) == ["m4"]


def test_client_h_acknowledges_part_of_the_queue(make_server):
    server = sm_server(make_server)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, previd = sm_client(server)
    say(alice, "bob@localhost/phone", "m1", "m2", "m3")
    bob.read_until("m3</body></message>")
    bob.close()
    wait_for(lambda: len(detached(server)) == 1)
    bob, resumed = resume(server, "bob", previd, 2)
    assert "<resumed" in resumed
    assert bodies(ping(bob)) == ["m3"]


def test_unknown_previd_and_another_accounts_previd_are_item_not_found(make_server):
    server = sm_server(make_server)
    bob, previd = sm_client(server)
    bob.close()
    wait_for(lambda: len(detached(server)) == 1)
    client, answer = resume(server, "alice", "not-a-session", 0)
    assert "<item-not-found" in answer and " h=" not in answer
    client, answer = resume(server, "alice", previd, 0)  # bob's id, alice's login
    assert "<item-not-found" in answer and " h=" not in answer
    assert "bob" not in answer
    # the failure changed nothing: bob can still resume
    assert len(detached(server)) == 1
    bob, answer = resume(server, "bob", previd, 0)
    assert "<resumed" in answer


def test_resume_after_bind_is_unexpected(make_server):
    server = sm_server(make_server)
    bob, previd = sm_client(server)
    bob.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    assert "unexpected-request" in bob.read_until("</failed>")


def test_resuming_an_attached_session_closes_the_old_connection_with_conflict(make_server):
    server = sm_server(make_server)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    old, previd = sm_client(server)
    say(alice, "bob@localhost/phone", "m1")
    old.read_until("m1</body></message>")
    new, answer = resume(server, "bob", previd, 0)
    assert "<resumed" in answer and "h='0'" in answer
    assert "<conflict" in old.read_closed()
    assert bodies(ping(new)) == ["m1"]  # not acknowledged: re-sent
    say(alice, "bob@localhost/phone", "m2")
    assert bodies(new.read_until("m2</body></message>")) == ["m2"]
    assert session_of(server, "bob@localhost/phone").transport.stream is not None


def test_clean_close_ends_the_session_and_stores_unacknowledged_messages(make_server):
    server = sm_server(make_server)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, previd = sm_client(server)
    say(alice, "bob@localhost/phone", "m1", "m2")
    bob.read_until("m2</body></message>")
    bob.send(f"<a xmlns='{SM}' h='1'/></stream:stream>")
    bob.read_closed()
    wait_for(lambda: session_of(server, "bob@localhost/phone") is None)
    wait_for(lambda: offline_count(server, "bob") == 1)
    client, answer = resume(server, "bob", previd, 0)
    assert "<item-not-found" in answer


# -- expiry ---------------------------------------------------------------------------------


def test_expiry_stores_messages_offline_and_answers_iqs(make_server):
    server = sm_server(make_server, resume_timeout_s=0.5)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, previd = sm_client(server)
    say(alice, "bob@localhost/phone", "m1")
    bob.read_until("m1</body></message>")
    bob.close()
    wait_for(lambda: len(detached(server)) == 1)
    say(alice, "bob@localhost/phone", "m2")
    alice.send("<message to='bob@localhost/phone' type='headline'><body>news</body></message>")
    alice.send("<iq type='get' id='v1' to='bob@localhost/phone'>"
               "<query xmlns='jabber:iq:version'/></iq>")
    error = alice.read_until(r"id=.v1.[^>]*>.*?</iq>", timeout=5)
    assert "type=\"error\"" in error and "service-unavailable" in error
    wait_for(lambda: session_of(server, "bob@localhost/phone") is None)
    wait_for(lambda: offline_count(server, "bob") == 2)
    _, answer = resume(server, "bob", previd, 1)
    assert "<item-not-found" in answer and "h='0'" in answer  # h of the expired session
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="laptop")
    bob.send("<presence/>")
    got = ping(bob)
    assert bodies(got) == ["m1", "m2"]  # in order, the headline dropped


def test_detached_queue_overflow_expires_the_session(make_server):
    server = sm_server(make_server, max_queue=3)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, previd = sm_client(server)
    bob.close()
    wait_for(lambda: len(detached(server)) == 1)
    say(alice, "bob@localhost/phone", *[f"m{i}" for i in range(5)])
    wait_for(lambda: session_of(server, "bob@localhost/phone") is None)
    wait_for(lambda: offline_count(server, "bob") == 5)


def test_rebinding_the_full_jid_ends_the_detached_session(make_server):
    server = sm_server(make_server)
    bob, previd = sm_client(server)
    bob.close()
    wait_for(lambda: len(detached(server)) == 1)
    again = RawClient(server.port)
    again.login("bob", "secret", resource="phone")
    assert detached(server) == []
    _, answer = resume(server, "bob", previd, 0)
    assert "<item-not-found" in answer


# -- keepalive ------------------------------------------------------------------------------


@pytest.mark.parametrize("with_sm", [False, True], ids=["plain", "sm"])
def test_keepalive_pings_a_silent_client_and_drops_it(make_server, with_sm):
    server = make_server(users=USERS, allow_plain=True, modules_options={
        "sm": QUIET, "keepalive": {"interval_s": 0.3, "timeout_s": 0.3}})
    if with_sm:
        bob, previd = sm_client(server)
    else:
        bob = RawClient(server.port)
        bob.login("bob", "secret", resource="phone")
    got = bob.read_until(r"<ping xmlns=.urn:xmpp:ping./></iq>", timeout=3)
    ping_id = re.search(r"id=\"([^\"]+)\"", got[got.rindex("<iq"):]).group(1)
    if with_sm:
        assert bob.read_closed(3) == ""  # no closing handshake from a dropped peer
        wait_for(lambda: len(detached(server)) == 1)
        bob, answer = resume(server, "bob", previd, 0)
        assert "<resumed" in answer
        assert f"id=\"{ping_id}\"" in ping(bob)  # the unacknowledged ping is re-sent
    else:
        bob.read_closed(3)
        wait_for(lambda: session_of(server, "bob@localhost/phone") is None)


def test_keepalive_leaves_an_answering_client_alone(make_server):
    server = make_server(users=USERS, allow_plain=True, modules_options={
        "keepalive": {"interval_s": 0.2, "timeout_s": 0.2}})
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    for _ in range(3):
        got = bob.read_until(r"<ping xmlns=.urn:xmpp:ping./></iq>", timeout=3)
        iq = got[got.rindex("<iq"):]
        ping_id = re.search(r"id=\"([^\"]+)\"", iq).group(1)
        bob.send(f"<iq type='result' id='{ping_id}' to='localhost'/>")
    assert session_of(server, "bob@localhost/phone") is not None


# -- offline messages are deleted on acknowledgement --------------------------------------


def _offline_then_sm_login(make_server):
    server = sm_server(make_server, resume_timeout_s=0.5)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    say(alice, "bob@localhost", "o1", "o2")
    wait_for(lambda: offline_count(server, "bob") == 2)
    bob, previd = sm_client(server)
    bob.send("<presence/>")
    got = ping(bob)
    assert bodies(got) == ["o1", "o2"] and "Offline Storage" in got
    return server, bob, previd


def test_offline_messages_unacknowledged_by_an_sm_session_stay_stored(make_server):
    server, bob, _ = _offline_then_sm_login(make_server)
    time.sleep(0.2)
    assert offline_count(server, "bob") == 2  # written to the socket, not acknowledged
    bob.close()  # connection killed without <a/>
    wait_for(lambda: len(detached(server)) == 1)
    wait_for(lambda: session_of(server, "bob@localhost/phone") is None)  # expired
    time.sleep(0.2)
    assert offline_count(server, "bob") == 2  # kept once, not stored a second time
    again = RawClient(server.port)
    again.login("bob", "secret", resource="laptop")
    again.send("<presence/>")
    assert bodies(ping(again)) == ["o1", "o2"]  # delivered again, in order, once
    wait_for(lambda: offline_count(server, "bob") == 0)  # no SM: deleted once written


def test_offline_messages_acknowledged_by_an_sm_session_are_deleted(make_server):
    server, bob, _ = _offline_then_sm_login(make_server)
    sm = session_of(server, "bob@localhost/phone").transport
    h = sm.h_out  # everything the server sent, offline messages included
    bob.send(f"<a xmlns='{SM}' h='{h}'/>")
    wait_for(lambda: offline_count(server, "bob") == 0)
    bob.close()
    wait_for(lambda: session_of(server, "bob@localhost/phone") is None)
    time.sleep(0.2)
    assert offline_count(server, "bob") == 0  # nothing stored again at expiry


def test_offline_messages_partly_acknowledged_keep_the_rest(make_server):
    server, bob, _ = _offline_then_sm_login(make_server)
    sm = session_of(server, "bob@localhost/phone").transport
    queue = list(sm.queue)
    first = next(i for i, el in enumerate(queue) if "o1" in str(el))
    bob.send(f"<a xmlns='{SM}' h='{advance(sm.acked, first + 1)}'/>")  # up to o1
    bob.close()
    wait_for(lambda: session_of(server, "bob@localhost/phone") is None)
    wait_for(lambda: offline_count(server, "bob") == 1)
    again = RawClient(server.port)
    again.login("bob", "secret", resource="laptop")
    again.send("<presence/>")
    assert bodies(ping(again)) == ["o2"]


def test_r_while_archive_writes_are_pending_is_answered_after_them(make_server):
    """With the archive on, an <r/> behind a message whose archive write is still pending
    is answered once the write is done: not before, and not with a stream error."""
    from xmppd.core.manager import DEFAULT_MODULES

    server = make_server(users=USERS, allow_plain=True,
                         modules_enabled=(*DEFAULT_MODULES, "mam"),
                         modules_options={"sm": QUIET})
    archive = server.server.modules.loaded["mam"].module.archive
    real, held = archive.start_append_shared, []

    def start_append_shared(*args, **kwargs):  # the write completes only when the test says so
        held.append(server.loop.create_future())
        real(*args, **kwargs)
        return held[-1]

    archive.start_append_shared = start_append_shared
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, _ = sm_client(server)
    say(bob, "alice@localhost/r", "kept")
    assert "kept" in alice.read_until("kept</body>")
    bob.send(f"<r xmlns='{SM}'/>")
    with pytest.raises(TimeoutError):
        bob.read_until(r"<a [^>]*/>", timeout=0.5)  # not acknowledged while not durable
    server.loop.call_soon_threadsafe(lambda: [f.set_result([]) for f in held])
    answer = bob.read_until(r"<a [^>]*/>|</stream:stream>")
    assert "h='1'" in answer and "stream:error" not in answer
    ping(bob, "still-open")  # the stream goes on (no unsupported-stanza-type after the <a/>)
