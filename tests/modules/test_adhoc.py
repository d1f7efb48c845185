"""XEP-0050 ad-hoc commands and the XEP-0133 admin commands end to end with slixmpp's
xep_0050: who sees and may run what, multi-stage forms with prev/next/complete, cancel, and
the XEP-0050 errors (bad-sessionid, malformed-action, bad-action, bad-payload,
session-expired)."""

from __future__ import annotations

import asyncio

import pytest
from adhoc_support import (
    ADMIN,
    client,
    close,
    command,
    command_error,
    field_values,
    fields,
    notes,
    sasl_plain,
)
from slixmpp.exceptions import IqError

USERS = {"admin": "secret", "alice": "secret", "bob": "secret"}


@pytest.fixture
def srv(make_server):
    return make_server(users=dict(USERS), allow_plain=True, admins=("admin@localhost",))


def adhoc(srv):
    return srv.server.modules.loaded["adhoc"].module


def test_the_command_list_depends_on_who_asks(srv):
    async def main() -> None:
        admin = await client(srv.port, "admin@localhost/a")
        alice = await client(srv.port, "alice@localhost/a")
        items = await admin.plugin["xep_0050"].get_commands("localhost")
        nodes = {i[1] for i in items["disco_items"]["items"]}
        assert {ADMIN + "add-user", ADMIN + "delete-user", ADMIN + "announce",
                ADMIN + "get-online-users-num", "change-password",
                "urn:xmpp:invite#create-account"} <= nodes
        items = await alice.plugin["xep_0050"].get_commands("localhost")
        assert {i[1] for i in items["disco_items"]["items"]} == {"change-password"}

        info = await admin.plugin["xep_0030"].get_info("localhost", node=ADMIN + "add-user")
        assert ("automation", "command-node", None, "Add a user") in info["disco_info"]["identities"]
        assert "http://jabber.org/protocol/commands" in info["disco_info"]["features"]
        with pytest.raises(IqError) as exc:
            await alice.plugin["xep_0030"].get_info("localhost", node=ADMIN + "add-user")
        assert exc.value.iq["error"]["condition"] == "forbidden"
        info = await alice.plugin["xep_0030"].get_info("localhost")
        assert "http://jabber.org/protocol/commands" in info["disco_info"]["features"]
        await close(admin, alice)

    asyncio.run(main())


def test_non_admins_are_refused_every_admin_command(srv):
    async def main() -> None:
        alice = await client(srv.port, "alice@localhost/a")
        for name in ("add-user", "delete-user", "get-online-users-num", "announce",
                     "set-motd", "disable-user"):
            assert await command_error(alice, ADMIN + name) == ("forbidden", "")
        assert await command_error(alice, ADMIN + "add-user", {
            "accountjid": "eve@localhost", "password": "x" * 10}) == ("forbidden", "")
        assert await command_error(alice, "no-such-command") == ("item-not-found", "")
        await close(alice)

    asyncio.run(main())
    assert not srv.call(srv.server.storage.account_exists("eve", "localhost"))


def test_add_user_with_a_form_retry_and_conflict(srv):
    async def main() -> None:
        admin = await client(srv.port, "admin@localhost/a")
        cmd = await command(admin, ADMIN + "add-user")
        assert cmd["status"] == "executing" and cmd["actions"] == {"complete"}
        assert {"accountjid", "password", "password-verify"} <= set(fields(cmd))
        sid = cmd["sessionid"]
        bad = {"accountjid": "dave@localhost", "password": "pw-one-12",
               "password-verify": "pw-two-12"}
        assert await command_error(admin, ADMIN + "add-user", bad, action="complete",
                                   sessionid=sid) == ("bad-request", "bad-payload")
        good = dict(bad, **{"password-verify": "pw-one-12"})  # the session is still there
        cmd = await command(admin, ADMIN + "add-user", good, action="complete", sessionid=sid)
        assert cmd["status"] == "completed"
        assert notes(cmd) == [("info", "created dave@localhost")]
        # done: the session is gone
        assert await command_error(admin, ADMIN + "add-user", good, action="complete",
                                   sessionid=sid) == ("bad-request", "bad-sessionid")
        # the form can come with the first request too
        assert await command_error(admin, ADMIN + "add-user", good) == ("conflict", "")
        dave = await client(srv.port, "dave@localhost/d", "pw-one-12")
        await close(admin, dave)

    asyncio.run(main())


