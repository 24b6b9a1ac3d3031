"""pairing codes and device authorizations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('pairing_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_from_ip', sa.String(length=45), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_pairing_codes_device_id_devices'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_pairing_codes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pairing_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_pairing_codes_code_hash'))
    )
    with op.batch_alter_table('pairing_codes', schema=None) as batch_op:
        batch_op.create_index('ix_pairing_codes_expires_at', ['expires_at'], unique=False)
        batch_op.create_index('ix_pairing_codes_user_id', ['user_id'], unique=False)

    op.create_table('device_authorizations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_code_hash', sa.String(length=64), nullable=False),
    sa.Column('user_code_hash', sa.String(length=64), nullable=True),
    sa.Column('qr_token_hash', sa.String(length=64), nullable=True),
    sa.Column('qr_opened_at', sa.DateTime(), nullable=True),
    sa.Column('device_uid', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('model', sa.String(length=80), nullable=True),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('requested_from_ip', sa.String(length=45), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('poll_interval', sa.Integer(), nullable=False),
    sa.Column('last_polled_at', sa.DateTime(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('decided_via', sa.String(length=32), nullable=True),
    sa.Column('decided_from_ip', sa.String(length=45), nullable=True),
    sa.Column('decided_peer_ip', sa.String(length=45), nullable=True),
    sa.Column('token_issued_at', sa.DateTime(), nullable=True),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'approved', 'denied')", name=op.f('ck_device_authorizations_status')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_device_authorizations_decided_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_authorizations_device_id_devices'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_authorizations')),
    sa.UniqueConstraint('device_code_hash', name=op.f('uq_device_authorizations_device_code_hash')),
    sa.UniqueConstraint('qr_token_hash', name=op.f('uq_device_authorizations_qr_token_hash')),
    sa.UniqueConstraint('user_code_hash', name=op.f('uq_device_authorizations_user_code_hash'))
    )
    with op.batch_alter_table('device_authorizations', schema=None) as batch_op:
        batch_op.create_index('ix_device_authorizations_expires_at', ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('device_authorizations', schema=None) as batch_op:
        batch_op.drop_index('ix_device_authorizations_expires_at')

    op.drop_table('device_authorizations')
    with op.batch_alter_table('pairing_codes', schema=None) as batch_op:
        batch_op.drop_index('ix_pairing_codes_user_id')
        batch_op.drop_index('ix_pairing_codes_expires_at')

    op.drop_table('pairing_codes')
