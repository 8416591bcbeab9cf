"""What every fuzz target shares: the engine, the seed corpus and the crash rule.

A target is ``check(data: bytes) -> None`` plus the exceptions its parser documents. Anything
else that escapes ``check`` is a crash: libFuzzer (through atheris) saves the input under
``fuzz/crashes/`` and stops. Bugs that are already filed (``known.py``) are counted and
printed once instead, so a bounded run keeps exploring past them instead of stopping on the
first shallow, known input.

Engine: atheris (libFuzzer, coverage-guided over the instrumented ``tlsrpt_lmtp`` package).
Without atheris (a platform it has no wheel for), a seeded random-mutation loop runs instead:
it is not coverage-guided and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples" / "real"
sys.path.insert(0, str(ROOT))

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the platform
    atheris = None

import known  # noqa: E402  (fuzz/ is sys.path[0] when a target runs)

Check = Callable[[bytes], None]
Mutator = Callable[[bytes, int, int], bytes]  # (data, max_size, seed) -> new input


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Import the code under test inside this block so atheris can see its coverage."""
    if atheris is None:
        yield
        return
    with atheris.instrument_imports(include=["tlsrpt_lmtp"]):
        yield


def samples(*suffixes: str) -> list[bytes]:
    """The real sample files (``../shared/samples/real``) with these suffixes, if present."""
    if not SAMPLES.is_dir():
        return []
    return [p.read_bytes() for p in sorted(SAMPLES.iterdir()) if p.name.endswith(suffixes)]


def guarded(check: Check, documented: tuple[type[BaseException], ...]) -> Check:
    """``check`` with documented exceptions swallowed and known bugs counted, not raised."""
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            check(data)
        except documented:
            pass
        except Exception as exc:
            name = known.match(exc)
            if name is None:
                raise
            if name not in seen:
                seen.add(name)
                print(
                    f"KNOWN {name}: {type(exc).__name__}: {exc!s:.120} <- {data[:80]!r}",
                    file=sys.stderr,
                    flush=True,
                )

    return one_input


def write_corpus(directory: Path, seeds: Iterable[bytes]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        n += 1
    return n


def main(
    name: str,
    check: Check,
    documented: tuple[type[BaseException], ...],
    seeds: Callable[[], Iterable[bytes]],
    mutator: Mutator | None = None,
) -> None:
    """Run one target. Arguments after the script name go to libFuzzer (``-max_total_time=``,
    corpus directories...); with none, the corpus is ``fuzz/corpus/<name>`` (kept between runs,
    gitignored) refreshed from the seeds."""
    one_input = guarded(check, documented)
    args = sys.argv[1:]
    corpus = ROOT / "fuzz" / "corpus" / name
    n = write_corpus(corpus, seeds())
    print(f"{name}: {n} seeds", file=sys.stderr, flush=True)
    if not any(not a.startswith("-") for a in args):
        args.append(str(corpus))
    if atheris is None:
        _mutation_loop(name, one_input, corpus, args, mutator)
        return
    extra = {"custom_mutator": mutator} if mutator else {}
    atheris.Setup([sys.argv[0], *args], one_input, **extra)
    atheris.Fuzz()


def byte_mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's own mutation (for custom mutators to fall back on)."""
    if atheris is not None:
        return bytes(atheris.Mutate(data, max_size))
    rng = random.Random(seed)
    return _mutate(rng, data, [data])[:max_size]


def _option(args: list[str], key: str, default: str) -> str:
    for a in args:
        if a.startswith(f"-{key}="):
            return a.partition("=")[2]
    return default


def _mutation_loop(
    name: str, one_input: Check, corpus: Path, args: list[str], mutator: Mutator | None
) -> None:
    """Fallback without atheris: random mutations of the seeds for the time given; input
    files given as arguments are run once each instead (to reproduce a crash)."""
    files = [Path(a) for a in args if not a.startswith("-") and Path(a).is_file()]
    if files:
        for path in files:
            one_input(path.read_bytes())
        return
    seconds = float(_option(args, "max_total_time", "10"))
    prefix = _option(args, "artifact_prefix", str(ROOT / "fuzz" / "crashes" / f"{name}-"))
    rng = random.Random(int(_option(args, "seed", "1")))
    pool = [p.read_bytes() for p in sorted(corpus.iterdir())] or [b""]
    runs = 0
    start = time.monotonic()
    print("engine: random mutation (atheris missing: NOT coverage-guided)", file=sys.stderr)
    while time.monotonic() - start < seconds:
        base = rng.choice(pool)
        data = (
            mutator(base, 1 << 16, rng.randrange(1 << 30)) if mutator else _mutate(rng, base, pool)
        )
        runs += 1
        try:
            one_input(data)
        except Exception:
            traceback.print_exc()
            path = Path(prefix + "crash-" + hashlib.sha1(data).hexdigest())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"stat::number_of_executed_units: {runs}", file=sys.stderr)
            print(f"==ERROR: crash; input written to {path}", file=sys.stderr)
            sys.exit(1)
    print(f"stat::number_of_executed_units: {runs}", file=sys.stderr)
    os._exit(0)


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del buf[at : at + rng.randint(1, 64)]
        elif op == 3:
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            buf[at:] = other[cut:]
        else:
            buf[at:at] = rng.choice(
                [
                    b"\\ud800",
                    b"99999999999999999999",
                    b"=?utf-7?q?+2AA-?=",
                    b"\x1f\x8b",
                    b"PK\x03\x04",
                    b"\r\n\r\n",
                    b"--",
                    b"\x00",
                ]
            )
    return bytes(buf)
