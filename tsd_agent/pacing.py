"""The pace of talking to the server: how long to wait, and when to ask again.

Polling loops honour the server's pace (``poll_interval``, the device flow's ``interval``
and ``slow_down``, and Retry-After on ``rate_limited``, ``rate_limit_unavailable``,
``database_unavailable`` and a kill switch the server cannot read), and
so does link's first request (``ask``). A ``--timeout`` bounds the whole command: no wait
goes past it, each call gets only the time left (``within``), and no wait is followed by a
call that can link with less than CALL_FLOOR left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tsd_agent import messages as m
from tsd_agent.client import ServerError

if TYPE_CHECKING:
    from tsd_agent.commands import Agent

DEFAULT_POLL_INTERVAL = 5.0
MIN_POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 600.0
SLOW_DOWN_STEP = 5.0  # RFC 8628 section 3.5: add 5 seconds on every slow_down
DEFAULT_RATE_LIMIT_WAIT = 60.0
MIN_RATE_LIMIT_WAIT = 1.0  # Retry-After: 0 must not make the agent hammer the server
# Under --timeout, no wait is followed by a call that might link with less time left than
# this: an answer cut off on the way could carry the one-time token, and the printer would
# be linked without it. (The first announce goes out whatever the timeout.)
CALL_FLOOR = 1.0
# Answers that mean "come back later": too many attempts, or the server cannot check its
# rate limits right now (503; its Redis is down). Its rate limiter gives both before the
# request is handled, so nothing happened and asking again is safe.
RETRY_LATER = ("rate_limited", "rate_limit_unavailable")
# The server's database out of reach (503). Its transaction was rolled back, unless the
# connection broke during its commit: then it may have happened. Announces, asking for a
# code and token polls are asked again: a token poll that collected the token is told by
# the next poll's invalid_grant (commands.link says so); an announce whose ip_match link
# happened is not (the website lists the printer). A redeem is not asked again (a spent
# code would count as a wrong guess).
DATABASE_OUTAGE = "database_unavailable"


def seconds_from(value: Any) -> float | None:
    """A server-given number of seconds, or None unless it is a finite number >= 0.

    JSON brings NaN, Infinity and integers too big for a float; none of them may reach
    sleep(), int() or round().
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def interval_from(value: Any, default: float = DEFAULT_POLL_INTERVAL) -> float:
    """A server-given interval in seconds, bounded so a bad value cannot spin or stall."""
    seconds = seconds_from(value)
    if seconds is None:
        return default
    return min(max(seconds, MIN_POLL_INTERVAL), MAX_POLL_INTERVAL)


def time_left(agent: Agent, deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no deadline), for a call's ``within``."""
    return None if deadline is None else deadline - agent.monotonic()


def switches_unreadable(error: ServerError) -> bool:
    """503 strategy_disabled only because the server cannot read its kill switch (its
    database is out of reach): refused before anything was done, and temporary. An
    operator's switch-off (``runtime``, ``deployment``) is an answer, not an outage."""
    return error.code == "strategy_disabled" and \
        error.body.get("disabled_by") == "flag_store_unreadable"


def retry_later(error: ServerError) -> bool:
    """For announces, asking for a code and token polls: asking again is safe."""
    return (error.code in RETRY_LATER or error.code == DATABASE_OUTAGE
            or error.status == 429 or switches_unreadable(error))


def limits_unchecked(error: ServerError) -> bool:
    """Only the server's outages before anything was done: a rate limit on redeeming
    counts code guesses, and its wait (up to 15 minutes) can outlast the code; the person
    decides what next."""
    return error.code == "rate_limit_unavailable" or switches_unreadable(error)


def rate_limit_wait(agent: Agent, error: ServerError) -> float:
    """Retry-After, bounded: 0 would hammer the server, a day would look like a hang."""
    asked = error.retry_after
    wait = (DEFAULT_RATE_LIMIT_WAIT if asked is None
            else min(max(float(asked), MIN_RATE_LIMIT_WAIT), MAX_POLL_INTERVAL))
    why = {"rate_limit_unavailable": "the server cannot check its rate limits right now",
           DATABASE_OUTAGE: "the server's database cannot be reached right now",
           "strategy_disabled": "the server cannot read its kill switch right now",
           }.get(error.code or "", "too many attempts")
    agent.warn(f"{why}: the server asks to {m.wait_words(asked)}; waiting "
               f"{m.duration_words(wait)}.")
    return wait


class NoTimeLeft(Exception):
    """--timeout leaves no time to wait out a "come back later" answer and ask again."""


def pause(agent: Agent, wait: float, deadline: float | None) -> bool:
    """Sleep ``wait`` seconds, or return False at once if that would leave less than
    CALL_FLOOR before ``deadline``: the call after it could then be cut off."""
    if deadline is not None and agent.monotonic() + wait + CALL_FLOOR > deadline:
        return False
    agent.sleep(wait)
    return True


def ask(agent: Agent, call: Callable[..., dict[str, Any]], deadline: float | None, *,
        again: Callable[[ServerError], bool] = retry_later) -> dict[str, Any]:
    """``call(within=...)``, asked again after each answer that ``again`` calls "come back
    later", at the pace its Retry-After sets (rate_limit_wait), until ``deadline``.

    For the requests a command needs answered before it can go on (an announce, asking for
    a code, a redeem); link's token polls wait in their own loop, which also keeps to the
    code's expiry and poll interval. Raises NoTimeLeft when the next wait would not leave
    enough of --timeout.
    """
    while True:
        try:
            return call(within=time_left(agent, deadline))
        except ServerError as error:
            if not again(error):
                raise
            if not pause(agent, rate_limit_wait(agent, error), deadline):
                raise NoTimeLeft from error

