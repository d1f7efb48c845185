"""The pure-Python stream tokenizer, built on ``pyexpat``.  It is the specification that the
compiled tokenizer (``xmppd._speedups.tokenizer``) must match event for event and error for
error.

Contract
--------
``Tokenizer.feed(data)`` takes any chunk and returns the events completed so far:
:class:`~xmppd.xml.events.StreamOpen` once the stream header's ``>`` arrives, one
:class:`~xmppd.xml.element.Element` per top-level element as soon as its last ``>`` arrives, and
:class:`~xmppd.xml.events.StreamClose` for the closing tag.  Restricted XML (RFC 6120 §11):

- DOCTYPE, comments and processing instructions -> ``restricted-xml``; so is any entity
  reference other than the five predefined ones.  Character references and a leading XML
  declaration are fine; a declaration naming another encoding than UTF-8 ->
  ``unsupported-encoding``, as is input starting with a UTF-16 byte order mark or a NUL.
- Invalid UTF-8 (overlong forms, surrogates, truncated sequences) and characters XML 1.0
  forbids -> ``not-well-formed``, as is any other well-formedness error, including duplicate
  attributes and non-whitespace text directly inside the stream element.
- Unbound or illegally (un)declared prefixes -> ``bad-namespace-prefix``; a namespace name
  containing whitespace -> ``invalid-namespace``.
- Limits -> ``policy-violation``: more than ``max_stanza_size`` bytes since the previous
  event's end (the element plus any whitespace before it; it trips at the byte that exceeds
  the limit, so an error detected in the bytes before that byte wins), an element nested deeper than
  ``max_depth`` below the stream element, or more than ``max_attrs`` attributes plus namespace
  declarations on one element.

On an error ``feed`` raises :class:`~xmppd.xml.events.TokenizerError` carrying the events
completed before it in that call; afterwards every ``feed`` raises the same error.

Where expat's own behaviour depended on how the input was split, this twin pins it down
(the compiled tokenizer matches these rules):

- Character data directly inside the stream element is checked as soon as expat reports it
  (text buffering is off there): ``x&foo;`` is ``not-well-formed`` however it is split,
  where buffered text used to let the later entity error win when both came in one chunk.
- A DOCTYPE is refused as soon as the ``<!DOCTYPE`` keyword is complete, not when expat
  reaches the end of the declaration's name.
- A stream whose second byte is NUL (which expat would re-read as UTF-16) is
  ``unsupported-encoding``.
- After the stream's closing tag only whitespace may follow (until ``restart()`` or
  ``reset()``); anything else is ``not-well-formed`` as soon as it arrives (expat's verdict
  on junk there depended on where the input was split).
- The size limit trips at the byte that exceeds it (expat never parses past that byte),
  not at the end of whichever ``feed`` call happened to carry it.

``restart()`` expects a new stream header and re-reads the bytes that followed the last
returned event (a stream restart after SASL, with pipelined data); ``reset()`` expects a new
header and discards what was buffered (after STARTTLS, where buffered plaintext must be
dropped).  Both also work after an error: a client may pipeline ``<auth/>`` and the new
stream header (with its XML declaration, an error inside the old stream) in one chunk; the
error then carries the ``<auth/>`` event and ``restart()`` re-reads the header and what
follows as the new stream (an error in those bytes is raised again).

Whitespace (space, tab, CR, LF) directly after the last event is the old stream's character
data and ``restart()`` drops it: clients that end every element with a newline send
``</auth>\n`` or ``</response>\n``, and the new header's XML declaration must still come
first in the new stream.  This covers the whitespace fed before ``restart()`` is called, in
any number of ``feed`` calls, also when an error (the pipelined declaration) followed it;
it does not apply when the old stream returned no event (its bytes are all re-read).
Whitespace fed after ``restart()`` is the new stream's: before a header it is fine, before
an XML declaration it is ``not-well-formed``, as XML requires.
"""

from __future__ import annotations

import re
from pyexpat import ParserCreate
from pyexpat import error as ExpatError

from xmppd.xml.element import Element
from xmppd.xml.events import (
    MAX_ATTRS,
    MAX_DEPTH,
    MAX_STANZA_SIZE,
    StreamClose,
    StreamOpen,
    TokenizerError,
)

# expat error codes with a more specific stream error than not-well-formed
_EXPAT_CONDITIONS = {
    11: "restricted-xml",  # undefined entity: only the predefined five exist without a DTD
    18: "unsupported-encoding",
    19: "unsupported-encoding",
    27: "bad-namespace-prefix",
    28: "bad-namespace-prefix",
    38: "bad-namespace-prefix",
    39: "bad-namespace-prefix",
    40: "bad-namespace-prefix",
}

