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


def create_what_the_first_commit_left_out():
    """Run 0003's and 0004's upgrade where their first table is missing (see above)."""
    inspector = sa.inspect(op.get_bind())
    script = op.get_context().script
    for revision, table in (('0003', 'ip_match_announcements'), ('0004', 'pairing_codes')):
        if not inspector.has_table(table):
            script.get_revision(revision).module.upgrade()


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_epoch')
