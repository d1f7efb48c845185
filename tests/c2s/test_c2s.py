"""Client connections end to end: slixmpp as a real client against the fixture server
(STARTTLS, direct TLS, every SCRAM flavour, bind, messages, IQs to the server), and a small
SCRAM-PLUS client over a raw socket for the channel-binding type slixmpp cannot choose.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import ssl

import pytest
from cryptography import x509
from slixmpp import ClientXMPP
from support import RawClient

from xmppd.transport import _tlsexport

TIMEOUT = 10
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


# -- slixmpp harness -------------------------------------------------------------------------


class Client:
    """A connected, bound slixmpp client, with received stanzas queued."""

    def __init__(self, xmpp: ClientXMPP) -> None:
        self.xmpp = xmpp
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        xmpp.add_event_handler("message", self.messages.put_nowait)
        xmpp.add_event_handler("presence", self.presences.put_nowait)

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid)

    @property
    def mechanism(self) -> str:
        return self.xmpp.plugin["feature_mechanisms"].mech.name

    async def next_message(self):
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def close(self) -> None:
        await asyncio.wait_for(self.xmpp.disconnect(), TIMEOUT)


def _tls_exporter_credentials(xmpp: ClientXMPP, original):
    """slixmpp only knows tls-unique (gone in TLS 1.3): hand it tls-exporter data, which it
    then announces as ``p=tls-exporter``."""

    def credentials(required, optional):
        result = original(required, optional)
        if "channel_binding" in result and xmpp.socket is not None:
            result["channel_binding"] = _tlsexport.tls_exporter(xmpp.socket)
        return result

    return credentials


async def connect(port: int, jid: str, password: str = "secret", *, mech: str | None = None,
                  direct_tls: bool = False, tls_exporter: bool = False) -> Client:
    """Connect and wait for the session to start (auth and bind done)."""
    xmpp = ClientXMPP(jid, password, sasl_mech=mech)
    for plugin in ("xep_0030", "xep_0092", "xep_0199"):
        xmpp.register_plugin(plugin)
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    if direct_tls:
        xmpp.enable_starttls = False
        xmpp.enable_plaintext = False
        xmpp.ssl_context.set_alpn_protocols(["xmpp-client"])
    else:
        xmpp.enable_direct_tls = False
    client = Client(xmpp)
    started = asyncio.get_running_loop().create_future()

    def fail(reason):
        if not started.done():
            started.set_exception(AssertionError(f"session did not start: {reason}"))

    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    xmpp.add_event_handler("failed_auth", lambda _: fail("authentication failed"))
    xmpp.add_event_handler("failed_all_auth", lambda _: fail("no mechanism worked"))
    xmpp.add_event_handler("disconnected", lambda reason: fail(f"disconnected: {reason}"))
    xmpp.add_event_handler("stream_error", lambda err: fail(f"stream error {err}"))
    xmpp.connect("127.0.0.1", port)
    if tls_exporter:
        mechs = xmpp.plugin["feature_mechanisms"]
        mechs.sasl_callback = _tls_exporter_credentials(xmpp, mechs.sasl_callback)
    try:
        await asyncio.wait_for(started, TIMEOUT)
    except BaseException:
        xmpp.abort()
        raise
    return client


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- authentication and binding ---------------------------------------------------------------


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-512", "PLAIN"])
def test_starttls_and_sasl(server, mech):
    async def main():
        client = await connect(server.port, "alice@localhost/desk", mech=mech)
        assert client.mechanism == mech
        assert client.jid == "alice@localhost/desk"
        assert client.xmpp.socket.version() == "TLSv1.3"
        await client.xmpp.plugin["xep_0199"].ping("localhost", timeout=TIMEOUT)
        await client.close()

    run(main())


def test_scram_sha256_plus_tls_exporter(server):
    async def main():
        client = await connect(server.port, "alice@localhost/cb", mech="SCRAM-SHA-256-PLUS",
                               tls_exporter=True)
        assert client.mechanism == "SCRAM-SHA-256-PLUS"
        assert client.xmpp.plugin["feature_mechanisms"].mech.gs2_header == b"p=tls-exporter,,"
        await client.close()

    run(main())


def test_wrong_password_with_slixmpp(server):
    async def main():
        with pytest.raises(AssertionError, match="session did not start"):
            await connect(server.port, "alice@localhost/x", "wrong", mech="SCRAM-SHA-256")

    run(main())


def test_direct_tls_with_alpn(server):
    async def main():
        client = await connect(server.tls_port, "alice@localhost/direct", mech="SCRAM-SHA-256",
                               direct_tls=True)
        assert client.xmpp.socket.selected_alpn_protocol() == "xmpp-client"
        assert client.jid == "alice@localhost/direct"
        await client.xmpp.plugin["xep_0199"].ping("localhost", timeout=TIMEOUT)
        await client.close()

    run(main())


def test_direct_tls_scram_plus(server):
    async def main():
        client = await connect(server.tls_port, "bob@localhost/d", mech="SCRAM-SHA-512-PLUS",
                               direct_tls=True, tls_exporter=True)
        assert client.mechanism == "SCRAM-SHA-512-PLUS"
        await client.close()

    run(main())


def test_generated_resource(server):
    async def main():
        client = await connect(server.port, "alice@localhost", mech="SCRAM-SHA-256")
        assert client.jid.startswith("alice@localhost/") and len(client.jid) > len("alice@localhost/")
        await client.close()

    run(main())


# -- stanzas ------------------------------------------------------------------------------------


def test_messages_both_ways(server):
    async def main():
        alice = await connect(server.port, "alice@localhost/a")
        bob = await connect(server.port, "bob@localhost/b")
        alice.xmpp.send_message(mto=bob.jid, mbody="hello bob", mtype="chat")
        got = await bob.next_message()
        assert (got["body"], str(got["from"]), got["type"]) == ("hello bob", alice.jid, "chat")
        bob.xmpp.send_message(mto=alice.jid, mbody="hi <alice> & co", mtype="chat")
        got = await alice.next_message()
        assert (got["body"], str(got["from"])) == ("hi <alice> & co", bob.jid)
        # many in a row arrive complete and in order
        for i in range(50):
            alice.xmpp.send_message(mto=bob.jid, mbody=f"n{i}", mtype="chat")
        assert [(await bob.next_message())["body"] for _ in range(50)] == [
            f"n{i}" for i in range(50)
        ]
        await alice.close()
        await bob.close()

    run(main())


def test_iqs_to_the_server(server):
    async def main():
        client = await connect(server.port, "alice@localhost/iq")
        xmpp = client.xmpp
        await xmpp.plugin["xep_0199"].ping("localhost", timeout=TIMEOUT)
        version = await xmpp.plugin["xep_0092"].get_version("localhost", timeout=TIMEOUT)
        assert version["software_version"]["name"] == "xmppd"
        assert version["software_version"]["version"]
        info = await xmpp.plugin["xep_0030"].get_info(jid="localhost", local=False, timeout=TIMEOUT)
        features = info["disco_info"]["features"]
        assert {"urn:xmpp:ping", "jabber:iq:version",
                "http://jabber.org/protocol/disco#info"} <= set(features)
        assert ("server", "im") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
        await client.close()

    run(main())


def test_presence_between_own_sessions(server):
    if "presence" not in server.server.modules:
        pytest.skip("the presence module is not loaded yet (not in DEFAULT_MODULES)")

    async def main():
        one = await connect(server.port, "alice@localhost/one")
        two = await connect(server.port, "alice@localhost/two")
        one.xmpp.send_presence(pstatus="here", ppriority=5)
        two.xmpp.send_presence(pstatus="also here", ppriority=1)

        async def presence_from(client: Client, sender: str, status: str):
            while True:
                pres = await asyncio.wait_for(client.presences.get(), TIMEOUT)
                if str(pres["from"]) == sender and pres["status"] == status:
                    return pres

        got = await presence_from(two, one.jid, "here")
        assert got["type"] in ("available", "") and got["priority"] == 5
        await presence_from(one, two.jid, "also here")
        # now both are available: a normal message to the bare JID goes to the top priority
        bob = await connect(server.port, "bob@localhost/b")
        bob.xmpp.send_message(mto="alice@localhost", mbody="to the bare JID", mtype="normal")
        assert (await one.next_message())["body"] == "to the bare JID"
        await two.close()
        got = await presence_from(one, two.jid, "")
        assert got["type"] == "unavailable"
        await one.close()
        await bob.close()

    run(main())


# -- SCRAM-PLUS over a raw socket (both channel-binding types) ----------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_plus(client: RawClient, user: str, password: str, cb_type: str, cb_data: bytes,
               hash_name: str = "sha256") -> str:
    """Run SCRAM-<hash>-PLUS with ``cb_type``; returns the server's answer (``<success>``,
    verified, or ``<failure>``)."""
    mech = f"SCRAM-{hash_name.upper().replace('SHA', 'SHA-')}-PLUS"
    gs2 = f"p={cb_type},,".encode()
    first_bare = f"n={user},r={secrets.token_urlsafe(12)}"
    client.send(f"<auth xmlns='{SASL}' mechanism='{mech}'>{_b64(gs2 + first_bare.encode())}</auth>")
    answer = client.read_until(r"</challenge>|</failure>")
    if "<failure" in answer:
        return answer
    server_first = base64.b64decode(re.search(r">([^<]*)</challenge>", answer).group(1)).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    final_bare = f"c={_b64(gs2 + cb_data)},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    client.send(f"<response xmlns='{SASL}'>{_b64(f'{final_bare},p={_b64(proof)}'.encode())}"
                "</response>")
    answer = client.read_until(r"<success[^>]*(/>|>.*?</success>)|</failure>")
    if "<success" in answer:
        verifier = base64.b64decode(re.search(r">([^<]*)</success>", answer).group(1))
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        assert verifier == b"v=" + _b64(hmac.digest(server_key, auth_message, hash_name)).encode()
    return answer


def server_end_point(sock: ssl.SSLSocket) -> bytes:
    """RFC 5929 tls-server-end-point, computed on the client side from the peer certificate."""
    der = sock.getpeercert(binary_form=True)
    algo = x509.load_der_x509_certificate(der).signature_hash_algorithm.name
    return hashlib.new("sha256" if algo in ("md5", "sha1") else algo, der).digest()


def tls_stream(server, direct: bool) -> tuple[RawClient, str]:
    if direct:
        client = RawClient(server.tls_port, tls=True)
        return client, client.header()
    client = RawClient(server.port)
    client.header()
    client.starttls()
    return client, client.header()


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("cb_type", ["tls-server-end-point", "tls-exporter"])
def test_scram_plus_raw(server, cb_type, direct):
    client, features = tls_stream(server, direct)
    assert "SCRAM-SHA-256-PLUS" in features
    assert re.search(rf"<channel-binding type=['\"]{cb_type}['\"]", features)
    if cb_type == "tls-exporter":
        cb_data = _tlsexport.tls_exporter(client.sock)
    else:
        cb_data = server_end_point(client.sock)
    assert "<success" in scram_plus(client, "alice", "secret", cb_type, cb_data)
    client.header()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>plus</resource></bind></iq>")
    assert "<jid>alice@localhost/plus</jid>" in client.read_until("</iq>")
    client.close()


@pytest.mark.parametrize("cb_type", ["tls-server-end-point", "tls-exporter"])
def test_scram_plus_wrong_binding_data_fails(server, cb_type):
    """Binding data from another channel (a man in the middle) must not authenticate."""
    client, _ = tls_stream(server, direct=False)
    answer = scram_plus(client, "alice", "secret", cb_type, b"\x00" * 32)
    assert "<not-authorized/>" in answer
    client.close()


def test_scram_plus_unknown_binding_type_fails(server):
    client, _ = tls_stream(server, direct=False)
    answer = scram_plus(client, "alice", "secret", "tls-unique", b"\x00" * 12)
    assert "<failure" in answer and "<success" not in answer
    client.close()


@pytest.mark.parametrize("decl", ["", "<?xml version='1.0'?>"])
def test_pipelined_auth_restart_and_bind(server, decl):
    """A client may send <auth/>, the new stream header (with or without an XML declaration,
    which is not-well-formed in the old stream) and its bind request in one write."""
    client = RawClient(server.port)
    try:
        client.header()
        client.starttls()
        client.header()
        token = base64.b64encode(b"\0alice\0secret").decode()
        client.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
            f"{decl}<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams'>"
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>fast</resource></bind></iq>"
        )
        text = client.read_until(r"<jid>alice@localhost/fast</jid>")
        assert "<success" in text and "<bind" in text and "stream:error" not in text
        client.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert 'id="p1"' in client.read_until(r"<iq[^>]*id=.p1.[^>]*>")
    finally:
        client.close()


def test_pipelined_garbage_after_failed_auth_is_still_an_error(server):
    client = RawClient(server.port)
    try:
        client.header()
        client.starttls()
        client.header()
        token = base64.b64encode(b"\0alice\0wrong").decode()
        client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                    f"{token}</auth><?xml version='1.0'?><stream:stream>")
        text = client.read_closed()
        assert "<not-authorized/>" in text and "<not-well-formed" in text
    finally:
        client.close()
