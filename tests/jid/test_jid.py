"""JID preparation (RFC 7622): both implementations, the same answers."""

from __future__ import annotations

import copy
import importlib
import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from precis_i18n import get_profile

import xmppd.jid._pure as pure


def _compiled():
    try:
        return importlib.import_module("xmppd._speedups.jid")
    except ImportError as exc:  # pragma: no cover - depends on the build
        from xmppd._impl import REQUIRE_EXTENSIONS

        if REQUIRE_EXTENSIONS:
            raise
        pytest.skip(f"xmppd._speedups.jid not built: {exc}")


def outcome(mod, text):
    """What an implementation makes of ``text``: the parts, or the error's part and reason."""
    try:
        jid = mod.JID(text)
    except mod.JIDError as exc:
        return ("error", exc.part, exc.reason)
    return ("ok", jid.full, jid.localpart, jid.domain, jid.resource)


# ---------------------------------------------------------------------------
# RFC 7622 §3.5 and §3.6

RFC_VALID = [
    ("juliet@example.com", "juliet@example.com"),
    ("juliet@example.com/foo", "juliet@example.com/foo"),
    ("juliet@example.com/foo bar", "juliet@example.com/foo bar"),
    ("juliet@example.com/foo@bar", "juliet@example.com/foo@bar"),
    ("foo\\20bar@example.com", "foo\\20bar@example.com"),
    ("fussball@example.com", "fussball@example.com"),
    ("fu\u00dfball@example.com", "fu\u00dfball@example.com"),
    ("\u03c0@example.com", "\u03c0@example.com"),
    ("\u03a3@example.com/foo", "\u03c3@example.com/foo"),
    ("\u03c3@example.com/foo", "\u03c3@example.com/foo"),
    ("\u03c2@example.com/foo", "\u03c2@example.com/foo"),
    ("king@example.com/\u265a", "king@example.com/\u265a"),
    ("example.com", "example.com"),
    ("example.com/foobar", "example.com/foobar"),
    ("a.example.com/b@example.net", "a.example.com/b@example.net"),
]

RFC_INVALID = [
    ('"juliet"@example.com', "localpart"),
    ("foo bar@example.com", "localpart"),
    ("juliet@example.com/ foo", None),  # valid: a leading space is fine in a resource
    ("@example.com/", "localpart"),
    ("henry\u2163@example.com", "localpart"),
    ("\u265a@example.com", "localpart"),
    ("juliet@", "domainpart"),
    ("/foobar", "domainpart"),
    ("juliet@example.com/", "resourcepart"),
]


@pytest.mark.parametrize(("text", "expected"), RFC_VALID)
def test_rfc7622_valid_examples(jid_impl, text, expected):
    jid = jid_impl.JID(text)
    assert jid.full == expected
    assert str(jid) == expected


@pytest.mark.parametrize(("text", "part"), RFC_INVALID)
def test_rfc7622_invalid_examples(jid_impl, text, part):
    if part is None:
        assert jid_impl.JID(text).resource == " foo"
        return
    with pytest.raises(jid_impl.JIDError) as info:
        jid_impl.JID(text)
    assert info.value.part == part


def test_split_first_slash_then_first_at(jid_impl):
    jid = jid_impl.JID("a@b/c@d/e")
    assert (jid.localpart, jid.domain, jid.resource) == ("a", "b", "c@d/e")
    jid = jid_impl.JID("a/b@c")
    assert (jid.localpart, jid.domain, jid.resource) == (None, "a", "b@c")
    with pytest.raises(jid_impl.JIDError) as info:
        jid_impl.JID("a@b@c")
    assert (info.value.part, info.value.reason) == ("domainpart", "invalid character")


# ---------------------------------------------------------------------------
# PRECIS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\uff2a\uff55\uff4c\uff49\uff45\uff54@example.com", "juliet@example.com"),  # fullwidth
        ("JULIET@example.com", "juliet@example.com"),
        ("\u00c9lodie@example.com", "\u00e9lodie@example.com"),
        ("E\u0301lodie@example.com", "\u00e9lodie@example.com"),  # NFC
        ("juliet@example.com/Balcony", "juliet@example.com/Balcony"),  # no case map
        ("juliet@example.com/\u00c9T\u00c9", "juliet@example.com/\u00c9T\u00c9"),
        ("juliet@example.com/a b  c", "juliet@example.com/a b  c"),
        ("juliet@example.com/a\u00a0b", "juliet@example.com/a b"),  # non-ASCII space mapped
        ("\u05e9\u05dc\u05d5\u05dd@example.com", "\u05e9\u05dc\u05d5\u05dd@example.com"),
    ],
)
def test_precis_mappings(jid_impl, text, expected):
    assert jid_impl.JID(text).full == expected


