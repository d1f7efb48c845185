"""XEP and RFC feature modules; each plugs into the core through :mod:`xmppd.core.hooks`."""
