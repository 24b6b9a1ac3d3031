"""Indexes on the columns that refer to an account: audit_events.user_id,
device_authorizations.bound_to_id and decided_by_id

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

Deleting an account sets these to NULL, and the audit page filters by account: without an
index each of them read the whole table (a review measured 284 ms at 500,000
authorizations; the audit log is the table that grows). On PostgreSQL they are built
CONCURRENTLY, outside a transaction: an upgrade runs while the old instances still serve
(docs/production.md), and a plain CREATE INDEX would hold every audit write of theirs for
as long as the build takes. Should such a build fail, PostgreSQL leaves an invalid index
behind: drop it (DROP INDEX ix_...) and upgrade again.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_audit_events_user_id", "audit_events", "user_id"),
    ("ix_device_authorizations_bound_to_id", "device_authorizations", "bound_to_id"),
    ("ix_device_authorizations_decided_by_id", "device_authorizations", "decided_by_id"),
)


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        for name, table, column in INDEXES:
            op.create_index(name, table, [column])
        return
    with op.get_context().autocommit_block():
        for name, table, column in INDEXES:
            op.create_index(name, table, [column], postgresql_concurrently=True)


def downgrade():
    for name, table, _column in INDEXES:
        op.drop_index(name, table_name=table)
