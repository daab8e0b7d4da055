"""Access records: what resource servers report advisors and guests did (issue 14).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'access_records',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('client_id', sa.String(length=100), nullable=False),
        sa.Column('record_id', sa.String(length=64), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('membership_id', sa.String(length=36), nullable=False),
        sa.Column('grant_id', sa.String(length=36), nullable=False),
        sa.Column('sid', sa.String(length=36), nullable=True),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('area', sa.String(length=40), nullable=False),
        sa.Column('action', sa.String(length=10), nullable=False),
        sa.Column('method', sa.String(length=10), nullable=False),
        sa.Column('route', sa.String(length=200), nullable=False),
        sa.Column('status', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('uq_access_records_client_record', 'access_records',
                    ['client_id', 'record_id'], unique=True)
    op.create_index('ix_access_records_tenant_at', 'access_records', ['tenant_id', 'at'])
    op.create_index('ix_access_records_tenant_membership_at', 'access_records',
                    ['tenant_id', 'membership_id', 'at'])
    op.create_index('ix_access_records_at', 'access_records', ['at'])


def downgrade():
    op.drop_index('ix_access_records_at', table_name='access_records')
    op.drop_index('ix_access_records_tenant_membership_at', table_name='access_records')
    op.drop_index('ix_access_records_tenant_at', table_name='access_records')
    op.drop_index('uq_access_records_client_record', table_name='access_records')
    op.drop_table('access_records')
