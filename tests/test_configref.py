"""The configuration reference: docs/CONFIG.md is what the declarations render, and every
documented key is one from_dict() accepts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from xmppd.configref import core_keys, render
from xmppd.core.config import Config, ConfigError, Limits, from_dict
from xmppd.core.manager import available, module_class

CONFIG_MD = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def test_docs_config_md_is_up_to_date():
    assert CONFIG_MD.read_text(encoding="utf-8") == render(), (
        "docs/CONFIG.md is out of date: run `xmppd config-reference > docs/CONFIG.md`"
    )


def test_config_reference_command_prints_the_reference():
    out = subprocess.run([sys.executable, "-m", "xmppd.cli", "config-reference"],
                         capture_output=True, text=True, check=True).stdout
    assert out == render()


def test_every_core_field_and_limit_is_documented():
    keys = [entry["key"] for entry in core_keys()]
    assert len(keys) == len(set(keys))
    for f in dataclasses.fields(Config):
        if f.name != "limits":
            assert f.metadata.get("key") or f.metadata.get("keys"), f.name
    assert {f"limits.{f.name}" for f in dataclasses.fields(Limits)} <= set(keys)
    for entry in core_keys():
        assert entry["doc"] and entry["kind"] and entry["default"], entry


def test_every_module_option_is_documented():
    text = render()
    for name in available():
        assert f"### `{name}`" in text
        for option, declared in module_class(name).options.items():
            assert declared.doc, f"modules.{name}.{option} has no doc"
            assert f"`modules.{name}.{option}`" in text


def test_every_documented_example_is_accepted():
    placeholders = {'"<domain>"': '"example.org"', '"<subdomain>"': '"gw.example.org"',
                    "<name>": "csi"}
    lines = []
    for entry in core_keys():
        key = entry["key"]
        for placeholder, value in placeholders.items():
            key = key.replace(placeholder, value)
        lines.append(f"{key} = {entry['example']}")
    data = tomllib.loads("\n".join(lines))
    config = from_dict(data, Path("/"))
    assert config.log_format == "json"
    assert config.certificates["example.org"].key == Path("/etc/xmppd/example.org.key")
    assert config.components == {"gw.example.org": "change me"}


@pytest.mark.parametrize("value", ["xml", 1, ""])
def test_log_format_is_validated(value):
    with pytest.raises(ConfigError, match="log_format"):
        from_dict({"server": {"log_format": value}})


def test_log_format_default_and_case():
    assert Config().log_format == "text"
    assert from_dict({"server": {"log_format": "JSON"}}).log_format == "json"
