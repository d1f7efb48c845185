"""XEP-0363 HTTP File Upload, the parts without I/O: slot signatures, the ``Range`` header,
the headers a download is served with, and the checks on what a client asks for."""

from __future__ import annotations

import hashlib
import hmac
import re

#: Slot ids (random, URL-safe): the only thing between a GET URL and the file.
SLOT_RE = re.compile(r"[A-Za-z0-9_-]{20,64}")
#: Types a browser may render inline from the upload domain; anything else is served as a
#: download, so that an uploaded HTML or SVG file cannot run script in the page's origin
#: (the CSP forbids it too; belt and braces).
INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
    "audio/mpeg", "audio/ogg", "audio/opus", "audio/aac", "audio/mp4", "audio/wav",
    "audio/webm", "audio/flac", "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "text/plain", "application/pdf",
})
_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
                      r"(\s*;\s*[A-Za-z0-9_-]+=[A-Za-z0-9_.-]+)*")


def sign(secret: bytes, slot: str, filename: str, size: int, content_type: str, expires: int,
         owner: str) -> str:
    """The PUT URL's signature: HMAC-SHA256 over everything the slot grants."""
    msg = "\0".join((slot, filename, str(size), content_type, str(expires), owner)).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def verify(secret: bytes, signature: str, slot: str, filename: str, size: int,
           content_type: str, expires: int, owner: str) -> bool:
    expected = sign(secret, slot, filename, size, content_type, expires, owner)
    return hmac.compare_digest(expected, signature)


def check_filename(name: str | None) -> str | None:
    """Why ``name`` is no acceptable file name, or None.  (It is never a path on disk:
    files are stored under their slot id; it only ends the URL.)"""
    if not name:
        return "a file name is required"
    if len(name.encode()) > 255:
        return "the file name is too long"
    if name in (".", "..") or any(c in name for c in "/\\") or not name.isprintable():
        return "the file name must not contain slashes or control characters"
    return None


def check_content_type(value: str) -> bool:
    return bool(_TYPE_RE.fullmatch(value)) and len(value) <= 255


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The one byte range ``header`` asks of a ``size``-byte file as (first, last), None
    for the whole file (no header, or one this server does not serve partially: several
    ranges), False when it cannot be satisfied (416)."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            if not last.isdigit():
                return None
            n = int(last)
            if n == 0 or size == 0:
                return False
            return max(0, size - n), size - 1
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if last and start > end:
        return None  # syntactically invalid: ignored (RFC 9110 §14.2)
    if start >= size:
        return False
    return start, min(end, size - 1)


def download_headers(content_type: str, filename: str) -> dict[str, str]:
    """What every download carries: no script, no framing, no sniffing; a type that is not
    known to be harmless inline is an attachment."""
    base = content_type.split(";")[0].strip().lower()
    headers = {
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=86400",
    }
    if base not in INLINE_TYPES:
        quoted = "".join(c if c.isascii() and c.isalnum() or c in "._- " else "_" for c in filename)
        headers["Content-Disposition"] = f'attachment; filename="{quoted}"'
    return headers
