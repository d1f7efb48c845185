"""XEP-0198 acknowledgements mean durability: after ``kill -9`` and a restart, every message
the server acknowledged with ``<a h/>`` is in the recipient's offline store."""

from __future__ import annotations

import re
import signal
import subprocess

from support import RawClient
from test_durability import start, with_accounts

BURST = 400
SM = "urn:xmpp:sm:3"


def test_acknowledged_messages_survive_kill_9(tmp_path):
    config, port, _data = with_accounts(tmp_path)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed at the end
    server = start(config, port, log)
    try:
        alice = RawClient(port)
        alice.login("alice", "secret")
        alice.send(f"<enable xmlns='{SM}'/>")
        alice.read_until("<enabled[^>]*/>")
        burst = "".join(
            f"<message to='bob@localhost' type='chat'><body>{k}</body></message>"
            + (f"<r xmlns='{SM}'/>" if k % 10 == 9 else "")
            for k in range(BURST)
        )
        alice.send(burst)
        got = alice.read_until(r"<a xmlns='urn:xmpp:sm:3' h='\d\d\d'/>")  # well into it
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        got += alice.read_closed(2)
        acked = max(int(h) for h in re.findall(r"<a xmlns='urn:xmpp:sm:3' h='(\d+)'/>", got))
        alice.close()

        server = start(config, port, log)
        bob = RawClient(port)
        bob.login("bob", "secret")
        bob.send("<presence/>")
        bob.send("<iq type='get' id='end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        got = [int(k) for k in re.findall(r"<body>(\d+)</body>", bob.read_until("id=.end."))]
        print(f"acknowledged {acked}, stored {len(got)}")
        assert got == sorted(set(got)), "out of order or duplicated"
        assert set(range(acked)) <= set(got), "an acknowledged message was lost"
        bob.close()
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
