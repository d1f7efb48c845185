"""xmppd: an XMPP server with a Cython hot path."""

__version__ = "0.1.0"
