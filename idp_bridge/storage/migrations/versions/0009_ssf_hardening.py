"""Revocation feed hardening: the highest revocation id delivered on each stream.

Acknowledgements of higher ids are ignored, so a receiver cannot acknowledge (and so
silence) revocations before they were delivered to it. Existing streams start at NULL
(nothing delivered yet): their next poll delivers what is pending again, with the new
unpredictable event ids, and acknowledgements count from then on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('ssf_streams', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivered_through_id', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('ssf_streams', schema=None) as batch_op:
        batch_op.drop_column('delivered_through_id')
