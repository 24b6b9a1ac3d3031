"""device_authorizations.requested_household: the network a printer asked to be linked from

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

The approval page compares the network a printer asked from with the approver's own, and
warns when they differ (RFC 8628 §5.4, remote phishing: a code or link sent by someone
elsewhere). The printer's household is kept with its request (NULL when none is known:
client_address.warning_household); requests made before this upgrade have none, and the
page notes that it could not check them. A plain ADD / DROP COLUMN on both databases:
SQLite does not rebuild the table, so its AUTOINCREMENT counter (0008) is untouched.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('device_authorizations',
                  sa.Column('requested_household', sa.String(length=64), nullable=True))


def downgrade():
    # Not in batch mode, which rebuilds the table on SQLite (and restarts its counter): a
    # plain DROP COLUMN, which SQLite has since 3.35.
    op.drop_column('device_authorizations', 'requested_household')
