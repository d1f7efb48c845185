"""Discussion history on join (XEP-0045 §7.2.13-14) and the room archive queried with
MAM (XEP-0313 on the room JID, RSM paging per XEP-0059).

The last ``historylength`` messages of each room are kept in memory as the bytes that
were broadcast (without ``to``).  With logging on (``muc#roomconfig_enablelogging``, the
default) every message is also appended to an archive under its stanza-id: the module's
archive store for persistent rooms (owner = the room's bare JID), an in-memory store for
temporary rooms (gone with the room).  A persistent room refills its history from the
archive when it is loaded.  Retracted messages (XEP-0425) leave the history and are shown
as tombstones by MAM.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from xmppd.modules._fanout import Target
from xmppd.modules._muc.forms import DATA_NS, form_values
from xmppd.modules._muc.room import DELAY_NS, Room
from xmppd.storage.stores import ItemNotFound
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError, decode_stanza, reply

if TYPE_CHECKING:
    from xmppd.modules.muc import MUC

MAM_NS = "urn:xmpp:mam:2"
RSM_NS = "http://jabber.org/protocol/rsm"
FORWARD_NS = "urn:xmpp:forward:0"


def stamp(when: float) -> str:
    """A XEP-0082 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_stamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise StanzaError("bad-request", f"{text!r} is not a XEP-0082 date-time") from None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise StanzaError("bad-request", f"{text!r} is not a number") from None
    if value < 0:
        raise StanzaError("bad-request", f"{text!r} is negative")
    return value


class History:
    """History and archive of the rooms of one service."""

    def __init__(self, svc: MUC) -> None:
        self.svc = svc

    def archive(self, room: Room) -> Any:
        return self.svc.archive if room.config["persistent"] else self.svc.temp_archive

    def add(self, room: Room, data: bytes, sid: str, nick: str) -> None:
        now = time.time()
        if room.history.maxlen:
            room.history.append((now, data, sid))
        if room.config["logging"]:
            self.svc.api.spawn(self.archive(room).append(
                room.jid, data, stamp=now, with_jid=room.nick_jid(nick), id=sid))

    async def load(self, room: Room) -> None:
        """Refill a loaded persistent room's history from its archive."""
        n = room.history.maxlen or 0
        if not n:
            return
        items = await self.svc.archive.query(room.jid, limit=n, reverse=True)
        for item in reversed(items):
            if item.id not in room.retracted:
                room.history.append((item.stamp, item.data, item.id))

    def send(self, room: Room, target: Target, spec: Element | None) -> None:
        """The discussion history to a joining occupant, within the ``<history/>`` limits."""
        entries = list(room.history)
        if spec is not None:
            maxstanzas = _int(spec.get("maxstanzas"))
            seconds = _int(spec.get("seconds"))
            since = parse_stamp(spec.get("since"))
            maxchars = _int(spec.get("maxchars"))
            if maxstanzas is not None:
                entries = entries[len(entries) - maxstanzas:] if maxstanzas else []
            if seconds is not None:
                entries = [e for e in entries if e[0] >= time.time() - seconds]
            if since is not None:
                entries = [e for e in entries if e[0] > since]
            if maxchars is not None:
                kept: list[tuple[float, bytes, str]] = []
                total = 0
                for entry in reversed(entries):
                    total += len(entry[1].decode())
                    if total > maxchars:
                        break
                    kept.append(entry)
                entries = kept[::-1]
        for when, data, _sid in entries:
            msg = decode_stanza(data)
            msg.append(Element("delay", DELAY_NS, {"from": room.jid, "stamp": stamp(when)}))
            room.send_to(msg, [target])

    async def knows(self, room: Room, sid: str) -> bool:
        if sid in room.retracted:
            return False
        if any(entry[2] == sid for entry in room.history):
            return True
        return await self.archive(room).get(room.jid, sid) is not None

    def retract(self, room: Room, sid: str) -> None:
        kept = [e for e in room.history if e[2] != sid]
        room.history.clear()
        room.history.extend(kept)

    # -- MAM --------------------------------------------------------------------------------

    async def query(self, room: Room, iq: Element, real: str, query: Element) -> Element:
        """A ``urn:xmpp:mam:2`` query to the room: result messages, then the fin IQ."""
        from xmppd.modules._muc.admin import tombstone

        bare = real.split("/", 1)[0]
        aff = room.affiliation(bare)
        if aff == "outcast" or (room.config["members_only"] and aff == "none"):
            raise StanzaError("forbidden", "only members may read this room's archive")
        if not room.config["logging"]:
            raise StanzaError("service-unavailable", "this room is not archived")
        filters: dict[str, Any] = {}
        form = query.find("x", DATA_NS)
        if form is not None:
            values = form_values(form)
            filters["start"] = parse_stamp((values.get("start") or [None])[0])
            filters["end"] = parse_stamp((values.get("end") or [None])[0])
            if values.get("with"):
                filters["with_jid"] = values["with"][0]
        rsm = query.find("set", RSM_NS)
        limit = self.svc.api.options["mam_page_size"]
        after = before = None
        if rsm is not None:
            wanted = _int(rsm.findtext("max", RSM_NS))
            if wanted is not None:
                limit = min(wanted, self.svc.api.options["mam_max_page_size"])
            after = rsm.findtext("after", RSM_NS)
            before_el = rsm.find("before", RSM_NS)
            before = None if before_el is None else before_el.text
        archive = self.archive(room)
        last_page = before is not None
        try:
            if last_page:
                items = await archive.query(room.jid, before_id=before or None, limit=limit + 1,
                                            reverse=True, **filters)
                complete = len(items) <= limit
                items = items[:limit][::-1]
            else:
                items = await archive.query(room.jid, after_id=after, limit=limit + 1, **filters)
                complete = len(items) <= limit
                items = items[:limit]
            count = await archive.count(room.jid, **filters)
        except ItemNotFound:
            raise StanzaError("item-not-found", "no such archive id") from None
        qid = query.get("queryid")
        for item in items:
            msg = Element("message", CLIENT_NS, {"from": room.jid, "id": self.svc.new_id()}, [])
            attrs = {"id": item.id}
            if qid:
                attrs["queryid"] = qid
            result = msg.subelement("result", MAM_NS, attrs)
            fwd = result.subelement("forwarded", FORWARD_NS)
            fwd.subelement("delay", DELAY_NS, {"stamp": stamp(item.stamp)})
            original = decode_stanza(item.data)
            fwd.append(tombstone(room, original, item.id) if item.id in room.retracted
                       else original)
            room.send_to(msg, [Target(real)])
        out = reply(iq)
        fin = out.subelement("fin", MAM_NS)
        if complete:
            fin.attrs["complete"] = "true"
        rset = fin.subelement("set", RSM_NS)
        if items:
            rset.subelement("first", attrs={"index": "0"}, text=items[0].id)
            rset.subelement("last", text=items[-1].id)
        rset.subelement("count", text=str(count))
        return out
