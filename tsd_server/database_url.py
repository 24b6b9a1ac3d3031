"""The database URL: SQLite or PostgreSQL, and the driver a bare ``postgresql://`` means.

SQLAlchemy chooses the driver of a URL that names none, and 2.1 changed its choice for
``postgresql://`` from psycopg2 to psycopg 3, which this project does not install: the same
``TSD_DATABASE_URL`` that worked would stop the server after an upgrade, with "No module
named 'psycopg'". A URL without a driver therefore gets psycopg2, the driver setup.cfg
installs, and so does ``postgres://``, the form many hosts hand out (SQLAlchemy refuses it).
A driver named but not installed (``postgresql+psycopg://``) is refused at start-up too.

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
    """The URL the engine gets; raises ConfigurationError, with a reason, for one the server
    refuses (so start-up stops, naming the setting)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise _refused("TSD_DATABASE_URL is not a database URL: write it as "
                       "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/NAME or "
                       "sqlite:////absolute/path/tsd.sqlite3") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend not in SUPPORTED_BACKENDS:
        raise _refused(f"TSD_DATABASE_URL names {_shown(parsed)}: this server runs on "
                       "SQLite or PostgreSQL only (its migrations and statements are "
                       "written for those two).")
    if backend == "postgresql" and not driver:
        driver = DEFAULT_POSTGRESQL_DRIVER
    drivername = f"{backend}+{driver}" if driver else backend
    if drivername != parsed.drivername:
        parsed = parsed.set(drivername=drivername)
        url = parsed.render_as_string(hide_password=False)
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, ArgumentError) as missing:  # not installed; a name SQLAlchemy lacks
        raise _refused(f"TSD_DATABASE_URL names the driver {drivername!r}, which is not "
                       f"installed ({missing}); this project installs psycopg2: write "
                       "postgresql+psycopg2://... or postgresql://...") from None
    return url


def _shown(parsed: URL) -> str:
    """The URL without its password or query (a query may hold one too)."""
    return repr(parsed.set(query={}).render_as_string(hide_password=True))


def _refused(message: str) -> Exception:
    from tsd_server.config import ConfigurationError  # config imports this module

    return ConfigurationError(message)
