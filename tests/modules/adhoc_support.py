"""slixmpp clients running XEP-0050 commands against a test server."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time

from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError
from support import RawClient

ADMIN = "http://jabber.org/protocol/admin#"


async def client(port: int, jid: str, password: str = "secret") -> ClientXMPP:
    """A logged-in slixmpp client with disco, data forms and ad-hoc commands."""
    xmpp = ClientXMPP(jid, password)
    for plugin in ("xep_0030", "xep_0004", "xep_0050", "xep_0077"):
        xmpp.register_plugin(plugin)
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.enable_direct_tls = False
    started = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    xmpp.add_event_handler("failed_auth", lambda _: started.done() or started.set_exception(
        PermissionError("authentication failed")))
    xmpp.connect("127.0.0.1", port)
    await asyncio.wait_for(started, 10)
    return xmpp


async def close(*clients: ClientXMPP) -> None:
    for xmpp in clients:
        await asyncio.wait_for(xmpp.disconnect(), 5)


async def command(xmpp: ClientXMPP, node: str, fields: dict | None = None, *,
                  action: str = "execute", sessionid: str | None = None,
                  to: str = "localhost"):
    """Send one command request; the ``<command/>`` of the result (IqError on an error)."""
    form = None
    if fields is not None:
        form = xmpp.plugin["xep_0004"].make_form(ftype="submit")
        for var, value in fields.items():
            if isinstance(value, list):
                form.add_field(var=var, ftype="jid-multi", value=value)
            elif isinstance(value, bool):
                form.add_field(var=var, ftype="boolean", value=value)
            else:
                form.add_field(var=var, value=value)
    iq = await xmpp.plugin["xep_0050"].send_command(
        to, node, action=action, payload=form, sessionid=sessionid, timeout=10)
    return iq["command"]


async def command_error(xmpp: ClientXMPP, node: str, fields: dict | None = None,
                        **kw) -> tuple[str, str]:
    """The (stanza condition, XEP-0050 condition or "") a command request is refused with."""
    try:
        await command(xmpp, node, fields, **kw)
    except IqError as exc:
        error = exc.iq.xml.find("{jabber:client}error")
        app = [child.tag.split("}")[1] for child in error
               if child.tag.startswith("{http://jabber.org/protocol/commands}")]
        return exc.iq["error"]["condition"], (app[0] if app else "")
    raise AssertionError(f"{node} was not refused")


DATA = "{jabber:x:data}"


def fields(cmd) -> dict[str, list[str]]:
    """The fields of the command's form: var -> values."""
    x = cmd.xml.find(DATA + "x")
    if x is None:
        return {}
    return {f.get("var"): [v.text or "" for v in f.findall(DATA + "value")]
            for f in x.findall(DATA + "field")}


def field_values(cmd, var: str) -> list[str]:
    return fields(cmd)[var]


def notes(cmd) -> list[tuple[str, str]]:
    return list(cmd["notes"])


def sasl_plain(port: int, user: str, password: str) -> str:
    """The server's answer to a PLAIN login (``<success`` or the ``<failure>``)."""
    raw = RawClient(port)
    try:
        raw.header()
        raw.starttls()
        raw.header()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        return raw.read_until("<success[^>]*(/>|>.*?</success>)|</failure>")
    finally:
        raw.close()


def wait_until(check, timeout: float = 5.0) -> bool:
    """Poll ``check()`` until it is true (work the server finishes in the background)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