@pytest.mark.parametrize(
    ("text", "part", "reason"),
    [
        ("a b@example.com", "localpart", "disallowed/spaces"),
        ("a\u00a0b@example.com", "localpart", "disallowed/has_compat"),
        ("a\tb@example.com", "localpart", "disallowed/controls"),
        ("a\x7f@example.com", "localpart", "disallowed/controls"),
        ("a\x01 b@example.com", "localpart", "disallowed/controls"),  # the first offender
        ('a"b c@example.com', "localpart", "disallowed/spaces"),  # PRECIS before §3.3.1
        ("\u05d0a1@example.com", "localpart", "disallowed/bidi_rule"),
        ("\ufb00@example.com", "localpart", "disallowed/has_compat"),
        ("x@example.com/a\x00b", "resourcepart", "disallowed/controls"),
        ("x@example.com/\u00e9\x1b", "resourcepart", "disallowed/controls"),
        ("x&y@example.com", "localpart", "forbidden character"),
        ("x:y@example.com", "localpart", "forbidden character"),
        ("x<y>@example.com", "localpart", "forbidden character"),
        ("x'@example.com", "localpart", "forbidden character"),
        ("\uff06@example.com", "localpart", "forbidden character"),  # fullwidth & maps to &
    ],
)
def test_precis_rejections(jid_impl, text, part, reason):
    with pytest.raises(jid_impl.JIDError) as info:
        jid_impl.JID(text)
    assert (info.value.part, info.value.reason) == (part, reason)
    assert part in str(info.value) and reason in str(info.value)


# ---------------------------------------------------------------------------
# Domainparts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("EXAMPLE.Com", "example.com"),
        ("example.com.", "example.com"),
        ("juliet@example.com./r", "juliet@example.com/r"),
        ("example\u3002com\u3002", "example.com"),
        ("\uff45xample.com", "example.com"),
        ("\u2163.example", "iv.example"),  # UTS #46 mapping
        ("xn--bcher-kva.example", "b\u00fccher.example"),
        ("XN--BCHER-KVA.example", "b\u00fccher.example"),
        ("B\u00dcCHER.example", "b\u00fccher.example"),
        ("[::1]", "[::1]"),
        ("[2001:DB8:0:0:0:0:0:0001]", "[2001:db8::1]"),
        ("u@[::1]/r", "u@[::1]/r"),
        ("192.0.2.1", "192.0.2.1"),
        ("localhost", "localhost"),
        ("a-b.c", "a-b.c"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_domain_normalization(jid_impl, text, expected):
    assert jid_impl.JID(text).full == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a..b", "empty label"),
        (".a", "empty label"),
        ("a..", "empty label"),
        ("a" * 64 + ".com", "label too long"),
        ("a_b.example", "invalid character"),
        ("-ab.example", "hyphen at label start or end"),
        ("ab-.example", "hyphen at label start or end"),
        ("ab--cd.example", "hyphens in 3rd and 4th position"),
        ("[::1", "invalid IP literal"),
        ("[]", "invalid IP literal"),
        ("[1.2.3.4]", "invalid IP literal"),
        ("[fe80::1%eth0]", "invalid IP literal"),
        ("[\uff11::]", "invalid IP literal"),
    ],
)
def test_domain_rejections(jid_impl, text, reason):
    with pytest.raises(jid_impl.JIDError) as info:
        jid_impl.JID(text)
    assert (info.value.part, info.value.reason) == ("domainpart", reason)


@pytest.mark.parametrize(
    "text", ["xn--zz.example", "xn---bbk.example", "\u2665.example", "a\u200db.example"]
)
def test_idna_rejections(jid_impl, text):
    with pytest.raises(jid_impl.JIDError) as info:
        jid_impl.JID(text)
    assert info.value.part == "domainpart"
    assert info.value.reason.startswith("idna: ")


def test_a_label_and_u_label_are_one_jid(jid_impl):
    assert jid_impl.JID("x@xn--bcher-kva.example") == jid_impl.JID("x@b\u00fccher.example")


# ---------------------------------------------------------------------------
# Lengths and empty parts


@pytest.mark.parametrize("sep_text", ["@example.com", "x@", "x@example.com/", "@", "/", "x@/r"])
def test_empty_parts(jid_impl, sep_text):
    with pytest.raises(jid_impl.JIDError) as info:
        jid_impl.JID(sep_text)
    assert info.value.reason == "empty"


