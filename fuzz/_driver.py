"""Shared plumbing for the fuzz harnesses: input decoding, instrumentation, the main loop.

Each harness module defines ``test_one_input(data: bytes) -> None``, which raises on a
finding (an unexpected exception, a divergence between twins, a broken invariant) and
returns otherwise.  ``main()`` runs it under atheris (libFuzzer) when atheris is
installed; without atheris it falls back to a small random-mutation loop over the seed
corpus, so the same command works everywhere (with far less coverage guidance).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"


def twins(pure: Any, compiled: str) -> dict[str, Any]:
    """``{"pure": pure, "compiled": xmppd._speedups.<compiled>}``; without the compiled
    twin when it is not built (then only the invariants are checked), unless
    ``XMPPD_REQUIRE_EXTENSIONS`` is set."""
    impls = {"pure": pure}
    try:
        impls["compiled"] = importlib.import_module(f"xmppd._speedups.{compiled}")
    except ImportError:
        from xmppd._impl import REQUIRE_EXTENSIONS

        if REQUIRE_EXTENSIONS:
            raise
    return impls


class FuzzInput:
    """Consume structured values from fuzzer bytes (a tiny, dependency-free stand-in for
    ``atheris.FuzzedDataProvider``, so harnesses also run without atheris).

    Exhausted input reads as zeros, so every byte string is a valid input.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def pick(self, options: list | tuple):
        """One of ``options``, chosen by the next byte."""
        return options[self.byte() % len(options)]

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def chunk(self) -> bytes:
        """A length-prefixed byte string (length from one byte)."""
        n = min(self.byte(), self.remaining())
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def split_points(seed: bytes, length: int) -> list[int]:
    """Deterministic cut offsets for feeding ``length`` bytes in pieces, from ``seed``.

    Seed ``b"\\0..."`` means one piece; other seeds mix byte-at-a-time runs with random
    sizes, because tokenizer bugs hide at chunk borders (inside a tag, a UTF-8 sequence,
    a character reference).
    """
    if not any(seed) or length <= 1:
        return []
    rng = random.Random(seed)
    mode = seed[0] % 4
    if mode == 1:  # every byte on its own
        return list(range(1, length))
    cuts: set[int] = set()
    count = rng.randint(1, min(length - 1, 16 if mode == 2 else 64))
    for _ in range(count):
        cuts.add(rng.randint(1, length - 1))
    return sorted(cuts)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@contextlib.contextmanager
def instrumented(enabled: bool) -> Iterator[None]:
    """Instrument the ``xmppd`` modules imported inside the block for atheris coverage."""
    if enabled:
        try:
            import atheris
        except ImportError:
            enabled = False
    if not enabled:
        yield
        return
    with atheris.instrument_imports(include=["xmppd"]):
        yield


def seed_files(name: str) -> list[Path]:
    """The seed corpus of harness ``name`` (``fuzz/corpus/<name>/``)."""
    return sorted(p for p in (CORPUS_DIR / name).iterdir() if p.is_file())


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 4))
        elif op == 2 and buf:  # delete a range
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 3 and pool:  # splice from another seed
            other = rng.choice(pool)
            a = rng.randint(0, len(other))
            buf[pos:pos] = other[a : a + rng.randint(1, 32)]
        elif op == 4 and buf:  # duplicate a range
            a = rng.randint(0, len(buf) - 1)
            buf[pos:pos] = buf[a : a + rng.randint(1, 16)]
        else:  # interesting bytes
            buf[pos:pos] = rng.choice([b"\x00", b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"&",
                                      b"<", b">", b"'", b'"', b"=", b",", b"@", b"/", b":",
                                      b"\xf0\x9f", b"\r\n", b"]]>", b"&#0;", b"\xe2\x80\x8b"])
    return bytes(buf)


def _random_loop(name: str, one: Callable[[bytes], None], seconds: float, max_len: int,
                 per_input: int) -> int:
    """A coverage-blind fallback: mutate seeds for ``seconds``; 1 on the first finding."""
    pool = [p.read_bytes() for p in seed_files(name)] or [b""]
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "0")) or None)

    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"one input took more than {per_input} s")

    signal.signal(signal.SIGALRM, hang)
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(pool), pool)[:max_len]
        signal.alarm(per_input)
        try:
            one(data)
        except BaseException:
            signal.alarm(0)
            out = Path(os.environ.get("FUZZ_ARTIFACTS", ".")) / f"crash-{name}-{runs}"
            out.write_bytes(data)
            traceback.print_exc()
            print(f"== finding written to {out} (input {data!r})", file=sys.stderr)
            return 1
        signal.alarm(0)
        runs += 1
        if rng.random() < 0.05:  # keep some mutants as new parents
            pool.append(data)
    print(f"== {name}: {runs} inputs in {seconds:.0f} s, no finding (random fallback)")
    return 0


def main(name: str, one: Callable[[bytes], None]) -> None:
    """Run harness ``name`` under atheris, or the random fallback (same libFuzzer flags
    ``-max_total_time``, ``-max_len`` and ``-timeout`` are understood)."""
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        atheris.Setup(sys.argv, one)
        atheris.Fuzz()
        return
    opts = dict(a[1:].split("=", 1) for a in sys.argv[1:] if a.startswith("-") and "=" in a)
    print("atheris is not installed: random-mutation fallback", file=sys.stderr)
    sys.exit(_random_loop(name, one, float(opts.get("max_total_time", 10)),
                          int(opts.get("max_len", 4096)), int(opts.get("timeout", 10))))
