"""ip_match_wrong_codes: the wrong-code count is kept per device_id, not per announcement

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

0009 kept each printer's wrong-code count on its announcement, but an announcement goes when
it expires or its device is linked, and anyone may register a device_id whose announcement
has expired: a stranger could register a fake printer under the real printer's id, link it
(which deleted the announcement and its count), and the real printer came back with nine
fresh guesses. The count now lives in its own table keyed by device_uid, which nothing done
to announcements or links deletes; a row goes a day after its last wrong code
(wrong_codes.py). Existing counts are copied over unchanged (rows with a wrong code), so a
printer locked before the upgrade stays locked until the same moment. The downgrade copies
them back onto the announcements of the same device_uid (counts of devices without an
announcement are lost).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('ip_match_wrong_codes',
    sa.Column('device_uid', sa.String(length=64), nullable=False),
    sa.Column('wrong_codes', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_wrong_code_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('device_uid', name=op.f('pk_ip_match_wrong_codes'))
    )
    with op.batch_alter_table('ip_match_wrong_codes', schema=None) as batch_op:
        batch_op.create_index('ix_ip_match_wrong_codes_last_wrong_code_at',
                              ['last_wrong_code_at'], unique=False)

    op.execute("INSERT INTO ip_match_wrong_codes (device_uid, wrong_codes, last_wrong_code_at) "
               "SELECT device_uid, wrong_codes, last_wrong_code_at FROM ip_match_announcements "
               "WHERE last_wrong_code_at IS NOT NULL")
    with op.batch_alter_table('ip_match_announcements', schema=None) as batch_op:
        batch_op.drop_column('last_wrong_code_at')
        batch_op.drop_column('wrong_codes')


def downgrade():
    with op.batch_alter_table('ip_match_announcements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('wrong_codes', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('last_wrong_code_at', sa.DateTime(), nullable=True))
    op.execute("UPDATE ip_match_announcements SET "
               "wrong_codes = (SELECT w.wrong_codes FROM ip_match_wrong_codes w "
               "WHERE w.device_uid = ip_match_announcements.device_uid), "
               "last_wrong_code_at = (SELECT w.last_wrong_code_at FROM ip_match_wrong_codes w "
               "WHERE w.device_uid = ip_match_announcements.device_uid) "
               "WHERE EXISTS (SELECT 1 FROM ip_match_wrong_codes w "
               "WHERE w.device_uid = ip_match_announcements.device_uid)")

    with op.batch_alter_table('ip_match_wrong_codes', schema=None) as batch_op:
        batch_op.drop_index('ix_ip_match_wrong_codes_last_wrong_code_at')

    op.drop_table('ip_match_wrong_codes')
