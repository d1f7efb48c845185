"""The configuration reference (docs/CONFIG.md), generated from the declarations.

Core keys come from the metadata of the :class:`~xmppd.core.config.Config` and
:class:`~xmppd.core.config.Limits` fields (:func:`xmppd.core.config.key`), module options
from each module's ``options``; ``xmppd check`` validates against the same declarations, so
the reference cannot drift from what the server accepts (``tests/test_configref.py`` fails
when docs/CONFIG.md is not what :func:`render` gives).

    xmppd config-reference > docs/CONFIG.md      (or python -m xmppd.configref)
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xmppd.core.config import Config, Limits, Listener
from xmppd.core.manager import DEFAULT_MODULES, available, module_class
from xmppd.core.module import Option

_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
          dict: "table"}


def _toml(value: Any) -> str:
    """``value`` written as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _reload_note() -> list[str]:
    """Which keys a live reload applies (from :data:`xmppd.reload.LIVE_FIELDS`)."""
    from xmppd.reload import LIVE_FIELDS, key_names  # the reload imports the whole server

    names = [key_names(f) for f in dataclasses.fields(Config) if f.name in LIVE_FIELDS]
    wild = {"limits": "limits.*", "modules.<name>": "modules.<name>.*"}
    live = ", ".join(f"`{wild.get(n, n)}`" for entry in names for n in entry.split(", "))
    text = (f"`xmppd reload` (or SIGHUP) applies these keys to the running server: {live}. "
            "A change of any other key is reported by the reload and in the log, and waits "
            "for a restart; so do module changes that would lose state of online users "
            "(e.g. `modules.muc.host`, or disabling `sm`).")
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > 88:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def _default(meta: dict[str, Any], value: Any) -> str:
    if meta.get("default_text"):
        return meta["default_text"]
    if isinstance(value, tuple) and all(isinstance(v, Listener) for v in value):
        tls = meta["key"].endswith((".direct_tls", ".listen_tls"))
        value = [f"{v.host}:{v.port}" for v in value if v.direct_tls == tls]
    return f"`{_toml(value)}`"


def core_keys() -> Iterator[dict[str, Any]]:
    """Every core key: ``key``, ``kind``, ``default`` (Markdown), ``doc``, ``example``."""
    for f in dataclasses.fields(Config):
        if f.name == "limits":
            yield from _limit_keys()
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING and not f.metadata.get("keys"):
            value = f.default_factory()
        else:
            value = None
        entries = f.metadata.get("keys") or [f.metadata]
        for meta in entries:
            if "key" not in meta:
                raise LookupError(f"Config.{f.name} has no documented key (core.config.key)")
            shown = _default(meta, value)
            yield {"key": meta["key"], "kind": meta["kind"], "doc": meta["doc"],
                   "default": shown, "example": meta["example"] or shown.strip("`")}


def _limit_keys() -> Iterator[dict[str, Any]]:
    for f in dataclasses.fields(Limits):
        if not f.metadata.get("doc"):
            raise LookupError(f"Limits.{f.name} has no doc")
        kind = "number ≥ 0" if f.type == "float" else "integer ≥ 0"
        yield {"key": f"limits.{f.name}", "kind": kind, "doc": f.metadata["doc"],
               "default": f"`{_toml(f.default)}`", "example": _toml(f.default)}


def _option_kind(option: Option) -> str:
    kind = _KINDS.get(option.type, option.type.__name__)
    if option.item is not None:
        kind = f"list of {_KINDS.get(option.item, option.item.__name__)}s"
    limits = []
    if option.min is not None:
        limits.append(f"≥ {option.min:g}")
    if option.max is not None:
        limits.append(f"≤ {option.max:g}")
    if option.choices is not None:
        limits.append("one of " + ", ".join(f"`{_toml(c)}`" for c in option.choices))
    return kind + (" " + ", ".join(limits) if limits else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """docs/CONFIG.md."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `xmppd config-reference` from the declarations in",
        "     src/xmppd/core/config.py and src/xmppd/modules/*.py: do not edit by hand;",
        "     tests/test_configref.py fails when this file is out of date. -->",
        "",
        "Every key is optional; unknown keys and wrong types are errors (`xmppd check` says",
        "which). Durations end in `_s` (seconds), sizes in `_bytes`. The file is TOML, given",
        "with `xmppd --config FILE run`.",
        "",
        *_reload_note(),
        "",
        "## Core",
        "",
        "| key | type | default | description | example |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in core_keys():
        out.append(f"| `{entry['key']}` | {entry['kind']} | {_cell(entry['default'])} | "
                   f"{_cell(entry['doc'])} | `{_cell(entry['example'])}` |")
    out += [
        "",
        "## Modules",
        "",
        "Loaded by default: " + ", ".join(f"`{m}`" for m in DEFAULT_MODULES) + ".",
        "A module's options go in its `[modules.<name>]` table.",
        "",
    ]
    for name in available():
        cls = module_class(name)
        pymod = sys.modules[cls.__module__]
        summary = (pymod.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        summary = summary.replace("``", "`").replace(":mod:", "")
        out.append(f"### `{name}`")
        out.append("")
        facts = [summary] if summary else []
        if cls.depends:
            facts.append("Depends on " + ", ".join(f"`{d}`" for d in cls.depends) + ".")
        if name not in DEFAULT_MODULES:
            facts.append("Not loaded by default.")
        out.append(" ".join(facts) if facts else "(no description)")
        out.append("")
        if not cls.options:
            out.append("No options.")
            out.append("")
            continue
        out.append("| key | type | default | description |")
        out.append("| --- | --- | --- | --- |")
        for key, option in cls.options.items():
            out.append(f"| `modules.{name}.{key}` | {_cell(_option_kind(option))} | "
                       f"`{_cell(_toml(option.default))}` | {_cell(option.doc)} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
