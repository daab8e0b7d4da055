"""A serving worker carries no migration machinery (issue 16 item 6: memory): the application
loads without Alembic, and ``serve``'s master, whose memory every worker forked from it
shares, learns the newest revision from a child interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from idp_bridge.doctor import head_revision

pytestmark = [pytest.mark.slow, pytest.mark.db_independent]


def test_the_application_loads_without_alembic():
    script = ("import json, sys; import idp_bridge.app, idp_bridge.cli, idp_bridge.wsgi; "
              "print(json.dumps([m for m in ('alembic', 'mako', 'pygments') if m in sys.modules]))")
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120, check=True)
    assert json.loads(found.stdout) == []


def test_the_isolated_head_is_alembics_head():
    assert head_revision(isolated=True) == head_revision()


def test_serve_checks_the_schema_without_loading_alembic(tmp_path):
    from idp_bridge.doctor import migration_level
    from idp_bridge.storage.db import Database

    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    db = Database(url)
    db.upgrade()
    db.dispose()
    script = ("import json, sys; from idp_bridge.cli import _migrated_database; "
              "_migrated_database(sys.argv[1], isolated=True).dispose(); "
              "print(json.dumps('alembic' in sys.modules))")
    found = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True,
                           timeout=120, check=True)
    assert json.loads(found.stdout) is False
    assert migration_level(url, isolated=True).problem() is None
