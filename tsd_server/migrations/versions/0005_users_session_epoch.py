"""users.session_epoch: a logout ends every session cookie issued before it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Session cookies issued before this revision carry no epoch and log nobody in: after the
upgrade everyone logs in once more.

It also creates the tables of 0003 and 0004 where they are missing: the first commit
(f764fba) shipped those two revisions as empty placeholders, so a database it made is
stamped 0004 without them, and every later revision would fail on it.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    create_what_the_first_commit_left_out()
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_epoch', sa.Integer(), server_default='0',
                                      nullable=False))


TABLES_OF = {
    '0003': ('ip_match_announcements', 'ip_match_household_blocks',
             'ip_match_household_accounts', 'ip_match_offers'),
    '0004': ('pairing_codes', 'device_authorizations'),
}


def create_what_the_first_commit_left_out():
    """Run 0003's and 0004's upgrade where none of their tables exists (see above); stop
    with the names where only some do, which no release left behind."""
    inspector = sa.inspect(op.get_bind())
    script = op.get_context().script
    for revision, tables in TABLES_OF.items():
        missing = [table for table in tables if not inspector.has_table(table)]
        if missing == list(tables):
            script.get_revision(revision).module.upgrade()
        elif missing:
            raise RuntimeError(
                f"revision {revision}'s tables are only partly there (missing: "
                f"{', '.join(missing)}); restore the database from a backup")


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_epoch')
