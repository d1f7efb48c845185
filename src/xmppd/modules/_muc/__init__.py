"""The parts of the ``muc`` module (XEP-0045): rooms, their configuration forms, the
one-serialization fan-out and the room archive.  The module itself is
:mod:`xmppd.modules.muc`."""
