"""The frame codec of worker-to-worker traffic (sans-IO).

A link carries *frames*: a 4-byte big-endian body length, then the body, a batch of
*records* written in one event-loop iteration (one ``write`` per peer per iteration, however
many stanzas).  A record starts with its kind byte:

=========  =================================================================================
STANZA     ``u16`` length + full JID of the recipient session, ``u32`` length + the stanza's
           XML (``jabber:client`` default namespace)
BIND       ``u16`` length + full JID, ``u64`` worker, ``u64`` bind stamp (ns; newer wins)
UNBIND     ``u16`` length + full JID, ``u64`` worker
SHARE      ``u16`` length + full JID, ``u8`` length + module name, a typed value
CONTROL    ``u8`` length + name, ``u32`` length + JSON object
=========  =================================================================================

"Worker" is the sender's number among the workers of one host, or a cluster node's epoch
(:mod:`~xmppd.cluster.redisnode`: unique per node start, so it fences a node's old life).

A typed value is one type byte, then: nothing (None, True, False), ``i64`` (int),
``u32`` length + UTF-8 (str) or ``u32`` length + XML (an element, decoded by the caller).

:class:`FrameDecoder` turns bytes into records: tuples whose first item is the kind.
Malformed input raises :class:`CodecError` (a peer is the same program: a bug, not an
attack, but it must not be read as something else).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Callable
from typing import Any

from xmppd.xml.element import Element
from xmppd.xml.events import TokenizerError
from xmppd.xml.stanza import CLIENT_NS, decode_stanza

log = logging.getLogger(__name__)

STANZA, BIND, UNBIND, SHARE, CONTROL = 1, 2, 3, 4, 5

#: A frame larger than this is refused (a runaway peer must not make us buffer without end).
MAX_FRAME = 64 * 1024 * 1024

_NONE, _TRUE, _FALSE, _INT, _STR, _XML = 0, 1, 2, 3, 4, 5

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEAD_STANZA = struct.Struct(">BH")
_BIND_TAIL = struct.Struct(">QQ")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class CodecError(ValueError):
    """Bytes that are not a valid frame or record."""


class XML(bytes):
    """A value that is serialized XML (the SHARE of a presence stanza), not text."""

    __slots__ = ()


# -- encoding: appends to the caller's bytearray (one per peer and iteration) ------------------


def put_stanza(out: bytearray, to: bytes, xml: bytes) -> None:
    """A STANZA record for the session ``to`` (its full JID, UTF-8)."""
    if len(to) > 0xFFFF or len(xml) > 0xFFFFFFFF:
        raise CodecError(f"stanza record too large ({len(to)}-byte JID, {len(xml)}-byte XML)")
    out += _HEAD_STANZA.pack(STANZA, len(to))
    out += to
    out += _U32.pack(len(xml))
    out += xml


def put_bind(out: bytearray, jid: str, worker: int, stamp: int) -> None:
    raw = jid.encode()
    out += _HEAD_STANZA.pack(BIND, len(raw))
    out += raw
    out += _BIND_TAIL.pack(worker, stamp)


def put_unbind(out: bytearray, jid: str, worker: int) -> None:
    raw = jid.encode()
    out += _HEAD_STANZA.pack(UNBIND, len(raw))
    out += raw
    out += _U64.pack(worker)


def put_share(out: bytearray, jid: str, module: str, value: Any) -> None:
    """A SHARE record: ``value`` is None, a bool, an int, a str or :class:`XML` bytes."""
    raw, name = jid.encode(), module.encode()
    if len(name) > 255:
        raise CodecError(f"module name too long: {module!r}")
    out += _HEAD_STANZA.pack(SHARE, len(raw))
    out += raw
    out += _U8.pack(len(name))
    out += name
    if value is None:
        out.append(_NONE)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        out.append(_INT)
        out += _I64.pack(value)
    elif isinstance(value, XML):
        out.append(_XML)
        out += _U32.pack(len(value))
        out += value
    elif isinstance(value, str):
        data = value.encode()
        out.append(_STR)
        out += _U32.pack(len(data))
        out += data
    else:
        raise CodecError(f"cannot share a {type(value).__name__}")


def put_control(out: bytearray, name: str, args: dict[str, Any]) -> None:
    raw = name.encode()
    body = json.dumps(args, separators=(",", ":")).encode()
    out += _U8.pack(CONTROL)
    out += _U8.pack(len(raw))
    out += raw
    out += _U32.pack(len(body))
    out += body


def frame(body: bytes | bytearray) -> bytes:
    """The frame carrying ``body`` (records, as the ``put_*`` functions wrote them)."""
    return frame_head(body) + body


def frame_head(body: bytes | bytearray) -> bytes:
    """What goes before ``body`` in its frame (its length)."""
    if len(body) > MAX_FRAME:
        raise CodecError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _U32.pack(len(body))


# -- decoding ----------------------------------------------------------------------------------


class FrameDecoder:
    """Bytes in, records out; keeps an incomplete frame until the rest arrives."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple]:
        """The records of every frame completed by ``data``, in order."""
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < 4 or len(buf) - 4 < int.from_bytes(buf[:4], "big") <= MAX_FRAME:
                return []  # the first frame is still incomplete: no copy yet
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        # ``data`` is bytes from here on: its slices are the records' bytes, one copy each
        records: list[tuple] = []
        pos, end = 0, len(data)
        while end - pos >= 4:
            (size,) = _U32.unpack_from(data, pos)
            if size > MAX_FRAME:
                raise CodecError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            if end - pos - 4 < size:
                break
            parse_records(data, pos + 4, pos + 4 + size, records)
            pos += 4 + size
        if pos < end:
            buf += data[pos:]
        return records


