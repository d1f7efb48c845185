"""Room configuration (``muc#roomconfig``), the ``muc#roominfo`` form and data-form
helpers (XEP-0004)."""

from __future__ import annotations

from typing import Any

from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError

DATA_NS = "jabber:x:data"
CONFIG_FORM = "http://jabber.org/protocol/muc#roomconfig"
INFO_FORM = "http://jabber.org/protocol/muc#roominfo"
WHOIS = ("moderators", "anyone")
ALLOW_PM = ("anyone", "participants", "moderators", "none")

#: var -> (config key, field type, label); values are kept in a dict under the short keys.
FIELDS: dict[str, tuple[str, str, str]] = {
    "muc#roomconfig_roomname": ("name", "text-single", "Room name"),
    "muc#roomconfig_roomdesc": ("desc", "text-single", "Description"),
    "muc#roomconfig_persistentroom": ("persistent", "boolean", "Persistent room"),
    "muc#roomconfig_publicroom": ("public", "boolean", "Listed in the room directory"),
    "muc#roomconfig_membersonly": ("members_only", "boolean", "Members only"),
    "muc#roomconfig_passwordprotectedroom": ("password_protected", "boolean",
                                             "Password protected"),
    "muc#roomconfig_roomsecret": ("password", "text-private", "Password"),
    "muc#roomconfig_moderatedroom": ("moderated", "boolean", "Moderated (visitors have no voice)"),
    "muc#roomconfig_maxusers": ("max_users", "list-single", "Maximum number of occupants"),
    "muc#roomconfig_whois": ("whois", "list-single", "Who may see real JIDs"),
    "muc#roomconfig_historylength": ("history_length", "text-single",
                                     "Messages of history sent on join"),
    "muc#roomconfig_allowpm": ("allow_pm", "list-single", "Who may send private messages"),
    "muc#roomconfig_allowinvites": ("allow_invites", "boolean", "Occupants may invite"),
    "muc#roomconfig_changesubject": ("change_subject", "boolean", "Occupants may change the subject"),
    "muc#roomconfig_enablelogging": ("logging", "boolean", "Archive messages (MAM)"),
}


def default_config(max_users: int, history_length: int) -> dict[str, Any]:
    return {"name": "", "desc": "", "persistent": False, "public": True, "members_only": False,
            "password_protected": False, "password": "", "moderated": False,
            "max_users": max_users, "whois": "moderators", "history_length": history_length,
            "allow_pm": "anyone", "allow_invites": False, "change_subject": False,
            "logging": True}


def _field(form: Element, var: str, ftype: str, label: str, values: list[str]) -> Element:
    attrs = {"var": var, "type": ftype}
    if label:
        attrs["label"] = label
    field = form.subelement("field", attrs=attrs)
    for value in values:
        field.subelement("value", text=value)
    return field


def config_form(config: dict[str, Any], max_users_limit: int, max_history: int) -> Element:
    """The owner's configuration form filled with ``config``."""
    form = Element("x", DATA_NS, {"type": "form"}, [])
    form.subelement("title", text="Room configuration")
    _field(form, "FORM_TYPE", "hidden", "", [CONFIG_FORM])
    for var, (key, ftype, label) in FIELDS.items():
        value = config[key]
        if label.startswith("Messages"):
            label = f"{label} (at most {max_history})"
        text = ("1" if value else "0") if ftype == "boolean" else str(value)
        field = _field(form, var, ftype, label, [text])
        if var.endswith("maxusers"):
            choices = sorted({n for n in (10, 20, 30, 50, 100, 200, 500, 1000)
                              if n <= max_users_limit} | {max_users_limit, value})
            for n in choices:
                field.subelement("option", attrs={"label": str(n)}).subelement("value", text=str(n))
        elif var.endswith("whois") or var.endswith("allowpm"):
            for choice in WHOIS if var.endswith("whois") else ALLOW_PM:
                opt = field.subelement("option", attrs={"label": choice})
                opt.subelement("value", text=choice)
    return form


def form_values(form: Element) -> dict[str, list[str]]:
    """var -> values of a submitted form."""
    out: dict[str, list[str]] = {}
    for field in form.findall("field", DATA_NS):
        var = field.get("var")
        if var:
            out[var] = [v.text for v in field.findall("value", DATA_NS)]
    return out


def _bool(text: str) -> bool:
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise StanzaError("not-acceptable", f"{text!r} is not a boolean")


def apply_config(config: dict[str, Any], form: Element, max_users_limit: int,
                 max_history: int) -> dict[str, Any]:
    """A new config: ``config`` with the submitted form's values (not-acceptable on a bad
    value; fields this service does not know are ignored, as XEP-0004 allows)."""
    new = dict(config)
    for var, values in form_values(form).items():
        spec = FIELDS.get(var)
        if spec is None:
            continue
        key, ftype, _label = spec
        text = values[0] if values else ""
        if ftype == "boolean":
            new[key] = _bool(text)
        elif key in ("max_users", "history_length"):
            try:
                number = int(text) if text not in ("", "none") else (
                    max_users_limit if key == "max_users" else 0)
            except ValueError:
                raise StanzaError("not-acceptable", f"{var}: {text!r} is not a number") from None
            limit = max_users_limit if key == "max_users" else max_history
            if number < (1 if key == "max_users" else 0) or number > limit:
                raise StanzaError("not-acceptable", f"{var} must be between "
                                  f"{1 if key == 'max_users' else 0} and {limit}")
            new[key] = number
        elif key == "whois":
            if text not in WHOIS:
                raise StanzaError("not-acceptable", f"{var} must be one of {', '.join(WHOIS)}")
            new[key] = text
        elif key == "allow_pm":
            if text in ("1", "true", "0", "false"):
                text = "anyone" if _bool(text) else "none"
            if text not in ALLOW_PM:
                raise StanzaError("not-acceptable", f"{var} must be one of {', '.join(ALLOW_PM)}")
            new[key] = text
        else:
            new[key] = text
    if new["password_protected"] and not new["password"]:
        raise StanzaError("not-acceptable", "a password-protected room needs a roomsecret")
    return new


def room_features(config: dict[str, Any]) -> list[str]:
    """The ``muc_*`` disco#info features that describe a room configured so."""
    c = config
    return [
        "muc_persistent" if c["persistent"] else "muc_temporary",
        "muc_public" if c["public"] else "muc_hidden",
        "muc_membersonly" if c["members_only"] else "muc_open",
        "muc_passwordprotected" if c["password_protected"] else "muc_unsecured",
        "muc_moderated" if c["moderated"] else "muc_unmoderated",
        "muc_nonanonymous" if c["whois"] == "anyone" else "muc_semianonymous",
    ]


def info_form(config: dict[str, Any], subject: str, occupants: int) -> Element:
    """The ``muc#roominfo`` extended disco#info form (XEP-0128)."""
    form = Element("x", DATA_NS, {"type": "result"}, [])
    _field(form, "FORM_TYPE", "hidden", "", [INFO_FORM])
    _field(form, "muc#roominfo_description", "text-single", "Description", [config["desc"]])
    _field(form, "muc#roominfo_subject", "text-single", "Subject", [subject])
    _field(form, "muc#roominfo_occupants", "text-single", "Occupants", [str(occupants)])
    _field(form, "muc#roomconfig_roomname", "text-single", "Name", [config["name"]])
    _field(form, "muc#maxhistoryfetch", "text-single", "History", [str(config["history_length"])])
    return form
