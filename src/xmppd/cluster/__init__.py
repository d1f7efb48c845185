"""Several worker processes serving one set of domains (issue #17, first step: one host).

- :mod:`~xmppd.cluster.codec`: the sans-IO frame codec of worker-to-worker traffic
  (length-prefixed frames carrying batches of records);
- :mod:`~xmppd.cluster.registry`: which full JIDs live on which worker (every worker keeps a
  full replica), :class:`~xmppd.cluster.registry.RemoteSession`, the conflict rule;
- :mod:`~xmppd.cluster.link`: the asyncio shell of the Unix-socket links between workers;
- :mod:`~xmppd.cluster.node`: a worker's end of it, wired into the server by ``server.py``;
- :mod:`~xmppd.cluster.supervisor`: ``xmppd run --workers N``, the process that starts the
  workers and restarts one that dies.

The core does not import this package: a remote session is a :class:`~xmppd.core.session.Session`
(its ``remote`` flag set) in the router's session table, so the router and the modules see
local and remote sessions alike.
"""
