"""Client quirks seen in the wild, over raw sockets against the fixture server.

go-xmpp and go-sendxmpp end every element they write with a newline: the stream header,
``<starttls/>``, ``</auth>``, ``</response>``, stanzas.  The newline after the SASL element
is character data of the old stream (Prosody and ejabberd accept it); the new stream's
``<?xml?>`` must still be the first thing in the new stream (issue 11).
"""

from __future__ import annotations

import base64
import re

import pytest
from support import STREAM_HEADER, RawClient, scram_sha256

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SUCCESS = r"<success[^>]*(/>|>.*?</success>)|</failure>"
FEATURES = r"</stream:features>|<stream:error>.*?</stream:error>"
# go-xmpp's header: the declaration, the stream element, a newline
GO_HEADER = STREAM_HEADER.format(to="localhost") + "\n"
HEADER_NO_DECL = GO_HEADER[GO_HEADER.index("?>") + 2 :]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stream_error(text: str) -> str | None:
    m = re.search(r"<stream:error>\s*<([a-z-]+) xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams",
                  text)
    return m.group(1) if m else None


def header(client: RawClient, data: str = GO_HEADER) -> str:
    client.send(data)
    return client.read_until(FEATURES)


def starttls(client: RawClient) -> None:
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n")
    client.read_until("<proceed[^>]*/>")
    client.buffer = b""
    client._wrap()


def plain(client: RawClient, user: str, password: str, eol: str = "\n") -> str:
    token = _b64(f"\0{user}\0{password}".encode())
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>{eol}")
    return client.read_until(SUCCESS)


def ready_for_sasl(server, direct: bool) -> tuple[RawClient, str]:
    """Connected over TLS (STARTTLS or direct TLS), header sent the go-xmpp way."""
    if direct:
        client = RawClient(server.tls_port, tls=True)
    else:
        client = RawClient(server.port)
        header(client)
        starttls(client)
    return client, header(client)


def bind(client: RawClient, resource: str) -> str:
    client.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                f"<resource>{resource}</resource></bind></iq>\n")
    return re.search(r"<jid>(.*?)</jid>", client.read_until("</iq>")).group(1)


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_newline_after_every_element(server, mech, direct):
    """Log in, bind, ping and send a message writing "\\n" after every element."""
    client, features = ready_for_sasl(server, direct)
    bob = RawClient(server.port)
    try:
        assert f"<mechanism>{mech}</mechanism>" in features
        auth = scram_sha256 if mech.startswith("SCRAM") else plain
        assert "<success" in auth(client, "alice", "secret")
        features = header(client)  # "\n" after </auth> or </response>, then <?xml?>
        assert stream_error(features) is None, features
        assert "urn:ietf:params:xml:ns:xmpp-bind" in features
        assert bind(client, "go") == "alice@localhost/go"
        client.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>\n")
        assert re.search(r"type=['\"]result['\"]",
                         client.read_until(r"<iq[^>]*id=['\"]p1['\"][^>]*>"))
        bob_jid = bob.login("bob", "secret", resource="b")
        client.send(f"<message to='{bob_jid}' type='chat' id='m1'><body>hi bob</body></message>\n")
        got = bob.read_until(r"</message>")
        assert "<body>hi bob</body>" in got and "alice@localhost/go" in got
    finally:
        client.close()
        bob.close()


@pytest.mark.parametrize("decl", [True, False], ids=["decl", "no-decl"])
def test_newline_then_pipelined_header_and_bind(server, decl):
    """"</auth>\\n", the new header and the bind request in one write (the declaration is
    not-well-formed in the old stream; the new one starts with it)."""
    client, _ = ready_for_sasl(server, direct=False)
    try:
        token = _b64(b"\0alice\0secret")
        client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>\n"
                    + (GO_HEADER if decl else HEADER_NO_DECL)
                    + "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    "<resource>fast</resource></bind></iq>\n")
        text = client.read_until(r"<jid>alice@localhost/fast</jid>")
        assert "<success" in text and stream_error(text) is None
    finally:
        client.close()


def test_newline_after_success_before_declaration_is_not_well_formed(server):
    """Whitespace sent after <success/> is the new stream's: before its XML declaration it
    is not-well-formed (as Prosody and ejabberd also say)."""
    client, _ = ready_for_sasl(server, direct=False)
    try:
        assert "<success" in plain(client, "alice", "secret")
        client.send("\n" + GO_HEADER)
        text = client.read_closed()
        assert stream_error(text) == "not-well-formed", text
        assert "<stream:features" not in text
    finally:
        client.close()


def test_newline_after_success_before_header_without_declaration(server):
    """Without a declaration, whitespace before the new stream element is fine XML."""
    client, _ = ready_for_sasl(server, direct=False)
    try:
        assert "<success" in plain(client, "alice", "secret")
        features = header(client, "\n" + HEADER_NO_DECL)
        assert stream_error(features) is None, features
        assert bind(client, "nodecl") == "alice@localhost/nodecl"
    finally:
        client.close()
