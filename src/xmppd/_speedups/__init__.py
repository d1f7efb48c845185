"""Compiled (Cython) twins of xmppd's hot-path modules; sources live in ``_speedups/``."""
