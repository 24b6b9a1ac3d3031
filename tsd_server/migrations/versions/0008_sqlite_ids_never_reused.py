"""device_authorizations, ip_match_offers: ids are never given out twice on SQLite

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

SQLite gives a new row the highest id in use plus one, so deleting the newest row hands
its id to the next: a request or an offer purged or ended could pass its id to a
stranger's new one. Both are also named by more than their id where it matters (the
approval binding's tag, the offer's public id); AUTOINCREMENT closes the whole class on
SQLite, which rebuilds the two tables for it. SQLite keeps no record of ids deleted before
the upgrade; from the upgrade on, none is given out twice. PostgreSQL's sequences never
reuse an id: nothing changes there.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

TABLES = ('device_authorizations', 'ip_match_offers')


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
