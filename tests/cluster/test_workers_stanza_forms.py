"""Stanzas crossing workers keep their meaning whatever their form (``xmppd run --workers
2``, real processes over TCP): the receiving worker builds each from its start tag
(``cluster.frames.stanza_element``) and hands the recipient the bytes that came; attribute
values with escapes, namespaced attributes (parsed by the tokenizer instead), extensions
with their own namespaces and prefixes.  A stanza a peer sends that does not parse is
logged and dropped, and the ones after it are delivered."""

from __future__ import annotations

import re
import socket
import time

import pytest
from test_workers import MODULES, Cluster

from xmppd.cluster import codec
from xmppd.xml.stanza import decode_stanza


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, MODULES)
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


FORMS = [
    # plain attributes: built from the start tag, the content as it came
    "<message to='bob@localhost/b1' type='chat' id='q&quot;&lt;&amp;&#10;&#9;x'>"
    "<body>a &lt;b&gt; &amp; é</body><thread>t1</thread></message>",
    # an extension with its own namespace, a prefix declared inside, nested elements
    "<message to='bob@localhost/b1' id='m2'><x xmlns='urn:example:x' xmlns:p='urn:example:p'>"
    "<p:item p:k='v'><deep>1</deep></p:item>" + "<pad>" + "y" * 200 + "</pad></x></message>",
    # a namespaced attribute: not the plain form, parsed by the tokenizer on arrival
    "<message to='bob@localhost/b1' id='m3' xml:lang='fr'><body>bonjour</body></message>",
    "<presence to='bob@localhost/b1' id='p1'/>",
]


def test_every_form_arrives_as_it_was_sent(cluster):
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    for sent in FORMS:
        alice.send(sent)
        name = sent[1:sent.index(" ")]
        got = bob.read_until(rf"<{name}[^>]*/>|<{name}\b.*?</{name}>")
        got = got[got.rindex(f"<{name}"):]
        expected = decode_stanza(sent.encode())
        expected.attrs["from"] = "alice@localhost/a0"
        assert decode_stanza(got.encode()) == expected, got


def fake_peer(cluster: Cluster) -> socket.socket:
    """A connection to worker 0's link socket that says it is worker 1."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(cluster.data / "workers" / "worker-0.sock"))
    hello = bytearray()
    codec.put_control(hello, "hello", {"worker": 1, "epoch": "test", "pid": 0})
    sock.sendall(codec.frame(hello))
    return sock


def test_a_peer_stanza_that_does_not_parse_is_dropped_and_the_rest_delivered(cluster):
    alice = cluster.client("alice", 0, "a0")
    peer = fake_peer(cluster)
    try:
        body = bytearray()
        codec.put_stanza(body, b"alice@localhost/a0",
                         b'<message xml:lang="en" to="alice@localhost/a0"><body>x</bod></message>')
        codec.put_stanza(body, b"alice@localhost/a0",
                         b'<message to="alice@localhost/a0" from="bob@localhost/b1" id="ok">'
                         b"<body>after</body></message>")
        peer.sendall(codec.frame(body))
        assert "after" in alice.read_until(r"<message[^>]*id=.ok.*?</message>")
        deadline = time.monotonic() + 5
        while "does not parse" not in cluster.logged():
            assert time.monotonic() < deadline, cluster.logged()
            time.sleep(0.05)
        assert re.search(r"peer 1 sent a stanza that does not parse.*dropped", cluster.logged())
        assert "<bod>" not in alice.seen + alice.read_closed(0.3)
    finally:
        peer.close()
