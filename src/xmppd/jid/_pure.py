"""Pure-Python JID preparation (RFC 7622): the specification of ``xmppd._speedups.jid``.

A JID is ``[localpart@]domainpart[/resourcepart]``.  The first ``/`` starts the
resourcepart; before it, the first ``@`` ends the localpart (RFC 7622 §3.1).

* localpart: PRECIS UsernameCaseMapped (RFC 8265), then none of ``"&'/:<>@`` (§3.3.1).
* domainpart: one trailing dot stripped, IP literals (``[IPv6]``, IPv4) accepted,
  otherwise UTS #46 mapping and IDNA2008 validation; A-labels become U-labels (§3.2).
* resourcepart: PRECIS OpaqueString.
* every part is 1..1023 UTF-8 octets after preparation.

ASCII parts take a fast path that needs no Unicode tables; it gives exactly what
PRECIS and UTS #46 give for ASCII.  Results of the slow path are kept in a bounded
cache of recent inputs.  When preparation changes nothing, the input string itself
becomes the JID's text (no copy), as ejabberd's stringprep does.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict

import idna
from precis_i18n import get_profile

__all__ = [
    "CACHE_SIZE",
    "JID",
    "JIDError",
    "cache_clear",
    "cache_info",
    "normalize",
    "prep_domainpart",
    "prep_localpart",
    "prep_resourcepart",
]

#: RFC 7622 §3.1: each part is at most 1023 octets.
MAX_PART_BYTES = 1023
#: Inputs longer than this (in code points) are refused before any Unicode work, so a
#: huge string cannot make us run PRECIS over it; preparation never shrinks legitimate
#: text by a factor of four.
MAX_RAW_CHARS = 4 * MAX_PART_BYTES
#: Entries kept in the cache of recent preparations (oldest evicted first).
CACHE_SIZE = 4096
# Prepared domainparts by raw text: a server sees few distinct domains.
_DOMAIN_CACHE_SIZE = 1024
_domain_cache: OrderedDict[str, str] = OrderedDict()

LOCALPART = "localpart"
DOMAINPART = "domainpart"
RESOURCEPART = "resourcepart"

_USERNAME = get_profile("UsernameCaseMapped")
_OPAQUE = get_profile("OpaqueString")

# RFC 7622 §3.3.1 characters that PRECIS allows but a localpart must not contain.
_LOCAL_FORBIDDEN = re.compile(r"[\"&'/:<>@]")
# The ASCII code points PRECIS rejects: controls (and, in IdentifierClass, space).
_ASCII_IDENTIFIER_BAD = re.compile(r"[\x00-\x20\x7f]")
_ASCII_FREEFORM_BAD = re.compile(r"[\x00-\x1f\x7f]")
_LDH = re.compile(r"[a-z0-9-]*")
# Label separators of RFC 5892 / UTS #46 (full stop, ideographic and fullwidth stops).
_DOTS = ".\u3002\uff0e\uff61"


class JIDError(ValueError):
    """An invalid JID: ``part`` names the faulty part, ``reason`` says what is wrong."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"invalid {part}: {reason}")
        self.part = part
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.part, self.reason))


def _precis_reason(exc: UnicodeEncodeError) -> str:
    # precis-i18n reports "DISALLOWED/<kind>" (spaces, controls, bidi_rule, ...).
    return exc.reason.lower()


def _idna_reason(exc: idna.IDNAError) -> str:
    return "idna: " + (getattr(exc, "code", None) or type(exc).__name__.lower())


def _check_length(part: str, value: str) -> None:
    if len(value) > MAX_PART_BYTES // 4 and len(value.encode("utf-8")) > MAX_PART_BYTES:
        raise JIDError(part, "too long")


def _check_raw(part: str, raw: str) -> None:
    if not raw:
        raise JIDError(part, "empty")
    if len(raw) > MAX_RAW_CHARS:
        raise JIDError(part, "too long")


