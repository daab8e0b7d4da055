"""People: the directory's local view (names shown to tenants come from here).

A permanent assignment's ``advisor_name`` was free text typed by a support admin: it is
cleared, so that no page shows it as the advisor's name any more (the directory names the
advisor from now on; the audit trail keeps what was recorded).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'people',
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=True),
        sa.Column('username', sa.String(length=255), nullable=True),
        sa.Column('email', sa.String(length=320), nullable=True),
        sa.Column('email_verified', sa.Boolean(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('advisor', sa.Boolean(), nullable=False),
        sa.Column('support_admin', sa.Boolean(), nullable=False),
        sa.Column('source', sa.String(length=20), nullable=False),
        sa.Column('name_key', sa.String(length=300), nullable=True),
        sa.Column('search_key', sa.String(length=1000), nullable=False),
        sa.Column('last_sign_in_at', sa.DateTime(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('subject'),
    )
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_people_name_key'), ['name_key'], unique=False)
    op.execute("UPDATE memberships SET advisor_name = NULL WHERE kind = 'permanent'")


def downgrade():
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_people_name_key'))
    op.drop_table('people')
