"""XEP-0363 HTTP File Upload on ``upload.<domain>`` (option ``host``).

A local user asks the service for a slot (file name, size, content type); it answers with
a PUT URL signed with HMAC-SHA256 (a secret kept owner-only in the data directory; valid
``slot_lifetime_s``) and a GET URL (an unguessable slot id).  The PUT's ``Content-Length``
must be the slot's size; the body is streamed to disk under ``<data_dir>/upload/<slot>/``
(never whole in memory) and the file is served back streamed too, with byte ranges and
headers that keep a browser from running anything in it (CSP, ``nosniff``, attachment for
types not known to be harmless inline).  Limits: ``max_file_size`` (the ``file-too-large``
error names it, and disco advertises it in an XEP-0128 form), a per-user quota (a full
quota is ``resource-constraint`` with ``<retry stamp/>``: when enough of the user's files
expire), and the expiry of stored files (``expire_after_s``, a week by default).

The public base of the URLs is ``base_url``, else ``http.external_url``, else the HTTPS
listener (else the HTTP one) under the service's domain.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.modules._upload import (
    SLOT_RE,
    check_content_type,
    check_filename,
    download_headers,
    parse_range,
    sign,
    verify,
)
from xmppd.secretfile import load_or_create
from xmppd.transport.http import HTTPError, HTTPRequest, Response, cors_headers
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, error_reply, iq_payload, reply

NS = "urn:xmpp:http:upload:0"
INFO_NS = "http://jabber.org/protocol/disco#info"
ITEMS_NS = "http://jabber.org/protocol/disco#items"
DATA_NS = "jabber:x:data"
PREFIX = "/upload/"
CHUNK = 64 * 1024
#: A partial upload not written to for this long is abandoned (its worker died): swept.
STALLED_PUT_S = 600
MiB = 1024 * 1024


def _check_host(pattern: str) -> str | None:
    return None if "{domain}" in pattern else 'must contain {domain} (e.g. "upload.{domain}")'


def _check_url(url: str) -> str | None:
    if url and not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    return None


class QuotaFull(Exception):
    """The user's quota cannot take the file before ``retry`` (a Unix time)."""

    def __init__(self, retry: float) -> None:
        super().__init__(retry)
        self.retry = retry


