"""XEP-0004 data forms, as far as the modules need them: read a submitted form, build a
form that describes the fields a request takes, or a full form or result with values and
options (:func:`data_form`, for ad-hoc commands and registration)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Field:
    """One field of a form the server sends: ``var``, XEP-0004 ``type``, ``label``, its
    ``values``, ``options`` as (label, value) pairs, ``required``, a ``desc``."""

    var: str
    type: str = "text-single"
    label: str = ""
    values: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    required: bool = False
    desc: str = ""


def data_form(form_type: str | None, fields: Iterable[Field], *, type: str = "form",
              title: str | None = None, instructions: str | None = None) -> Element:
    """A ``<x/>`` of ``type`` ("form" or "result") with a hidden ``FORM_TYPE`` (unless None),
    an optional title and instructions, and ``fields``."""
    x = Element("x", DATA_NS, {"type": type}, [])
    if title:
        x.subelement("title", DATA_NS, text=title)
    if instructions:
        x.subelement("instructions", DATA_NS, text=instructions)
    if form_type is not None:
        hidden = x.subelement("field", DATA_NS, {"var": "FORM_TYPE", "type": "hidden"})
        hidden.subelement("value", DATA_NS, text=form_type)
    for f in fields:
        attrs = {"var": f.var, "type": f.type}
        if f.label:
            attrs["label"] = f.label
        el = x.subelement("field", DATA_NS, attrs)
        if f.desc:
            el.subelement("desc", DATA_NS, text=f.desc)
        if f.required:
            el.subelement("required", DATA_NS)
        for value in f.values:
            el.subelement("value", DATA_NS, text=value)
        for label, value in f.options:
            option = el.subelement("option", DATA_NS, {"label": label} if label else {})
            option.subelement("value", DATA_NS, text=value)
    return x
