"""XEP-0054 vcard-temp, XEP-0153 avatar hashes in presence, XEP-0398 avatar conversion.

A vCard is stored per account (key-value ``(bare, "vcard")``, the serialized element).
Setting is for one's own account only: a set addressed to another user is ``forbidden``
(never stored as the sender's).  A get of another existing account returns its vCard or
an empty one; a get for an account that does not exist is ``service-unavailable``, as
RFC 6121 §8.5.1 says for an IQ to a bare JID without an account (the same answer as for
any other payload, so an account's existence is not leaked by vCard alone).

With a PHOTO, the SHA-1 of its bytes is added to the account's outgoing available
presence (``<x xmlns='vcard-temp:x:update'><photo>``) unless the client put one there; with
the ``pep`` module, a vCard PHOTO is published as an XEP-0084 avatar and an XEP-0084
avatar published on PEP becomes the vCard PHOTO (XEP-0398).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, decode_stanza, encode_stanza, reply

VCARD_NS = "vcard-temp"
UPDATE_NS = "vcard-temp:x:update"
CONVERSION_NS = "urn:xmpp:pep-vcard-conversion:0"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"


def photo_of(vcard: Element) -> tuple[bytes, str] | None:
    """(image bytes, MIME type) of a vCard's PHOTO, or None."""
    photo = vcard.find("PHOTO", VCARD_NS)
    if photo is None:
        return None
    text = "".join((photo.findtext("BINVAL", VCARD_NS) or "").split())
    if not text:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data, (photo.findtext("TYPE", VCARD_NS) or "image/png").strip()


