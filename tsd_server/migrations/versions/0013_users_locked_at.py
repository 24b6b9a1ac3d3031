"""users.locked_at: an operator can lock an account

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30

``flask lock-account`` ends an account's sessions and refuses its logins until
``unlock-account``; NULL (every account at the upgrade) is not locked. A plain ADD / DROP
COLUMN on both databases. Downgrading below it unlocks every locked account (their
sessions stay ended): set a new password on those first.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('users', sa.Column('locked_at', sa.DateTime(), nullable=True))


def downgrade():
    # Not in batch mode, which rebuilds the table on SQLite: a plain DROP COLUMN (3.35+).
    op.drop_column('users', 'locked_at')
