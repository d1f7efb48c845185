"""The upload rules without I/O: ranges, download headers, signatures, names."""

from __future__ import annotations

import pytest

from xmppd.modules._upload import (
    check_content_type,
    check_filename,
    download_headers,
    parse_range,
    sign,
    verify,
)


@pytest.mark.parametrize("header, expected", [
    (None, None),
    ("bytes=0-0", (0, 0)),
    ("bytes=5-", (5, 9)),
    ("bytes=-3", (7, 9)),
    ("bytes=-30", (0, 9)),
    ("bytes=2-100", (2, 9)),
    ("bytes=10-", False),
    ("bytes=-0", False),
    ("bytes=5-2", None),  # invalid: the whole file
    ("bytes=0-1,3-4", None),  # several ranges: the whole file
    ("items=0-1", None),
    ("bytes=a-b", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 10) == expected


def test_download_headers():
    inline = download_headers("image/jpeg", "a.jpg")
    assert "Content-Disposition" not in inline
    assert inline["X-Content-Type-Options"] == "nosniff"
    for unsafe in ("text/html", "image/svg+xml", "application/javascript", ""):
        headers = download_headers(unsafe, 'evil"name.html')
        assert headers["Content-Disposition"] == 'attachment; filename="evil_name.html"'
        assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_signatures_cover_every_field():
    args = ("slot", "a.png", 10, "image/png", 1000, "alice@localhost")
    sig = sign(b"k", *args)
    assert verify(b"k", sig, *args)
    assert not verify(b"other", sig, *args)
    for i in range(len(args)):
        changed = list(args)
        changed[i] = changed[i] + 1 if isinstance(changed[i], int) else changed[i] + "x"
        assert not verify(b"k", sig, *changed)


def test_names_and_types():
    assert check_filename("report 2024.pdf") is None
    for bad in ("", ".", "..", "a/b", "a\\b", "a\nb", "x" * 300):
        assert check_filename(bad)
    assert check_content_type("image/png") and check_content_type("text/plain; charset=utf-8")
    assert not check_content_type("nope") and not check_content_type("a/b\r\nX: y")
