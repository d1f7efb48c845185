"""The incremental XMPP stream tokenizer: compiled when available, else the pyexpat twin.

See :mod:`xmppd.xml._tokenizer_pure` for the contract both implementations follow.
"""

from xmppd._impl import choose
from xmppd.xml.events import (
    MAX_ATTRS,
    MAX_DEPTH,
    MAX_STANZA_SIZE,
    STREAM_NS,
    StreamClose,
    StreamOpen,
    TokenizerError,
)

_impl = choose("tokenizer", "xmppd.xml._tokenizer_pure")
Tokenizer = _impl.Tokenizer

__all__ = [
    "MAX_ATTRS",
    "MAX_DEPTH",
    "MAX_STANZA_SIZE",
    "STREAM_NS",
    "StreamClose",
    "StreamOpen",
    "Tokenizer",
    "TokenizerError",
]
