#!/usr/bin/env python3
"""Fill an xmppd message archive (XEP-0313, module ``mam``) directly through xmppd's storage
API, before the server starts: the ``mam-page`` workload then pages through a large archive
without sending a million messages over XMPP first.

Writes what ``modules/mam.py`` writes for a received chat message: in the ``mam`` namespace's
``archive`` store, owner = the account's bare JID, ``data`` = the stanza as
``encode_stanza`` serializes it, ``with_jid`` = the peer's bare JID, ``id`` = ``new_item_id()``,
``stamp`` = seconds since the epoch (spread over the past ``--span-days``).

    python benchmarks/fill_archive.py --config xmppd.toml --owner user0@localhost \\
        --peer user1@localhost -n 10000            # 1 000 000: -n 1000000 (see README)

Run it while the server is stopped (SQLite: one writer). Idempotent only in the sense that a
second run appends N more.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


async def fill(config_path: str, owner: str, peer: str, count: int, batch: int, span_days: float) -> float:
    """Append ``count`` messages to ``owner``'s archive; returns the seconds it took."""
    from xmppd.core.config import load
    from xmppd.storage import open_storage
    from xmppd.storage.stores import new_item_id
    from xmppd.xml.element import Element
    from xmppd.xml.stanza import encode_stanza

    config = load(config_path)
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    storage = await open_storage(config.storage_url)
    t0 = time.perf_counter()
    try:
        archive = storage.open_store("mam", "archive")
        now = time.time()
        start = now - span_days * 86400
        step = (now - start) / max(1, count)
        body = "archived message " + "y" * 40

        def item(i: int) -> tuple[bytes, float]:
            msg = Element("message", "jabber:client",
                          {"from": f"{peer}/load", "to": f"{owner}/load", "type": "chat", "id": f"f{i}"}, [])
            msg.subelement("body", "jabber:client").text = f"{body} {i}"
            return encode_stanza(msg), start + i * step

        done = 0
        while done < count:
            n = min(batch, count - done)
            # Concurrent appends: the SQLite backend may group them into one transaction.
            await asyncio.gather(*(archive.append(owner, data, stamp=stamp, with_jid=peer, id=new_item_id())
                                   for data, stamp in map(item, range(done, done + n))))
            done += n
            if count >= 100_000 and done % 100_000 < batch:
                rate = done / (time.perf_counter() - t0)
                print(f"fill_archive: {done}/{count} ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    finally:
        await storage.close()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the xmppd TOML (storage location)")
    p.add_argument("--owner", default="user0@localhost", help="bare JID whose archive is filled")
    p.add_argument("--peer", default="user1@localhost", help="bare JID of the other party")
    p.add_argument("-n", "--count", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=1000, help="appends in flight")
    p.add_argument("--span-days", type=float, default=30.0, help="timestamps spread over this many days")
    args = p.parse_args(argv)
    elapsed = asyncio.run(fill(args.config, args.owner, args.peer, args.count, args.batch, args.span_days))
    print(f"fill_archive: {args.count} messages for {args.owner} in {elapsed:.1f} s "
          f"({args.count / elapsed if elapsed else 0:,.0f}/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
