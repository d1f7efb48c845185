"""XEP-0115 entity capabilities: which features an entity's ``ver`` stands for.

A ``ver`` is learned once: the first presence carrying an unknown one makes the server ask
that entity's disco#info (``node#ver``); the answer is accepted only if the hash of its
verification string (§5.1) equals ``ver``, then cached for every entity that shows the same
``ver`` (sha-1 and the other IANA hashes; a legacy caps element without ``hash`` is not
trusted).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable
from typing import Any

from xmppd.xml.element import Element

from .forms import DATA_NS

CAPS_NS = "http://jabber.org/protocol/caps"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384",
          "sha-512": "sha512"}

_ids = itertools.count(1)


def verification_string(query: Element) -> str:
    """The §5.1 string S of a disco#info ``<query/>``."""
    identities = sorted(
        (i.get("category", ""), i.get("type", ""), i.get(XML_LANG, ""), i.get("name", ""))
        for i in query.findall("identity", DISCO_INFO_NS)
    )
    out = ["/".join(i) + "<" for i in identities]
    out += [f + "<" for f in sorted(f.get("var", "") for f in query.findall("feature", DISCO_INFO_NS))]
    forms = []
    for x in query.findall("x", DATA_NS):
        fields = {f.get("var"): [v.text for v in f.findall("value", DATA_NS)]
                  for f in x.findall("field", DATA_NS)}
        ftype = fields.pop("FORM_TYPE", None)
        if not ftype:
            continue
        text = ftype[0] + "<"
        for var in sorted(v for v in fields if v):
            text += var + "<" + "".join(v + "<" for v in sorted(fields[var]))
        forms.append((ftype[0], text))
    out += [text for _, text in sorted(forms)]
    return "".join(out)


def verify(query: Element, algo: str, ver: str) -> bool:
    name = HASHES.get(algo.lower())
    if name is None:
        return False
    digest = hashlib.new(name, verification_string(query).encode()).digest()
    return base64.b64encode(digest).decode() == ver


def caps_of(presence: Element) -> tuple[str, str, str] | None:
    """(hash, node, ver) of a presence's caps element, or None (also for legacy caps)."""
    c = presence.find("c", CAPS_NS)
    if c is None:
        return None
    algo, node, ver = c.get("hash"), c.get("node"), c.get("ver")
    if not algo or not ver or algo.lower() not in HASHES:
        return None
    return algo, node or "", ver


def worker_prefix(worker: int) -> str:
    """The query id prefix of worker ``worker`` (of several)."""
    return f"caps.w{worker}."


def asker(iq_id: str) -> int | None:
    """The worker whose query an answer's id names (:func:`worker_prefix`), or None."""
    if not iq_id.startswith("caps.w"):
        return None
    number = iq_id[6:].partition(".")[0]
    return int(number) if number.isdigit() else None


class CapsCache:
    """``ver`` -> features, filled by disco#info queries the server sends itself.

    ``send(iq)`` routes a stanza; ``known(ver, features)`` runs for each waiting entity
    once its ``ver`` is verified: ``lookup`` returns the features at once, or None and
    starts one query per ``ver`` (later askers wait on it).  The queries' ids start with
    ``prefix`` (with several workers it names the asking one: see :func:`asker`).
    """

    def __init__(self, send: Callable[[Element], None], limit: int = 10000,
                 prefix: str = "caps") -> None:
        self._send = send
        self.prefix = prefix
        self.features: dict[str, frozenset[str]] = {}
        self._pending: dict[str, tuple[str, str, str, list[Callable[[frozenset[str]], Any]]]] = {}
        self._by_id: dict[str, str] = {}
        self.limit = limit
        self.rejected = 0

    def lookup(self, frm: str, to: str, caps: tuple[str, str, str],
               then: Callable[[frozenset[str]], Any]) -> frozenset[str] | None:
        algo, node, ver = caps
        found = self.features.get(ver)
        if found is not None:
            return found
        pending = self._pending.get(ver)
        if pending is not None:
            pending[3].append(then)
            return None
        iq_id = f"{self.prefix}{next(_ids)}"
        self._pending[ver] = (algo, to, iq_id, [then])
        self._by_id[iq_id] = ver
        iq = Element("iq", "jabber:client", {"type": "get", "id": iq_id, "to": to, "from": frm}, [])
        iq.subelement("query", DISCO_INFO_NS, {"node": f"{node}#{ver}"})
        self._send(iq)
        return None

    def response(self, iq: Element) -> bool:
        """Take the answer to one of our queries (True if it was one)."""
        ver = self._by_id.pop(iq.get("id", ""), None)
        if ver is None:
            return False
        algo, asked, _, waiting = self._pending.pop(ver)
        if iq.get("from") != asked:
            return True  # not from whom we asked: ignore (the next presence asks again)
        query = iq.find("query", DISCO_INFO_NS)
        if iq.get("type") != "result" or query is None or not verify(query, algo, ver):
            self.rejected += 1
            return True
        features = frozenset(f.get("var", "") for f in query.findall("feature", DISCO_INFO_NS))
        if len(self.features) >= self.limit:
            self.features.pop(next(iter(self.features)))
        self.features[ver] = features
        for then in waiting:
            then(features)
        return True
