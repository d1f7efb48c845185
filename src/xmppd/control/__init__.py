"""The control socket: ``xmppd status``, ``online``, ``kick``, and account changes made by
the ``xmppd`` command while the server runs, reach the running server through it."""
