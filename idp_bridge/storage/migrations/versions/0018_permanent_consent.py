"""Permanent advisors with the tenant's consent (issue 15 item 2).

- ``tenants.permanent_mode``: ``direct`` for every existing tenant (support assigns
  permanent advisors as before) until a tenant admin asks for ``accept``;
- ``memberships.confirmed_at`` / ``memberships.reconfirm_asked_at``: when the tenant last
  confirmed a permanent advisor, and when its admins were asked to re-confirm. Every
  permanent membership live at the migration counts as **confirmed at the migration time**:
  its first re-confirmation is due ``IDP_BRIDGE_PERMANENT_RECONFIRM_DAYS`` (default 180)
  days after the migration ran, its admins are asked ahead of that, and it lapses after the
  grace period (``IDP_BRIDGE_PERMANENT_GRACE_DAYS``, default 14) unconfirmed. No
  permanent access ends because of the migration itself;
- ``permanent_proposals``: support's proposals awaiting a tenant admin's acceptance, one
  pending per tenant and advisor.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMNs (SQLite takes them with constant defaults): a batch copy of tenants
    # or memberships would drop tables other tables' foreign keys point at.
    op.add_column('tenants', sa.Column('permanent_mode', sa.String(length=10), nullable=False,
                                       server_default=sa.text("'direct'")))
    op.add_column('memberships', sa.Column('confirmed_at', sa.DateTime(), nullable=True))
    op.add_column('memberships', sa.Column('reconfirm_asked_at', sa.DateTime(), nullable=True))
    op.create_index('ix_memberships_confirmed_at', 'memberships', ['confirmed_at'])
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    memberships = sa.table('memberships', sa.column('kind', sa.String), sa.column(
        'ended_at', sa.DateTime), sa.column('confirmed_at', sa.DateTime))
    op.execute(memberships.update()
               .where(memberships.c.kind == 'permanent', memberships.c.ended_at.is_(None))
               .values(confirmed_at=now))
    op.create_table(
        'permanent_proposals',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('advisor_subject', sa.String(length=255), nullable=False),
        sa.Column('advisor_name', sa.String(length=255), nullable=True),
        sa.Column('reason', sa.String(length=2000), nullable=True),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('proposed_by', sa.String(length=255), nullable=False),
        sa.Column('proposed_at', sa.DateTime(), nullable=False),
        sa.Column('decided_at', sa.DateTime(), nullable=True),
        sa.Column('decided_by', sa.String(length=255), nullable=True),
        sa.Column('accepted_by', sa.JSON(), nullable=True),
        sa.Column('decision_note', sa.String(length=2000), nullable=True),
        sa.Column('membership_id', sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_permanent_proposals_tenant_id', 'permanent_proposals', ['tenant_id'])
    op.create_index('ix_permanent_proposals_advisor_subject', 'permanent_proposals',
                    ['advisor_subject'])
    op.create_index('ix_permanent_proposals_membership_id', 'permanent_proposals',
                    ['membership_id'])
    op.create_index('uq_permanent_proposals_pending_tenant_subject', 'permanent_proposals',
                    ['tenant_id', 'advisor_subject'], unique=True,
                    sqlite_where=sa.text("status = 'pending'"),
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade():
    op.drop_index('uq_permanent_proposals_pending_tenant_subject',
                  table_name='permanent_proposals')
    op.drop_index('ix_permanent_proposals_membership_id', table_name='permanent_proposals')
    op.drop_index('ix_permanent_proposals_advisor_subject', table_name='permanent_proposals')
    op.drop_index('ix_permanent_proposals_tenant_id', table_name='permanent_proposals')
    op.drop_table('permanent_proposals')
    op.drop_index('ix_memberships_confirmed_at', table_name='memberships')
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_column('reconfirm_asked_at')
        batch_op.drop_column('confirmed_at')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('permanent_mode')
