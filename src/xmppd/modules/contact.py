"""XEP-0157: contact addresses (abuse, admin, feedback, sales, security, support) in the
server's disco#info, as a XEP-0128 ``http://jabber.org/network/serverinfo`` form.

Each option is a list of URIs (``mailto:``, ``xmpp:``, ``https:``...); a type with no
address is left out of the form, and with no address at all there is no form.
"""

from __future__ import annotations

import re

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element

SERVERINFO_NS = "http://jabber.org/network/serverinfo"
DATA_NS = "jabber:x:data"
KINDS = ("abuse", "admin", "feedback", "sales", "security", "support")
DISCO_EXTENSIONS = "disco/info-extensions"  # the fold event the disco module declares
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_WHAT = {
    "abuse": "where to report abuse (spam, harassment) by this server's users",
    "admin": "the server's administrators",
    "feedback": "where to send feedback about the service",
    "sales": "whom to ask about buying the service",
    "security": "where to report security problems",
    "support": "where users get help",
}


def _uris(value: list) -> str | None:
    for uri in value:
        if not isinstance(uri, str) or not _URI.fullmatch(uri):
            return f"{uri!r} is not a URI (like mailto:abuse@example.org or xmpp:a@example.org)"
    return None


def serverinfo_form(addresses: dict[str, tuple[str, ...]]) -> Element | None:
    """The XEP-0128 form for ``addresses`` (type -> URIs), None when there are none."""
    if not any(addresses.values()):
        return None
    form = Element("x", DATA_NS, {"type": "result"})
    form.subelement("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).subelement(
        "value", text=SERVERINFO_NS)
    for kind in KINDS:
        if addresses.get(kind):
            field = form.subelement("field", attrs={"var": f"{kind}-addresses",
                                                    "type": "list-multi"})
            for uri in addresses[kind]:
                field.subelement("value", text=uri)
    return form


class Contact(Module):
    name = "contact"
    workers_safe = True
    xeps = ("XEP-0157",)
    soft_depends = ("disco",)  # without disco there is no disco#info to extend
    options = {
        # a list of strings, checked by _uris (an `item` type would make it a tuple)
        kind: Option(list, [], f"{_WHAT[kind]}: a list of URIs", check=_uris)
        for kind in KINDS
    }

    def load(self, api: ModuleAPI) -> None:
        self.form = serverinfo_form({kind: api.options[kind] for kind in KINDS})
        if self.form is not None and api.service("disco") is not None:
            api.hook(DISCO_EXTENSIONS, self.extend)

    def extend(self, forms: list[Element]) -> list[Element]:
        forms.append(self.form.copy())
        return forms
