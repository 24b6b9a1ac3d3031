"""Flask extensions, created unbound here and initialised in create_app()."""

import sqlite3

from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine

# Register the storages for memory:// and redis:// before the Limiter builds its storage.
import tsd_server.rate_limit_storage  # noqa: F401
import tsd_server.redis_storage  # noqa: F401
from tsd_server.rate_limit_keys import client_ip_for_limits

# Named constraints so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# Keyed by the resolved client address (never a forged header); limits are set per route.
limiter = Limiter(key_func=client_ip_for_limits, default_limits=[])


@event.listens_for(Engine, "connect")
def _enforce_sqlite_foreign_keys(dbapi_connection, _connection_record) -> None:
    """SQLite ignores FOREIGN KEY clauses (and ON DELETE) unless asked, per connection;
    PostgreSQL always enforces them, and both backends must behave the same. Migrations
    switch this off again for their own connection (see migrations/env.py)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
