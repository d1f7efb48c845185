"""XEP-0045 end to end with slixmpp clients (xep_0045, xep_0249): create (reserved with
the configuration form, and instant), join, talk, subject, history on join, nick change,
invite, kick, ban."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from slixmpp import ClientXMPP
from slixmpp.exceptions import PresenceError

ROOM = "talk@conference.localhost"


async def client(port: int, jid: str) -> tuple[ClientXMPP, asyncio.Queue]:
    xmpp = ClientXMPP(jid, "secret")
    for plugin in ("xep_0030", "xep_0004", "xep_0045", "xep_0249"):
        xmpp.register_plugin(plugin)
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.enable_direct_tls = False
    events: asyncio.Queue = asyncio.Queue()
    for name in ("groupchat_message", "groupchat_subject", "groupchat_invite",
                 "groupchat_presence", "groupchat_direct_invite"):
        xmpp.add_event_handler(name, lambda stanza, name=name: events.put_nowait((name, stanza)))
    started = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    xmpp.connect("127.0.0.1", port)
    await asyncio.wait_for(started, 5)
    return xmpp, events


async def wait_for(events: asyncio.Queue, name: str, check=lambda s: True):
    while True:
        got, stanza = await asyncio.wait_for(events.get(), 5)
        if got == name and check(stanza):
            return stanza


def test_slixmpp_muc_session(server):
    async def main() -> None:
        (alice, a_ev), (bob, b_ev), (carol, c_ev) = [
            await client(server.port, f"{u}@localhost/sli") for u in ("alice", "bob", "carol")]
        amuc, bmuc, cmuc = (x.plugin["xep_0045"] for x in (alice, bob, carol))
        # reserved room: locked until the owner submits the form
        self_presence, *_ = await amuc.join_muc_wait(ROOM, "alice", timeout=5)
        assert 201 in self_presence["muc"]["status_codes"]
        with pytest.raises(PresenceError) as err:
            await bmuc.join_muc_wait(ROOM, "bob", timeout=5)
        assert err.value.condition == "item-not-found"
        form = await amuc.get_room_config(ROOM)
        assert "muc#roomconfig_roomname" in form.get_fields()
        submit = alice.plugin["xep_0004"].make_form(ftype="submit")
        submit.add_field("FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig")
        submit.add_field("muc#roomconfig_roomname", value="Talk")
        submit.add_field("muc#roomconfig_whois", value="anyone")
        await amuc.set_room_config(ROOM, submit)
        _pres, _subject, occupants, _history = await bmuc.join_muc_wait(ROOM, "bob", timeout=5)
        assert any(p["muc"]["nick"] == "alice" for p in occupants)
        amuc.set_subject(ROOM, "Welcome")
        await wait_for(b_ev, "groupchat_subject", lambda m: m["subject"] == "Welcome")
        bob.send_message(mto=ROOM, mbody="hi all", mtype="groupchat")
        msg = await wait_for(a_ev, "groupchat_message", lambda m: m["body"] == "hi all")
        assert msg["from"].resource == "bob"
        # a mediated invitation (slixmpp reports those to rooms one is not in)
        amuc.invite(ROOM, "carol@localhost/sli", reason="join us")
        invite = await wait_for(c_ev, "groupchat_invite")
        assert invite["from"].bare == ROOM and invite["muc"]["invite"]["reason"] == "join us"
        # history on join
        _p, subject, _occ, history = await cmuc.join_muc_wait(ROOM, "carol", maxstanzas=5,
                                                              timeout=5)
        assert [m["body"] for m in history] == ["hi all"]
        assert subject["subject"] == "Welcome"
        assert await bmuc.set_self_nick(ROOM, "robert", timeout=5) == "robert"
        # a XEP-0249 direct invitation passes through
        alice.plugin["xep_0249"].send_invitation("carol@localhost/sli", ROOM, reason="direct")
        direct = await wait_for(c_ev, "groupchat_direct_invite")
        assert direct["groupchat_invite"]["jid"] == ROOM
        # kick, then ban
        await amuc.set_role(ROOM, "robert", "none", reason="out")
        kicked = await wait_for(c_ev, "groupchat_presence",
                                lambda p: 307 in p["muc"]["status_codes"])
        assert kicked["type"] == "unavailable"
        await amuc.set_affiliation(ROOM, "outcast", jid="bob@localhost")
        with pytest.raises(PresenceError) as err:
            await bmuc.join_muc_wait(ROOM, "bob", timeout=5)
        assert err.value.condition == "forbidden"
        assert "bob@localhost" in await amuc.get_affiliation_list(ROOM, "outcast")
        # an instant room
        pres, *_ = await cmuc.join_muc_wait("quick@conference.localhost", "carol", timeout=5)
        assert 201 in pres["muc"]["status_codes"]
        await cmuc.set_room_config("quick@conference.localhost",
                                   carol.plugin["xep_0004"].make_form(ftype="submit"))
        await bmuc.join_muc_wait("quick@conference.localhost", "bob", timeout=5)
        for x in (alice, bob, carol):
            await asyncio.wait_for(x.disconnect(), 5)

    asyncio.run(asyncio.wait_for(main(), 60))
