"""Times on the pages: UTC in the HTML, the reader's own time zone once a script runs.

The server cannot know the reader's time zone, so a page writes UTC and says so
("2026-06-01 12:00 UTC"): that is what a browser without JavaScript shows. The text sits
in ``<time datetime="2026-06-01T12:00:00Z" data-local-time="...">`` (templates/_time.html),
and static/local_time.js rewrites it into the browser's zone, naming that zone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint

# What a time shows (``data-local-time``); static/local_time.js knows the same three.
FORMATS = {
    "datetime": "%Y-%m-%d %H:%M",
    "seconds": "%Y-%m-%d %H:%M:%S",
    "time": "%H:%M:%S",  # a moment within the hour or so (an expiry): the day goes without saying
}


def _in_utc(at: datetime) -> datetime:
    """Columns give aware UTC; a naive value is taken as UTC, never as the server's zone."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def utc_datetime_attribute(at: datetime) -> str:
    """The machine-readable moment (``Z``: UTC), for ``<time datetime>`` and the script."""
    return _in_utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text(at: datetime, shown: str = "datetime") -> str:
    """What a browser without JavaScript shows: the moment in UTC, saying so. An unknown
    ``shown`` is a template's mistake; it shows date and time rather than failing."""
    return _in_utc(at).strftime(FORMATS.get(shown, FORMATS["datetime"])) + " UTC"


def utc_exact(at: datetime) -> str:
    """The moment to the microsecond, in UTC, as an incident window takes it (the admin
    pages). An admin types what a page shows into an exclusive ``--until``: a time cut to
    the second would leave out the links made earlier in that second."""
    return _in_utc(at).strftime("%Y-%m-%d %H:%M:%S.%f")


def register(blueprint: Blueprint) -> None:
    """Every template of the app gets the filters (templates/_time.html uses the first two,
    the admin pages the third)."""
    blueprint.add_app_template_filter(utc_datetime_attribute, "utc_datetime_attribute")
    blueprint.add_app_template_filter(utc_text, "utc_text")
    blueprint.add_app_template_filter(utc_exact, "utc_exact")
