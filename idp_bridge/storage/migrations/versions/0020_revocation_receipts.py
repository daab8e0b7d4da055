"""Durable revocation receipts.

Receipts were computed from the feed's acknowledgements and live streams, which the feed
prunes (acknowledgements after twice the access-token lifetime, idle streams after an hour),
so a membership's detail and the evidence pack lost them. ``revocation_receipts`` keeps, per
revocation, one row for each receiver stream that was due to receive its event, written in
the revocation's own transaction, with when the stream acknowledged it (or how it ended).

The backfill writes rows for the revocations and streams still present (a stream created no
later than the revocation, not started after it, or with an acknowledgement of it), with the
acknowledgement's time where the feed still holds one.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

PUSH = 'urn:ietf:rfc:8935'


def upgrade():
    op.create_table(
        'revocation_receipts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('revocation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('stream_id', sa.String(length=32), nullable=False),
        sa.Column('client_id', sa.String(length=100), nullable=False),
        sa.Column('delivery', sa.String(length=10), nullable=False),
        sa.Column('description', sa.String(length=500), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('acknowledged_at', sa.DateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(['revocation_id'], ['revocations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('revocation_id', 'stream_id',
                            name='uq_revocation_receipts_revocation_stream'),
    )
    op.create_index('ix_revocation_receipts_stream_id', 'revocation_receipts', ['stream_id'])
    op.execute(sa.text(
        "INSERT INTO revocation_receipts (revocation_id, stream_id, client_id, delivery,"
        " description, created_at, acknowledged_at, outcome)"
        " SELECT r.id, s.stream_id, s.client_id,"
        " CASE WHEN s.delivery_method = :push THEN 'push' ELSE 'poll' END,"
        " s.description, r.created_at, a.acked_at,"
        " CASE WHEN a.acked_at IS NULL THEN NULL ELSE 'acknowledged' END"
        " FROM revocations r JOIN ssf_streams s ON s.created_at <= r.created_at"
        " LEFT JOIN ssf_acks a ON a.stream_id = s.stream_id AND a.revocation_id = r.id"
        " WHERE s.start_after_id < r.id OR a.acked_at IS NOT NULL").bindparams(push=PUSH))


def downgrade():
    op.drop_index('ix_revocation_receipts_stream_id', table_name='revocation_receipts')
    op.drop_table('revocation_receipts')
