"""asv suite: the stream tokenizer, compiled and pure twins, with pyexpat as a baseline.

The corpus is generated here (asv imports this file alone, without the repository's
``benchmarks`` package): chats with chat states and receipts, presence with caps, and MAM
results with forwarded messages, some non-ASCII, always the same bytes.
"""

from __future__ import annotations

import importlib
import pyexpat
import random

IMPLS = ["xmppd._speedups.tokenizer", "xmppd.xml._tokenizer_pure"]
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"
)


def _load(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise NotImplementedError(f"{name} is not built") from None  # asv skips it


def _corpus(n: int = 1000, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    words = "hello there how are you café 日本 😀 &amp; &lt;3 meeting at eight".split()
    out = [HEADER]
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(3, 20)))
        kind = i % 4
        if kind == 0:
            out.append(
                f"<message type='chat' to='bob@example.com/x' id='m{i}'><body>{body}</body>"
                "<active xmlns='http://jabber.org/protocol/chatstates'/>"
                "<request xmlns='urn:xmpp:receipts'/></message>".encode()
            )
        elif kind == 1:
            out.append(
                f"<presence id='p{i}'><show>away</show><c xmlns='http://jabber.org/protocol/caps'"
                " hash='sha-1' node='n' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/></presence>".encode()
            )
        elif kind == 2:
            out.append(
                f"<message id='mam{i}'><result xmlns='urn:xmpp:mam:2' id='r{i}'>"
                "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay'"
                " stamp='2026-11-25T10:00:00Z'/><message xmlns='jabber:client' from='a@b/c'"
                f" type='chat'><body>{body}</body></message></forwarded></result></message>".encode()
            )
        else:
            out.append(
                f"<message to='c@d' id='r{i}'><received xmlns='urn:xmpp:receipts' id='m{i}'/>"
                "</message>".encode()
            )
    return b"".join(out)


DATA = _corpus()
CHUNKS = [DATA[i : i + 4096] for i in range(0, len(DATA), 4096)]


class TimeTokenizer:
    """One 1000-stanza client stream in 4 KiB chunks (see ``bench_tokenizer.py`` for MB/s)."""

    params = (IMPLS, ["envelope", "full"])
    param_names = ["impl", "children"]

    def setup(self, impl: str, children: str) -> None:
        self.mod = _load(impl)

    def time_stream(self, impl: str, children: str) -> None:
        tok = self.mod.Tokenizer(max_stanza_size=1 << 20)
        full = children == "full"
        for chunk in CHUNKS:
            for event in tok.feed(chunk):
                if full and hasattr(event, "children"):
                    event.children  # noqa: B018 - materializes the subtree


class TimePyexpatBaseline:
    """The same stream through pyexpat, with no-op handlers."""

    def time_pyexpat_noop(self) -> None:
        parser = pyexpat.ParserCreate("UTF-8", "\x01")
        parser.StartElementHandler = parser.EndElementHandler = lambda *a: None
        parser.CharacterDataHandler = lambda *a: None
        for chunk in CHUNKS:
            parser.Parse(chunk, False)


class TrackIdleTokenizer:
    """Bytes held per tokenizer between stanzas (tracemalloc over 1000 of them)."""

    params = IMPLS
    param_names = ["impl"]
    unit = "bytes"

    def setup(self, impl: str) -> None:
        self.mod = _load(impl)

    def track_idle_bytes(self, impl: str) -> float:
        import gc
        import tracemalloc

        first = DATA[: DATA.index(b"</message>") + len(b"</message>")]
        gc.collect()
        tracemalloc.start()
        start = tracemalloc.get_traced_memory()[0]
        toks = []
        for _ in range(1000):
            tok = self.mod.Tokenizer()
            tok.feed(first)
            toks.append(tok)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
        tracemalloc.stop()
        return held / len(toks)
