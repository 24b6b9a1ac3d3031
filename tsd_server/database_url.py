"""The database URL: SQLite or PostgreSQL, and the driver a bare ``postgresql://`` means.

SQLAlchemy chooses the driver of a URL that names none, and 2.1 changed its choice for
``postgresql://`` from psycopg2 to psycopg 3, which this project does not install: the same
``TSD_DATABASE_URL`` that worked would stop the server after an upgrade, with "No module
named 'psycopg'". A URL without a driver therefore gets psycopg2, the driver setup.cfg
installs, and so does ``postgres://``, the form many hosts hand out (SQLAlchemy refuses it).

Other databases are refused at start-up with a reason: the migrations and the upserts
(tsd_server/upsert.py) speak SQLite's and PostgreSQL's SQL only. Messages never repeat a
password.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_POSTGRESQL_DRIVER = "psycopg2"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def engine_url(url: str) -> str:
    """The URL the engine gets; raises ValueError, with a reason, for one the server refuses."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("TSD_DATABASE_URL is not a database URL: write it as "
                         "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/NAME or "
                         "sqlite:////absolute/path/tsd.sqlite3") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"TSD_DATABASE_URL names {_shown(parsed)}: this server runs on "
                         "SQLite or PostgreSQL only (its migrations and statements are "
                         "written for those two).")
    if backend == "postgresql" and not driver:
        driver = DEFAULT_POSTGRESQL_DRIVER
    drivername = f"{backend}+{driver}" if driver else backend
    if drivername == parsed.drivername:
        return url  # as given, to the letter
    return parsed.set(drivername=drivername).render_as_string(hide_password=False)


def _shown(parsed: URL) -> str:
    return repr(parsed.render_as_string(hide_password=True))
