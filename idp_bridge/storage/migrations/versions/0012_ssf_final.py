"""SSF 1.0 Final streams and their own signing keys.

Streams get the receiver's ``description``, a ``status`` (enabled, paused, disabled) with a
``reason``, the algorithm their SETs are signed with, the time of the last verification
request (``min_verification_interval``), a pending Stream Updated event and the subjects the
receiver removed. Existing streams stay enabled and keep ES256.

Signing keys get a ``purpose``: the existing keys sign access tokens (``token``); the
revocation feed's SETs are signed by keys of their own (``set:RS256``, ``set:ES256``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('ssf_streams', schema=None) as batch_op:
        batch_op.add_column(sa.Column('description', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('set_signing_alg', sa.String(length=10),
                                      server_default=sa.text("'ES256'"), nullable=False))
        batch_op.add_column(sa.Column('status', sa.String(length=10),
                                      server_default=sa.text("'enabled'"), nullable=False))
        batch_op.add_column(sa.Column('status_reason', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('verification_requested_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('update_id', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('update_status', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('removed_subjects', sa.JSON(), nullable=True))
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=20),
                                      server_default=sa.text("'token'"), nullable=False))


def downgrade():
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_column('purpose')
    with op.batch_alter_table('ssf_streams', schema=None) as batch_op:
        for column in ('removed_subjects', 'update_status', 'update_id',
                       'verification_requested_at', 'status_reason', 'status',
                       'set_signing_alg', 'description'):
            batch_op.drop_column(column)