def parse_records(buf: Any, pos: int, end: int, out: list[tuple]) -> None:
    """Append the records in ``buf[pos:end]`` (one frame's body) to ``out``; CodecError
    (the records before the bad one appended) if they are malformed."""
    if type(buf) is not bytes:  # a bytearray or a view: its slices would not be bytes
        buf = bytes(buf)
    if pos < 0 or end > len(buf):
        raise CodecError("frame bounds outside the buffer")
    append = out.append
    try:
        while pos < end:
            if buf[pos] == STANZA:  # the bulk of the traffic: plain index arithmetic
                start = pos + 3 + (buf[pos + 1] << 8 | buf[pos + 2])
                to = buf[pos + 3:start].decode()
                pos = start + 4
                size = _U32.unpack_from(buf, start)[0]
                start, pos = pos, pos + size
                # a size past the frame's end fails the check below: nothing past it is taken
                append((STANZA, to, buf[start:pos]))
            else:
                pos = _record(buf, pos, out)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"malformed record: {exc}") from None
    if pos != end:
        raise CodecError("a record runs past the end of its frame")


def parse_record(buf: bytes, pos: int, out: list[tuple]) -> int:
    """Append the one record at ``buf[pos]`` that is not a STANZA (the compiled twin's
    :func:`parse_records` reads those here: they are rare); where it ends.  CodecError if
    it is malformed."""
    try:
        return _record(buf, pos, out)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"malformed record: {exc}") from None


def _record(buf: bytes, pos: int, out: list[tuple]) -> int:
    kind = buf[pos]
    if kind in (BIND, UNBIND, SHARE):
        (n,) = _U16.unpack_from(buf, pos + 1)
        jid = bytes(buf[pos + 3:pos + 3 + n]).decode()
        pos += 3 + n
        if kind == BIND:
            worker, stamp = _BIND_TAIL.unpack_from(buf, pos)
            out.append((BIND, jid, worker, stamp))
            return pos + _BIND_TAIL.size
        if kind == UNBIND:
            (worker,) = _U64.unpack_from(buf, pos)
            out.append((UNBIND, jid, worker))
            return pos + 8
        m = buf[pos]
        module = bytes(buf[pos + 1:pos + 1 + m]).decode()
        pos += 1 + m
        value, pos = _value(buf, pos)
        out.append((SHARE, jid, module, value))
        return pos
    if kind == CONTROL:
        n = buf[pos + 1]
        name = bytes(buf[pos + 2:pos + 2 + n]).decode()
        pos += 2 + n
        (size,) = _U32.unpack_from(buf, pos)
        pos += 4
        body = bytes(buf[pos:pos + size])
        if len(body) != size:
            raise CodecError("truncated control record")
        args = json.loads(body)
        if not isinstance(args, dict):
            raise CodecError("control arguments are not an object")
        out.append((CONTROL, name, args))
        return pos + size
    raise CodecError(f"unknown record kind {kind}")


def _value(buf: Any, pos: int) -> tuple[Any, int]:
    tag = buf[pos]
    pos += 1
    if tag == _NONE:
        return None, pos
    if tag == _TRUE:
        return True, pos
    if tag == _FALSE:
        return False, pos
    if tag == _INT:
        return _I64.unpack_from(buf, pos)[0], pos + 8
    if tag in (_STR, _XML):
        (size,) = _U32.unpack_from(buf, pos)
        pos += 4
        data = bytes(buf[pos:pos + size])
        if len(data) != size:
            raise CodecError("truncated value")
        return (XML(data) if tag == _XML else data.decode()), pos + size
    raise CodecError(f"unknown value type {tag}")


