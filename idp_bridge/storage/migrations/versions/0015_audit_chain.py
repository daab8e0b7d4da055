"""The audit hash chain (issue 15 item 4): ``audit_events.chain``/``seq``/``hash``, the chain
heads and the signed checkpoints.

Events written before are chained here, per chain (``tenant:<id>``, or ``system`` for
events without a tenant) in the order of their ids, with the serialization of
``idp_bridge.domain.audit_chain`` (version 1); the heads take each chain's last position.
The checkpoints table starts empty: the maintenance loop signs every chain's head on its
first run.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""
from datetime import timezone

from alembic import op
import sqlalchemy as sa

from idp_bridge.domain.audit_chain import GENESIS, chain_of, event_hash


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

BATCH = 2000
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
    op.create_table(
        'audit_chain_heads',
        sa.Column('chain', sa.String(length=80), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('chain'),
    )
    op.create_table(
        'audit_checkpoints',
        sa.Column('id', BIGINT, autoincrement=True, nullable=False),
        sa.Column('chain', sa.String(length=80), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('signed_at', sa.DateTime(), nullable=False),
        sa.Column('kid', sa.String(length=64), nullable=False),
        sa.Column('jws', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('uq_audit_checkpoints_chain_seq', 'audit_checkpoints', ['chain', 'seq'],
                    unique=True)
    _chain_existing_events(op.get_bind())
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.alter_column('chain', existing_type=sa.String(length=80), nullable=False)
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index('uq_audit_events_chain_seq', ['chain', 'seq'], unique=True)


def _chain_existing_events(connection):
    """Every stored event into its chain, in id order, a batch at a time (keyset pages:
    memory stays bounded however many events there are)."""
    events = sa.table(
        'audit_events', sa.column('id', sa.BigInteger()), sa.column('at', sa.DateTime()),
        sa.column('tenant_id', sa.String()), sa.column('event', sa.String()),
        sa.column('actor', sa.String()), sa.column('actor_role', sa.String()),
        sa.column('membership_id', sa.String()), sa.column('client_id', sa.String()),
        sa.column('detail', sa.JSON()), sa.column('chain', sa.String()),
        sa.column('seq', sa.BigInteger()), sa.column('hash', sa.String()))
    heads = sa.table('audit_chain_heads', sa.column('chain', sa.String()),
                     sa.column('seq', sa.BigInteger()), sa.column('hash', sa.String()))
    update = events.update().where(events.c.id == sa.bindparam('row_id')).values(
        chain=sa.bindparam('new_chain'), seq=sa.bindparam('new_seq'),
        hash=sa.bindparam('new_hash'))
    state: dict[str, tuple[int, str]] = {}
    after = 0
    while True:
        rows = connection.execute(
            sa.select(events).where(events.c.id > after).order_by(events.c.id).limit(BATCH)
        ).mappings().all()
        if not rows:
            break
        changes = []
        for row in rows:
            chain = chain_of(row['tenant_id'])
            seq, prev = state.get(chain, (0, GENESIS))
            values = dict(row)
            values['at'] = row['at'].replace(tzinfo=timezone.utc)  # stored as naive UTC
            seq += 1
            digest = event_hash(chain=chain, seq=seq, prev=prev, values=values)
            state[chain] = (seq, digest)
            changes.append({'row_id': row['id'], 'new_chain': chain, 'new_seq': seq,
                            'new_hash': digest})
        connection.execute(update, changes)
        after = rows[-1]['id']
    if state:
        connection.execute(heads.insert(), [{'chain': chain, 'seq': seq, 'hash': digest}
                                            for chain, (seq, digest) in sorted(state.items())])


def downgrade():
    op.drop_index('uq_audit_checkpoints_chain_seq', table_name='audit_checkpoints')
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_chain_heads')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('uq_audit_events_chain_seq')
        batch_op.drop_column('hash')
        batch_op.drop_column('seq')
        batch_op.drop_column('chain')
