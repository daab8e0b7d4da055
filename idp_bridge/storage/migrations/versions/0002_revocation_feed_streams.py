"""Revocation feed: SSF streams of receivers and their acknowledgements.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('ssf_streams',
    sa.Column('stream_id', sa.String(length=32), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('delivery_method', sa.String(length=40), nullable=False),
    sa.Column('endpoint_url', sa.String(length=2000), nullable=True),
    sa.Column('authorization_header', sa.LargeBinary(), nullable=True),
    sa.Column('events_requested', sa.JSON(), nullable=False),
    sa.Column('start_after_id', sa.BigInteger(), nullable=False),
    sa.Column('verification_state', sa.String(length=500), nullable=True),
    sa.Column('verification_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], ),
    sa.PrimaryKeyConstraint('stream_id')
    )
    with op.batch_alter_table('ssf_streams', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ssf_streams_client_id'), ['client_id'], unique=False)

    op.create_table('ssf_acks',
    sa.Column('stream_id', sa.String(length=32), nullable=False),
    sa.Column('revocation_id', sa.BigInteger(), nullable=False),
    sa.Column('acked_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['stream_id'], ['ssf_streams.stream_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('stream_id', 'revocation_id')
    )
    with op.batch_alter_table('ssf_acks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ssf_acks_acked_at'), ['acked_at'], unique=False)



def downgrade():
    with op.batch_alter_table('ssf_acks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ssf_acks_acked_at'))

    op.drop_table('ssf_acks')
    with op.batch_alter_table('ssf_streams', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ssf_streams_client_id'))

    op.drop_table('ssf_streams')