def test_delete_user_in_two_stages_with_prev_cancel_and_bad_actions(srv):
    async def main() -> None:
        admin = await client(srv.port, "admin@localhost/a")
        bob = await client(srv.port, "bob@localhost/b")
        gone = asyncio.get_running_loop().create_future()
        bob.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(1))

        first = await command(admin, ADMIN + "delete-user")
        sid = first["sessionid"]
        assert first["actions"] == {"next"}
        assert await command_error(admin, ADMIN + "delete-user", action="prev",
                                   sessionid=sid) == ("bad-request", "bad-action")
        assert await command_error(admin, ADMIN + "delete-user", action="jump",
                                   sessionid=sid) == ("bad-request", "malformed-action")
        second = await command(admin, ADMIN + "delete-user", {"accountjids": ["bob@localhost"]},
                               action="next", sessionid=sid)
        assert set(second["actions"]) == {"prev", "complete"}
        assert field_values(second, "accountjids") == ["bob@localhost"]
        assert await command_error(admin, ADMIN + "delete-user", action="next",
                                   sessionid=sid) == ("bad-request", "bad-action")
        back = await command(admin, ADMIN + "delete-user", action="prev", sessionid=sid)
        assert back["actions"] == {"next"} and "accountjids" in fields(back)
        again = await command(admin, ADMIN + "delete-user", {"accountjids": ["bob@localhost"]},
                              action="next", sessionid=sid)
        assert again["status"] == "executing"
        done = await command(admin, ADMIN + "delete-user", {"confirm": True},
                             action="execute", sessionid=sid)  # execute = the default, complete
        assert done["status"] == "completed" and notes(done) == [("info", "deleted bob@localhost")]
        await asyncio.wait_for(gone, 5)

        cancelled = await command(admin, ADMIN + "delete-user")
        sid = cancelled["sessionid"]
        out = await command(admin, ADMIN + "delete-user", action="cancel", sessionid=sid)
        assert out["status"] == "canceled"
        assert await command_error(admin, ADMIN + "delete-user", {"accountjids": ["a@localhost"]},
                                   action="next", sessionid=sid) == ("bad-request", "bad-sessionid")
        await close(admin)

    asyncio.run(main())
    assert not srv.call(srv.server.storage.account_exists("bob", "localhost"))
    assert srv.call(srv.server.storage.account_exists("alice", "localhost"))


def test_sessions_belong_to_their_requester_and_expire(make_server):
    srv = make_server(users=dict(USERS), allow_plain=True, admins=("admin@localhost",),
                      modules_options={"adhoc": {"max_sessions_per_user": 2}})

    async def main() -> None:
        admin = await client(srv.port, "admin@localhost/a")
        other = await client(srv.port, "admin@localhost/other")
        sid = (await command(admin, ADMIN + "add-user"))["sessionid"]
        # the same account from another resource, or another node: no such session
        assert await command_error(other, ADMIN + "add-user", action="complete",
                                   sessionid=sid) == ("bad-request", "bad-sessionid")
        assert await command_error(admin, ADMIN + "set-motd", action="complete",
                                   sessionid=sid) == ("bad-request", "bad-sessionid")
        assert await command_error(admin, ADMIN + "add-user", action="complete",
                                   sessionid="nonsense") == ("bad-request", "bad-sessionid")
        await command(admin, ADMIN + "announce")
        assert await command_error(admin, ADMIN + "announce") == ("resource-constraint", "")
        adhoc(srv).sessions[sid].deadline = 0  # as if session_timeout_s had passed
        assert await command_error(admin, ADMIN + "add-user", action="complete",
                                   sessionid=sid) == ("not-allowed", "session-expired")
        await close(admin, other)

    asyncio.run(main())
    assert adhoc(srv).sessions == {}  # the rest ended with their requesters' sessions


