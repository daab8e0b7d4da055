"""Upstream sessions ended by back-channel logout (their subject tokens are refused).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('ended_upstream_sessions',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('ended_upstream_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ended_upstream_sessions_expires_at'), ['expires_at'], unique=False)



def downgrade():
    with op.batch_alter_table('ended_upstream_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ended_upstream_sessions_expires_at'))

    op.drop_table('ended_upstream_sessions')
