"""The fuzz harnesses (``fuzz/``) run in the normal suite: over their seed corpora, a few
hundred generated inputs, and against deliberately broken twins that they must catch."""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
HARNESSES = ("tokenizer", "jid", "sasl", "wsframe", "clustercodec", "serialize")


def harness(name: str) -> ModuleType:
    """``fuzz/fuzz_<name>.py``, imported as a module."""
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    return importlib.import_module(f"fuzz_{name}")


def _seeds() -> list:
    return [
        pytest.param(name, path, id=f"{name}/{path.name}")
        for name in HARNESSES
        for path in sorted((FUZZ_DIR / "corpus" / name).iterdir())
    ]


SMOKE = settings(max_examples=150, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("name", "path"), _seeds())
def test_seed_corpus(name: str, path: Path) -> None:
    harness(name).test_one_input(path.read_bytes())


@pytest.mark.parametrize("name", HARNESSES)
def test_seed_mutants(name: str) -> None:
    """The mutator of the no-atheris fallback, on a fixed seed: a few hundred inputs."""
    mod = harness(name)
    driver = importlib.import_module("_driver")  # on sys.path once a harness is loaded
    pool = [p.read_bytes() for p in driver.seed_files(name)]
    rng = random.Random(1234)
    for _ in range(60 if name == "sasl" else 300):
        mod.test_one_input(driver._mutate(rng, rng.choice(pool), pool))


def test_corpora_are_small() -> None:
    for name in HARNESSES:
        files = list((FUZZ_DIR / "corpus" / name).iterdir())
        assert 3 <= len(files) <= 20, name
        assert all(f.stat().st_size <= 4096 for f in files), name


# -- generated inputs ----------------------------------------------------------------------

_XML_TOKENS = [
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    b"</stream:stream>", b"<message>", b"</message>", b"<body>", b"</body>", b"<a/>",
    b"<b x='1'>", b"</b>", b"xmlns:p='urn:p'", b"<p:c/>", b" ", b"\n", b"text", b"&amp;",
    b"&#x263A;", b"&bogus;", b"<!-- c -->", b"<?pi?>", b"<![CDATA[x]]>", b"\xc3\xa9",
    b"\xc3", b"\xff", b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", b"'", b'"', b"=", b">", b"<",
]


@SMOKE
@given(
    limits=st.integers(0, 255),
    seed=st.binary(min_size=4, max_size=4),
    body=st.lists(st.sampled_from(_XML_TOKENS), max_size=25).map(b"".join),
)
def test_tokenizer_generated(limits: int, seed: bytes, body: bytes) -> None:
    mod = harness("tokenizer")
    mod.test_one_input(mod.encode(body, limits=limits, seed=seed))


@SMOKE
@given(st.binary(max_size=200))
def test_tokenizer_bytes(data: bytes) -> None:
    harness("tokenizer").test_one_input(data)


_JID_TEXT = st.text(
    st.one_of(st.sampled_from("@/.[]:-xn\u3002\uff0e\u00df\u0130\u05d0\u0627\u0301 "),
              st.characters(codec="utf-8")),
    max_size=40,
)


@SMOKE
@given(op=st.sampled_from(harness("jid").OPS), text=_JID_TEXT)
def test_jid_generated(op: str, text: str) -> None:
    mod = harness("jid")
    mod.test_one_input(mod.encode(text, op))


@SMOKE
@given(st.binary(max_size=120))
def test_jid_bytes(data: bytes) -> None:
    harness("jid").test_one_input(data)


@settings(SMOKE, max_examples=80)
@given(st.binary(max_size=200))
def test_sasl_bytes(data: bytes) -> None:
    harness("sasl").test_one_input(data)


@settings(SMOKE, max_examples=60)
@given(conf=st.integers(0, 255), tamper=st.integers(0, 255),
       picks=st.lists(st.integers(0, 0xEF), min_size=5, max_size=5))
def test_sasl_client_generated(conf: int, tamper: int, picks: list[int]) -> None:
    user, pw, authz, flag, nonce = picks
    harness("sasl").test_one_input(bytes([conf, 2, user, pw, authz, tamper, flag, nonce]))


# -- the harnesses catch what they are meant to catch ------------------------------------


_FRAME_TOKENS = [b"\x81", b"\x01", b"\x80", b"\x82", b"\x88", b"\x89", b"\x8a", b"\xc1", b"\x83",
                 b"\x85", b"\x7e", b"\xfe", b"\xff", b"\x00\x7e", b"\x00\x00\x00\x00",
                 b"\x01\x02\x03\x04", b"\x03\xe8", b"<a/>", b"\xc3\xa9", b"\xc3", b"x" * 130]