def test_disable_end_session_reenable_and_change_password(srv):
    async def main() -> None:
        admin = await client(srv.port, "admin@localhost/a")
        alice = await client(srv.port, "alice@localhost/a")
        gone = asyncio.get_running_loop().create_future()
        alice.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(1))
        cmd = await command(admin, ADMIN + "disable-user", {"accountjids": ["alice@localhost"]})
        assert cmd["status"] == "completed"
        await asyncio.wait_for(gone, 5)
        answer = await asyncio.to_thread(sasl_plain, srv.port, "alice", "secret")
        assert "<account-disabled" in answer
        wrong = await asyncio.to_thread(sasl_plain, srv.port, "alice", "wrong")
        assert "<not-authorized" in wrong  # the flag is told only to the right password
        assert await command_error(admin, ADMIN + "disable-user", {
            "accountjids": ["nobody@localhost"]}) == ("item-not-found", "")
        await command(admin, ADMIN + "reenable-user", {"accountjids": ["alice@localhost"]})
        alice = await client(srv.port, "alice@localhost/a")

        gone = asyncio.get_running_loop().create_future()
        alice.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(1))
        cmd = await command(admin, ADMIN + "end-user-session", {"accountjids": ["alice@localhost/a"]})
        assert notes(cmd) == [("info", "ended 1 session(s)")]
        await asyncio.wait_for(gone, 5)

        cmd = await command(admin, ADMIN + "change-user-password", {
            "accountjid": "alice@localhost", "password": "new-secret-1"})
        assert cmd["status"] == "completed"
        assert "<not-authorized" in await asyncio.to_thread(sasl_plain, srv.port, "alice", "secret")
        assert "<success" in await asyncio.to_thread(sasl_plain, srv.port, "alice", "new-secret-1")
        assert await command_error(admin, ADMIN + "change-user-password", {
            "accountjid": "ghost@localhost", "password": "whatever1"}) == ("item-not-found", "")
        assert await command_error(admin, ADMIN + "change-user-password", {
            "accountjid": "ghost@elsewhere.example", "password": "whatever1"}) == (
                "bad-request", "bad-payload")
        await close(admin)

    asyncio.run(main())


def test_counts_lists_announcement_and_message_of_the_day(srv):
    async def main() -> None:
        admin = await client(srv.port, "admin@localhost/a")
        alice = await client(srv.port, "alice@localhost/a")
        alice2 = await client(srv.port, "alice@localhost/b")
        got: asyncio.Queue = asyncio.Queue()
        alice.add_event_handler("message", got.put_nowait)

        cmd = await command(admin, ADMIN + "get-online-users-num")
        assert cmd["status"] == "completed"
        assert field_values(cmd, "onlineusersnum") == ["2"]  # accounts, not sessions
        cmd = await command(admin, ADMIN + "get-registered-users-num")
        assert field_values(cmd, "registeredusersnum") == ["3"]
        first = await command(admin, ADMIN + "get-online-users-list")
        cmd = await command(admin, ADMIN + "get-online-users-list", {"max_items": "25"},
                            sessionid=first["sessionid"])
        assert field_values(cmd, "onlineuserjids") == ["admin@localhost", "alice@localhost"]

        cmd = await command(admin, ADMIN + "announce", {"subject": "Maintenance",
                                                         "body": "Back at noon"})
        assert notes(cmd) == [("info", "sent to 3 session(s)")]
        msg = await asyncio.wait_for(got.get(), 5)
        assert msg["type"] == "headline" and msg["body"] == "Back at noon"
        assert msg["subject"] == "Maintenance" and msg["from"] == "localhost"
        assert await command_error(admin, ADMIN + "announce", {"body": ""}) == (
            "bad-request", "bad-payload")

        await command(admin, ADMIN + "set-motd", {"motd": "Welcome to localhost"})
        cmd = await command(admin, ADMIN + "edit-motd")
        assert field_values(cmd, "motd") == ["Welcome to localhost"]
        bob = await client(srv.port, "bob@localhost/b")
        motd: asyncio.Queue = asyncio.Queue()
        bob.add_event_handler("message", motd.put_nowait)
        bob.send_presence()
        msg = await asyncio.wait_for(motd.get(), 5)
        assert msg["body"] == "Welcome to localhost" and msg["from"] == "localhost"
        bob.send_presence(pstatus="away")  # not initial: no second copy
        await command(admin, ADMIN + "delete-motd")
        carol = await client(srv.port, "bob@localhost/c")
        seen: list = []
        carol.add_event_handler("message", seen.append)
        carol.send_presence()
        await command(admin, ADMIN + "get-online-users-num")  # a round trip after the presence
        await bob.plugin["xep_0030"].get_info("localhost")
        assert seen == [] and motd.empty()
        await close(admin, alice, alice2, bob, carol)

    asyncio.run(main())
