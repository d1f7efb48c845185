"""Subscription options (XEP-0060 §6.3, ``pubsub#subscribe_options``) and the collection
ones of XEP-0248 (``subscription_type``, ``subscription_depth``).

They are kept in the subscription (``sub["options"]``: field name without ``pubsub#`` ->
value), only those that differ from :data:`DEFAULTS`.  Digests and message bodies are not
offered: ``pubsub#digest`` and ``pubsub#include_body`` accept false only.
"""

from __future__ import annotations

from typing import Any

from . import SUBSCRIBE_OPTIONS_NS, PubSubError
from .forms import build_form, form_type, read_form

SHOW_VALUES = ("away", "chat", "dnd", "online", "xa")

DEFAULTS: dict[str, Any] = {
    "deliver": True,
    "digest": False,
    "include_body": False,
    "show-values": [],  # empty: whatever the subscriber's presence
    "subscription_type": "items",
    "subscription_depth": "1",
}

#: only for subscriptions to collection nodes
COLLECTION_FIELDS = ("subscription_type", "subscription_depth")

FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "deliver": ("boolean", ()),
    "digest": ("boolean", ()),
    "include_body": ("boolean", ()),
    "show-values": ("list-multi", SHOW_VALUES),
    "subscription_type": ("list-single", ("items", "nodes")),
    "subscription_depth": ("list-single", ("1", "all")),
}


def invalid(text: str) -> PubSubError:
    return PubSubError("bad-request", "invalid-options", text=text)


def options_of(sub: dict[str, Any]) -> dict[str, Any]:
    """A subscription's options, defaults filled in."""
    return {**DEFAULTS, **sub.get("options", {})}


def options_form(options: dict[str, Any], collection: bool, type: str = "form"):
    fields = []
    for name, (ftype, choices) in FIELDS.items():
        if name in COLLECTION_FIELDS and not collection:
            continue
        value = options.get(name, DEFAULTS[name])
        if ftype == "boolean":
            values = ["1" if value else "0"]
        elif ftype == "list-multi":
            values = list(value)
        else:
            values = [str(value)]
        fields.append((f"pubsub#{name}", ftype, values, list(choices)))
    return build_form(SUBSCRIBE_OPTIONS_NS, fields, type)


def parse_options(form, collection: bool) -> dict[str, Any]:
    """A submitted ``subscribe_options`` form -> the options it sets (``bad-request`` /
    ``invalid-options`` for a bad one)."""
    if form.get("type", "submit") not in ("submit", "cancel"):
        raise invalid("the form must be submitted")
    fields = read_form(form)
    if form_type(fields) not in (None, SUBSCRIBE_OPTIONS_NS):
        raise invalid("wrong FORM_TYPE")
    out: dict[str, Any] = {}
    for var, values in fields.items():
        if var == "FORM_TYPE":
            continue
        name = var[len("pubsub#"):] if var.startswith("pubsub#") else None
        if name not in FIELDS:
            raise invalid(f"unknown field {var}")
        ftype, choices = FIELDS[name]
        values = [(v or "").strip() for v in values]
        if ftype == "boolean":
            if len(values) != 1 or values[0] not in ("0", "1", "false", "true"):
                raise invalid(f"bad value for {var}")
            value: Any = values[0] in ("1", "true")
            if value and name in ("digest", "include_body"):
                raise invalid(f"{var} is not supported")
        elif ftype == "list-multi":
            value = sorted({v for v in values if v})
            if any(v not in choices for v in value):
                raise invalid(f"bad value for {var}")
        else:
            if len(values) != 1 or values[0] not in choices:
                raise invalid(f"bad value for {var}")
            value = values[0]
            if not collection and value != DEFAULTS[name]:
                raise invalid(f"{var} applies to collection nodes only")
        out[name] = value
    return out


def merged(current: dict[str, Any], submitted: dict[str, Any]) -> dict[str, Any]:
    """The options to store: ``submitted`` over ``current``, defaults left out."""
    return {k: v for k, v in {**current, **submitted}.items() if v != DEFAULTS.get(k)}
