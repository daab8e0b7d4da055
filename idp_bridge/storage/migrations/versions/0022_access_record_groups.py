"""The access log's groups, kept with the records (issue 14 item 6, issue 16 item 5).

``access_record_groups`` holds per tenant, membership, area and action the count of stored
records, the first and the last time; ``access_record_group_statuses`` the count per status
of each group (keyed by the group's key: the ingest writes both without reading back). The ingest adds the records it stores, the retention sweep takes away those
it deletes (``idp_bridge.domain.access_records``): the access log's groups are read from
these rows, newest first by ``ix_access_record_groups_tenant_last``, instead of grouping
every record of the tenant (p99 125 ms at 10 million records before). Backfilled here from
the stored records.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op



revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        'access_record_groups',
        sa.Column('id', _ID, primary_key=True, autoincrement=True),
        sa.Column('tenant_id', sa.String(64), nullable=False),
        sa.Column('membership_id', sa.String(36), nullable=False),
        sa.Column('area', sa.String(40), nullable=False),
        sa.Column('action', sa.String(10), nullable=False),
        sa.Column('subject', sa.String(255), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('first_at', sa.DateTime(), nullable=False),
        sa.Column('last_at', sa.DateTime(), nullable=False),
    )
    op.create_index('uq_access_record_groups_key', 'access_record_groups',
                    ['tenant_id', 'membership_id', 'area', 'action'], unique=True)
    op.create_index('ix_access_record_groups_tenant_last', 'access_record_groups',
                    ['tenant_id', 'last_at'])
    op.create_table(
        'access_record_group_statuses',
        sa.Column('tenant_id', sa.String(64), primary_key=True),
        sa.Column('membership_id', sa.String(36), primary_key=True),
        sa.Column('area', sa.String(40), primary_key=True),
        sa.Column('action', sa.String(10), primary_key=True),
        sa.Column('status', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
    )
    # The backfill: the groups of the records stored so far.
    op.execute(
        "INSERT INTO access_record_groups (tenant_id, membership_id, area, action, subject,"
        " count, first_at, last_at) SELECT tenant_id, membership_id, area, action,"
        " max(subject), count(*), min(at), max(at) FROM access_records"
        " GROUP BY tenant_id, membership_id, area, action")
    op.execute(
        "INSERT INTO access_record_group_statuses (tenant_id, membership_id, area, action,"
        " status, count) SELECT tenant_id, membership_id, area, action, status, count(*)"
        " FROM access_records GROUP BY tenant_id, membership_id, area, action, status")


def downgrade():
    op.drop_table('access_record_group_statuses')
    op.drop_index('ix_access_record_groups_tenant_last', table_name='access_record_groups')
    op.drop_index('uq_access_record_groups_key', table_name='access_record_groups')
    op.drop_table('access_record_groups')
