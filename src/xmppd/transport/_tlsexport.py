"""TLS exported keying material for ``tls-exporter`` channel binding (RFC 9266).

CPython's :mod:`ssl` (up to 3.13) has no API for ``SSL_export_keying_material``, so this
module calls it through :mod:`ctypes` on the OpenSSL that ``_ssl`` is linked with, using
the ``SSL *`` pointer inside the ``_ssl._SSLSocket`` object.  In CPython 3.8-3.14 that
object (``PySSLSocket``) starts with ``PyObject_HEAD; PyObject *Socket; SSL *ssl;``.

Every assumption is checked before any foreign pointer is dereferenced:

* CPython on a known version range, symbols resolvable from ``_ssl``'s own handle;
* the ``Socket`` slot holds exactly what we expect (NULL for a memory-BIO ``SSLObject``,
  a weak reference to the socket for an ``SSLSocket``), which pins the layout;
* ``SSL_get_SSL_CTX(ssl)`` equals the ``SSL_CTX *`` of the Python context object, and
  ``SSL_version(ssl)`` agrees with ``sslobj.version()``.

On any mismatch :func:`export_keying_material` returns ``None`` and the caller simply does
not offer ``tls-exporter``.  Results are only meaningful for TLS 1.3 (RFC 9266 §3).
"""

from __future__ import annotations

import ctypes
import ssl
import sys
import weakref
from typing import Any

__all__ = ["available", "export_keying_material", "tls_exporter"]

_LABEL = b"EXPORTER-Channel-Binding"
_PTR = ctypes.sizeof(ctypes.c_void_p)
_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _load_libssl() -> Any | None:
    if sys.implementation.name != "cpython" or not (3, 8) <= sys.version_info[:2] <= (3, 14):
        return None
    try:
        import _ssl

        # dlopen() of an already loaded object returns its handle; dlsym() on it also
        # searches its dependencies, i.e. exactly the libssl that _ssl uses.
        lib = ctypes.CDLL(_ssl.__file__)
        export = lib.SSL_export_keying_material
        version = lib.SSL_version
        get_ctx = lib.SSL_get_SSL_CTX
    except (ImportError, OSError, AttributeError):
        return None
    export.restype = ctypes.c_int
    export.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
    ]
    version.restype = ctypes.c_int
    version.argtypes = [ctypes.c_void_p]
    get_ctx.restype = ctypes.c_void_p
    get_ctx.argtypes = [ctypes.c_void_p]
    return lib


_LIB = _load_libssl()


def available() -> bool:
    """Whether the helper could bind to OpenSSL at all."""
    return _LIB is not None


def _read_ptr(obj: object, index: int) -> int:
    """The ``index``-th pointer-sized field after ``PyObject_HEAD`` of ``obj``."""
    if type(obj).__basicsize__ < object.__basicsize__ + (index + 1) * _PTR:
        raise ValueError("object too small")
    return ctypes.c_void_p.from_address(id(obj) + object.__basicsize__ + index * _PTR).value or 0


def _ssl_pointer(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> int | None:
    inner = getattr(ssl_object, "_sslobj", None)
    if inner is None or type(inner).__module__ != "_ssl" or _LIB is None:
        return None
    try:
        socket_slot = _read_ptr(inner, 0)
        if isinstance(ssl_object, ssl.SSLSocket):
            if socket_slot not in {id(ref) for ref in weakref.getweakrefs(ssl_object)}:
                return None
        elif socket_slot != 0:
            return None
        ssl_ptr = _read_ptr(inner, 1)
        ctx_ptr = _read_ptr(inner.context, 0)  # PySSLContext: PyObject_HEAD; SSL_CTX *ctx
    except (ValueError, AttributeError):
        return None
    if not ssl_ptr or not ctx_ptr or _LIB.SSL_get_SSL_CTX(ssl_ptr) != ctx_ptr:
        return None
    if _LIB.SSL_version(ssl_ptr) != _VERSIONS.get(inner.version() or "", -1):
        return None
    return ssl_ptr


def export_keying_material(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, label: bytes, length: int
) -> bytes | None:
    """RFC 5705 exporter with no context, or ``None`` if unavailable or unsafe."""
    ptr = _ssl_pointer(ssl_object)
    if ptr is None or _LIB is None:
        return None
    out = ctypes.create_string_buffer(length)
    if _LIB.SSL_export_keying_material(ptr, out, length, label, len(label), None, 0, 0) != 1:
        return None
    return out.raw


def tls_exporter(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """The RFC 9266 ``tls-exporter`` channel binding (TLS 1.3 only), or ``None``."""
    if ssl_object.version() != "TLSv1.3":
        # RFC 9266 §3: with TLS 1.2 it is only safe with extended master secret, which
        # the ssl module cannot tell us; simply do not offer it.
        return None
    return export_keying_material(ssl_object, _LABEL, 32)