def prep_localpart(raw: str) -> str:
    """Prepare a localpart (UsernameCaseMapped, then the §3.3.1 exclusions)."""
    _check_raw(LOCALPART, raw)
    if raw.isascii():
        bad = _ASCII_IDENTIFIER_BAD.search(raw)
        if bad is not None:
            kind = "spaces" if bad.group() == " " else "controls"
            raise JIDError(LOCALPART, "disallowed/" + kind)
        value = raw.lower()
    else:
        try:
            value = _USERNAME.enforce(raw)
        except UnicodeEncodeError as exc:
            raise JIDError(LOCALPART, _precis_reason(exc)) from None
    if _LOCAL_FORBIDDEN.search(value) is not None:
        raise JIDError(LOCALPART, "forbidden character")
    _check_length(LOCALPART, value)
    return value


def prep_resourcepart(raw: str) -> str:
    """Prepare a resourcepart (OpaqueString: case and spaces are kept)."""
    _check_raw(RESOURCEPART, raw)
    if raw.isascii():
        if _ASCII_FREEFORM_BAD.search(raw) is not None:
            raise JIDError(RESOURCEPART, "disallowed/controls")
        value = raw
    else:
        try:
            value = _OPAQUE.enforce(raw)
        except UnicodeEncodeError as exc:
            raise JIDError(RESOURCEPART, _precis_reason(exc)) from None
    _check_length(RESOURCEPART, value)
    return value


def _ascii_label(label: str) -> str:
    """Check one lower-cased ASCII label; an A-label comes back as its U-label."""
    if not label:
        raise JIDError(DOMAINPART, "empty label")
    if len(label) > 63:
        raise JIDError(DOMAINPART, "label too long")
    if _LDH.fullmatch(label) is None:
        raise JIDError(DOMAINPART, "invalid character")
    if label[0] == "-" or label[-1] == "-":
        raise JIDError(DOMAINPART, "hyphen at label start or end")
    if label[2:4] == "--":
        if not label.startswith("xn--"):
            raise JIDError(DOMAINPART, "hyphens in 3rd and 4th position")
        # RFC 7622 §3.2.2: A-labels are converted to U-labels.
        try:
            return idna.ulabel(label)
        except idna.IDNAError as exc:
            raise JIDError(DOMAINPART, _idna_reason(exc)) from None
    return label


def _ip_literal(raw: str) -> str:
    inner = raw[1:-1] if raw.endswith("]") else ""
    # No zone identifiers: they mean nothing off the local link.
    if not inner or not inner.isascii() or "%" in inner:
        raise JIDError(DOMAINPART, "invalid IP literal")
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise JIDError(DOMAINPART, "invalid IP literal") from None
    # The RFC 5952 text form, so that equal addresses give equal JIDs.
    return "[" + str(address) + "]"


def prep_domainpart(raw: str) -> str:
    """Prepare a domainpart: IP literal, or UTS #46 mapping and IDNA2008 U-labels."""
    value = _domain_cache.get(raw)
    if value is None:
        value = _prep_domainpart(raw)
        if len(_domain_cache) >= _DOMAIN_CACHE_SIZE:
            _domain_cache.popitem(last=False)
        _domain_cache[raw] = value
    return value


def _prep_domainpart(raw: str) -> str:
    _check_raw(DOMAINPART, raw)
    if raw[-1] in _DOTS:
        # RFC 7622 §3.2: a final dot is stripped before anything else.
        raw = raw[:-1]
        if not raw:
            raise JIDError(DOMAINPART, "empty")
    if raw[0] == "[":
        value = _ip_literal(raw)
    elif raw.isascii():
        value = ".".join([_ascii_label(label) for label in raw.lower().split(".")])
    else:
        try:
            mapped = idna.uts46_remap(raw, std3_rules=True)
        except idna.IDNAError as exc:
            raise JIDError(DOMAINPART, _idna_reason(exc)) from None
        labels = []
        for label in mapped.split("."):
            if label.isascii():
                labels.append(_ascii_label(label))
                continue
            try:
                idna.alabel(label)  # validates the U-label and its 63-octet A-label form
            except idna.IDNAError as exc:
                raise JIDError(DOMAINPART, _idna_reason(exc)) from None
            labels.append(label)
        value = ".".join(labels)
    _check_length(DOMAINPART, value)
    return value


def _compose(local: str | None, domain: str, resource: str | None) -> str:
    text = domain if local is None else local + "@" + domain
    return text if resource is None else text + "/" + resource


