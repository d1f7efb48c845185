"""A compact XML element model for stanzas, with a serializer that escapes correctly.

Names are split into ``name`` (local name) and ``ns`` (namespace URI).  Attribute keys are
local names for unqualified attributes and Clark notation (``{uri}local``) for qualified
ones, so ``xml:lang`` is ``{http://www.w3.org/XML/1998/namespace}lang``.

Children are a list of :class:`Element` and ``str`` (text) items; the tokenizers never put two
text items side by side, so two parses of the same XML compare equal however the bytes were
split.  A tokenizer may build an element lazily: it then passes ``lazy``, a callable returning
the children, and ``raw_inner``, the validated bytes between the start and end tags, which
:meth:`Element.to_bytes` reuses when the element is written into a stream with the same
default namespace.  Reading (``find``, ``findtext``, ``iter``...) keeps the raw bytes; the
mutating API (``children``, ``append``, ``remove``, ``clear``) drops them.  The compiled
tokenizer gives nested elements a ``lazy`` too (without ``raw_inner``): mutate a descendant
through ``children`` all the way down, so that no ancestor keeps bytes that no longer say
what its tree says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from xmppd._impl import choose

XML_NS = "http://www.w3.org/XML/1998/namespace"
XML_LANG = "{" + XML_NS + "}lang"

_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\t": "&#9;",
        "\n": "&#10;",
        "\r": "&#13;",
    }
)


# str.translate with a dict is slow; most values need no escaping, so look first.
_TEXT_SPECIAL = re.compile("[&<>\r]").search
_ATTR_SPECIAL = re.compile('[&<>"\t\n\r]').search


def escape_text(text: str) -> str:
    """Escape character data (``\\r`` too, or a parser would fold it into ``\\n``)."""
    return text if _TEXT_SPECIAL(text) is None else text.translate(_TEXT_ESCAPES)


def escape_attr(value: str) -> str:
    """Escape an attribute value for double quotes, keeping whitespace through normalization."""
    return value if _ATTR_SPECIAL(value) is None else value.translate(_ATTR_ESCAPES)


class Element:
    """An XML element: ``name``, ``ns``, ``attrs`` and ``children`` (elements and text)."""

    # The compiled tokenizer fills these slots directly, without calling __init__ (one
    # Python frame per element is most of the cost of building a stanza): keep __init__ a
    # plain store of its arguments, or change _element() in _speedups/tokenizer_build.pxi too.
    # It checks this tuple at import and falls back to calling Element() if it changes.
    __slots__ = ("name", "ns", "attrs", "_children", "_lazy", "_raw_inner", "_raw_ns", "_wire")

    def __init__(
        self,
        name: str,
        ns: str = "",
        attrs: dict[str, str] | None = None,
        children: list[Element | str] | None = None,
        *,
        lazy: Callable[[], list[Element | str]] | None = None,
        raw_inner: bytes | None = None,
        raw_ns: str | None = None,
    ) -> None:
        self.name = name
        self.ns = ns
        self.attrs = {} if attrs is None else attrs
        self._children = children
        self._lazy = lazy
        self._raw_inner = raw_inner
        self._raw_ns = raw_ns
        #: (raw_inner, default_ns, name, attrs copy, bytes): what a peer sent
        #: (:meth:`keep_wire`), valid while the first four still hold
        self._wire: tuple | None = None

    # -- children ----------------------------------------------------------------------

    def _kids(self) -> list[Element | str]:
        kids = self._children
        if kids is None:
            lazy = self._lazy
            kids = self._children = lazy() if lazy is not None else []
            self._lazy = None
        return kids

    # The compiled tokenizer puts the same accessor, in C, in place of this property
    # (_install_children in _speedups/tokenizer_build.pxi): change both together.
    @property
    def children(self) -> list[Element | str]:
        """The mutable child list; using it drops the raw form kept for forwarding."""
        self._raw_inner = None
        kids = self._children
        if kids is None:  # _kids() inlined: a tree walk reads this once per element
            lazy = self._lazy
            kids = self._children = lazy() if lazy is not None else []
            self._lazy = None
        return kids

    @children.setter
    def children(self, value: list[Element | str]) -> None:
        self._raw_inner = None
        self._lazy = None
        self._children = value

    def append(self, child: Element | str) -> Element | str:
        kids = self.children
        if isinstance(child, str) and kids and isinstance(kids[-1], str):
            kids[-1] += child
        elif not (isinstance(child, str) and not child):
            kids.append(child)
        return child

    def append_forwardable(self, child: Element, child_bytes: bytes | None = None) -> Element:
        """Append a child element, keeping the raw form kept for forwarding (extended by the
        child's bytes, ``child_bytes`` if the caller has them: ``child.to_bytes(self.ns)``):
        a stanza that only gains an element on its way (the archive's ``stanza-id``) is
        still written without building or serializing its content again."""
        raw = self._raw_inner
        if raw is None or self._raw_ns != self.ns:
            return self.append(child)
        lazy = self._lazy
        if self._children is None and lazy is not None:  # still unbuilt: stays so
            self._lazy = lambda: [*lazy(), child]
        else:
            self._kids().append(child)
        self._raw_inner = raw + (child_bytes if child_bytes is not None
                                 else child.to_bytes(self.ns))
        return child

    def subelement(
        self, name: str, ns: str | None = None, attrs: dict[str, str] | None = None,
        text: str | None = None,
    ) -> Element:
        """Append and return a new child element (namespace inherited unless given)."""
        child = Element(name, self.ns if ns is None else ns, attrs)
        if text:
            child._children = [text]
        self.append(child)
        return child

    def remove(self, child: Element) -> None:
        self.children.remove(child)

    def clear_children(self) -> None:
        self.children = []

    def elements(self) -> Iterator[Element]:
        """The child elements, text skipped."""
        for kid in self._kids():
            if not isinstance(kid, str):
                yield kid

    def find(self, name: str, ns: str | None = None) -> Element | None:
        """The first child element ``name`` in ``ns`` (default: this element's namespace)."""
        kids = self._children
        if kids is None:
            if self._lazy is None:
                # No children: looking must not leave an empty list behind (a stored
                # presence is looked into once, then kept for the session's lifetime).
                return None
            kids = self._kids()
        if ns is None:
            ns = self.ns
        for kid in kids:
            if not isinstance(kid, str) and kid.name == name and kid.ns == ns:
                return kid
        return None

    def findall(self, name: str, ns: str | None = None) -> list[Element]:
        if ns is None:
            ns = self.ns
        return [
            k for k in self._kids() if not isinstance(k, str) and k.name == name and k.ns == ns
        ]

    def find_ns(self, ns: str) -> Element | None:
        """The first child element in namespace ``ns``, whatever its name."""
        for kid in self._kids():
            if not isinstance(kid, str) and kid.ns == ns:
                return kid
        return None

    def carries(self, namespaces: frozenset[str], encoded: tuple[bytes, ...]) -> bool:
        """Whether a direct child element is in one of ``namespaces`` (``encoded``: the
        same, UTF-8), without building the children when the tokenizer kept the content's
        bytes (it does only when they declare every prefix they use): with no ``=`` in
        them, no namespace is declared and every element inherits this one's; else a
        namespace that is not in them, written out, is in no element of it (with a
        reference, ``&``, the tree is asked).  May answer True for a deeper element or a
        mention in text: callers only skip work on False."""
        if self.ns in namespaces:
            return True  # children that inherit it leave no trace in the bytes
        raw = self._raw_inner
        # find(), not "in": a bytes "in" first tries its operand as an integer, and the
        # TypeError it formats and clears costs more than the search; a one-byte find is
        # a memchr, several times cheaper than looking for a namespace
        if raw is not None and self._raw_ns == self.ns:
            if raw.find(b"=") < 0:
                return False
            if raw.find(b"&") < 0:
                for ns in encoded:
                    if raw.find(ns) >= 0:
                        return True
                return False
        for kid in self._kids():
            if not isinstance(kid, str) and kid.ns in namespaces:
                return True
        return False

    def findtext(self, name: str, ns: str | None = None, default: str | None = None) -> str | None:
        child = self.find(name, ns)
        return default if child is None else child.text

    @property
    def text(self) -> str:
        """The concatenated direct text children."""
        return "".join(k for k in self._kids() if isinstance(k, str))

    @text.setter
    def text(self, value: str) -> None:
        self.children = [k for k in self._kids() if not isinstance(k, str)]
        if value:
            self._children.insert(0, value)

    def iter(self) -> Iterator[Element]:
        """This element and all descendants, depth first."""
        yield self
        for kid in self._kids():
            if not isinstance(kid, str):
                yield from kid.iter()

    # -- attributes ---------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def set(self, key: str, value: str | None) -> None:
        """Set an attribute, or delete it when ``value`` is None."""
        if value is None:
            self.attrs.pop(key, None)
        else:
            self.attrs[key] = value

    # -- comparison and copies ------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (
            self.name == other.name
            and self.ns == other.ns
            and self.attrs == other.attrs
            and self._kids() == other._kids()
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<Element {{{self.ns}}}{self.name} {self.attrs!r}>"

    def copy(self) -> Element:
        """A deep copy (the raw form is kept, since it is immutable bytes)."""
        kids = [k if isinstance(k, str) else k.copy() for k in self._kids()]
        return Element(
            self.name, self.ns, dict(self.attrs), kids,
            raw_inner=self._raw_inner, raw_ns=self._raw_ns,
        )

    # -- serialization --------------------------------------------------------------------

    def to_bytes(self, default_ns: str | None = None) -> bytes:
        """Serialize as UTF-8, for a stream whose default namespace is ``default_ns``.

        The start tag is always written afresh (routing rewrites ``from``/``to``); the
        content reuses the tokenizer's validated bytes when they mean the same under the
        default namespace the new start tag puts in scope, which is always ``self.ns``.
        """
        raw = self._raw_inner
        if raw is not None and self._raw_ns == self.ns:
            wire = self._wire
            if wire is not None and wire[0] is raw and wire[1] == default_ns \
                    and wire[2] == self.name and wire[3] == self.attrs:
                return wire[4]  # a stanza from a peer worker, written as it came
            # The forwarding path of every routed stanza (compiled when available)
            return _forward(self.name, self.ns, self.attrs, raw, default_ns)
        out: list[str] = []
        _serialize(self, default_ns, out)
        return "".join(out).encode()

    def keep_wire(self, data: bytes, default_ns: str) -> None:
        """Remember that ``data`` is this element serialized for a stream whose default
        namespace is ``default_ns`` (the bytes a peer worker sent, which its tokenizer just
        parsed): :meth:`to_bytes` returns them while name, attributes and content are
        unchanged, instead of writing them again.  Only for an element with its tokenizer
        content (``_raw_inner``): any change of its children drops that."""
        raw = self._raw_inner
        if raw is not None and self._raw_ns == self.ns:
            self._wire = (raw, default_ns, self.name, self.attrs.copy(), data)

    def __str__(self) -> str:
        return self.to_bytes().decode()


#: The text of recently written ``to``, ``from`` and ``type`` attributes, by value: routed
#: stanzas repeat the same JIDs and types, and a dict lookup costs a fraction of the escaping
#: check and formatting.  Each table is emptied when full (a server with more active JIDs
#: pays a miss now and then); ~0.4 MB at most.
_FRAGMENTS: dict[str, dict[str, str]] = {"to": {}, "from": {}, "type": {}}
_MAX_FRAGMENTS = 2048


#: ``</name>`` as bytes by element name, for the forwarding path of :meth:`Element.to_bytes`
#: (stanza names, mostly; emptied when full, as the fragments)
_END_TAGS: dict[str, bytes] = {}


def _end_tag(name: str) -> bytes:
    if len(_END_TAGS) >= _MAX_FRAGMENTS:
        _END_TAGS.clear()
    end = _END_TAGS[name] = ("</" + name + ">").encode()
    return end


def forward_bytes(name: str, ns: str, attrs: dict[str, str], raw: bytes,
                  default_ns: str | None) -> bytes:
    """``<name attrs>raw</name>`` (``<name attrs/>`` when ``raw`` is empty) as UTF-8, with
    ``xmlns="ns"`` unless ``ns`` is the stream's ``default_ns``: the forwarding form of an
    element whose content is the validated bytes ``raw`` (:meth:`Element.to_bytes`).  The
    specification of its compiled twin (``_speedups/serialize.pyx``)."""
    head = "<" + name if ns == default_ns else f'<{name} xmlns="{escape_attr(ns)}"'
    head += _attrs_text(attrs)
    if not raw:
        return (head + "/>").encode()
    end = _END_TAGS.get(name)
    if end is None:
        end = _end_tag(name)
    return (head + ">").encode() + raw + end


def _attrs_text(attrs: dict[str, str]) -> str:
    """The attributes of a start tag, each with its leading space."""
    text = ""
    n_prefixes = 0
    fragments = _FRAGMENTS
    for key, value in attrs.items():
        known = fragments.get(key)
        if known is not None:
            fragment = known.get(value)
            if fragment is None:
                if _ATTR_SPECIAL(value) is not None:
                    fragment = f' {key}="{value.translate(_ATTR_ESCAPES)}"'
                else:
                    fragment = f' {key}="{value}"'
                if len(known) >= _MAX_FRAGMENTS:
                    known.clear()
                known[value] = fragment
            text += fragment
            continue
        if _ATTR_SPECIAL(value) is not None:
            value = value.translate(_ATTR_ESCAPES)
        if key[0] != "{":
            text += f' {key}="{value}"'
            continue
        uri, local = key[1:].rsplit("}", 1)  # a namespace name may contain "}"
        if uri == XML_NS:
            text += f' xml:{local}="{value}"'
        else:
            # A fresh prefix per qualified attribute: declared on this element only.
            text += f' xmlns:ns{n_prefixes}="{escape_attr(uri)}" ns{n_prefixes}:{local}="{value}"'
            n_prefixes += 1
    return text


def _open_tag(el: Element, parent_ns: str | None, out: list[str]) -> None:
    out.append("<" + el.name)
    if el.ns != parent_ns:
        out.append(f' xmlns="{escape_attr(el.ns)}"')
    out.append(_attrs_text(el.attrs))


def _serialize(el: Element, parent_ns: str | None, out: list[str]) -> None:
    _open_tag(el, parent_ns, out)
    kids = el._kids()
    if not kids:
        out.append("/>")
        return
    out.append(">")
    ns = el.ns
    for kid in kids:
        if isinstance(kid, str):
            out.append(escape_text(kid))
        else:
            _serialize(kid, ns, out)
    out.append(f"</{el.name}>")


# Chosen last: the pure twin is this module's forward_bytes, defined above
_forward = choose("serialize", __name__).forward_bytes
