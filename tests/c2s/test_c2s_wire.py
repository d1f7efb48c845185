"""A real server: a new stream id for each header on the wire, and the operator's log
lines (failed authentication, bind, disconnect)."""

from __future__ import annotations

import base64
import logging
import re
import time

from support import RawClient

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def stream_id(text: str) -> str:
    return re.search(r"<stream:stream [^>]*id=['\"]([^'\"]+)", text).group(1)


def test_a_new_stream_id_after_starttls_and_sasl(server):
    client = RawClient(server.port)
    ids = [stream_id(client.header())]
    client.starttls()
    ids.append(stream_id(client.header()))
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    client.read_until("<success[^>]*(/>|>.*?</success>)")
    ids.append(stream_id(client.header()))
    assert len(set(ids)) == 3, ids
    client.close()


def test_operator_log_lines(server, caplog):
    caplog.set_level(logging.INFO, logger="xmppd.c2s")
    bad = RawClient(server.port)
    bad.header()
    bad.starttls()
    bad.header()
    token = base64.b64encode(b"\0bob\0not-the-password").decode()
    bad.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    bad.read_until("</failure>")
    bad.close()
    alice = RawClient(server.port)
    jid = alice.login("alice", "secret", resource="desk")
    alice.send("</stream:stream>")
    alice.read_closed()
    deadline = time.monotonic() + 5
    while f"jid={jid} reason" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    text = caplog.text
    assert re.search(r"c2s authentication failed: address=127\.0\.0\.1:\d+ username=bob "
                     r"mechanism=PLAIN reason=not-authorized", text), text
    assert "not-the-password" not in text
    assert re.search(rf"c2s session bound: jid={re.escape(jid)} address=127\.0\.0\.1:\d+", text)
    assert re.search(rf"c2s disconnected: address=127\.0\.0\.1:\d+ jid={re.escape(jid)} "
                     r"reason=stream closed by the peer", text), text
