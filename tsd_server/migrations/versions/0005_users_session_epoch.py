"""users.session_epoch: a logout ends every session cookie issued before it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Session cookies issued before this revision carry no epoch and log nobody in: after the
upgrade everyone logs in once more.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_epoch', sa.Integer(), server_default='0',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_epoch')
