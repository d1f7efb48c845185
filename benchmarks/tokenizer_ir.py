"""Feed the realistic client stream (``corpus.py``) through a tokenizer ``--repeat`` times,
for instruction counts under callgrind (deterministic, unlike wall time on a shared box).

    PYTHONPATH=src:. valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/tokenizer_ir.py --repeat N [--mode envelope|children|all|pyexpat]

Run with N and 2N: (Ir at 2N - Ir at N) / N / MB is the instructions per MB of one pass
(start-up and imports cancel out).  ``--mode``: ``envelope`` (children not touched),
``children`` (each stanza's child list built, as ``smoke.py``'s every-child figure),
``all`` (every element of every stanza), ``pyexpat`` (pyexpat with no-op handlers).
"""

from __future__ import annotations

import argparse
import importlib
import pyexpat

from benchmarks.corpus import chunks, stream_bytes
from xmppd.xml.element import Element


def _materialize(children: list) -> None:
    for kid in children:
        if type(kid) is not str:
            _materialize(kid.children)


def tokenize(module, pieces: list[bytes], mode: str) -> int:
    """One pass over ``pieces``; the number of events."""
    tok = module.Tokenizer(max_stanza_size=1 << 20)
    count = 0
    for piece in pieces:
        for event in tok.feed(piece):
            count += 1
            if mode == "envelope" or type(event) is not Element:
                continue
            if mode == "all":
                _materialize(event.children)
            else:
                event.children  # noqa: B018 - builds the child list
    return count


def expat(pieces: list[bytes]) -> None:
    """One pass of pyexpat with no-op handlers (the baseline of ``smoke.py``)."""
    parser = pyexpat.ParserCreate(namespace_separator="\x01")
    parser.StartElementHandler = lambda name, attrs: None
    parser.EndElementHandler = lambda name: None
    parser.CharacterDataHandler = lambda text: None
    for piece in pieces:
        parser.Parse(piece, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--mode", choices=("envelope", "children", "all", "pyexpat"), default="children")
    parser.add_argument("--pure", action="store_true", help="the pure twin instead of the compiled one")
    args = parser.parse_args()
    data, _ = stream_bytes(1000)
    pieces = chunks(data, 4096)
    name = "xmppd.xml._tokenizer_pure" if args.pure else "xmppd._speedups.tokenizer"
    module = importlib.import_module(name)
    for _ in range(args.repeat):
        if args.mode == "pyexpat":
            expat(pieces)
        else:
            tokenize(module, pieces, args.mode)
    print(f"{len(data)} bytes x {args.repeat}")


if __name__ == "__main__":
    main()
