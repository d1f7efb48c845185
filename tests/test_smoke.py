"""scripts/smoke.py (CI runs it against the installed wheel) against the tree under test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SMOKE = Path(__file__).resolve().parents[1] / "scripts" / "smoke.py"


def test_smoke_script_passes():
    args = [sys.executable, str(SMOKE), "--xmppd", f"{sys.executable} -m xmppd.cli"]
    if os.environ.get("XMPPD_PURE_PYTHON"):
        args.append("--allow-pure")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke: message delivered" in proc.stdout
    assert "smoke: server stopped cleanly (exit status 0)" in proc.stdout
