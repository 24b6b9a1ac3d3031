"""devices: one row per (owner_id, device_uid)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Linking a printer its owner already has re-links the existing row and replaces its token.
Before this revision nothing in the database enforced that, so two links of the same
printer to the same account at the same moment could leave two rows, each with a working
token. This revision merges such duplicates into the newest row (the last link wins, as a
re-link would have done) and then adds the unique index.

For each removed duplicate: the audit rows, pairing codes and device authorizations that
pointed to it point to the kept row (the same printer of the same account, so incident
queries still find it), and a duplicate whose token still worked gets a ``revocation``
audit row, because its token stops working here. Downgrading drops the index only; merged
rows stay merged.
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

INDEX = 'uq_devices_owner_id_device_uid'

devices = sa.table('devices', sa.column('id', sa.Integer), sa.column('owner_id', sa.Integer),
                   sa.column('device_uid', sa.String), sa.column('linked_via', sa.String),
                   sa.column('token_hash', sa.String))
audit_events = sa.table('audit_events', sa.column('at', sa.DateTime),
                        sa.column('event', sa.String), sa.column('actor', sa.String),
                        sa.column('user_id', sa.Integer), sa.column('device_id', sa.Integer),
                        sa.column('device_uid', sa.String), sa.column('strategy', sa.String),
                        sa.column('outcome', sa.String), sa.column('detail', sa.Text))
REFERENCING = [sa.table(name, sa.column('device_id', sa.Integer))
               for name in ('audit_events', 'pairing_codes', 'device_authorizations')]


def upgrade():
    merge_duplicates(op.get_bind())
    op.create_index(INDEX, 'devices', ['owner_id', 'device_uid'], unique=True)


def downgrade():
    op.drop_index(INDEX, table_name='devices')


def merge_duplicates(conn) -> None:
    groups = conn.execute(
        sa.select(devices.c.owner_id, devices.c.device_uid, sa.func.max(devices.c.id))
        .group_by(devices.c.owner_id, devices.c.device_uid)
        .having(sa.func.count() > 1)).all()
    # Naive UTC, as the application's UTCDateTime columns store it.
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for owner_id, device_uid, keep in groups:
        duplicates = conn.execute(
            sa.select(devices.c.id, devices.c.linked_via, devices.c.token_hash)
            .where(devices.c.owner_id == owner_id, devices.c.device_uid == device_uid,
                   devices.c.id != keep)).all()
        ids = [row.id for row in duplicates]
        for table in REFERENCING:
            conn.execute(table.update().where(table.c.device_id.in_(ids))
                         .values(device_id=keep))
        revoked = [
            {'at': now, 'event': 'revocation', 'actor': 'cli', 'user_id': owner_id,
             'device_id': keep, 'device_uid': device_uid, 'strategy': row.linked_via,
             'outcome': 'ok',
             'detail': f'upgrade 0006: duplicate row {row.id} of this printer removed; '
                       f'the newest link (row {keep}) stays'}
            for row in duplicates if row.token_hash is not None]
        if revoked:
            conn.execute(audit_events.insert(), revoked)
        conn.execute(devices.delete().where(devices.c.id.in_(ids)))
