"""The tenant's setting "tell us when an advisor first uses a new access".

``tenants.notify_first_access`` (false for every existing tenant: nothing new is sent until
a tenant admin turns it on at the help page).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    # A plain ADD COLUMN (SQLite takes it with a constant default): a batch copy of tenants
    # would drop a table other tables' foreign keys point at.
    op.add_column('tenants', sa.Column('notify_first_access', sa.Boolean(), nullable=False,
                                       server_default=sa.text('false')))


def downgrade():
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('notify_first_access')
