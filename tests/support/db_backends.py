"""Creating, migrating, emptying and dropping the test databases."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql
from sqlalchemy import text

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USERS = ("postgres", "root")
# A database of each backend that cannot be reached: a SQLite file in a folder that does not
# exist, and a PostgreSQL port nothing listens on.
UNREACHABLE_URLS = {
    "sqlite": "sqlite:////nonexistent-directory/tsd.sqlite3",
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:1/tsd?connect_timeout=2",
}


def find_postgres() -> str | None:
    """The first role that can connect to the maintenance database, or None."""
    for user in PG_USERS:
        try:
            conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres",
                                    connect_timeout=3)
        except psycopg2.OperationalError:
            continue
        conn.close()
        return user
    return None


def _admin(user: str):
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres")
    conn.autocommit = True
    return conn


def create_postgres_database(user: str, name: str) -> str:
    conn = _admin(user)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{name}"


def drop_postgres_database(user: str, name: str) -> None:
    conn = _admin(user)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


@contextmanager
def migrated_postgres_database(role: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database built by ``flask db upgrade``, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    url = create_postgres_database(role, name)
    try:
        migrate(url)
        yield url
    finally:
        drop_postgres_database(role, name)


def migrate(url: str) -> None:
    """Build the schema the way a deployment does: ``flask db upgrade``."""
    from flask_migrate import upgrade

    from tsd_server import create_app
    from tsd_server.extensions import db

    app = create_app({"TESTING": True, "SECRET_KEY": "migrate", "DATABASE_URL": url})
    with app.app_context():
        upgrade()
        for engine in db.engines.values():
            engine.dispose()


def empty_all_tables(db) -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("TRUNCATE {} RESTART IDENTITY CASCADE".format(
            ", ".join(f'"{name}"' for name in tables))))
    else:
        for name in tables:
            db.session.execute(text(f'DELETE FROM "{name}"'))
    db.session.commit()