# The end of a start tag that expat has already validated: only the trailing "/" matters.
_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")
_WS = frozenset(" \t\r\n")
_WS_BYTES = frozenset(b" \t\r\n")
_XML_WS = b" \t\r\n"
_BAD_NS_CHARS = re.compile(r"[\s]")


class _Abort(Exception):
    """Raised inside expat handlers to stop parsing with a stream error."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def _clark(name: str) -> tuple[str, str]:
    """Split expat's ``"uri local"`` into (namespace, local name)."""
    ns, sep, local = name.rpartition("\x01")
    return (ns, local) if sep else ("", name)


def _attr_key(name: str) -> str:
    ns, sep, local = name.rpartition("\x01")
    return "{%s}%s" % (ns, local) if sep else name  # noqa: UP031 - hot path


class Tokenizer:
    """Incremental XMPP stream tokenizer (pure Python, pyexpat)."""

    def __init__(
        self,
        max_stanza_size: int = MAX_STANZA_SIZE,
        max_depth: int = MAX_DEPTH,
        max_attrs: int = MAX_ATTRS,
    ) -> None:
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attrs = max_attrs
        self._error: TokenizerError | None = None
        self._new_parser()

    # -- public API -----------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held since the last event (an incomplete element and whitespace)."""
        return self._fed - self._last_end + len(self._head)

    def feed(self, data: bytes) -> list:
        if self._error is not None:
            raise self._error
        events: list = []
        if not data:
            return events
        self._events = events
        if self._fed == 0:
            # The first two bytes decide the encoding check: hold a lone first byte back.
            data = self._head + data
            self._head = data[:1] if len(data) < 2 else b""
            if data[0] in (0x00, 0xFE, 0xFF) or data[1:2] == b"\x00":
                self._fail("unsupported-encoding", "the stream is not UTF-8", events)
            if self._head:
                return events
        self._buf += data
        try:
            # Never parse past the byte that would exceed the size limit: errors in the
            # bytes before it win, and the limit wins over anything after it, however the
            # input is split.
            while data:
                room = self._last_end + self.max_stanza_size - self._fed
                if room <= 0:
                    self._fail("policy-violation", "stanza size limit exceeded", events)
                piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
                self._fed += len(piece)
                self._parser.Parse(piece, False)
                if self._closed:
                    tail = self._buf[self._last_end - self._buf_off : self._fed - self._buf_off]
                    if not _WS_BYTES.issuperset(tail):
                        raise _Abort("not-well-formed", "junk after the stream's closing tag")
        except _Abort as exc:
            self._fail(exc.condition, exc.text, events)
        except ExpatError as exc:
            cond = _EXPAT_CONDITIONS.get(exc.code, "not-well-formed")
            self._fail(cond, str(exc), events)
        # Trim once per feed: deleting per event would copy the chunk once per stanza.
        del self._buf[: self._last_end - self._buf_off]
        self._buf_off = self._last_end
        return events

    def restart(self) -> list:
        """Expect a new stream header, re-reading the bytes after the last event."""
        leftover = self._head + bytes(self._buf[self._last_end - self._buf_off :])
        if self._last_end:
            # Whitespace after the last event (the SASL element) is the old stream's.
            leftover = leftover.lstrip(_XML_WS)
        self._error = None
        self._new_parser()
        return self.feed(leftover)

    def reset(self) -> None:
        """Expect a new stream header and drop anything buffered."""
        self._error = None
        self._new_parser()

    # -- internals ------------------------------------------------------------------------

    def _fail(self, condition: str, text: str, events: list) -> None:
        self._error = TokenizerError(condition, text, events)
        self._parser = None
        # keep the bytes after the last event for restart()
        del self._buf[: self._last_end - self._buf_off]
        self._buf_off = self._last_end
        raise self._error

    def _new_parser(self) -> None:
        p = ParserCreate("UTF-8", "\x01")
        # Text is buffered inside stanzas only: outside them it must be checked at once.
        p.buffer_text = False
        if hasattr(p, "SetReparseDeferralEnabled"):  # expat >= 2.6 defers big tokens
            p.SetReparseDeferralEnabled(False)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        p.StartNamespaceDeclHandler = self._ns_decl
        p.XmlDeclHandler = self._xml_decl
        p.CommentHandler = self._forbidden_comment
        p.ProcessingInstructionHandler = self._forbidden_pi
        p.EntityDeclHandler = self._forbidden_doctype
        p.SkippedEntityHandler = self._forbidden_entity
        p.DefaultHandler = self._default
        self._parser = p
        self._head = b""
        self._buf = bytearray()  # bytes fed, from parser offset _buf_off on
        self._buf_off = 0
        self._fed = 0
        self._last_end = 0
        self._depth = 0
        self._stack: list[Element] = []
        self._decls = 0
        self._header_ns: dict[str, str] = {}
        self._top_start = 0
        self._top_empty = False
        self._root_empty_end = -1
        self._closed = False
        self._events: list = []

    def _consumed(self, end: int) -> None:
        """An event ended at parser offset ``end`` (the size limit is enforced by ``feed``,
        which never lets expat see more than ``max_stanza_size`` bytes past the last one)."""
        self._last_end = end

    def _start_tag_end(self, start: int) -> tuple[int, bool]:
        m = _START_TAG.match(self._buf, start - self._buf_off)
        assert m is not None, "expat accepted a start tag the regex does not match"
        return m.end() + self._buf_off, bool(m.group(1))

    # -- expat handlers -------------------------------------------------------------------

    def _ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if uri and _BAD_NS_CHARS.search(uri):
            raise _Abort("invalid-namespace", "namespace name contains whitespace")
        self._decls += 1
        if self._depth == 0:
            self._header_ns[prefix or ""] = uri or ""

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        if len(attrs) + self._decls > self.max_attrs:
            raise _Abort("policy-violation", "too many attributes")
        self._decls = 0
        if depth > self.max_depth:
            raise _Abort("policy-violation", "elements nested too deeply")
        ns, local = _clark(name)
        attrs = {_attr_key(k) if "\x01" in k else k: v for k, v in attrs.items()}
        self._depth = depth + 1
        if depth == 0:
            end, empty = self._start_tag_end(self._parser.CurrentByteIndex)
            self._root_empty_end = end if empty else -1
            self._consumed(end)
            self._events.append(StreamOpen(local, ns, attrs, self._header_ns))
            self._header_ns = {}
            return
        el = Element(local, ns, attrs, [])
        if depth == 1:
            self._parser.buffer_text = True
            start = self._parser.CurrentByteIndex
            self._top_start = start
            self._top_empty = self._start_tag_end(start)[1]
        else:
            self._stack[-1]._children.append(el)
        self._stack.append(el)

    def _end(self, name: str) -> None:
        self._depth -= 1
        depth = self._depth
        idx = self._parser.CurrentByteIndex
        if depth == 0:
            # "<stream/>": expat reports its end at the start tag, whose first ">" may be
            # inside an attribute value
            end = self._root_empty_end
            if end < 0:
                end = self._buf.index(b">", idx - self._buf_off) + 1 + self._buf_off
            self._consumed(end)
            self._closed = True
            self._events.append(StreamClose())
            return
        el = self._stack.pop()
        if depth == 1:
            self._parser.buffer_text = False
            if self._top_empty:
                end = self._start_tag_end(self._top_start)[0]
            else:
                end = self._buf.index(b">", idx - self._buf_off) + 1 + self._buf_off
            self._consumed(end)
            self._events.append(el)

    def _text(self, data: str) -> None:
        if self._depth <= 1:
            if not _WS.issuperset(data):
                raise _Abort("not-well-formed", "text outside a stanza")
            return
        kids = self._stack[-1]._children
        if kids and type(kids[-1]) is str:
            kids[-1] += data
        else:
            kids.append(data)

    def _xml_decl(self, version: str, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
            raise _Abort("unsupported-encoding", f"encoding {encoding!r} is not UTF-8")

    def _default(self, data: str) -> None:
        # Only prolog tokens without a handler of their own get here; "<!DOCTYPE" is the
        # declaration's first token.
        if data.startswith("<!DOCTYPE"):
            raise _Abort("restricted-xml", "DTDs are not allowed")

    def _forbidden_comment(self, *args: object) -> None:
        if self._closed:
            raise _Abort("not-well-formed", "junk after the stream's closing tag")
        raise _Abort("restricted-xml", "comments are not allowed")

    def _forbidden_pi(self, *args: object) -> None:
        if self._closed:
            raise _Abort("not-well-formed", "junk after the stream's closing tag")
        raise _Abort("restricted-xml", "processing instructions are not allowed")

    def _forbidden_doctype(self, *args: object) -> None:
        raise _Abort("restricted-xml", "DTDs are not allowed")

    def _forbidden_entity(self, *args: object) -> None:
        raise _Abort("restricted-xml", "entity references are not allowed")
