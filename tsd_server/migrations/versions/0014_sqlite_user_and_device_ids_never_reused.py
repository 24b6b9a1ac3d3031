"""users, devices: ids are never given out twice on SQLite

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

SQLite gives a new row the highest id in use plus one. A session cookie names its account
by id and session epoch, and a new account starts at epoch 0: so when the newest account
was deleted (by hand: its owner asked), a copy of its cookie logged in as the next account
to sign up. AUTOINCREMENT closes that, as 0008 did for two other tables, and for devices,
whose ids name printers in pages and audit rows. SQLite rebuilds both tables for it (with
foreign keys off, env.py). SQLite keeps no record of ids deleted before the upgrade; from
the upgrade on, none is given out twice. PostgreSQL's sequences never reuse an id: nothing
changes there.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

TABLES = ('users', 'devices')


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate='always',
                                  table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass


def upgrade():
    _rebuild(True)


def downgrade():
    _rebuild(False)
