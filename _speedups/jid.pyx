# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled JID preparation (RFC 7622), the twin of ``xmppd.jid._pure``.

The pure module is the specification: same public API, same results, same errors
(``part`` and ``reason``).  What differs is speed:

* a whole ASCII JID is checked in one typed pass over its bytes, with a 128-entry
  class table; when nothing needs changing the input string becomes the JID's text;
* a JID stores its text and two offsets only; the parts are sliced on demand;
* anything else (non-ASCII, IP literals, A-labels, errors) goes through the same
  steps as the pure module, with PRECIS (precis-i18n) and IDNA2008/UTS #46 (idna),
  and valid results are kept in a bounded cache of recent inputs.
"""

import ipaddress
import unicodedata
from collections import OrderedDict

import idna
from precis_i18n import get_profile
from precis_i18n.bidi import has_rtl
from precis_i18n.derived import FREE_PVAL, PVALID, derived_property

from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.string cimport memcpy

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    unsigned char* PyUnicode_1BYTE_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_CheckExact(object o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index)
    int PyUnicode_4BYTE_KIND

__all__ = [
    "CACHE_SIZE", "JID", "JIDError", "cache_clear", "cache_info", "normalize",
    "prep_domainpart", "prep_localpart", "prep_resourcepart",
]

MAX_PART_BYTES = 1023
MAX_RAW_CHARS = 4 * 1023
CACHE_SIZE = 4096

LOCALPART = "localpart"
DOMAINPART = "domainpart"
RESOURCEPART = "resourcepart"

cdef enum:
    _MAX_PART = 1023
    _MAX_RAW = 4 * 1023
    _MAX_LABEL = 63

cdef object _USERNAME = get_profile("UsernameCaseMapped")
cdef object _OPAQUE = get_profile("OpaqueString")
cdef Py_ssize_t _cache_size = CACHE_SIZE
# OrderedDict: O(1) oldest-first eviction (a plain dict must skip the holes left at its front).
cdef object _cache = OrderedDict()
# Prepared domainparts by raw text: a server sees few distinct domains.
cdef Py_ssize_t _domain_cache_size = 1024
cdef object _domain_cache = OrderedDict()
cdef object _is_normalized = unicodedata.is_normalized

# Character classes of the ASCII code points.
cdef enum:
    C_IDENT = 1      # PRECIS IdentifierClass: 0x21..0x7E
    C_FREE = 2       # PRECIS FreeFormClass: 0x20..0x7E
    C_LOCAL = 4      # IdentifierClass minus the RFC 7622 §3.3.1 characters "&'/:<>@
    C_LDH = 8        # letter, digit, hyphen
    C_UPPER = 16     # A..Z

cdef unsigned char _CLASS[128]


cdef void _init_classes():
    cdef int c
    for c in range(128):
        _CLASS[c] = 0
        if 0x20 <= c <= 0x7E:
            _CLASS[c] |= C_FREE
        if 0x21 <= c <= 0x7E:
            _CLASS[c] |= C_IDENT
            if chr(c) not in "\"&'/:<>@":
                _CLASS[c] |= C_LOCAL
        if (0x61 <= c <= 0x7A) or (0x30 <= c <= 0x39) or c == 0x2D:
            _CLASS[c] |= C_LDH
        if 0x41 <= c <= 0x5A:
            _CLASS[c] |= C_LDH | C_UPPER


_init_classes()


# Non-ASCII code points below _SAFE_END that a PRECIS profile leaves as they are, on
# their own and in any NFC string: allowed without context rules, unchanged by the
# profile's mappings, and not right-to-left (so no Bidi Rule).  Derived lazily from
# precis-i18n itself; a string made of them (and of unchanged ASCII) that is already
# NFC is its own preparation, so PRECIS need not run.
cdef enum:
    _SAFE_END = 0x800
    S_LOCAL = 1
    S_RESOURCE = 2

cdef unsigned char _SAFE[_SAFE_END]
cdef bint _safe_ready = False


cdef void _build_safe() except *:
    global _safe_ready
    cdef int cp
    for cp in range(_SAFE_END):
        _SAFE[cp] = 0
    for (profile, flag, allowed) in ((_USERNAME, S_LOCAL, (PVALID,)),
                                     (_OPAQUE, S_RESOURCE, (PVALID, FREE_PVAL))):
        ucd = profile.base.ucd
        for cp in range(0x80, _SAFE_END):
            ch = chr(cp)
            if (derived_property(cp, ucd)[0] in allowed and not has_rtl(ch, ucd)
                    and unicodedata.combining(ch) == 0 and profile.apply_five_rules(ch) == ch):
                _SAFE[cp] |= flag
    _safe_ready = True


cdef bint _precis_identity(str raw, unsigned char ascii_need, unsigned char ascii_bad,
                           unsigned char flag) except -1:
    """True when PRECIS would return ``raw`` itself, decided from the tables."""
    cdef int kind = PyUnicode_KIND(raw)
    cdef void* data = PyUnicode_DATA(raw)
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    if kind == PyUnicode_4BYTE_KIND:
        return False
    if not _safe_ready:
        _build_safe()
    for i in range(PyUnicode_GET_LENGTH(raw)):
        c = PyUnicode_READ(kind, data, i)
        if c < 128:
            if (_CLASS[c] & ascii_need) == 0 or (_CLASS[c] & ascii_bad) != 0:
                return False
        elif c >= _SAFE_END or not (_SAFE[c] & flag):
            return False
    return _is_normalized("NFC", raw)


class JIDError(ValueError):
    """An invalid JID: ``part`` names the faulty part, ``reason`` says what is wrong."""

    def __init__(self, part, reason):
        super().__init__(f"invalid {part}: {reason}")
        self.part = part
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.part, self.reason))


# ---------------------------------------------------------------------------
# The whole-JID ASCII fast path

cdef struct Split:
    Py_ssize_t at       # index of the '@' ending the localpart, or -1
    Py_ssize_t slash    # index of the '/' starting the resourcepart, or the length
    Py_ssize_t dom_end  # end of the domainpart once a trailing dot is dropped
    bint changed        # upper case in localpart/domainpart, or a trailing dot


cdef inline bint _ascii_label_ok(const unsigned char* p, Py_ssize_t start, Py_ssize_t end) noexcept:
    """An NR-LDH label the fast path may keep as it is (A-labels are left to the slow path)."""
    cdef Py_ssize_t n = end - start
    if n < 1 or n > _MAX_LABEL or p[start] == b'-' or p[end - 1] == b'-':
        return False
    return not (n >= 4 and p[start + 2] == b'-' and p[start + 3] == b'-')


cdef bint _fast_split(str s, Split* out) noexcept:
    """Check a whole ASCII JID in one pass; False sends it to the slow path."""
    cdef const unsigned char* p = PyUnicode_1BYTE_DATA(s)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    cdef Py_ssize_t i = 0, at = -1, slash, dom_start, dom_end, label
    cdef unsigned char c, cls
    cdef unsigned char seen = 0
    # Up to the first '/' (or the end); the first '@' there ends the localpart.
    while i < n:
        c = p[i]
        if c == b'/':
            break
        if c == b'@' and at < 0:
            at = i
        i += 1
    slash = i
    if at >= 0:
        if at == 0 or at > _MAX_PART:
            return False
        for i in range(at):
            cls = _CLASS[p[i]]
            if not (cls & C_LOCAL):
                return False
            seen |= cls
    dom_start = at + 1
    dom_end = slash
    if dom_end > dom_start and p[dom_end - 1] == b'.':
        dom_end -= 1
        seen |= C_UPPER  # not upper case, but the text changes all the same
    if dom_end - dom_start > _MAX_PART:
        return False
    label = dom_start
    for i in range(dom_start, dom_end):
        c = p[i]
        if c == b'.':
            if not _ascii_label_ok(p, label, i):
                return False
            label = i + 1
            continue
        cls = _CLASS[c]
        if not (cls & C_LDH):
            return False
        seen |= cls
    if not _ascii_label_ok(p, label, dom_end):
        return False
    if slash < n:
        if n - slash - 1 < 1 or n - slash - 1 > _MAX_PART:
            return False
        for i in range(slash + 1, n):
            if not (_CLASS[p[i]] & C_FREE):
                return False
    out.at = at
    out.slash = slash
    out.dom_end = dom_end
    out.changed = (seen & C_UPPER) != 0
    return True


cdef str _fast_text(str s, Split* sp):
    """The prepared text of an ASCII JID accepted by ``_fast_split``; shifts ``sp.slash``."""
    if not sp.changed:
        return s
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    cdef Py_ssize_t head = sp.dom_end, tail = n - sp.slash, i
    cdef const unsigned char* src = PyUnicode_1BYTE_DATA(s)
    # One allocation, filled in place: it is not shared before we return it.
    cdef str text = PyUnicode_New(head + tail, 127)
    cdef unsigned char* dst = PyUnicode_1BYTE_DATA(text)
    cdef unsigned char c
    for i in range(head):
        c = src[i]
        dst[i] = c | 0x20 if _CLASS[c] & C_UPPER else c
    memcpy(dst + head, src + sp.slash, tail)
    sp.slash = head
    return text


# ---------------------------------------------------------------------------
# Part by part (the specification's steps)

cdef str _precis_reason(exc):
    return exc.reason.lower()


cdef str _idna_reason(exc):
    return "idna: " + (getattr(exc, "code", None) or type(exc).__name__.lower())


cdef inline void _check_raw(str part, str raw) except *:
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(raw)
    if n == 0:
        raise JIDError(part, "empty")
    if n > _MAX_RAW:
        raise JIDError(part, "too long")


cdef inline void _check_length(str part, str value) except *:
    if PyUnicode_GET_LENGTH(value) > _MAX_PART // 4 and len(value.encode("utf-8")) > _MAX_PART:
        raise JIDError(part, "too long")


cpdef str prep_localpart(str raw):
    """Prepare a localpart (UsernameCaseMapped, then the §3.3.1 exclusions)."""
    cdef const unsigned char* p
    cdef Py_ssize_t i, n
    cdef unsigned char cls, seen = 0
    cdef Py_UCS4 ch
    cdef str value
    _check_raw(LOCALPART, raw)
    if PyUnicode_IS_ASCII(raw):
        p = PyUnicode_1BYTE_DATA(raw)
        n = PyUnicode_GET_LENGTH(raw)
        for i in range(n):
            cls = _CLASS[p[i]]
            if not (cls & C_IDENT):
                raise JIDError(LOCALPART, "disallowed/spaces" if p[i] == b' ' else "disallowed/controls")
            seen |= cls
        value = raw.lower() if seen & C_UPPER else raw
    elif _precis_identity(raw, C_IDENT, C_UPPER, S_LOCAL):
        value = raw
    else:
        try:
            value = _USERNAME.enforce(raw)
        except UnicodeEncodeError as exc:
            raise JIDError(LOCALPART, _precis_reason(exc)) from None
    for ch in value:
        if ch < 128 and not (_CLASS[ch] & C_LOCAL):
            raise JIDError(LOCALPART, "forbidden character")
    _check_length(LOCALPART, value)
    return value


cpdef str prep_resourcepart(str raw):
    """Prepare a resourcepart (OpaqueString: case and spaces are kept)."""
    cdef const unsigned char* p
    cdef Py_ssize_t i
    cdef str value
    _check_raw(RESOURCEPART, raw)
    if PyUnicode_IS_ASCII(raw):
        p = PyUnicode_1BYTE_DATA(raw)
        for i in range(PyUnicode_GET_LENGTH(raw)):
            if not (_CLASS[p[i]] & C_FREE):
                raise JIDError(RESOURCEPART, "disallowed/controls")
        value = raw
    elif _precis_identity(raw, C_FREE, 0, S_RESOURCE):
        value = raw
    else:
        try:
            value = _OPAQUE.enforce(raw)
        except UnicodeEncodeError as exc:
            raise JIDError(RESOURCEPART, _precis_reason(exc)) from None
    _check_length(RESOURCEPART, value)
    return value


cdef str _ascii_label(str label):
    """Check one lower-cased ASCII label; an A-label comes back as its U-label."""
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(label)
    cdef const unsigned char* p = PyUnicode_1BYTE_DATA(label)
    if n == 0:
        raise JIDError(DOMAINPART, "empty label")
    if n > _MAX_LABEL:
        raise JIDError(DOMAINPART, "label too long")
    for i in range(n):
        if not (_CLASS[p[i]] & C_LDH) or (_CLASS[p[i]] & C_UPPER):
            raise JIDError(DOMAINPART, "invalid character")
    if p[0] == b'-' or p[n - 1] == b'-':
        raise JIDError(DOMAINPART, "hyphen at label start or end")
    if n >= 4 and p[2] == b'-' and p[3] == b'-':
        if not (p[0] == b'x' and p[1] == b'n'):
            raise JIDError(DOMAINPART, "hyphens in 3rd and 4th position")
        # RFC 7622 §3.2.2: A-labels are converted to U-labels.
        try:
            return idna.ulabel(label)
        except idna.IDNAError as exc:
            raise JIDError(DOMAINPART, _idna_reason(exc)) from None
    return label


cdef str _ip_literal(str raw):
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(raw)
    cdef str inner = raw[1:n - 1] if raw.endswith("]") else ""
    # No zone identifiers: they mean nothing off the local link.
    if not inner or not PyUnicode_IS_ASCII(inner) or "%" in inner:
        raise JIDError(DOMAINPART, "invalid IP literal")
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise JIDError(DOMAINPART, "invalid IP literal") from None
    return "[" + str(address) + "]"


cpdef str prep_domainpart(str raw):
    """Prepare a domainpart: IP literal, or UTS #46 mapping and IDNA2008 U-labels."""
    cdef PyObject* hit = PyDict_GetItem(_domain_cache, raw)
    if hit is not NULL:
        return <str>hit
    cdef str value = _prep_domainpart(raw)
    if len(_domain_cache) >= _domain_cache_size:
        _domain_cache.popitem(last=False)
    _domain_cache[raw] = value
    return value