# -- a STANZA record's element, from its start tag ---------------------------------------------

#: What :meth:`Element.to_bytes` writes for a ``jabber:client`` stanza with plain attributes:
#: ASCII names, one space before each ``name="value"``, values without ``<`` or control
#: characters.  Anything else (a namespaced attribute, another namespace...) is parsed.
_NAME = rb"[A-Za-z_][A-Za-z0-9_.\-]*"
_START = re.compile(rb"<(" + _NAME + rb")((?: " + _NAME + rb'="[^"<\x00-\x1f]*")*)(/?)>')
_ATTR = re.compile(rb" (" + _NAME + rb')="([^"]*)"')
_VALUE = re.compile(rb"(?:[^&]|&(?:amp|lt|gt|quot|#9|#10|#13);)*")
_REF = re.compile(rb"&(amp|lt|gt|quot|#9|#10|#13);")
_REFS = {b"amp": b"&", b"lt": b"<", b"gt": b">", b"quot": b'"', b"#9": b"\t", b"#10": b"\n",
         b"#13": b"\r"}


def stanza_element(data: bytes) -> Element | None:
    """The ``jabber:client`` element a peer's STANZA record carries, built from its start
    tag alone (no validating pass over what our own peer's serializer wrote): its content
    stays the record's bytes, decoded when first read; :meth:`Element.to_bytes` returns
    ``data`` itself while the element is unchanged.  None when the bytes are not in the
    form :meth:`Element.to_bytes` writes for a stanza with plain attributes (the caller
    parses them then)."""
    m = _START.match(data)
    if m is None:
        return None
    name = m.group(1)
    if m.group(3):
        if m.end() != len(data):
            return None
        inner = b""
    else:
        close = b"</" + name + b">"
        if len(data) < m.end() + len(close) or not data.endswith(close):
            return None
        inner = data[m.end():len(data) - len(close)]
    attrs: dict[str, str] = {}
    for key, value in _ATTR.findall(m.group(2)):
        if key[:3].lower() == b"xml":  # xmlns, and names XML reserves
            return None
        if b"&" in value:
            if _VALUE.fullmatch(value) is None:
                return None
            value = _REF.sub(lambda r: _REFS[r.group(1)], value)
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return None
        attr = key.decode()
        if attr in attrs:
            return None  # twice the same attribute
        attrs[attr] = text
    element = Element(name.decode(), CLIENT_NS, attrs, lazy=StanzaContent(data) if inner else None,
                      raw_inner=inner, raw_ns=CLIENT_NS)
    element._wire = (inner, CLIENT_NS, element.name, attrs.copy(), data)
    return element


#: The start of an element: ``<``, its name, then what may follow a name in its start tag
_OPEN = re.compile(rb"<(" + _NAME + rb")[ />]")


def plain_stanza(data: bytes, encoded: tuple[bytes, ...]) -> bool:
    """Whether a STANZA record's XML may be written to its recipient's stream as it came,
    with no element built.  The bytes are our own peer's serializer's, trusted to be
    well-formed (as the content always was: it is not parsed on this way), so only what
    decides the answer is checked: an element ``<name ...>...</name>`` or ``<name .../>``
    whose start tag (which ends at the first ``>``: the serializer escapes it in values)
    has no attribute whose name starts with ``xml`` (no namespace declared: a prefix
    declared there could put a payload in the content unseen; ``xml:lang`` is parsed, as
    :func:`stanza_element` leaves it), and whose content carries no element in the
    namespaces ``encoded`` (UTF-8, not ``jabber:client``), as :meth:`Element.carries`
    would answer from its content bytes: with no ``=`` in them none is declared; without a
    reference (``&``), none that is not written in them.  False: build the element (and
    ask it)."""
    m = _OPEN.match(data)
    if m is None:
        return False
    name_end = m.end(1)
    gt = data.find(b">", name_end)
    if gt < 0 or data.find(b" xml", name_end, gt) >= 0:
        return False
    if data[gt - 1] == 0x2F:  # "/>": no content
        return gt + 1 == len(data)
    tail = len(data) - (name_end - 1) - 3  # where "</name>" must start
    if tail < gt + 1 or data[tail:] != b"</" + m.group(1) + b">":
        return False
    inner = data[gt + 1:tail]
    if inner.find(b"=") < 0:
        return True
    if inner.find(b"&") >= 0:
        return False
    for ns in encoded:
        if inner.find(ns) >= 0:
            return False
    return True


