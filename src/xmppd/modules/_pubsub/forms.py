"""XEP-0004 data forms, as far as PubSub needs them: read a submitted form into
``{var: [values]}`` and build a form from fields."""

from __future__ import annotations

from collections.abc import Iterable

from xmppd.xml.element import Element

DATA_NS = "jabber:x:data"


def find_form(parent: Element | None) -> Element | None:
    return None if parent is None else parent.find("x", DATA_NS)


def read_form(form: Element) -> dict[str, list[str]]:
    """The fields of a submitted form: var -> values (FORM_TYPE included)."""
    out: dict[str, list[str]] = {}
    for field in form.findall("field", DATA_NS):
        var = field.get("var")
        if var:
            out[var] = [v.text for v in field.findall("value", DATA_NS)]
    return out


def form_type(fields: dict[str, list[str]]) -> str | None:
    values = fields.get("FORM_TYPE")
    return values[0] if values else None


def build_form(form_type_value: str, fields: Iterable[tuple[str, str, list[str], list[str]]],
               type: str = "form") -> Element:
    """A form of ``type``: FORM_TYPE, then (var, field type, values, options) per field."""
    x = Element("x", DATA_NS, {"type": type}, [])
    ft = x.subelement("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
    ft.subelement("value", text=form_type_value)
    for var, ftype, values, options in fields:
        field = x.subelement("field", attrs={"var": var, "type": ftype})
        for value in values:
            field.subelement("value", text=value)
        for option in options:
            field.subelement("option").subelement("value", text=option)
    return x
