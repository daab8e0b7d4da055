"""Migration 0018: permanent memberships live at the migration count as confirmed at the
migration time (their first re-confirmation is due a full period later); ended ones and
other kinds get no confirmation; every tenant starts with ``permanent_mode = direct``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alembic import command
from sqlalchemy import text

from idp_bridge.storage.db import Database


def test_existing_permanent_advisors_are_confirmed_as_of_the_migration(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        with db.engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0017")
        long_ago = "2026-01-01 00:00:00.000000"
        with db.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO tenants (id, name, created_at, notify_first_access, access_modes, "
                "four_eyes) VALUES ('10042', 'Muster GmbH', :t, 0, 'both', 0)"), {"t": long_ago})
            for mid, kind, ended in (("m-perm", "permanent", None),
                                     ("m-ended", "permanent", long_ago),
                                     ("m-temp", "temporary", None)):
                connection.execute(text(
                    "INSERT INTO memberships (id, tenant_id, advisor_subject, kind, grant_id, "
                    "created_at, created_by, ended_at) VALUES (:id, '10042', :sub, :kind, :g, "
                    ":t, 'sam', :ended)"),
                    {"id": mid, "sub": f"sub-{mid}", "kind": kind, "g": f"g-{mid}",
                     "t": long_ago, "ended": ended})
        before = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)
        db.upgrade()
        with db.engine.connect() as connection:
            rows = dict(connection.execute(text(
                "SELECT id, confirmed_at FROM memberships")).all())
            mode = connection.execute(text("SELECT permanent_mode FROM tenants")).scalar()
        assert mode == "direct"
        assert rows["m-ended"] is None and rows["m-temp"] is None
        confirmed = datetime.fromisoformat(str(rows["m-perm"]))
        assert before <= confirmed <= datetime.now(timezone.utc).replace(tzinfo=None)
    finally:
        db.dispose()