def test_length_limits(jid_impl):
    J, E = jid_impl.JID, jid_impl.JIDError
    assert J("a" * 1023 + "@x").localpart == "a" * 1023
    assert J("x/" + "\u00e9" * 511 + "a").resource == "\u00e9" * 511 + "a"  # 1023 octets
    long_domain = ".".join(["a" * 63] * 16)  # 1023 characters
    assert J(long_domain).domain == long_domain
    assert J(long_domain + ".").domain == long_domain
    for text, part in [
        ("a" * 1024 + "@x", "localpart"),
        ("\u00e9" * 512 + "@x", "localpart"),
        ("x/" + "r" * 1024, "resourcepart"),
        ("x/" + "\u00e9" * 512, "resourcepart"),
        (long_domain + ".b", "domainpart"),
        ("x/" + "r" * 100_000, "resourcepart"),
        ("x/" + "\u00e9" * 100_000, "resourcepart"),
    ]:
        with pytest.raises(E) as info:
            J(text)
        assert (info.value.part, info.value.reason) == (part, "too long")


# ---------------------------------------------------------------------------
# The JID type


def test_parts_and_views(jid_impl):
    jid = jid_impl.JID("Juliet@Example.com/Balcony")
    assert (jid.localpart, jid.domain, jid.domainpart, jid.resource) == (
        "juliet",
        "example.com",
        "example.com",
        "Balcony",
    )
    assert not jid.is_bare
    assert jid.bare == jid_impl.JID("juliet@example.com")
    assert jid.bare.is_bare and jid.bare.resource is None
    assert jid.bare.bare == jid.bare
    assert jid.with_resource("Orchard").full == "juliet@example.com/Orchard"
    assert jid.with_resource(None) == jid.bare
    assert repr(jid) == "JID('juliet@example.com/Balcony')"
    domain_only = jid_impl.JID("example.com")
    assert (domain_only.localpart, domain_only.resource, domain_only.is_bare) == (None, None, True)
    with pytest.raises(jid_impl.JIDError) as info:
        jid.with_resource("")
    assert info.value.part == "resourcepart"


def test_from_parts(jid_impl):
    J = jid_impl.JID
    assert J.from_parts("Juliet", "EXAMPLE.com.", "r") == J("juliet@example.com/r")
    assert J.from_parts(None, "example.com").full == "example.com"
    assert J.from_parts("x", "example.com", None).is_bare
    for args, part in [
        (("a@b", "example.com"), "localpart"),
        (("a", "b/c"), "domainpart"),
        (("", "example.com"), "localpart"),
        (("a", "b", ""), "resourcepart"),
    ]:
        with pytest.raises(jid_impl.JIDError) as info:
            J.from_parts(*args)
        assert info.value.part == part


def test_equality_hash_and_strings(jid_impl):
    J = jid_impl.JID
    a, b = J("Romeo@Example.NET/Phone"), J("romeo@example.net/Phone")
    assert a == b and hash(a) == hash(b) and not (a != b)
    assert len({a, b, J("romeo@example.net/phone")}) == 2
    assert a != "romeo@example.net/Phone"  # strict: a JID never equals a str
    assert "romeo@example.net/Phone" != a
    assert str(a) == "romeo@example.net/Phone"


def test_immutable_and_copyable(jid_impl):
    jid = jid_impl.JID("x@example.com/r")
    with pytest.raises(AttributeError):
        jid.localpart = "y"
    with pytest.raises(AttributeError):
        jid._full = "y@example.com"
    assert jid.full == "x@example.com/r"
    assert pickle.loads(pickle.dumps(jid)) == jid
    assert copy.copy(jid) == jid and copy.deepcopy(jid) == jid
    assert jid_impl.JID(jid) == jid
    with pytest.raises(TypeError):
        jid_impl.JID(b"x@example.com")


def test_error_type(jid_impl):
    with pytest.raises(ValueError) as info:
        jid_impl.JID("x@")
    err = info.value
    assert isinstance(err, jid_impl.JIDError)
    assert str(err) == "invalid domainpart: empty"
    again = pickle.loads(pickle.dumps(err))
    assert (again.part, again.reason) == (err.part, err.reason)


def test_identity_fast_path(jid_impl):
    text = "".join(["user", "@example.org/", "res", str(os.getpid())])  # a fresh object
    assert jid_impl.normalize(text) is text
    assert jid_impl.JID(text).full is text
    upper = "".join(["User", "@example.org"])
    assert jid_impl.normalize(upper) == "user@example.org"
    uni = "".join(["\u00e9", "@example.org/", "r"])
    assert jid_impl.normalize(uni) is uni


def test_cache_is_bounded(jid_impl):
    jid_impl.cache_clear()
    assert jid_impl.cache_info() == (0, jid_impl.CACHE_SIZE)
    for i in range(jid_impl.CACHE_SIZE + 50):
        jid_impl.JID(f"u@[::{i:x}]")  # IP literals take the slow path in both twins
    size, cap = jid_impl.cache_info()
    assert size == cap == jid_impl.CACHE_SIZE
    # A cached answer is the same answer.
    first = jid_impl.JID("\u00c9@B\u00dcCHER.example")
    assert jid_impl.JID("\u00c9@B\u00dcCHER.example") == first
    jid_impl.cache_clear()
    assert jid_impl.cache_info()[0] == 0


