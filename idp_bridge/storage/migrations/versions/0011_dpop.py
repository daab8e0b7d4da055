"""DPoP (RFC 9449): clients that must present proofs, token families bound to a key.

``clients.dpop_required`` (false for every existing client: nothing changes for them);
``token_families.dpop_jkt``, the RFC 7638 thumbprint of the key a family is bound to
(NULL for existing families: they stay Bearer).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_required', sa.Boolean(), nullable=False,
                                      server_default=sa.text('false')))
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=43), nullable=True))


def downgrade():
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('dpop_required')
