"""The events and the error shared by both tokenizer implementations.

A tokenizer turns bytes into a list of events: one :class:`StreamOpen` for the stream
header, one :class:`~xmppd.xml.element.Element` per complete top-level element (stanza or
nonza), and :class:`StreamClose` for ``</stream:stream>``.  Every violation raises
:class:`TokenizerError`, whose ``condition`` is the RFC 6120 §4.9.3 stream error to send.
"""

from __future__ import annotations

STREAM_NS = "http://etherx.jabber.org/streams"

#: Default limits (the pre-authentication stanza limit is set by the connection layer).
MAX_STANZA_SIZE = 256 * 1024
MAX_DEPTH = 64
MAX_ATTRS = 64

#: The conditions a tokenizer may raise.
CONDITIONS = frozenset(
    {
        "restricted-xml",
        "not-well-formed",
        "unsupported-encoding",
        "invalid-namespace",
        "bad-namespace-prefix",
        "policy-violation",
    }
)


class TokenizerError(Exception):
    """Malformed, forbidden or oversized input.

    ``condition`` is the stream error to send, ``text`` a human-readable reason, and
    ``events`` the events completed in the same ``feed`` call before the error (they are
    well-formed and may still be processed).  After this error ``feed`` raises it again;
    only ``restart()`` (re-reading the bytes after the last event as a new stream, as when
    ``<auth/>`` and the next stream header were pipelined) or ``reset()`` go on.
    """

    def __init__(self, condition: str, text: str = "", events: list | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.events = [] if events is None else events


class StreamOpen:
    """The stream header: root element name, namespace, attributes and declared prefixes."""

    __slots__ = ("name", "ns", "attrs", "namespaces")

    def __init__(self, name: str, ns: str, attrs: dict[str, str], namespaces: dict[str, str]):
        self.name = name
        self.ns = ns
        self.attrs = attrs
        #: prefix -> URI declared on the header ("" is the default namespace)
        self.namespaces = namespaces

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamOpen):
            return NotImplemented
        return (self.name, self.ns, self.attrs, self.namespaces) == (
            other.name, other.ns, other.attrs, other.namespaces,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StreamOpen({self.name!r}, {self.ns!r}, {self.attrs!r}, {self.namespaces!r})"


class StreamClose:
    """The stream's closing tag."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamClose)

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "StreamClose()"
