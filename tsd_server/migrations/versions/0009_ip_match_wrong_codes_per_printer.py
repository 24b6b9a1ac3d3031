"""ip_match_announcements: every wrong code counts against the printer, not voided offers

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

0007 counted offers voided by their third wrong code; an offer that expired or was
withdrawn ("Unlink all printers", a password change) after two wrong codes counted
nothing, and the next offer brought fresh tries. Now every wrong code counts, and the
count runs while wrong codes come less than a day apart (wrong_codes.py). Existing counts
carry over as three wrong codes per voided offer (the default tries), with the start of
their window as the last wrong code: a printer locked before the upgrade stays locked
until the same moment.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _rename(old_count: str, new_count: str, old_time: str, new_time: str) -> None:
    with op.batch_alter_table('ip_match_announcements', schema=None) as batch_op:
        batch_op.alter_column(old_count, new_column_name=new_count,
                              existing_type=sa.Integer(), existing_server_default='0',
                              existing_nullable=False)
        batch_op.alter_column(old_time, new_column_name=new_time,
                              existing_type=sa.DateTime(), existing_nullable=True)


def upgrade():
    _rename('wrong_code_voids', 'wrong_codes', 'wrong_code_voids_since', 'last_wrong_code_at')
    op.execute("UPDATE ip_match_announcements SET wrong_codes = "
               "CASE WHEN wrong_codes >= 3 THEN 9 ELSE wrong_codes * 3 END")


def downgrade():
    op.execute("UPDATE ip_match_announcements SET wrong_codes = wrong_codes / 3")
    _rename('wrong_codes', 'wrong_code_voids', 'last_wrong_code_at', 'wrong_code_voids_since')