@SMOKE
@given(mode=st.integers(0, 255), cuts=st.binary(min_size=4, max_size=4),
       body=st.lists(st.sampled_from(_FRAME_TOKENS), max_size=30).map(b"".join))
def test_wsframe_generated(mode: int, cuts: bytes, body: bytes) -> None:
    mod = harness("wsframe")
    mod.test_one_input(mod.encode(body, mode=mode, cuts=cuts))


def test_wsframe_harness_catches_a_divergent_twin(monkeypatch) -> None:
    mod = harness("wsframe")
    pure = mod._wsframe_pure

    class LaxMask(pure.FrameDecoder):
        def __init__(self, size: int, require_mask: bool = True) -> None:
            super().__init__(size, False)  # accepts unmasked frames

    fake = ModuleType("fake_wsframe")
    fake.FrameDecoder = LaxMask
    monkeypatch.setitem(mod.IMPLS, "fake", fake)
    mod.test_one_input(mod.encode(pure.encode_frame(1, b"<a/>", True, b"abcd")))
    with pytest.raises(AssertionError):
        mod.test_one_input(mod.encode(pure.encode_frame(1, b"<a/>")))


_RECORD_TOKENS = [b"\x00\x00\x00", b"\x01\x00\x05a@b/c", b"\x00\x00\x00\x0b", b"<presence/>",
                  b'<message to="a@b/c">', b"</message>", b'<iq id="&amp;"/>', b"\x02", b"\x05",
                  b"\xc3\xa9", b"\xff", b" xml:lang=\"en\""]


@SMOKE
@given(cuts=st.binary(min_size=4, max_size=4),
       frames=st.lists(st.lists(st.sampled_from(_RECORD_TOKENS), max_size=8).map(b"".join),
                       max_size=4))
def test_clustercodec_generated(cuts: bytes, frames: list[bytes]) -> None:
    mod = harness("clustercodec")
    mod.test_one_input(mod.encode(b"".join(len(f).to_bytes(4, "big") + f for f in frames), cuts))


def _clustercodec_catches(monkeypatch, fake: ModuleType, good: bytes, bad: bytes) -> None:
    """The harness with ``fake`` as a third twin: silent on a STANZA record of ``good``
    XML, an AssertionError on ``bad``."""
    mod = harness("clustercodec")
    pure = mod.codec
    fake.FrameDecoder, fake.parse_records = pure.FrameDecoder, pure.parse_records
    monkeypatch.setitem(mod.IMPLS, "fake", fake)
    for xml, fails in ((good, False), (bad, True)):
        body = bytearray()
        pure.put_stanza(body, b"a@b/c", xml)
        if fails:
            with pytest.raises(AssertionError):
                mod.test_one_input(mod.encode(pure.frame(body)))
        else:
            mod.test_one_input(mod.encode(pure.frame(body)))


def test_clustercodec_harness_catches_a_divergent_twin(monkeypatch) -> None:
    pure = harness("clustercodec").codec
    fake = ModuleType("fake_clustercodec")
    # builds what the serializer never writes
    fake.stanza_element = lambda data: pure.stanza_element(data.replace(b"xml:lang", b"lang"))
    fake.plain_stanza = pure.plain_stanza
    _clustercodec_catches(monkeypatch, fake, b'<message to="a@b/c"/>', b'<message xml:lang="en"/>')


def test_clustercodec_harness_catches_a_divergent_plain_stanza(monkeypatch) -> None:
    pure = harness("clustercodec").codec
    fake = ModuleType("fake_clustercodec")
    fake.stanza_element = pure.stanza_element
    fake.plain_stanza = lambda data, encoded: pure.stanza_element(data) is not None  # no content check
    _clustercodec_catches(monkeypatch, fake, b'<message to="a@b/c"><body>hi</body></message>',
                          b'<message to="a@b/c"><x xmlns="urn:x"/></message>')


def test_tokenizer_harness_catches_a_divergent_twin(monkeypatch) -> None:
    mod = harness("tokenizer")
    pure = mod._tokenizer_pure

    class DropsText(pure.Tokenizer):
        def _text(self, data: str) -> None:  # loses character data inside stanzas
            if self._depth <= 1:
                super()._text(data)

    fake = ModuleType("fake_tokenizer")
    fake.Tokenizer = DropsText
    monkeypatch.setitem(mod.IMPLS, "fake", fake)
    ok = mod.encode(b"<s xmlns='jabber:client'><a/>")
    mod.test_one_input(ok)
    with pytest.raises(AssertionError, match="diverge"):
        mod.test_one_input(mod.encode(b"<s xmlns='jabber:client'><a>hi</a>"))


