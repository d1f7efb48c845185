"""Node configuration (XEP-0060 §16.4.4 ``pubsub#node_config``), its defaults, the
publish-options preconditions (§7.1.5) and the access models (§4.5).

A node's stored record is a JSON dict: ``config`` (field name without ``pubsub#`` ->
value), ``affiliations`` (bare JID -> owner|publisher|member|outcast) and, in memory
(:mod:`.engine` stores each under a key of its own), ``subscriptions`` (JID ->
{"state": subscribed|pending, "subid": ..., "options"?}).
"""

from __future__ import annotations

from typing import Any

from . import NODE_CONFIG_NS, PubSubError
from .forms import build_form

ACCESS_MODELS = ("open", "presence", "roster", "authorize", "whitelist")
AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "none", "outcast")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")

#: field -> (XEP-0004 type, choices or None); values are kept as str, int, bool or list.
FIELDS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "title": ("text-single", None),
    "access_model": ("list-single", ACCESS_MODELS),
    "publish_model": ("list-single", ("publishers", "subscribers", "open")),
    "max_items": ("text-single", None),
    "persist_items": ("boolean", None),
    "deliver_payloads": ("boolean", None),
    "deliver_notifications": ("boolean", None),
    "notify_retract": ("boolean", None),
    "notify_delete": ("boolean", None),
    "notify_config": ("boolean", None),
    "purge_offline": ("boolean", None),
    "send_last_published_item": ("list-single", SEND_LAST),
    "roster_groups_allowed": ("list-multi", None),
    "presence_based_delivery": ("boolean", None),
    "type": ("text-single", None),
    "node_type": ("list-single", ("leaf", "collection")),
    "collection": ("text-multi", None),  # the collections a node is in (XEP-0248)
    "children": ("text-multi", None),  # a collection's nodes (kept on them: ``collection``)
    "max_payload_size": ("text-single", None),
    "notification_type": ("list-single", ("normal", "headline")),
}

BASE_DEFAULTS: dict[str, Any] = {
    "title": "",
    "access_model": "open",
    "publish_model": "publishers",
    "max_items": 10,
    "persist_items": True,
    "deliver_payloads": True,
    "deliver_notifications": True,
    "notify_retract": True,
    "notify_delete": True,
    "notify_config": False,
    "purge_offline": False,
    "send_last_published_item": "on_sub_and_presence",
    "roster_groups_allowed": [],
    "presence_based_delivery": False,
    "type": "",
    "node_type": "leaf",
    "notification_type": "headline",
}


def _bool(text: str) -> bool:
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ValueError(text)


def parse_field(name: str, values: list[str]) -> Any:
    """A form field's value for ``name`` (no ``pubsub#`` prefix); ValueError if bad."""
    ftype, choices = FIELDS[name]
    if ftype in ("list-multi", "text-multi"):
        return [v.strip() for v in values if v and v.strip()]
    value = values[0].strip() if values else ""
    if ftype == "boolean":
        return _bool(value)
    if name == "max_items":
        if value == "max":
            return "max"
        number = int(value)
        if number < 0:
            raise ValueError(value)
        return number
    if name == "max_payload_size":
        return int(value)
    if choices is not None and value not in choices:
        raise ValueError(value)
    return value


def parse_config(fields: dict[str, list[str]], *, strict: bool = True) -> dict[str, Any]:
    """``pubsub#...`` fields of a submitted form -> config values; unknown fields are
    ``not-acceptable`` when ``strict`` (configure), skipped otherwise."""
    out: dict[str, Any] = {}
    for var, values in fields.items():
        if var == "FORM_TYPE":
            continue
        name = var[len("pubsub#"):] if var.startswith("pubsub#") else None
        if name not in FIELDS:
            if strict:
                raise PubSubError("not-acceptable", text=f"unknown field {var}")
            continue
        try:
            out[name] = parse_field(name, values)
        except (ValueError, IndexError):
            raise PubSubError("not-acceptable", text=f"bad value for {var}") from None
    return out


def check_preconditions(config: dict[str, Any], wanted: dict[str, Any]) -> None:
    """§7.1.5: every publish-option must equal the node's configuration."""
    for name, value in wanted.items():
        if config.get(name) != value:
            raise PubSubError("conflict", "precondition-not-met",
                              text=f"pubsub#{name} does not match the node's configuration")


def effective_max_items(config: dict[str, Any], limit: int) -> int:
    """How many items the node keeps: its max_items ("max": the server's limit), capped."""
    value = config.get("max_items", 1)
    if value == "max" or not isinstance(value, int):
        return limit
    return min(value, limit)


def config_form(config: dict[str, Any], type: str = "form", collections: bool = True):
    """The node configuration as a XEP-0004 form (without ``collections``: leaf nodes
    only, as PEP has them)."""
    fields = []
    for name, (ftype, choices) in FIELDS.items():
        if name not in config:
            continue
        if name == "node_type" and not collections:
            choices = ("leaf",)
        value = config[name]
        if ftype == "boolean":
            values = ["1" if value else "0"]
        elif ftype in ("list-multi", "text-multi"):
            values = list(value)
        else:
            values = [str(value)]
        fields.append((f"pubsub#{name}", ftype, values, list(choices or ())))
    return build_form(NODE_CONFIG_NS, fields, type)


def affiliation_of(record: dict[str, Any], bare: str) -> str:
    return record.get("affiliations", {}).get(bare, "none")


def subscribed(record: dict[str, Any], jid: str, bare: str) -> bool:
    subs = record.get("subscriptions", {})
    return any(subs.get(j, {}).get("state") == "subscribed" for j in (jid, bare))