class JID:
    """An immutable, prepared JID.

    ``JID(text)`` prepares ``text`` and raises :class:`JIDError` if it is invalid.
    Equality and hashing use the prepared form; a JID never equals a ``str``
    (compare ``jid.full`` or ``str(jid)`` with text instead).
    """

    __slots__ = ("_full", "_local", "_domain", "_resource")

    _full: str
    _local: str | None
    _domain: str
    _resource: str | None

    def __new__(cls, jid: str | JID) -> JID:
        hit = _cache.get(jid)  # type: ignore[arg-type]
        if hit is not None and type(hit) is cls:
            return hit
        if not isinstance(jid, str):
            if isinstance(jid, JID):
                return cls._make(jid._full, jid._local, jid._domain, jid._resource)
            raise TypeError(f"JID() argument must be str, not {type(jid).__name__}")
        obj = cls._parse(jid)
        if len(_cache) >= CACHE_SIZE:
            _cache.popitem(last=False)
        _cache[jid] = obj
        return obj

    @classmethod
    def _make(cls, full: str, local: str | None, domain: str, resource: str | None) -> JID:
        obj = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(obj, "_full", full)
        setattr_(obj, "_local", local)
        setattr_(obj, "_domain", domain)
        setattr_(obj, "_resource", resource)
        return obj

    @classmethod
    def _parse(cls, text: str) -> JID:
        slash = text.find("/")
        head = text if slash < 0 else text[:slash]
        at = head.find("@")
        local = None if at < 0 else prep_localpart(head[:at])
        domain = prep_domainpart(head[at + 1 :])
        resource = None if slash < 0 else prep_resourcepart(text[slash + 1 :])
        full = _compose(local, domain, resource)
        # Identity: keep the caller's string rather than an equal copy.
        return cls._make(text if full == text else full, local, domain, resource)

    @classmethod
    def from_parts(cls, localpart: str | None, domain: str, resource: str | None = None) -> JID:
        """Build a JID from separate parts, each prepared as in ``JID(text)``."""
        local = None if localpart is None else prep_localpart(localpart)
        dom = prep_domainpart(domain)
        res = None if resource is None else prep_resourcepart(resource)
        return cls._make(_compose(local, dom, res), local, dom, res)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("JID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("JID is immutable")

    @property
    def localpart(self) -> str | None:
        """The prepared localpart, or None."""
        return self._local

    @property
    def domain(self) -> str:
        """The prepared domainpart."""
        return self._domain

    domainpart = domain

    @property
    def resource(self) -> str | None:
        """The prepared resourcepart, or None."""
        return self._resource

    @property
    def full(self) -> str:
        """The whole prepared JID as text."""
        return self._full

    @property
    def is_bare(self) -> bool:
        """True when there is no resourcepart."""
        return self._resource is None

    @property
    def bare(self) -> JID:
        """This JID without its resourcepart."""
        if self._resource is None:
            return self
        local = self._local
        return self._make(_compose(local, self._domain, None), local, self._domain, None)

    def with_resource(self, resource: str | None) -> JID:
        """This JID with its resourcepart replaced (None: the bare JID)."""
        if resource is None:
            return self.bare
        res = prep_resourcepart(resource)
        local = self._local
        return self._make(_compose(local, self._domain, res), local, self._domain, res)

    def __str__(self) -> str:
        return self._full

    def __repr__(self) -> str:
        return f"JID({self._full!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JID):
            return self._full == other._full
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._full)

    def __reduce__(self):
        return (type(self), (self._full,))


# OrderedDict: O(1) oldest-first eviction (a plain dict must skip the holes left at its front).
_cache: OrderedDict[str, JID] = OrderedDict()


def normalize(text: str) -> str:
    """The prepared text of ``text``; the very same object when nothing changes."""
    full = JID(text)._full
    return text if full == text else full


def cache_clear() -> None:
    """Forget all cached preparations."""
    _cache.clear()
    _domain_cache.clear()


def cache_info() -> tuple[int, int]:
    """``(entries, capacity)`` of the preparation cache."""
    return len(_cache), CACHE_SIZE
