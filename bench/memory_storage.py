"""limits' MemoryStorage and the project's: ``.venv/bin/python bench/memory_storage.py``.

Side by side in one run (docs/performance.md, "The in-memory rate-limit storage"): each
storage gets N distinct keys (default 20,000, ``--keys``) with one moving-window entry of
1 s, as N client addresses seen once would leave; then, once they have expired, one key is
checked in a loop for 2 s (``--seconds``) while the library's expiry thread runs, as a
worker serving one busy client would. Reported per storage: the keys left in ``events``,
the memory the storage still holds (tracemalloc, measured after the expiry pass and before
the loop, since tracing would slow the loop) and the checks a second. A fresh storage with
no old keys is the reference.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

from limits.storage import MemoryStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsd_server.rate_limit_storage import PruningMemoryStorage  # noqa: E402

# The busy key's limit: some checks are allowed, the rest refused, as under a flood.
HOT_LIMIT = 100
HOT_EXPIRY = 1


def measure(storage_class: type[MemoryStorage], keys: int, seconds: float) -> dict:
    """One storage: fill, let expire, trigger a pass, then the loop on one key."""
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    storage = storage_class()
    for number in range(keys):
        storage.acquire_entry(f"LIMITER/addr:client-{number}/token/2/1/second", 2, 1)
    time.sleep(1.1)  # every entry has expired
    storage.acquire_entry("hot", HOT_LIMIT, HOT_EXPIRY)  # schedules the expiry thread
    time.sleep(0.5)  # the pass runs 10 ms later; a slow one has time to finish
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()

    checks = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        storage.acquire_entry("hot", HOT_LIMIT, HOT_EXPIRY)
        checks += 1
    result = {"keys": len(storage.events), "held": held, "rate": checks / seconds}
    storage.reset()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    runs = [
        ("limits MemoryStorage, fresh", MemoryStorage, 0),
        (f"limits MemoryStorage, {args.keys:,} expired keys", MemoryStorage, args.keys),
        (f"PruningMemoryStorage, {args.keys:,} expired keys", PruningMemoryStorage, args.keys),
    ]
    print(f"Python {sys.version.split()[0]}; one key checked in a loop for {args.seconds:g} s")
    print(f"{'storage':<44} {'keys in events':>14} {'memory held':>12} {'checks/s':>10}")
    for label, storage_class, keys in runs:
        result = measure(storage_class, keys, args.seconds)
        print(f"{label:<44} {result['keys']:>14,} {result['held'] / 1e6:>9.2f} MB "
              f"{result['rate']:>10,.0f}")


if __name__ == "__main__":
    main()
