"""xmpp.js (``@xmpp/client``, a client nobody here wrote) in Node.js over TCP: SASL2 and
Bind2 with stream management enabled inline, then, after its TCP connection is killed, its
reconnect resumes the session inside the SASL2 ``<authenticate/>`` (XEP-0198 §10.2) and gets
the message sent meanwhile exactly once.  Needs what the browser tests need (node and the
npm packages of ``tests/web/browser``); skips without them unless ``XMPPD_BROWSER_TESTS=1``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from test_browsers import BROWSER_DIR, REQUIRED


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "no node on PATH"
    if not (BROWSER_DIR / "node_modules" / "@xmpp" / "client" / "package.json").is_file():
        return "npm package @xmpp/client not installed (npm ci --prefix tests/web/browser)"
    return None


def test_xmppjs_resumes_inline_in_sasl2_after_a_killed_connection(make_server):
    reason = _missing()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"XMPPD_BROWSER_TESTS=1 but {reason}")
        pytest.skip(reason)
    server = make_server(users={"alice": "secret", "bob": "secret"})
    env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0")  # the test's self-signed cert
    done = subprocess.run(["node", str(BROWSER_DIR / "sm_resume.mjs"), str(server.port)],
                          cwd=BROWSER_DIR, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr
    outcome = json.loads(lines[-1])
    assert outcome == {"enabled": True, "resumed": 1, "sameJid": True,
                       "got": ["before", "while-away"], "smOffered": False, "bobErrors": []}, done.stderr
    assert done.returncode == 0
