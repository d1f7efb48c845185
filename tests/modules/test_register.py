"""XEP-0077 in-band registration end to end (raw sockets before authentication, slixmpp's
xep_0077 after): off by default, TLS first, the per-address limit, XEP-0445 invitations
(valid, used twice, expired, wrong), weak passwords, password change and account removal."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from adhoc_support import (
    client,
    close,
    command,
    command_error,
    field_values,
    sasl_plain,
    wait_until,
)
from slixmpp.exceptions import IqError
from support import RawClient

USERS = {"alice": "secret", "admin": "secret"}
REG = "jabber:iq:register"
FEATURE = "<register xmlns=.http://jabber.org/features/iq-register./>"


def open_registration(srv, *, tls: bool = True) -> tuple[RawClient, str]:
    raw = RawClient(srv.port)
    features = raw.header()
    if tls:
        raw.starttls()
        features = raw.header()
    return raw, features


def iq(raw: RawClient, body: str, id: str, type: str = "set") -> str:
    raw.send(f"<iq type='{type}' id='{id}'>{body}</iq>")
    return raw.read_until(rf"<iq[^>]*id=.{id}.(?:[^>]*/>|.*?</iq>)")


def register(raw: RawClient, user: str, password: str, id: str = "reg") -> str:
    return iq(raw, f"<query xmlns='{REG}'><username>{user}</username>"
                   f"<password>{password}</password></query>", id)


def preauth(raw: RawClient, token: str) -> str:
    return iq(raw, f"<preauth xmlns='urn:xmpp:pars:0' token='{token}'/>", "pa")


def condition(answer: str) -> str | None:
    found = re.search(r"<([a-z-]+) xmlns=.urn:ietf:params:xml:ns:xmpp-stanzas.", answer)
    return found.group(1) if found else None


def can_login(srv, user: str, password: str) -> bool:
    return "<success" in sasl_plain(srv.port, user, password)


def registration(make_server, **options):
    return make_server(users=dict(USERS), allow_plain=True, admins=("admin@localhost",),
                       modules_options={"register": {"allow_registration": True, **options}})


def test_registration_is_off_by_default(server):
    raw, features = open_registration(server)
    assert not re.search(FEATURE, features)
    answer = register(raw, "mallory", "long-enough-1")
    assert 'type="error"' in answer or "type='error'" in answer
    assert condition(answer) == "service-unavailable"
    raw.close()
    assert not server.call(server.server.storage.account_exists("mallory", "localhost"))


def test_register_after_tls_then_log_in(make_server):
    srv = registration(make_server)
    raw, features = open_registration(srv, tls=False)
    assert not re.search(FEATURE, features)  # only where SASL is offered: after STARTTLS
    assert condition(register(raw, "dave", "long-enough-1")) == "policy-violation"
    raw.close()

    raw, features = open_registration(srv)
    assert re.search(FEATURE, features)
    form = iq(raw, f"<query xmlns='{REG}'/>", "get", type="get")
    assert "<username/>" in form and "<password/>" in form
    answer = register(raw, "Dave", "long-enough-1")
    assert condition(answer) is None and "result" in answer
    assert condition(register(raw, "dave", "long-enough-2", "again")) == "conflict"
    assert condition(register(raw, "alice", "long-enough-2", "taken")) == "conflict"
    raw.close()
    assert can_login(srv, "dave", "long-enough-1")


@pytest.mark.parametrize("user,password", [
    ("erin", "short1"),          # fewer than min_password_length characters
    ("erin", "aaaabbbb"),        # fewer than 4 different characters
    ("erinerin", "ErinErin"),    # the username
    ("erin", "erin@localhost"),  # the address
    ("", "long-enough-1"),       # no username
    ("e r", "long-enough-1"),    # not a valid username
])
def test_weak_passwords_and_bad_usernames_are_not_acceptable(make_server, user, password):
    srv = registration(make_server)
    raw, _ = open_registration(srv)
    assert condition(register(raw, user, password)) == "not-acceptable"
    raw.close()
    assert srv.call(srv.server.storage.list_accounts("localhost")) == [
        ("admin", "localhost"), ("alice", "localhost")]


def test_registrations_per_address_are_limited(make_server, caplog):
    srv = registration(make_server, max_registrations_per_ip=2)
    caplog.set_level(logging.INFO, logger="xmppd")
    raw, _ = open_registration(srv)
    assert condition(register(raw, "u1", "long-enough-1", "r1")) is None
    assert condition(register(raw, "u2", "long-enough-1", "r2")) is None
    refused = register(raw, "u3", "long-enough-1", "r3")
    assert condition(refused) == "policy-violation" and "type=\"wait\"" in refused.replace("'", '"')
    raw.close()
    assert "limit max_registrations_per_ip (2) reached for 127.0.0.1" in caplog.text
    assert not srv.call(srv.server.storage.account_exists("u3", "localhost"))


def test_invitations_valid_used_twice_expired_and_wrong(make_server):
    srv = registration(make_server, require_invite=True)
    service = srv.server.services["register"]
    raw, features = open_registration(srv)
    assert "urn:xmpp:ibr-token:0" in features
    assert condition(register(raw, "frank", "long-enough-1")) == "forbidden"
    assert condition(preauth(raw, "wrong-token")) == "item-not-found"

    invite = srv.call(service.create_invite("localhost"))
    assert invite["uri"] == f"xmpp:localhost?register;preauth={invite['token']}"
    assert condition(preauth(raw, invite["token"])) is None
    assert condition(register(raw, "frank", "long-enough-1")) is None
    raw.close()
    assert can_login(srv, "frank", "long-enough-1")

    raw, _ = open_registration(srv)  # the same token again: used up
    assert condition(preauth(raw, invite["token"])) == "item-not-found"
    assert condition(register(raw, "grace", "long-enough-1")) == "forbidden"

    expired = srv.call(service.create_invite("localhost", 60))
    store = srv.server.storage.open_store("register")
    entry = srv.call(store.get("localhost", expired["token"]))
    srv.call(store.set("localhost", expired["token"], dict(entry, expires=0)))
    assert condition(preauth(raw, expired["token"])) == "item-not-found"
    raw.close()
    assert not srv.call(srv.server.storage.account_exists("grace", "localhost"))


def test_admins_create_invitations_with_an_ad_hoc_command(make_server):
    srv = registration(make_server, require_invite=True)

    async def main() -> str:
        admin = await client(srv.port, "admin@localhost/a")
        alice = await client(srv.port, "alice@localhost/a")
        assert await command_error(alice, "urn:xmpp:invite#create-account") == ("forbidden", "")
        cmd = await command(admin, "urn:xmpp:invite#create-account")
        assert cmd["status"] == "completed"
        await close(admin, alice)
        return field_values(cmd, "token")[0]

    token = asyncio.run(main())
    raw, _ = open_registration(srv)
    assert condition(preauth(raw, token)) is None
    assert condition(register(raw, "heidi", "long-enough-1")) is None
    raw.close()


def test_password_change_and_account_removal(make_server):
    srv = registration(make_server)

    async def main() -> None:
        alice = await client(srv.port, "alice@localhost/a")
        other = await client(srv.port, "alice@localhost/other")
        reset = asyncio.get_running_loop().create_future()
        other.add_event_handler("disconnected", lambda _: reset.done() or reset.set_result(1))
        with pytest.raises(IqError) as exc:
            await alice.plugin["xep_0077"].change_password("short")
        assert exc.value.iq["error"]["condition"] == "not-acceptable"
        await alice.plugin["xep_0077"].change_password("a-better-one-9")
        await asyncio.wait_for(reset, 5)  # the other session ended
        assert not await asyncio.to_thread(can_login, srv, "alice", "secret")

        assert await command_error(alice, "change-password", {
            "password": "tiny", "password-verify": "tiny"}) == ("bad-request", "bad-payload")
        cmd = await command(alice, "change-password", {"password": "via-adhoc-77",
                                                       "password-verify": "via-adhoc-77"})
        assert cmd["status"] == "completed"
        assert await asyncio.to_thread(can_login, srv, "alice", "via-adhoc-77")

        gone = asyncio.get_running_loop().create_future()
        alice.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(1))
        result = await alice.plugin["xep_0077"].cancel_registration()
        assert result["type"] == "result"
        await asyncio.wait_for(gone, 5)

    asyncio.run(main())
    assert wait_until(lambda: not srv.call(srv.server.storage.account_exists("alice", "localhost")))


def test_password_change_and_removal_can_be_switched_off(make_server):
    srv = registration(make_server, allow_password_change=False, allow_account_removal=False)

    async def main() -> None:
        alice = await client(srv.port, "alice@localhost/a")
        for call in (alice.plugin["xep_0077"].change_password("a-better-one-9"),
                     alice.plugin["xep_0077"].cancel_registration()):
            with pytest.raises(IqError) as exc:
                await call
            assert exc.value.iq["error"]["condition"] == "not-allowed"
        assert await command_error(alice, "change-password") == ("item-not-found", "")
        reply = await alice.plugin["xep_0077"].get_registration()
        assert reply["register"]["registered"] and reply["register"]["username"] == "alice"
        await close(alice)

    asyncio.run(main())
    assert can_login(srv, "alice", "secret")


def test_expired_invitations_are_forgotten(make_server):
    srv = registration(make_server, require_invite=True)
    service = srv.server.services["register"]
    keep = srv.call(service.create_invite("localhost"))
    old = srv.call(service.create_invite("localhost", 60))
    store = srv.server.storage.open_store("register")
    srv.call(store.set("localhost", old["token"], {"expires": 0}))
    srv.call(service.expire_invites())
    assert srv.call(store.keys("localhost")) == [keep["token"]]
