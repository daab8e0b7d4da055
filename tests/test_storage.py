"""Storage: migrations, SQLite setup, UTC datetimes, constraints, and secrets at rest."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from conftest import OTHER_TENANT, TENANT, dump_database
from idp_bridge.services.operator import add_client
from idp_bridge.domain.keys import KeyDecryptionFailed, KeyRing
from idp_bridge.domain.memberships import Memberships
from idp_bridge.storage.db import Database
from idp_bridge.storage.models import Base, Client, Membership, SigningKey, Tenant

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SUBJECT = "8e3a2d1c-4b5f-4e6a-8c7d-0b0000000002"


@pytest.fixture
def memberships():
    return Memberships(default_max_age_days=30, reason_max_length=200)


def table_names(db):
    return set(inspect(db.engine).get_table_names())


# --- migrations ---

def test_upgrade_creates_every_model_table(migrated_db):
    assert set(Base.metadata.tables) <= table_names(migrated_db)
    assert migrated_db.is_current()


def test_upgrade_is_idempotent(migrated_db):
    before = dump_database(migrated_db)
    tables = table_names(migrated_db)
    migrated_db.upgrade()
    migrated_db.upgrade()
    assert table_names(migrated_db) == tables
    assert dump_database(migrated_db) == before  # data untouched, tenants still there
    with migrated_db.engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert len(versions) == 1


def test_fresh_database_is_not_current(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        assert not db.is_current()
        db.upgrade()
        assert db.is_current()
    finally:
        db.dispose()


def test_migration_schema_equals_the_models(migrated_db):
    with migrated_db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                               "compare_server_default": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_migration_creates_the_one_active_membership_index(migrated_db):
    uniques = inspect(migrated_db.engine).get_unique_constraints("memberships")
    assert ("grant_id",) in {tuple(u["column_names"]) for u in uniques}
    indexes = {i["name"]: i for i in inspect(migrated_db.engine).get_indexes("memberships")}
    active = indexes["uq_memberships_active_tenant_subject"]
    assert active["unique"] and active["column_names"] == ["tenant_id", "advisor_subject"]
    assert "active_key" not in {c["name"] for c in inspect(migrated_db.engine).get_columns(
        "memberships")}


# --- SQLite setup ---

def test_sqlite_runs_in_wal_mode(migrated_db):
    with migrated_db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced(migrated_db, memberships):
    with pytest.raises(IntegrityError):
        with migrated_db.transaction() as session:
            session.add(Membership(id="m-1", tenant_id="no-such-tenant", advisor_subject=SUBJECT,
                                   kind="temporary", grant_id="g-1", created_at=T0,
                                   created_by=SUBJECT))


# --- UTCDateTime ---

def test_naive_datetime_is_refused(migrated_db):
    with pytest.raises(StatementError) as exc:
        with migrated_db.transaction() as session:
            session.add(Tenant(id="30001", name="Naive", created_at=datetime(2026, 1, 1, 12)))
    assert isinstance(exc.value.orig, ValueError)
    with migrated_db.read() as session:
        assert session.get(Tenant, "30001") is None


def test_datetimes_come_back_aware_utc(migrated_db):
    berlin = timezone(timedelta(hours=2))
    local = datetime(2026, 6, 1, 14, 30, tzinfo=berlin)
    with migrated_db.transaction() as session:
        session.add(Tenant(id="30002", name="Aware", created_at=local))
    with migrated_db.read() as session:
        stored = session.scalars(select(Tenant.created_at).where(Tenant.id == "30002")).one()
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored == local
    assert stored.hour == 12  # converted, not relabelled


# --- one active membership per advisor and tenant ---

def _create(db, memberships, tenant=TENANT, subject=SUBJECT, now=T0):
    with db.transaction() as session:
        t = memberships.tenant(session, tenant)
        return memberships.create(session, t, subject=subject, name="bob", kind="temporary",
                                  created_by=subject, actor_role="advisor", now=now)


def test_second_active_membership_is_refused(migrated_db, memberships):
    first = _create(migrated_db, memberships)
    with pytest.raises(IntegrityError):
        _create(migrated_db, memberships)
    with migrated_db.read() as session:
        rows = session.scalars(select(Membership)).all()
    assert [m.id for m in rows] == [first.id]


def test_same_advisor_in_another_tenant_is_allowed(migrated_db, memberships):
    _create(migrated_db, memberships, TENANT)
    _create(migrated_db, memberships, OTHER_TENANT)
    with migrated_db.read() as session:
        assert len(session.scalars(select(Membership)).all()) == 2


def test_new_membership_allowed_after_the_first_ended(migrated_db, memberships):
    first = _create(migrated_db, memberships)
    with migrated_db.transaction() as session:
        m = session.get(Membership, first.id)
        assert memberships.end(session, m, by="anna", actor_role="tenant_admin",
                               reason="removed_by_tenant", now=T0 + timedelta(minutes=5))
    second = _create(migrated_db, memberships, now=T0 + timedelta(minutes=6))
    assert second.grant_id != first.grant_id
    with migrated_db.read() as session:
        ended = session.get(Membership, first.id)
        assert ended.ended_at is not None
        assert session.get(Membership, second.id).ended_at is None


def test_ending_twice_changes_nothing(migrated_db, memberships):
    first = _create(migrated_db, memberships)
    later = T0 + timedelta(minutes=5)
    with migrated_db.transaction() as session:
        m = session.get(Membership, first.id)
        assert memberships.end(session, m, by="anna", actor_role="tenant_admin",
                               reason="removed_by_tenant", now=later)
    with migrated_db.transaction() as session:
        m = session.get(Membership, first.id)
        assert not memberships.end(session, m, by="bob", actor_role="advisor", reason="left",
                                   now=later + timedelta(minutes=1))
    with migrated_db.read() as session:
        m = session.get(Membership, first.id)
        assert (m.ended_at, m.ended_by, m.end_reason) == (later, "anna", "removed_by_tenant")


# --- signing keys at rest ---

def _keyring(db, kek, alg="ES256"):
    return KeyRing(db, kek, alg, 300, refresh_seconds=0)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_private_keys_are_stored_encrypted(migrated_db, alg):
    kek = Fernet.generate_key().decode()
    ring = _keyring(migrated_db, kek, alg)
    with migrated_db.transaction() as session:
        ring.ensure(session, T0)
    with migrated_db.read() as session:
        row = session.scalars(select(SigningKey)).one()
    assert b"PRIVATE KEY" not in row.private_key
    assert b"-----BEGIN" not in row.private_key
    assert "d" not in row.public_jwk  # the published part holds no private parameter
    assert "PRIVATE KEY" not in dump_database(migrated_db)
    kid, used_alg, _key = ring.signing_key()
    assert (kid, used_alg) == (row.kid, alg)
    assert b"PRIVATE KEY" in Fernet(kek.encode()).decrypt(row.private_key)


def test_another_key_encryption_key_cannot_decrypt(migrated_db):
    with migrated_db.transaction() as session:
        _keyring(migrated_db, Fernet.generate_key().decode()).ensure(session, T0)
    stranger = _keyring(migrated_db, Fernet.generate_key().decode())
    with pytest.raises(KeyDecryptionFailed) as exc:
        stranger.signing_key()
    assert "KEY_ENCRYPTION_KEY" in str(exc.value)


def test_ensure_does_not_create_a_second_key(migrated_db):
    ring = _keyring(migrated_db, Fernet.generate_key().decode())
    for _ in range(2):
        with migrated_db.transaction() as session:
            ring.ensure(session, T0)
    with migrated_db.read() as session:
        assert len(session.scalars(select(SigningKey)).all()) == 1


# --- client secrets ---

def test_client_secrets_stored_only_as_sha256(migrated_db):
    secret = add_client(migrated_db, "storage-test-client")
    given = "given-secret-" + "z" * 40
    add_client(migrated_db, "storage-test-client-2", secret=given)
    with migrated_db.read() as session:
        row = session.get(Client, "storage-test-client")
        row2 = session.get(Client, "storage-test-client-2")
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert row2.secret_hash == hashlib.sha256(given.encode()).hexdigest()
    dump = dump_database(migrated_db)
    assert "storage-test-client" in dump
    assert secret not in dump and given not in dump


def test_app_database_holds_no_client_secret(app):
    from idp_bridge.app import services

    dump = dump_database(services(app).db)
    assert app.config["TEST_CLIENT_SECRET"] not in dump
    assert app.config["TEST_RS_SECRET"] not in dump
    assert "PRIVATE KEY" not in dump
