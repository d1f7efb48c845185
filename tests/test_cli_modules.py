"""``xmppd check`` and ``xmppd run`` on [modules] mistakes: a non-zero exit and one line
naming the key, no traceback (subprocesses, as in test_cli.py)."""

from __future__ import annotations

import pytest
from test_cli import write_config, xmppd_cmd

MISTAKES = [
    ("[modules]\ndisabled = [\"presnce\"]\n", "modules.disabled: unknown module 'presnce'"),
    ("[modules]\nenabled = [\"ping\", \"pingg\"]\n", "modules.enabled: unknown module 'pingg'"),
    ("[modules.rostr]\nmax_name_length = 10\n", "modules.rostr: unknown module 'rostr'"),
    ("[modules.roster]\nmax_nme_length = 1\n",
     "modules.roster.max_nme_length: unknown option (roster has: max_name_length)"),
    ("[modules.roster]\nmax_name_length = true\n",
     "modules.roster.max_name_length: expected an integer, got True"),
    ("[modules]\ndisabled = [\"message\"]\n",
     "modules.offline requires module 'message', which is disabled"),
]


@pytest.mark.parametrize(("body", "message"), MISTAKES, ids=[m[1].split(":")[0] for m in MISTAKES])
def test_check_names_the_module_mistake(tmp_path, body, message):
    result = xmppd_cmd("check", config=write_config(tmp_path, body))
    assert result.returncode == 1
    assert result.stderr == f"xmppd: configuration error: {message}\n" or (
        result.stderr.startswith(f"xmppd: configuration error: {message}")
        and result.stderr.count("\n") == 1
    )
    assert "Traceback" not in result.stderr and "configuration OK" not in result.stdout


def test_run_refuses_to_start_with_the_same_message(tmp_path):
    result = xmppd_cmd("run", config=write_config(tmp_path, MISTAKES[3][0]))
    assert result.returncode == 1
    assert result.stderr == f"xmppd: configuration error: {MISTAKES[3][1]}\n"


def test_check_accepts_module_options_and_enabled(tmp_path):
    body = "[modules]\nenabled = [\"disco\", \"ping\", \"roster\"]\n[modules.roster]\nmax_name_length = 100\n"
    result = xmppd_cmd("check", config=write_config(tmp_path, body))
    assert result.returncode == 0, result.stderr
