"""ip_match_announcements: offers voided by wrong codes, counted per device

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

An offer allows three tries at the printer's code, but a voided offer could be opened
again at once, so guessing was bounded only by the claim rate limit per address. The two
columns count the offers voided by wrong codes in the last 24 hours; past three, the
device takes no new offers until the window has passed (offers.py). Existing rows start
at zero.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    # A SQLite database of the first commit that an upgrade before 0005 learnt to create
    # the missing tables left here: SQLite kept 0005 and 0006 when this revision failed.
    op.get_context().script.get_revision('0005').module.create_what_the_first_commit_left_out()
    with op.batch_alter_table('ip_match_announcements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('wrong_code_voids', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('wrong_code_voids_since', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('ip_match_announcements', schema=None) as batch_op:
        batch_op.drop_column('wrong_code_voids_since')
        batch_op.drop_column('wrong_code_voids')
