"""The ``memory://`` rate-limit storage, with the keys of expired windows removed.

The bug: ``limits`` (5.8) keeps a moving window's entries in ``MemoryStorage.events``, one
list per key. Its expiry thread trims expired entries but never removes a key whose list
has become empty, so every key ever seen stays until the process restarts, and the thread
walks all of them every 10 ms while requests come in. Each key is a client address (IPv4,
or an IPv6 /64), so an attacker with many addresses (a /48 holds 65,536 /64s) grows every
worker's memory without bound and slows its rate-limited requests (docs/performance.md).

``PruningMemoryStorage`` removes the empty keys after the library's own expiry pass. It
declares ``STORAGE_SCHEME = ["memory"]``, so importing this module (tsd_server/extensions.py
does) makes every ``memory://`` URI in the process use it, in place of limits' own
``memory`` registration. That is on purpose: Flask-Limiter builds its storage from the URI.

Removing a key must not race an ``acquire_entry`` on it. The library pops a key's lock
once its list is empty, so a request still holding that lock and a later pass taking a new
one would both touch the key, and the pass could remove the list the request is about to
fill (``KeyError`` in the request, or a forgotten entry). The storage therefore takes its
per-key locks from a fixed set (``KeyLocks``): a key's lock never changes.

Delete this module, its import in tsd_server/extensions.py and its tests
(tests/test_rate_limit_storage.py) once ``limits`` prunes empty event lists itself.
"""

from __future__ import annotations

import threading
from typing import Any

from limits.storage import MemoryStorage


class KeyLocks:
    """Per-key locks from a fixed set, by hash: the same key always gets the same lock.

    Stands in for ``MemoryStorage.locks`` (a ``defaultdict`` the library pops keys from);
    ``pop`` and ``clear`` are no-ops, as there is nothing per key to free."""

    def __init__(self, stripes: int = 64) -> None:
        self._locks = tuple(threading.RLock() for _ in range(stripes))

    def __getitem__(self, key: str) -> threading.RLock:
        return self._locks[hash(key) % len(self._locks)]

    def pop(self, key: str, default: Any = None) -> Any:
        return default

    def clear(self) -> None:
        return None


CHANGED_DURING_COPY = "changed size during iteration"
SNAPSHOT_TRIES = 100


def key_snapshot(events: dict[str, list]) -> list[tuple[str, list]]:
    """The keys and their lists, copied while request threads add keys. The copy can let
    another thread run (a garbage collection mid-copy, say); a key added then makes it
    raise RuntimeError, so it is taken again. Seen under load with many addresses."""
    for _ in range(SNAPSHOT_TRIES - 1):
        try:
            return list(events.items())
        except RuntimeError as error:
            if CHANGED_DURING_COPY not in str(error):
                raise
    return list(events.items())


class PruningMemoryStorage(MemoryStorage):
    """limits' MemoryStorage whose expiry pass also removes keys with no live entries."""

    STORAGE_SCHEME = ["memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.locks = KeyLocks()  # type: ignore[assignment]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.locks = KeyLocks()  # type: ignore[assignment]

    def _MemoryStorage__expire_events(self) -> None:
        """The library's expiry pass, then the pruning. The library's timer calls
        ``self.__expire_events``, mangled to this name, so this override is what runs.

        A pass that meets a key added meanwhile (see ``key_snapshot``) is left to the next
        one, which the next request schedules, rather than dying in its thread with a
        traceback on stderr.
        """
        try:
            super()._MemoryStorage__expire_events()
        except RuntimeError as error:
            if CHANGED_DURING_COPY not in str(error):
                raise
            return
        self.prune_empty_windows()

    def prune_empty_windows(self) -> None:
        """Remove the keys whose event list is empty, each under its lock, re-checked."""
        for key, events in key_snapshot(self.events):
            if events:
                continue
            with self.locks[key]:
                if not self.events.get(key):
                    self.events.pop(key, None)
