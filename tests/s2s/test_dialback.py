"""XEP-0185 keys and the XEP-0220 elements."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xmppd.s2s import dialback
from xmppd.s2s.dialback import DIALBACK_NS, dialback_key, key_matches

SECRET = b"s3cr3tf0rd14lb4ck"


def test_key_is_hmac_sha256_hex_over_receiving_originating_id():
    import hashlib
    import hmac

    mac_key = hashlib.sha256(SECRET).hexdigest().encode()
    expected = hmac.new(mac_key, b"domain2.tld domain1.tld D60000229F", hashlib.sha256).hexdigest()
    assert dialback_key(SECRET, "domain2.tld", "domain1.tld", "D60000229F") == expected
    assert len(expected) == 64


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20), st.text(max_size=20))
def test_key_binds_every_input(receiving, originating, stream_id):
    key = dialback_key(SECRET, receiving, originating, stream_id)
    assert key_matches(SECRET, receiving, originating, stream_id, key)
    assert not key_matches(b"another secret", receiving, originating, stream_id, key)
    assert not key_matches(SECRET, receiving, originating, stream_id + "x", key)
    if receiving != originating:
        assert not key_matches(SECRET, originating, receiving, stream_id, key)


def test_wrong_or_empty_key_does_not_match():
    assert not key_matches(SECRET, "a", "b", "id", "")
    assert not key_matches(SECRET, "a", "b", "id", "00" * 32)


def test_elements():
    req = dialback.result_request("o.example", "r.example", "abc")
    assert (req.ns, req.name, req.attrs, req.text) == (
        DIALBACK_NS, "result", {"from": "o.example", "to": "r.example"}, "abc"
    )
    ans = dialback.verify_answer("o.example", "r.example", "sid", False)
    assert ans.attrs == {"from": "o.example", "to": "r.example", "id": "sid", "type": "invalid"}
    err = dialback.result_error("r.example", "o.example", "item-not-found")
    assert err.get("type") == "error"
    # the <error/> child is unprefixed on the wire: in the stream's namespace
    error = err.find("error", "jabber:server")
    assert error.find("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas") is not None
    assert b"<errors" in dialback.features_element().to_bytes()


def test_dialback_elements_are_written_with_the_db_prefix():
    """XEP-0220 §2: ``<db:result>``/``<db:verify>`` with the prefix the header declared
    (ejabberd ignores ``<result xmlns='jabber:server:dialback'>``)."""
    out = dialback.dialback_bytes(dialback.result_request("o.example", "r.example", "k&y"))
    assert out == b'<db:result from="o.example" to="r.example">k&amp;y</db:result>'
    out = dialback.dialback_bytes(dialback.verify_answer("o.example", "r.example", "sid", True))
    assert out == b'<db:verify from="o.example" to="r.example" id="sid" type="valid"/>'
    out = dialback.dialback_bytes(dialback.result_error("r.example", "o.example", "item-not-found"))
    assert out.startswith(b'<db:result from="r.example" to="o.example" type="error"><error ')
    assert out.endswith(b"</error></db:result>") and b"xmlns=\"jabber:dialback" not in out
