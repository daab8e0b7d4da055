"""An index of revocations by time, for the feed.

A poll (and the long poll's check every 50 ms) looked for pending revocations by id from the
stream's start, filtering on ``created_at``: every revocation ever stored was read, though
only those of the last access-token lifetime are delivered (500,000 rows: 36 ms per check on
SQLite). ``ix_revocations_created_at`` finds the oldest relevant one, and the scan by id starts
there.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""
from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_revocations_created_at', 'revocations', ['created_at'])


def downgrade():
    op.drop_index('ix_revocations_created_at', table_name='revocations')
