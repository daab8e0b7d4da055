"""``idp-bridge audit export``: the operator exports a tenant's chain or the system chain (the
events without a tenant, which no page or API offers) as the JSON that ``idp-bridge audit
verify`` reads; an edited system event is found; refusals write nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from conftest import TENANT
from test_pages_helpers import signed_in
from idp_bridge.cli import main as cli
from idp_bridge.domain import audit
from idp_bridge.storage.db import utcnow


def system_events(bridge, count: int = 3) -> None:
    for i in range(count):
        with bridge.services.db.transaction() as session:
            audit.record(session, "token.rejected", utcnow(), actor="system",
                         actor_role="system", reason=f"probe {i}")


def run(*args):
    result = CliRunner().invoke(cli, ["audit", *map(str, args)])
    return result


def test_the_system_chain_exports_and_verifies(operator_env, tmp_path):
    bridge = operator_env
    system_events(bridge)
    bridge.services.checkpoints.sign_due(utcnow(), every_moved=True)
    path = tmp_path / "system.json"
    done = run("export", "--system", "--output", path)
    assert done.exit_code == 0, (done.output, done.stderr)
    exported = json.loads(path.read_text())
    assert (exported["chain"], exported["tenant"]) == ("system", None)
    assert len(exported["events"]) >= 3 and exported["checkpoints"]
    assert exported["head"]["seq"] == exported["events"][-1]["seq"]
    checked = run("verify", path)
    assert checked.exit_code == 0 and checked.output.startswith("OK: chain system"), \
        checked.output


def test_an_edited_system_event_is_found(operator_env, tmp_path):
    bridge = operator_env
    system_events(bridge)
    bridge.services.checkpoints.sign_due(utcnow(), every_moved=True)
    with bridge.services.db.engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET actor = 'mallory' "
                                "WHERE chain = 'system' AND seq = 2"))
    path = tmp_path / "system.json"
    assert run("export", "--system", "--output", path).exit_code == 0
    checked = run("verify", path)
    assert checked.exit_code == 1 and checked.output.startswith("BROKEN at seq 2: changed"), \
        checked.output


def test_a_tenant_chain_exports_like_the_page_download(operator_env, tmp_path):
    bridge = operator_env
    bridge.join("bob")
    path = tmp_path / "tenant.json"
    assert run("export", "--tenant", TENANT, "--output", path).exit_code == 0
    exported = json.loads(path.read_text())
    downloaded = signed_in(bridge.app, "anna").get(f"/tenants/{TENANT}/log/chain.json")
    assert downloaded.status_code == 200
    page = json.loads(downloaded.get_data(True))
    assert exported["events"] == page["events"] and exported["chain"] == f"tenant:{TENANT}"
    assert run("verify", path).exit_code == 0


@pytest.mark.parametrize("args, code, says", [
    (["--tenant", "99999"], 1, "unknown tenant"),
    (["--tenant", "../etc"], 1, "unknown tenant"),
    (["--tenant", "10042", "--system"], 2, "either --tenant tenant or --system"),
    ([], 2, "either --tenant tenant or --system"),
])
def test_refused_exports_write_nothing(operator_env, tmp_path, args, code, says):
    path = tmp_path / "out.json"
    done = run("export", *args, "--output", path)
    assert done.exit_code == code, (done.output, done.stderr)
    assert says in (done.output + done.stderr).lower()
    assert not path.exists()
