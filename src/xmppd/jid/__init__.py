"""JIDs (RFC 7622): the public module.

Re-exports the compiled implementation (``xmppd._speedups.jid``) or, when it is not
built or ``XMPPD_PURE_PYTHON=1`` is set, the pure twin ``xmppd.jid._pure``; both have
the same API, results and errors.  Type checkers see the pure twin.

    >>> from xmppd.jid import JID
    >>> JID("Juliet@Example.COM/Balcony").bare.full
    'juliet@example.com'

A :class:`JID` never equals a ``str``: compare ``jid.full`` (or ``str(jid)``) instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xmppd._impl import choose

if TYPE_CHECKING:
    from xmppd.jid._pure import (
        CACHE_SIZE,
        JID,
        JIDError,
        cache_clear,
        cache_info,
        normalize,
        prep_domainpart,
        prep_localpart,
        prep_resourcepart,
    )
else:
    _mod = choose("jid", "xmppd.jid._pure")
    CACHE_SIZE = _mod.CACHE_SIZE
    JID = _mod.JID
    JIDError = _mod.JIDError
    cache_clear = _mod.cache_clear
    cache_info = _mod.cache_info
    normalize = _mod.normalize
    prep_domainpart = _mod.prep_domainpart
    prep_localpart = _mod.prep_localpart
    prep_resourcepart = _mod.prep_resourcepart

__all__ = [
    "CACHE_SIZE",
    "JID",
    "JIDError",
    "jid_or_none",
    "cache_clear",
    "cache_info",
    "normalize",
    "prep_domainpart",
    "prep_localpart",
    "prep_resourcepart",
]


def jid_or_none(text: str | None) -> JID | None:
    """``text`` as a JID, or None when it is missing or malformed (a stanza's ``to`` or
    ``from`` that a module only needs when it is usable)."""
    if not text:
        return None
    try:
        return JID(text)
    except JIDError:
        return None
