"""XEP-0004 data forms, as far as the modules need them: read a submitted form, build a
form that describes the fields a request takes."""

from __future__ import annotations

from collections.abc import Iterable

from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError

DATA_NS = "jabber:x:data"


def submitted(x: Element | None) -> dict[str, list[str]]:
    """The fields of a ``<x type='submit'/>`` form: var -> values (empty if no form).

    A field without ``var`` or a form of another type is a ``bad-request``.
    """
    if x is None:
        return {}
    if x.get("type", "submit") not in ("submit", "form"):
        raise StanzaError("bad-request", f"a data form of type {x.get('type')!r}")
    fields: dict[str, list[str]] = {}
    for field in x.findall("field", DATA_NS):
        var = field.get("var")
        if not var:
            raise StanzaError("bad-request", "a form field without 'var'")
        fields.setdefault(var, []).extend(v.text for v in field.findall("value", DATA_NS))
    return fields


def single(fields: dict[str, list[str]], var: str) -> str | None:
    """The one value of ``var`` (None if absent or empty); several values: bad-request."""
    values = fields.get(var)
    if not values:
        return None
    if len(values) > 1:
        raise StanzaError("bad-request", f"field {var!r} takes one value")
    return values[0] or None


def form(form_type: str, fields: Iterable[tuple[str, str, str]]) -> Element:
    """A ``<x type='form'/>`` with a hidden ``FORM_TYPE`` and ``(var, type, label)`` fields."""
    x = Element("x", DATA_NS, {"type": "form"}, [])
    hidden = x.subelement("field", DATA_NS, {"var": "FORM_TYPE", "type": "hidden"})
    hidden.subelement("value", DATA_NS, text=form_type)
    for var, ftype, label in fields:
        attrs = {"var": var, "type": ftype}
        if label:
            attrs["label"] = label
        x.subelement("field", DATA_NS, attrs)
    return x
