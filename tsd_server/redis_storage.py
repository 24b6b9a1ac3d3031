"""The ``redis://`` rate-limit storage, failing fast while Redis does not answer.

Rate limits fail closed: when the storage fails, a rate-limited request is refused with 503
(tsd_server/api/errors.py). That is quick when Redis refuses connections. A Redis that
stops answering without refusing -- its process stopped or stuck, its host gone from the
network, its connection backlog full -- makes limits' own ``RedisStorage`` wait out
redis-py's timeouts on every rate-limited request: 5 s to connect and 5 s for each answer
since redis-py 8, no limit at all before (gunicorn then kills the worker after 30 s).
A sync gunicorn worker waits with it, so a few rate-limited requests a second occupy every
worker, and the routes without a limit (device calls, the dashboard) stop answering too: an
outage of the rate-limit storage becomes an outage of the site.

``FailFastRedisStorage`` bounds that:

- it waits at most ``TIMEOUT_SECONDS`` to connect and for each answer (set
  ``socket_connect_timeout`` or ``socket_timeout`` in ``TSD_RATELIMIT_STORAGE_OPTIONS`` or in
  the URI's query to change it);
- after a call that could not reach Redis (a connection error or a timeout) it fails every
  call at once for ``hold_seconds`` without touching Redis, then lets the next call try
  again. A Redis that does not answer costs each process one timeout per hold, not one per
  request. Errors Redis answers with (a full memory, a read-only replica) fail as quickly
  as they come and start no hold: each request still asks. (redis-py reports a Redis
  still loading its data, and a refused password, as connection errors: those are held.)

It declares limits' Redis schemes, so importing this module (tsd_server/extensions.py
does) makes every ``redis://``, ``rediss://`` and ``redis+unix://`` URI (and limits'
``valkey`` ones) in the process use it. Sentinel and cluster URIs are refused at start-up
(``config._check_storage_uri``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from time import monotonic
from typing import Any, TypeVar

from limits.errors import StorageError
from limits.storage import RedisStorage

TIMEOUT_SECONDS = 1.0
HOLD_SECONDS = 5.0

# Every call limits makes on a storage for a limit (the ones its base classes wrap in
# StorageError). Not ``check``, the health check: it answers False rather than raising.
STORAGE_CALLS = ("incr", "get", "get_expiry", "reset", "clear",
                 "acquire_entry", "get_moving_window",
                 "acquire_sliding_window_entry", "get_sliding_window", "clear_sliding_window")

Call = TypeVar("Call", bound=Callable[..., Any])


class FailFastRedisStorage(RedisStorage):
    """limits' RedisStorage with short timeouts, and no call to Redis for a while after one
    failed."""

    STORAGE_SCHEME = RedisStorage.STORAGE_SCHEME
    hold_seconds = HOLD_SECONDS

    def __init__(self, uri: str, connection_pool: Any = None, **options: Any) -> None:
        timeouts = {"socket_connect_timeout": TIMEOUT_SECONDS, "socket_timeout": TIMEOUT_SECONDS}
        super().__init__(uri, connection_pool=connection_pool, **{**timeouts, **options})
        self.held_until = 0.0
        self.last_failure = ""

    def refuse_while_held(self) -> None:
        """Fail at once, as a failed call would, while the last failure is recent."""
        if monotonic() < self.held_until:
            error = self.dependency.ConnectionError(
                f"not asked: it failed less than {self.hold_seconds:g} s ago "
                f"({self.last_failure})")
            raise StorageError(error) if self.wrap_exceptions else error

    def hold_if_unreachable(self, error: Exception) -> None:
        """Hold after a failure that cost a wait (or will, next time): Redis not reached."""
        unreachable = (self.dependency.ConnectionError, self.dependency.TimeoutError)
        if isinstance(error, unreachable):
            self.held_until = monotonic() + self.hold_seconds
            self.last_failure = str(error)


def _failing_fast(call: Call) -> Call:
    @functools.wraps(call)
    def guarded(storage: FailFastRedisStorage, *args: Any, **kwargs: Any) -> Any:
        storage.refuse_while_held()
        try:
            return call(storage, *args, **kwargs)
        except StorageError as error:
            storage.hold_if_unreachable(error.storage_error)
            raise
        except storage.base_exceptions as error:
            storage.hold_if_unreachable(error)
            raise

    return guarded  # type: ignore[return-value]


for _name in STORAGE_CALLS:
    setattr(FailFastRedisStorage, _name, _failing_fast(getattr(FailFastRedisStorage, _name)))