def test_tokenizer_harness_catches_a_split_dependence(monkeypatch) -> None:
    mod = harness("tokenizer")
    pure = mod._tokenizer_pure

    class ForgetsOnSplit(pure.Tokenizer):
        def feed(self, data: bytes) -> list:
            events = super().feed(data)
            return events if len(data) > 3 else []  # drops events completed by short chunks

    fake = ModuleType("fake_tokenizer")
    fake.Tokenizer = ForgetsOnSplit
    monkeypatch.setattr(mod, "IMPLS", {"pure": fake})
    with pytest.raises(AssertionError, match="split"):
        mod.test_one_input(mod.encode(b"<s><a/>", seed=b"\x01\x00\x00\x00"))


def test_jid_harness_catches_a_divergent_twin(monkeypatch) -> None:
    mod = harness("jid")
    pure = mod._jid_pure

    def lower_resource(raw: str) -> str:
        return pure.prep_resourcepart(raw).lower()

    fake = ModuleType("fake_jid")
    fake.__dict__.update({k: getattr(pure, k) for k in pure.__all__})
    fake.prep_resourcepart = lower_resource
    monkeypatch.setitem(mod.IMPLS, "fake", fake)
    mod.test_one_input(mod.encode("res", "resourcepart"))
    with pytest.raises(AssertionError, match="diverge"):
        mod.test_one_input(mod.encode("Res", "resourcepart"))


def test_sasl_harness_catches_a_wrong_password(monkeypatch) -> None:
    mod = harness("sasl")
    import xmppd.c2s.sasl

    seed = (FUZZ_DIR / "corpus" / "sasl" / "plain-wrong").read_bytes()
    mod.test_one_input(seed)
    monkeypatch.setattr(xmppd.c2s.sasl, "_plain_matches", lambda password, creds: True)
    with pytest.raises(AssertionError, match="wrong password"):
        mod.test_one_input(seed)


def test_sasl_harness_catches_a_skipped_proof_check(monkeypatch) -> None:
    mod = harness("sasl")
    import xmppd.c2s.sasl

    seed = (FUZZ_DIR / "corpus" / "sasl" / "client-scram-tamper").read_bytes()
    mod.test_one_input(seed)
    monkeypatch.setattr(xmppd.c2s.sasl.hmac, "compare_digest", lambda a, b: True)
    with pytest.raises(AssertionError, match="tampered"):
        mod.test_one_input(seed)


def test_honest_clients_succeed(monkeypatch) -> None:
    """Otherwise the success invariants would hold vacuously."""
    mod = harness("sasl")
    seen: list[str] = []
    check = mod._check_success
    monkeypatch.setattr(mod, "_check_success",
                        lambda step, **kw: (seen.append(step.username), check(step, **kw)))
    for name in ("plain-ok", "plain-base64", "client-scram-ok", "client-scram-plus",
                 "client-scram-authzid", "client-plain"):
        mod.test_one_input((FUZZ_DIR / "corpus" / "sasl" / name).read_bytes())
    assert seen == ["alice", "m\u00fcller", "alice", "alice", "alice", "m\u00fcller"]


_ATTR_TOKENS = [b"to", b"id", b"a@b/c", b"&", b"<", b'"', b"\t", b"\r", b"\xc3\xa9", b"\xff", b"{",
                b"{urn:y}a", b""]


@SMOKE
@given(mode=st.integers(0, 255),
       attrs=st.dictionaries(st.lists(st.sampled_from(_ATTR_TOKENS), max_size=3).map(b"".join),
                             st.lists(st.sampled_from(_ATTR_TOKENS), max_size=4).map(b"".join),
                             max_size=5),
       raw=st.sampled_from([b"", b"<body>hi</body>", b"x"]))
def test_serialize_generated(mode: int, attrs: dict[bytes, bytes], raw: bytes) -> None:
    mod = harness("serialize")
    mod.test_one_input(mod.encode(mode, attrs, raw))


def test_serialize_harness_catches_a_divergent_twin(monkeypatch) -> None:
    mod = harness("serialize")
    pure = mod._element.forward_bytes
    fake = ModuleType("fake_serialize")
    # forgets to escape ">" (the one escape a parser would not miss)
    fake.forward_bytes = lambda *args: pure(*args).replace(b"&gt;", b">")
    monkeypatch.setitem(mod.IMPLS, "fake", fake)
    mod.test_one_input(mod.encode(0, {b"id": b"a<b"}))
    with pytest.raises(AssertionError):
        mod.test_one_input(mod.encode(0, {b"id": b"a>b"}))