def send_quiet(records: list[tuple], i: int, local: dict[str, Any], quiet: dict[Any, int],
               need: int, encoded: tuple[bytes, ...], plain: dict[type, bool],
               is_plain: Callable[[Any], bool]) -> tuple[int, int, int, int]:
    """The receiver's quiet way: write ``records[i:]`` to their recipients' streams as the
    bytes that came, for as long as each may be — a STANZA record for a session in
    ``local`` (full JID -> registry entry) whose transport writes plain bytes (``plain``,
    by type, else ``is_plain(transport)``, which fills it), whose account is quiet for
    ``need`` in ``quiet`` and whose bytes pass :func:`plain_stanza`.  A run of records to
    one session (a client's burst) is looked up once and written with one ``send_bytes``
    of their bytes joined (a plain stream only buffers them: the same bytes on the wire).
    Returns the index of the first record not written (the caller takes it the general
    way, then calls again: the order of a peer's stanzas is kept) and the messages,
    presences and IQs written."""
    messages = presences = iqs = 0
    n = len(records)
    first = i
    last = transport = None
    while i < n:
        record = records[i]
        if record[0] != STANZA:
            break
        to = record[1]
        if to != last:
            entry = local.get(to)
            if entry is None:
                break
            session = entry.session
            candidate = session.transport
            ok = plain.get(type(candidate))
            if ok is None:
                ok = is_plain(candidate)
            if not ok:
                break
            if need and quiet.get(session.bare, 0) & need != need:
                break
            if i > first:
                _write_run(transport, records, first, i)
            transport, last, first = candidate, to, i
        data = record[2]
        if not plain_stanza(data, encoded):
            break
        kind = data[1]
        if kind == 0x6D:  # m
            messages += 1
        elif kind == 0x70:  # p
            presences += 1
        else:
            iqs += 1
        i += 1
    if i > first:
        _write_run(transport, records, first, i)
    return i, messages, presences, iqs


def _write_run(transport: Any, records: list[tuple], first: int, end: int) -> None:
    """``transport.send_bytes`` of the XML of ``records[first:end]``, joined (one call)."""
    if end - first == 1:
        transport.send_bytes(records[first][2])
    else:
        transport.send_bytes(b"".join([records[k][2] for k in range(first, end)]))


# -- the sender's way --------------------------------------------------------------------------


class LinkBuffer:
    """What a stanza's way to a peer (:func:`link_stanza`) reads and updates of its link:
    the records' ``buffer``, its bound ``max_pending`` (0: none), the ``stanzas`` counted,
    whether a flush is ``scheduled``.  (The compiled twin holds them as C fields.)"""

    __slots__ = ("buffer", "max_pending", "stanzas", "scheduled")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.max_pending = 0
        self.stanzas = 0
        self.scheduled = False


def link_stanza(link: Any, to: bytes, element: Element) -> None:
    """A STANZA record for ``element`` to the session ``to`` (its full JID, UTF-8) in the
    buffer of ``link`` (a :class:`LinkBuffer` with ``schedule()`` and ``overflow(element)``,
    as :class:`~xmppd.cluster.link.RecordBuffer` is), counted, its flush scheduled; if the
    buffer holds more than ``link.max_pending`` bytes (0: no bound),
    ``link.overflow(element)`` instead."""
    buffer = link.buffer
    bound = link.max_pending
    if bound and len(buffer) > bound:
        link.overflow(element)
        return
    link.stanzas += 1
    put_stanza(buffer, to, element.to_bytes(CLIENT_NS))
    if not link.scheduled:
        link.schedule()


def send_remote(session: Any, element: Element) -> None:
    """``RemoteSession.send``: :func:`link_stanza` to the session's link and JID."""
    link_stanza(session.link, session.to, element)


class StanzaContent:
    """The children of an element :func:`stanza_element` built: its bytes parsed (with
    the validating tokenizer) when first read."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self) -> list[Element | str]:
        return stanza_content(self.data)


def stanza_content(data: bytes) -> list[Element | str]:
    """The children of the stanza ``data`` (parsed and checked by the tokenizer)."""
    try:
        return decode_stanza(data)._kids()
    except (ValueError, TokenizerError):
        # our own peer's serializer wrote it: a bug there, not input to answer
        log.error("cluster: a peer sent a stanza whose content does not parse: %r", data[:200])
        return []