cdef str _prep_domainpart(str raw):
    cdef Py_UCS4 last
    cdef str value, label, mapped
    cdef list labels
    _check_raw(DOMAINPART, raw)
    last = raw[PyUnicode_GET_LENGTH(raw) - 1]
    if last == u'.' or last == u'\u3002' or last == u'\uff0e' or last == u'\uff61':
        # RFC 7622 §3.2: a final dot is stripped before anything else.
        raw = raw[:PyUnicode_GET_LENGTH(raw) - 1]
        if not raw:
            raise JIDError(DOMAINPART, "empty")
    if raw[0] == u'[':
        value = _ip_literal(raw)
    elif PyUnicode_IS_ASCII(raw):
        value = ".".join([_ascii_label(label) for label in raw.lower().split(".")])
    else:
        try:
            mapped = idna.uts46_remap(raw, std3_rules=True)
        except idna.IDNAError as exc:
            raise JIDError(DOMAINPART, _idna_reason(exc)) from None
        labels = []
        for label in mapped.split("."):
            if PyUnicode_IS_ASCII(label):
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


# ---------------------------------------------------------------------------
# The JID type

cdef class JID:
    """An immutable, prepared JID.

    ``JID(text)`` prepares ``text`` and raises :class:`JIDError` if it is invalid.
    Equality and hashing use the prepared form; a JID never equals a ``str``
    (compare ``jid.full`` or ``str(jid)`` with text instead).
    """

    cdef str _full
    cdef Py_ssize_t _at      # '@' index, or -1 without localpart
    cdef Py_ssize_t _slash   # '/' index, or len(_full) without resourcepart

    def __init__(self, jid):
        cdef Split sp
        cdef str text
        cdef PyObject* hit
        if self._full is not None:
            raise AttributeError("JID is immutable")
        if PyUnicode_CheckExact(jid):
            text = <str>jid
            if PyUnicode_IS_ASCII(text) and _fast_split(text, &sp):
                self._full = _fast_text(text, &sp)
                self._at = sp.at
                self._slash = sp.slash
                return
        elif isinstance(jid, JID):
            self._copy(<JID>jid)
            return
        elif isinstance(jid, str):
            text = <str>jid
        else:
            raise TypeError(f"JID() argument must be str, not {type(jid).__name__}")
        hit = PyDict_GetItem(_cache, text)
        if hit is not NULL:
            self._copy(<JID>hit)
            return
        self._parse(text)
        if len(_cache) >= _cache_size:
            _cache.popitem(last=False)
        _cache[text] = self

    cdef inline void _copy(self, JID other) noexcept:
        self._full = other._full
        self._at = other._at
        self._slash = other._slash

    cdef void _set(self, local, str domain, resource, str original) except *:
        cdef str text = domain if local is None else <str>local + "@" + domain
        self._at = -1 if local is None else PyUnicode_GET_LENGTH(<str>local)
        self._slash = PyUnicode_GET_LENGTH(text)
        if resource is not None:
            text = text + "/" + <str>resource
        # Identity: keep the caller's string rather than an equal copy.
        self._full = original if original is not None and text == original else text

    cdef void _parse(self, str text) except *:
        cdef Py_ssize_t slash = text.find("/")
        cdef str head = text if slash < 0 else text[:slash]
        cdef Py_ssize_t at = head.find("@")
        local = None if at < 0 else prep_localpart(head[:at])
        cdef str domain = prep_domainpart(head[at + 1:])
        resource = None if slash < 0 else prep_resourcepart(text[slash + 1:])
        self._set(local, domain, resource, text)

    @classmethod
    def from_parts(cls, localpart, str domain, resource=None):
        """Build a JID from separate parts, each prepared as in ``JID(text)``."""
        local = None if localpart is None else prep_localpart(localpart)
        cdef str dom = prep_domainpart(domain)
        res = None if resource is None else prep_resourcepart(resource)
        cdef JID obj = cls.__new__(cls)
        obj._set(local, dom, res, None)
        return obj

    @property
    def localpart(self):
        """The prepared localpart, or None."""
        return None if self._at < 0 else self._full[:self._at]

    @property
    def domain(self):
        """The prepared domainpart."""
        return self._full[self._at + 1:self._slash]

    @property
    def domainpart(self):
        """The prepared domainpart."""
        return self._full[self._at + 1:self._slash]

    @property
    def resource(self):
        """The prepared resourcepart, or None."""
        if self._slash == PyUnicode_GET_LENGTH(self._full):
            return None
        return self._full[self._slash + 1:]

    @property
    def full(self):
        """The whole prepared JID as text."""
        return self._full

    @property
    def is_bare(self):
        """True when there is no resourcepart."""
        return self._slash == PyUnicode_GET_LENGTH(self._full)

    @property
    def bare(self):
        """This JID without its resourcepart."""
        if self._slash == PyUnicode_GET_LENGTH(self._full):
            return self
        cdef JID obj = type(self).__new__(type(self))
        obj._full = self._full[:self._slash]
        obj._at = self._at
        obj._slash = self._slash
        return obj

    def with_resource(self, resource):
        """This JID with its resourcepart replaced (None: the bare JID)."""
        if resource is None:
            return self.bare
        cdef str res = prep_resourcepart(resource)
        cdef JID obj = type(self).__new__(type(self))
        obj._full = self._full[:self._slash] + "/" + res
        obj._at = self._at
        obj._slash = self._slash
        return obj

    def __str__(self):
        return self._full

    def __repr__(self):
        return f"JID({self._full!r})"

    def __eq__(self, other):
        if isinstance(other, JID):
            return self._full == (<JID>other)._full
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, JID):
            return self._full != (<JID>other)._full
        return NotImplemented

    def __hash__(self):
        return hash(self._full)

    def __reduce__(self):
        return (type(self), (self._full,))


def normalize(text):
    """The prepared text of ``text``; the very same object when nothing changes."""
    cdef Split sp
    if PyUnicode_CheckExact(text) and PyUnicode_IS_ASCII(text) and _fast_split(<str>text, &sp):
        return _fast_text(<str>text, &sp)
    cdef str full = JID(text)._full
    return text if full == text else full


def cache_clear():
    """Forget all cached preparations."""
    _cache.clear()
    _domain_cache.clear()


def cache_info():
    """``(entries, capacity)`` of the preparation cache."""
    return len(_cache), _cache_size
