"""Access requests and four eyes (issue 15 items 1 and 3).

- ``tenants.access_modes`` (``both`` for every existing tenant: access codes keep working,
  and a request grants nothing until a tenant admin approves it) and ``tenants.four_eyes``
  (false: nothing changes until a tenant admin turns it on);
- ``access_requests``: an advisor's request for temporary access, one pending per advisor
  and tenant;
- ``approvals``: four eyes' first approvals awaiting a second admin, one pending per tenant,
  action and target.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-09
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMNs (SQLite takes them with constant defaults): a batch copy of tenants
    # would drop a table other tables' foreign keys point at.
    op.add_column('tenants', sa.Column('access_modes', sa.String(length=10), nullable=False,
                                       server_default=sa.text("'both'")))
    op.add_column('tenants', sa.Column('four_eyes', sa.Boolean(), nullable=False,
                                       server_default=sa.text('false')))
    op.create_table(
        'access_requests',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('advisor_subject', sa.String(length=255), nullable=False),
        sa.Column('advisor_name', sa.String(length=255), nullable=True),
        sa.Column('reason', sa.String(length=2000), nullable=False),
        sa.Column('duration_hours', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('decided_at', sa.DateTime(), nullable=True),
        sa.Column('decided_by', sa.String(length=255), nullable=True),
        sa.Column('approved_by', sa.JSON(), nullable=True),
        sa.Column('approved_hours', sa.Integer(), nullable=True),
        sa.Column('decision_note', sa.String(length=2000), nullable=True),
        sa.Column('membership_id', sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_access_requests_tenant_id', 'access_requests', ['tenant_id'])
    op.create_index('ix_access_requests_advisor_subject', 'access_requests',
                    ['advisor_subject'])
    op.create_index('ix_access_requests_expires_at', 'access_requests', ['expires_at'])
    op.create_index('ix_access_requests_membership_id', 'access_requests', ['membership_id'])
    op.create_index('uq_access_requests_pending_tenant_subject', 'access_requests',
                    ['tenant_id', 'advisor_subject'], unique=True,
                    sqlite_where=sa.text("status = 'pending'"),
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_table(
        'approvals',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=60), nullable=False),
        sa.Column('target', sa.String(length=100), nullable=False),
        sa.Column('terms', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('requested_by', sa.String(length=255), nullable=False),
        sa.Column('requested_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('decided_by', sa.String(length=255), nullable=True),
        sa.Column('decided_at', sa.DateTime(), nullable=True),
        sa.Column('note', sa.String(length=2000), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_approvals_tenant_id', 'approvals', ['tenant_id'])
    op.create_index('ix_approvals_expires_at', 'approvals', ['expires_at'])
    op.create_index('uq_approvals_pending_tenant_action_target', 'approvals',
                    ['tenant_id', 'action', 'target'], unique=True,
                    sqlite_where=sa.text("status = 'pending'"),
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade():
    op.drop_index('uq_approvals_pending_tenant_action_target', table_name='approvals')
    op.drop_index('ix_approvals_expires_at', table_name='approvals')
    op.drop_index('ix_approvals_tenant_id', table_name='approvals')
    op.drop_table('approvals')
    op.drop_index('uq_access_requests_pending_tenant_subject', table_name='access_requests')
    op.drop_index('ix_access_requests_membership_id', table_name='access_requests')
    op.drop_index('ix_access_requests_expires_at', table_name='access_requests')
    op.drop_index('ix_access_requests_advisor_subject', table_name='access_requests')
    op.drop_index('ix_access_requests_tenant_id', table_name='access_requests')
    op.drop_table('access_requests')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('four_eyes')
        batch_op.drop_column('access_modes')