class Upload(Module):
    """The upload service: slots over XMPP, files over HTTP."""

    name = "upload"
    xeps = ("XEP-0363",)
    soft_depends = ("disco", "s2s")
    #: slots are signed with the shared key, files and their metadata are in the shared data
    #: directory, quotas are counted in one storage transaction, and a PUT claims its slot
    #: in the file system: any worker may take a request
    workers_safe = True
    options = {
        "host": Option(str, "upload.{domain}", "the service's domain, per served domain",
                       check=_check_host),
        "name": Option(str, "HTTP File Upload", "the service's name in disco"),
        "max_file_size": Option(int, 50 * MiB, "the largest file, in bytes", min=1),
        "quota_bytes": Option(int, 1024 * MiB, "bytes of files one user may have stored at "
                              "once (0: no limit)", min=0),
        "expire_after_s": Option(int, 7 * 86400, "stored files are deleted after this long "
                                 "(0: never)", min=0),
        "slot_lifetime_s": Option(int, 300, "how long a PUT URL stays valid", min=1,
                                  max=86400),
        "base_url": Option(str, "", "the public base URL of the file URLs, e.g. behind a "
                           "reverse proxy (default: http.external_url, else the HTTPS "
                           "listener, else the HTTP one)", check=_check_url),
        "sweep_interval_s": Option(float, 3600.0, "how often expired files are looked for",
                                   min=0.1),
        "cors_origins": Option(list, ("*",), "origins whose pages may upload and download "
                               "from a browser ('*': any)", item=str),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        opts = api.options
        self.services = {opts["host"].format(domain=d): d for d in api.domains}
        self.root = Path(api.config.data_dir) / "upload"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.secret = load_or_create(Path(api.config.data_dir) / "upload.key")
        self.store = api.open_store("keyvalue")
        self.uploading: set[str] = set()  # slots whose PUT is in progress
        api.hook("route/remote", self.route, priority=20)
        api.hook("account-deleting", self.account_deleting)
        api.add_http_route(PREFIX, self.http, prefix=True, methods=("PUT", "GET", "OPTIONS"),
                           max_body_bytes=opts["max_file_size"])
        api.every(opts["sweep_interval_s"], self.sweep)
        disco = api.service("disco")
        if disco is not None:
            for jid, domain in self.services.items():
                api.on_unload(disco.add_item(jid, opts["name"], domain))
        manager = api.service("s2s")  # tells the s2s manager these domains are ours
        if manager is not None:
            extra = {d for d in self.services if d not in manager.extra_domains}
            manager.extra_domains.update(extra)
            api.on_unload(lambda: manager.extra_domains.difference_update(extra))

    # -- XMPP: slots and disco ----------------------------------------------------------------

    def route(self, stanza: Element, origin: Any) -> bool:
        try:
            target = JID(stanza.get("to", ""))
        except JIDError:
            return False
        if target.domain not in self.services:
            return False
        if target.localpart is not None or target.resource is not None:
            self.api.bounce(stanza, "service-unavailable")
            return True
        if stanza.name == "iq" and stanza.get("type") in ("get", "set"):
            self.api.spawn(self.iq(stanza))
        return True

    async def iq(self, iq: Element) -> None:
        payload = iq_payload(iq)
        key = (iq.get("type"), None if payload is None else payload.ns,
               None if payload is None else payload.name)
        try:
            if key == ("get", NS, "request"):
                out = await self.slot(iq, payload)
            elif key == ("get", INFO_NS, "query"):
                out = self.disco_info(iq, payload)
            elif key == ("get", ITEMS_NS, "query"):
                out = reply(iq)
                out.subelement("query", ITEMS_NS)
            else:
                raise StanzaError("service-unavailable")
        except StanzaError as exc:
            self.api.bounce(iq, exc.condition, exc.text)
            return
        self.api.send(out)

    def disco_info(self, iq: Element, payload: Element) -> Element:
        if payload.get("node"):
            raise StanzaError("item-not-found")
        out = reply(iq)
        query = out.subelement("query", INFO_NS)
        query.subelement("identity", attrs={"category": "store", "type": "file",
                                            "name": self.api.options["name"]})
        for feature in (INFO_NS, ITEMS_NS, NS):
            query.subelement("feature", attrs={"var": feature})
        form = query.subelement("x", DATA_NS, {"type": "result"})
        for var, value, hidden in ((("FORM_TYPE", NS, True)),
                                   ("max-file-size", str(self.api.options["max_file_size"]),
                                    False)):
            field = form.subelement("field", DATA_NS, {"var": var})
            if hidden:
                field.set("type", "hidden")
            field.subelement("value", DATA_NS, text=value)
        return out

    async def slot(self, iq: Element, request: Element) -> Element:
        opts = self.api.options
        try:
            requester = JID(iq.get("from", ""))
        except JIDError:
            raise StanzaError("bad-request") from None
        if requester.domain not in self.api.hosts or requester.localpart is None:
            raise StanzaError("not-allowed", "only local users may upload here")
        filename = request.get("filename")
        problem = check_filename(filename)
        if problem:
            raise StanzaError("bad-request", problem)
        size_text = request.get("size", "")
        if not size_text.isdigit() or int(size_text) == 0:
            raise StanzaError("bad-request", "'size' must be a positive number of bytes")
        size = int(size_text)
        content_type = request.get("content-type", "").strip()
        if content_type and not check_content_type(content_type):
            raise StanzaError("bad-request", "malformed 'content-type'")
        if size > opts["max_file_size"]:
            return self._too_large(iq, size)
        owner = str(requester.bare)
        slot = secrets.token_urlsafe(24)
        now = time.time()
        # Whole seconds in the URL, rounded up: a slot is never valid for less than its
        # lifetime (int(now) would cut up to a second off it).
        expires = math.ceil(now) + opts["slot_lifetime_s"]
        try:
            await self._reserve(owner, slot, size, expires, now)
        except QuotaFull as exc:
            self.api.count_limit("modules.upload.quota_bytes")
            self.api.log.info("limit modules.upload.quota_bytes (%d) reached for %s: slot of "
                              "%d bytes refused", opts["quota_bytes"], owner, size)
            return self._quota_full(iq, exc.retry)
        meta = {"owner": owner, "filename": filename, "size": size,
                "content_type": content_type, "slot_expires": expires, "expires": expires,
                "state": "pending"}
        directory = self.root / slot
        directory.mkdir(mode=0o700)
        _write_meta(directory, meta)
        # the served domain: its certificate is the HTTPS listener's (by SNI)
        base = self.base_url(self.services[JID(iq.get("to", "")).domain])
        path = f"{base}{PREFIX}{slot}/{quote(filename, safe='')}"
        signature = sign(self.secret, slot, filename, size, content_type, expires, owner)
        out = reply(iq)
        slot_el = out.subelement("slot", NS)
        slot_el.subelement("put", NS, {"url": f"{path}?e={expires}&s={signature}"})
        slot_el.subelement("get", NS, {"url": path})
        self.api.log.info("upload slot: owner=%s slot=%s size=%d type=%s", owner, slot, size,
                          content_type or "-")
        return out

    def _too_large(self, iq: Element, size: int) -> Element:
        limit = self.api.options["max_file_size"]
        self.api.count_limit("modules.upload.max_file_size")
        self.api.log.info("limit modules.upload.max_file_size (%d) reached: slot of %d bytes "
                          "refused for %s", limit, size, iq.get("from"))
        out = error_reply(iq, "not-acceptable", "modify", f"file too large (at most {limit} bytes)")
        big = out.find("error").subelement("file-too-large", NS)
        big.subelement("max-file-size", NS, text=str(limit))
        return out

    def _quota_full(self, iq: Element, retry: float) -> Element:
        out = error_reply(iq, "resource-constraint", "wait", "upload quota reached")
        stamp = datetime.fromtimestamp(retry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.find("error").subelement("retry", NS, {"stamp": stamp})
        return out

    async def _reserve(self, owner: str, slot: str, size: int, until: float, now: float) -> None:
        """Count ``size`` bytes against ``owner``'s quota until ``until`` (the PUT turns
        the reservation into the stored file's); :class:`QuotaFull` when it cannot."""
        quota = self.api.options["quota_bytes"]
        refused: list[float] = []

        def reserve(files: dict | None) -> Any:
            files = {k: v for k, v in (files or {}).items() if v[1] == 0 or v[1] > now}
            used = sum(v[0] for v in files.values())
            if quota and used + size > quota:
                # when enough of the files (oldest expiry first) are gone; never: in a year
                free, when = quota - used, now + 365 * 86400
                for entry_size, entry_until in sorted(files.values(), key=lambda v: v[1]):
                    if entry_until == 0:
                        continue
                    free += entry_size
                    if free >= size:
                        when = entry_until
                        break
                refused.append(when)
                return files
            files[slot] = [size, until]
            return files

        await self.store.update(owner, "files", reserve)
        if refused:
            raise QuotaFull(refused[0])

    def base_url(self, domain: str) -> str:
        url = self.api.options["base_url"] or self.api.http_external_url
        if url:
            return url.replace("{host}", domain).rstrip("/")
        for kind, scheme in (("http-tls", "https"), ("http", "http")):
            addresses = self.api.addresses(kind)
            if addresses:
                return f"{scheme}://{domain}:{addresses[0][1]}"
        return f"https://{domain}"

    # -- HTTP: PUT and GET --------------------------------------------------------------------

    def cors(self, request: HTTPRequest) -> dict[str, str]:
        return cors_headers(request, self.api.options["cors_origins"], {
            "Access-Control-Allow-Methods": "GET, HEAD, PUT, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Range",
            "Access-Control-Expose-Headers": "Content-Length, Content-Range",
            "Access-Control-Max-Age": "86400"})

    async def http(self, request: HTTPRequest) -> Response:
        cors = self.cors(request)
        if request.method == "OPTIONS":
            return Response(200, b"", cors)
        slot, _, name = request.path[len(PREFIX):].partition("/")
        filename = unquote(name)
        if not SLOT_RE.fullmatch(slot) or check_filename(filename):
            raise HTTPError(404, "not found", cors)
        directory = self.root / slot
        meta = _read_meta(directory)
        if meta is None or meta["filename"] != filename:
            raise HTTPError(404, "not found", cors)
        if request.method == "PUT":
            return await self.put(request, directory, slot, meta, cors)
        return self.get(request, directory, slot, meta, cors)

    async def put(self, request: HTTPRequest, directory: Path, slot: str, meta: dict,
                  cors: dict[str, str]) -> Response:
        query = parse_qs(request.query)
        expires = (query.get("e") or [""])[0]
        signature = (query.get("s") or [""])[0]
        if not expires.isdigit() or not verify(
                self.secret, signature, slot, meta["filename"], meta["size"],
                meta["content_type"], int(expires), meta["owner"]) \
                or int(expires) != meta["slot_expires"]:
            self.api.log.info("upload PUT with a bad signature from %s: slot=%s",
                              request.peer, slot)
            raise HTTPError(403, "bad signature", cors)
        if time.time() > int(expires):
            raise HTTPError(403, "the upload slot has expired", cors)
        if meta["state"] != "pending" or slot in self.uploading:
            raise HTTPError(409, "this slot has been used", cors)
        length = request.content_length
        if length is None:
            raise HTTPError(411, "Content-Length required", cors)
        if length != meta["size"]:
            raise HTTPError(400, f"Content-Length must be the slot's size ({meta['size']})", cors)
        content_type = request.headers.get("content-type", "").strip()
        if meta["content_type"] and content_type and content_type != meta["content_type"]:
            raise HTTPError(400, "Content-Type differs from the slot's", cors)
        part = directory / "data.part"
        try:  # claimed in the file system: another worker may take the same PUT
            fh = open(part, "xb")  # noqa: SIM115 - closed below
        except FileExistsError:
            raise HTTPError(409, "this slot has been used", cors) from None
        if (directory / "data").exists():  # stored by another worker since meta was read
            fh.close()
            part.unlink()
            raise HTTPError(409, "this slot has been used", cors)
        self.uploading.add(slot)
        written = 0
        try:
            with fh:
                async for chunk in request.stream():
                    fh.write(chunk)
                    written += len(chunk)
            if written != meta["size"]:
                raise HTTPError(400, "the body is not the slot's size", cors)
            os.replace(part, directory / "data")
        finally:
            self.uploading.discard(slot)
            if part.exists():
                part.unlink()
        now = time.time()
        lifetime = self.api.options["expire_after_s"]
        until = int(now) + lifetime if lifetime else 0
        meta.update(state="stored", stored=int(now), expires=until)
        _write_meta(directory, meta)

        def keep(files: dict | None) -> Any:
            files = dict(files or {})
            files[slot] = [meta["size"], until]
            return files

        await self.store.update(meta["owner"], "files", keep)
        self.api.log.info("upload stored: owner=%s slot=%s size=%d", meta["owner"], slot,
                          written)
        return Response(201, b"", cors)

    def get(self, request: HTTPRequest, directory: Path, slot: str, meta: dict,
            cors: dict[str, str]) -> Response:
        if meta["state"] != "stored":
            raise HTTPError(404, "not found", cors)
        if meta["expires"] and meta["expires"] < time.time():
            self._delete(slot)
            raise HTTPError(404, "not found", cors)
        size = meta["size"]
        headers = {**cors, **download_headers(meta["content_type"], meta["filename"]),
                   "ETag": f'"{slot}"',
                   "Content-Type": meta["content_type"] or "application/octet-stream"}
        wanted = parse_range(request.headers.get("range"), size)
        if wanted is False:
            raise HTTPError(416, "range not satisfiable", {**cors, "Content-Range": f"bytes */{size}"})
        path = directory / "data"
        if wanted is None:
            return Response(200, _read(path, 0, size), headers, length=size)
        first, last = wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return Response(206, _read(path, first, last - first + 1), headers,
                        length=last - first + 1)

    # -- expiry -------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Delete expired files and unused slots."""
        now = time.time()
        removed = 0
        for directory in self.root.iterdir():
            if directory.name in self.uploading or _uploading_elsewhere(directory, now):
                continue
            meta = _read_meta(directory)
            if meta is None:
                shutil.rmtree(directory, ignore_errors=True)  # half-made by a crash
                continue
            if meta["expires"] and meta["expires"] < now:
                self._delete(directory.name, meta)
                removed += 1
        if removed:
            self.api.log.info("upload: %d expired files and slots deleted", removed)

    def _delete(self, slot: str, meta: dict | None = None) -> None:
        directory = self.root / slot
        meta = meta or _read_meta(directory)
        shutil.rmtree(directory, ignore_errors=True)
        if meta is None:
            return

        def forget(files: dict | None) -> Any:
            if not files or slot not in files:
                return files
            files = dict(files)
            del files[slot]
            return files or None

        self.api.spawn(self.store.update(meta["owner"], "files", forget))

    async def account_deleting(self, jid: JID) -> None:
        files = await self.store.get(str(jid), "files", {}) or {}
        for slot in files:
            if SLOT_RE.fullmatch(slot):
                shutil.rmtree(self.root / slot, ignore_errors=True)


def _uploading_elsewhere(directory: Path, now: float) -> bool:
    """A PUT in progress in another worker: its partial file was written to lately."""
    try:
        return now - (directory / "data.part").stat().st_mtime < STALLED_PUT_S
    except OSError:
        return False


async def _read(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of ``path`` from ``start``, a chunk at a time (the HTTP listener
    waits for the client to take each before the next is read)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _read_meta(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _write_meta(directory: Path, meta: dict) -> None:
    tmp = directory / "meta.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, directory / "meta.json")