class VCard(Module):
    name = "vcard"
    xeps = ("XEP-0054", "XEP-0153", "XEP-0398")
    soft_depends = ("pep",)
    workers_safe = True  # the photo hash cache: ModuleAPI.changed
    options = {
        "max_size": Option(int, 131072, "bytes of one vCard at most", min=256),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.store = api.open_store("keyvalue")
        self.hashes: dict[str, str] = {}  # bare -> photo sha1 ("" for none), a cache
        self.generation = 0  # changes heard of from other workers (a read in flight is stale)
        api.iq_handler("get", VCARD_NS, "vCard", self.get, to="bare")
        api.iq_handler("set", VCARD_NS, "vCard", self.set, to="bare")
        api.add_feature(VCARD_NS)
        api.add_feature(VCARD_NS, account=True)
        api.hook("presence/outbound", self.presence, priority=5)
        api.hook("account-deleting", self.account_deleting)
        api.on_changed(self.changed)
        if api.service("pep") is not None:
            api.add_feature(CONVERSION_NS, account=True)
            api.hook("pep/published", self.avatar_published)

    async def load_vcard(self, bare: str) -> Element | None:
        data = await self.store.get(bare, "vcard")
        return None if data is None else decode_stanza(data.encode())

    async def get(self, iq: Element, origin: Any, payload: Element) -> Element:
        to = iq.get("to")
        if to is None:
            own = getattr(origin, "jid", None)
            if own is None:
                raise StanzaError("bad-request")
            target = own.bare
        else:
            target = JID(to).bare
            if not await self.api.storage.account_exists(target.localpart or "", target.domain):
                raise StanzaError("service-unavailable")
        out = reply(iq)
        vcard = await self.load_vcard(str(target))
        out.append(vcard if vcard is not None else Element("vCard", VCARD_NS, {}, []))
        return out

    async def set(self, iq: Element, origin: Any, payload: Element) -> Element | None:
        own = getattr(origin, "jid", None)
        to = iq.get("to")
        if own is None or (to is not None and JID(to).bare != own.bare):
            raise StanzaError("forbidden", "a vCard can only be set for one's own account")
        pep = self.api.service("pep")
        if pep is not None and pep.forward_to_owner(iq, origin):
            return None  # the worker of its PEP nodes sets it (and publishes the avatar)
        bare = str(own.bare)
        await self.save(bare, payload)
        photo = photo_of(payload)
        if photo is not None and pep is not None:
            await self.publish_avatar(pep, bare, *photo)
        return reply(iq)

    async def save(self, bare: str, vcard: Element) -> None:
        data = encode_stanza(vcard)
        if len(data) > self.api.options["max_size"]:
            raise StanzaError("not-acceptable", f"vCards are limited to "
                                                f"{self.api.options['max_size']} bytes")
        await self.store.set(bare, "vcard", data.decode())
        photo = photo_of(vcard)
        self.hashes[bare] = hashlib.sha1(photo[0]).hexdigest() if photo else ""
        await self.api.changed(bare, "vcard")

    def changed(self, bare: str, key: str) -> None:
        """Another worker saved (or deleted) ``bare``'s vCard: its hash is read again."""
        self.generation += 1
        self.hashes.pop(bare, None)

    async def account_deleting(self, jid: JID) -> None:
        self.hashes.pop(str(jid), None)
        await self.api.changed(str(jid), "vcard")

    # -- XEP-0153 ----------------------------------------------------------------------------

    def presence(self, stanza: Element, session: Any) -> Any:
        if stanza.get("type") is not None or stanza.find("x", UPDATE_NS) is not None:
            return None
        # the text the session's bare JID already holds: a cache entry per account
        # costs no string of its own
        bare = session.bare.full
        known = self.hashes.get(bare)
        if known is not None:
            self.stamp(stanza, known)
            return None
        return self.load_hash(stanza, bare)

    async def load_hash(self, stanza: Element, bare: str) -> bool:
        generation = self.generation
        vcard = await self.load_vcard(bare)
        photo = photo_of(vcard) if vcard is not None else None
        sha1 = hashlib.sha1(photo[0]).hexdigest() if photo else ""
        if generation == self.generation:  # no change heard of while reading
            self.hashes[bare] = sha1
        self.stamp(stanza, sha1)
        return False

    @staticmethod
    def stamp(stanza: Element, sha1: str) -> None:
        if sha1:
            stanza.subelement("x", UPDATE_NS).subelement("photo", text=sha1)

    # -- XEP-0398 ----------------------------------------------------------------------------

    async def publish_avatar(self, pep: Any, bare: str, data: bytes, mime: str) -> None:
        sha1 = hashlib.sha1(data).hexdigest()
        payload = Element("data", AVATAR_DATA, {}, [base64.b64encode(data).decode()])
        await pep.publish_as_owner(bare, AVATAR_DATA, sha1, payload)
        meta = Element("metadata", AVATAR_METADATA, {}, [])
        meta.subelement("info", attrs={"id": sha1, "bytes": str(len(data)), "type": mime})
        await pep.publish_as_owner(bare, AVATAR_METADATA, sha1, meta)

    async def avatar_published(self, owner: str, node: str, item: Any) -> None:
        if node != AVATAR_METADATA or item.payload is None:
            return
        info = item.payload.find("info", AVATAR_METADATA)
        if info is None or info.get("url"):
            return
        sha1 = info.get("id", "")
        if self.hashes.get(owner) == sha1:
            return  # our own conversion, or nothing new
        pep = self.api.service("pep")
        got = await pep.engine.items(owner, AVATAR_DATA, ids=[sha1])
        if not got or got[0].payload is None:
            return
        vcard = await self.load_vcard(owner) or Element("vCard", VCARD_NS, {}, [])
        for old in vcard.findall("PHOTO", VCARD_NS):
            vcard.remove(old)
        photo = vcard.subelement("PHOTO", VCARD_NS)
        photo.subelement("TYPE", text=info.get("type", "image/png"))
        photo.subelement("BINVAL", text="".join(got[0].payload.text.split()))
        try:
            await self.save(owner, vcard)
        except StanzaError:
            return
        self.api.log.debug("vCard PHOTO of %s updated from its XEP-0084 avatar", owner)