def test_same_public_api():
    compiled = _compiled()
    assert sorted(compiled.__all__) == sorted(pure.__all__)
    for name in pure.__all__:
        assert hasattr(compiled, name), name
    public = {n for n in dir(pure.JID) if not n.startswith("_")}
    assert public <= set(dir(compiled.JID))


# ---------------------------------------------------------------------------
# Which implementation xmppd.jid uses


def test_public_module_uses_the_expected_implementation():
    import xmppd.jid
    from xmppd._impl import CHOSEN, PURE_PYTHON

    if PURE_PYTHON:
        assert CHOSEN["jid"] == "pure"
        assert xmppd.jid.JID is pure.JID
    else:
        # A silent fall back to pure Python would be a performance bug.
        assert CHOSEN["jid"] == "compiled"
        assert xmppd.jid.JID is _compiled().JID


@pytest.mark.parametrize(("flag", "expected"), [("1", "pure"), ("0", "compiled")])
def test_environment_forces_pure_python(flag, expected):
    if expected == "compiled":
        _compiled()
    code = "import xmppd.jid, xmppd._impl as i; print(i.CHOSEN['jid'], xmppd.jid.JID.__module__)"
    env = dict(os.environ, XMPPD_PURE_PYTHON=flag)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == expected
    assert out[1] == ("xmppd.jid._pure" if expected == "pure" else "xmppd._speedups.jid")


# ---------------------------------------------------------------------------
# Properties: the twins agree, preparation is idempotent, the ASCII path matches PRECIS

ASCII_HEAVY = st.lists(
    st.sampled_from(list("aZz09-._@/ \"&'[]:%\x00\x7f\t") + ["xn--", "\u00e9", "\u00df"]),
    max_size=24,
).map("".join)
PART = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="@/"), max_size=8)
STRUCTURED = st.builds(
    lambda local, domain, resource: (
        (local + "@" if local else "") + domain + ("/" + resource if resource else "")
    ),
    st.one_of(st.none(), PART, st.from_regex(r"[A-Za-z0-9._-]{1,8}", fullmatch=True)),
    st.one_of(
        PART, st.from_regex(r"[A-Za-z0-9-]{1,8}(\.[A-Za-z0-9-]{1,8}){0,2}\.?", fullmatch=True)
    ),
    st.one_of(st.none(), st.text(max_size=8)),
)
ANY_TEXT = st.one_of(ASCII_HEAVY, STRUCTURED, st.text(max_size=16))
# The implementation fixture holds a module: nothing to reset between examples.
PROPS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@PROPS
@given(ANY_TEXT)
def test_twins_agree(text):
    compiled = _compiled()
    assert outcome(compiled, text) == outcome(pure, text)
    try:
        expected = pure.normalize(text)
    except pure.JIDError:
        return
    assert compiled.normalize(text) == expected


@PROPS
@given(ANY_TEXT)
def test_idempotent(jid_impl, text):
    try:
        jid = jid_impl.JID(text)
    except jid_impl.JIDError:
        return
    again = jid_impl.JID(jid.full)
    assert again.full == jid.full
    assert jid_impl.JID.from_parts(jid.localpart, jid.domain, jid.resource) == jid


@PROPS
@given(st.text(alphabet=st.characters(max_codepoint=127), min_size=1, max_size=12))
def test_ascii_path_matches_precis(text):
    for prep, profile in (
        (pure.prep_localpart, "UsernameCaseMapped"),
        (pure.prep_resourcepart, "OpaqueString"),
    ):
        try:
            expected = ("ok", get_profile(profile).enforce(text))
        except UnicodeEncodeError as exc:
            expected = ("error", exc.reason.lower())
        try:
            got = ("ok", prep(text))
        except pure.JIDError as exc:
            got = ("error", exc.reason)
        if got == ("error", "forbidden character"):
            assert expected[0] == "ok"  # PRECIS allows it; RFC 7622 §3.3.1 does not
        else:
            assert got == expected


def test_twins_agree_on_every_code_point_below_0x800():
    """The compiled PRECIS shortcut table covers U+0080..U+07FF: check each one."""
    compiled = _compiled()
    for cp in range(0x80, 0x800):
        ch = chr(cp)
        for text in (f"a{ch}b@example.com", f"x@example.com/A{ch}b", f"{ch}\u0301@example.com"):
            assert outcome(compiled, text) == outcome(pure, text), text
