"""Structured (tenant, subject) identities and access-code guess accounting.

``memberships.active_key`` (``tenant|subject``) and ``user_groups.active_name``
(``tenant|name``) were keys joined from strings, so distinct pairs could collide
(``30005|partner`` + ``bob2`` = ``30005`` + ``partner|bob2``). They give way to partial unique
indexes on the columns themselves. Wrong access-code guesses are counted in two new tables
shared by every process. Existing rows are kept: group name keys are computed from the names.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
import unicodedata

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def _name_key(name: str) -> str:
    # The same rule as idp_bridge.domain.guests.name_key (kept here: a migration must not
    # change when the application code does).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def upgrade():
    # --- memberships: one active membership per (tenant_id, advisor_subject) ---
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_column('active_key')
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index('uq_memberships_active_tenant_subject',
                              ['tenant_id', 'advisor_subject'], unique=True,
                              sqlite_where=sa.text('ended_at IS NULL'),
                              postgresql_where=sa.text('ended_at IS NULL'))

    # --- user groups: names unique per tenant by (tenant_id, name_key) ---
    with op.batch_alter_table('user_groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_key', sa.String(length=300), nullable=True))
    connection = op.get_bind()
    groups = sa.table('user_groups', sa.column('id', sa.String), sa.column('tenant_id', sa.String),
                      sa.column('name', sa.String), sa.column('deleted_at', sa.DateTime),
                      sa.column('name_key', sa.String))
    live: dict = {}
    for row in connection.execute(sa.select(groups.c.id, groups.c.tenant_id, groups.c.name,
                                            groups.c.deleted_at)).all():
        key = _name_key(row.name)
        if row.deleted_at is None:
            other = live.setdefault((row.tenant_id, key), row.id)
            if other != row.id:
                raise RuntimeError(
                    f"user groups {other} and {row.id} of one tenant have names that differ "
                    "only in case or Unicode form; rename one of them, then upgrade again")
        connection.execute(groups.update().where(groups.c.id == row.id).values(name_key=key))
    with op.batch_alter_table('user_groups', schema=None) as batch_op:
        batch_op.alter_column('name_key', existing_type=sa.String(length=300), nullable=False)
        batch_op.drop_column('active_name')
    with op.batch_alter_table('user_groups', schema=None) as batch_op:
        batch_op.create_index('uq_user_groups_live_tenant_name', ['tenant_id', 'name_key'],
                              unique=True, sqlite_where=sa.text('deleted_at IS NULL'),
                              postgresql_where=sa.text('deleted_at IS NULL'))

    # --- wrong access-code guesses, counted where every process sees them ---
    op.create_table('code_guessers',
    sa.Column('advisor_subject', sa.String(length=255), nullable=False),
    sa.Column('last_guess_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('advisor_subject')
    )
    with op.batch_alter_table('code_guessers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_code_guessers_last_guess_at'), ['last_guess_at'], unique=False)

    op.create_table('code_guesses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('advisor_subject', sa.String(length=255), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('code_counter', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('code_guesses', schema=None) as batch_op:
        batch_op.create_index('ix_code_guesses_advisor_at', ['advisor_subject', 'at'], unique=False)
        batch_op.create_index('ix_code_guesses_advisor_tenant_counter', ['advisor_subject', 'tenant_id', 'code_counter'], unique=False)
        batch_op.create_index(batch_op.f('ix_code_guesses_at'), ['at'], unique=False)


def downgrade():
    with op.batch_alter_table('code_guesses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_code_guesses_at'))
        batch_op.drop_index('ix_code_guesses_advisor_tenant_counter')
        batch_op.drop_index('ix_code_guesses_advisor_at')
    op.drop_table('code_guesses')
    with op.batch_alter_table('code_guessers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_code_guessers_last_guess_at'))
    op.drop_table('code_guessers')

    # The joined keys come back for live rows (the collisions they allow come back too).
    with op.batch_alter_table('user_groups', schema=None) as batch_op:
        batch_op.drop_index('uq_user_groups_live_tenant_name')
        batch_op.add_column(sa.Column('active_name', sa.String(length=200), nullable=True))
    op.execute("UPDATE user_groups SET active_name = tenant_id || '|' || lower(name) "
               "WHERE deleted_at IS NULL")
    with op.batch_alter_table('user_groups', schema=None) as batch_op:
        batch_op.drop_column('name_key')
        batch_op.create_unique_constraint('uq_user_groups_active_name', ['active_name'])

    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index('uq_memberships_active_tenant_subject')
        batch_op.add_column(sa.Column('active_key', sa.String(length=320), nullable=True))
    op.execute("UPDATE memberships SET active_key = tenant_id || '|' || advisor_subject "
               "WHERE ended_at IS NULL")
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_memberships_active_key', ['active_key'])
