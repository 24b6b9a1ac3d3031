"""device_authorizations.bound_to_id, bound_at: a request belongs to the first account to reach it

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

A printer's request could be reached two ways, its user code typed at /link or its QR link,
and opening the QR link spent only the link: the user code, shown on the printer's screen
next to the QR code, still worked for any other account. Someone who saw the screen could
type it while the owner was on the approval page, approve first, and take the printer. A
request is now bound to the first account that reaches it, either way; another account is
refused, and only the bound account can decide it (docs/pairing.md).

Requests waiting during the upgrade have no binding (both columns NULL): the first account
to reach or decide one binds it, as if it had been made after the upgrade. Except those
whose QR link was opened already: who opened it is not recorded, so nobody may take them
over by their code; they are closed (bound_at without an account, as for a deleted one's)
and their printers start linking again. On SQLite the
table is rebuilt to add the foreign key, keeping AUTOINCREMENT (migration 0008) and its
counter: a rebuilt table's counter restarts at the highest id left, which would give out
again the id of a newest request purged before the upgrade.
"""
from contextlib import contextmanager

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# The rebuild on SQLite must keep the ids never given out twice (0008); ignored elsewhere.
SQLITE_TABLE = {'sqlite_autoincrement': True}


@contextmanager
def _counter_kept():
    """SQLite: the table's AUTOINCREMENT counter, as it was before the rebuild."""
    bind = op.get_bind()
    sqlite = bind.dialect.name == 'sqlite'
    select_counter = sa.text(
        "SELECT seq FROM sqlite_sequence WHERE name = 'device_authorizations'")
    before = bind.execute(select_counter).scalar() if sqlite else None
    yield
    if before is not None:
        after = bind.execute(select_counter).scalar()
        if after is None:
            bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) "
                                 "VALUES ('device_authorizations', :seq)"), {'seq': before})
        elif after < before:
            bind.execute(sa.text("UPDATE sqlite_sequence SET seq = :seq "
                                 "WHERE name = 'device_authorizations'"), {'seq': before})


def upgrade():
    with _counter_kept(), op.batch_alter_table('device_authorizations', schema=None,
                                               table_kwargs=SQLITE_TABLE) as batch_op:
        batch_op.add_column(sa.Column('bound_to_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('bound_at', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_device_authorizations_bound_to_id_users'),
                                    'users', ['bound_to_id'], ['id'], ondelete='SET NULL')
    op.execute("UPDATE device_authorizations SET bound_at = qr_opened_at "
               "WHERE qr_opened_at IS NOT NULL AND status = 'pending'")


def downgrade():
    with _counter_kept(), op.batch_alter_table('device_authorizations', schema=None,
                                               table_kwargs=SQLITE_TABLE) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_device_authorizations_bound_to_id_users'),
                                 type_='foreignkey')
        batch_op.drop_column('bound_at')
        batch_op.drop_column('bound_to_id')
