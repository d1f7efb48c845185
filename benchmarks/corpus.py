"""A realistic, deterministic XMPP client-to-server corpus for tokenizer benchmarks.

The mix: one-to-one chat messages (with chat states, receipts and some non-ASCII text),
presence with entity capabilities, roster results, and MAM result pages whose messages are
wrapped in ``<forwarded/>`` with a delay stamp.  ``corpus(n, seed)`` returns the stream
header and the stanzas; ``stream_bytes`` joins them into one client stream.
"""

from __future__ import annotations

import random

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' "
    b"xml:lang='en'>"
)

_WORDS = (
    "the quick brown fox jumps over lazy dog are you coming tonight see you at eight "
    "meeting moved to tuesday lunch sounds good thanks ok great café naïve "
    "größer Straße 日本語 привет 😀 👍 & < > \" '"
).split()

_NAMES = ["alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi", "ivan", "judy"]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    return _escape(text).replace("'", "&apos;")


def _jid(rng: random.Random, resource: bool = True) -> str:
    jid = f"{rng.choice(_NAMES)}@example.com"
    return f"{jid}/{rng.choice(['phone', 'laptop', 'Conversations.x1Z'])}" if resource else jid


def _sentence(rng: random.Random, lo: int = 3, hi: int = 25) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def chat(rng: random.Random, i: int) -> str:
    body = _escape(_sentence(rng))
    extras = "<active xmlns='http://jabber.org/protocol/chatstates'/>"
    if rng.random() < 0.5:
        extras += "<request xmlns='urn:xmpp:receipts'/>"
    if rng.random() < 0.3:
        extras += f"<origin-id xmlns='urn:xmpp:sid:0' id='o{i:08x}'/>"
    return (
        f"<message type='chat' to='{_jid(rng)}' id='m{i}'>"
        f"<body>{body}</body>{extras}</message>"
    )


def chat_state(rng: random.Random, i: int) -> str:
    state = rng.choice(["composing", "paused", "inactive"])
    return (
        f"<message type='chat' to='{_jid(rng)}' id='cs{i}'>"
        f"<{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )


def receipt(rng: random.Random, i: int) -> str:
    return (
        f"<message to='{_jid(rng)}' id='r{i}'>"
        f"<received xmlns='urn:xmpp:receipts' id='m{rng.randint(0, 10**6)}'/></message>"
    )


def presence(rng: random.Random, i: int) -> str:
    show = rng.choice(["", "<show>away</show>", "<show>dnd</show>", "<show>xa</show>"])
    status = f"<status>{_escape(_sentence(rng, 1, 6))}</status>" if rng.random() < 0.4 else ""
    return (
        f"<presence id='p{i}'>{show}{status}<priority>{rng.randint(-1, 10)}</priority>"
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
        "node='https://conversations.im' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>"
        "<x xmlns='vcard-temp:x:update'><photo>8d3a9c0e2b1f4d5a6c7b8e9f0a1b2c3d4e5f6a7b</photo></x>"
        "</presence>"
    )


def roster(rng: random.Random, i: int) -> str:
    items = "".join(
        f"<item jid='{name}{k}@example.com' name='{_attr(name.title())} {k}' subscription='both'>"
        f"<group>{rng.choice(['Friends', 'Work', 'Família'])}</group></item>"
        for k, name in enumerate(rng.sample(_NAMES, rng.randint(3, 10)))
    )
    return f"<iq type='result' id='roster{i}' to='{_jid(rng)}'><query xmlns='jabber:iq:roster' ver='v{i}'>{items}</query></iq>"


def mam_result(rng: random.Random, i: int) -> str:
    stamp = f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    inner = (
        f"<message xmlns='jabber:client' type='chat' from='{_jid(rng)}' to='{_jid(rng)}' id='a{i}'>"
        f"<body>{_escape(_sentence(rng))}</body>"
        "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    return (
        f"<message to='{_jid(rng)}' id='mam{i}'>"
        f"<result xmlns='urn:xmpp:mam:2' queryid='q1' id='{rng.getrandbits(64):016x}'>"
        f"<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='{stamp}'/>"
        f"{inner}</forwarded></result></message>"
    )


_KINDS = [(chat, 40), (chat_state, 15), (receipt, 10), (presence, 15), (roster, 3), (mam_result, 17)]


def corpus(n: int = 2000, seed: int = 6120) -> list[bytes]:
    """``n`` stanzas drawn from the weighted mix, reproducibly."""
    rng = random.Random(seed)
    kinds = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
    return [rng.choices(kinds, weights)[0](rng, i).encode() for i in range(n)]


def stream_bytes(n: int = 2000, seed: int = 6120) -> tuple[bytes, int]:
    """(the stream header plus ``n`` stanzas, the number of stanzas)."""
    stanzas = corpus(n, seed)
    return HEADER + b"".join(stanzas), len(stanzas)


def chunks(data: bytes, size: int = 4096) -> list[bytes]:
    """``data`` cut as socket reads would cut it."""
    return [data[i : i + size] for i in range(0, len(data), size)]
