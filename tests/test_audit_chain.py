"""The tamper-evident audit (issue 15 item 4; docs/audit-chain.md).

- every audit event goes into its tenant's hash chain (the system chain without a tenant):
  each kind of event, positions 1, 2, … without gaps, nothing for a rolled-back transaction;
- migration 0015 chains the events written before, in id order;
- the signed checkpoints: due chains only, never a broken chain, keys at /audit/jwks and
  never usable as access tokens;
- the export (API pages, the access log's JSON and CSV) for the tenant's admins only, every
  refusal a 4xx that changes nothing;
- the verifier (``idp-bridge audit verify``) and the standalone script (docs/) find an
  edited, a deleted, two swapped events, a cut tail, a rewritten chain and a tampered
  checkpoint, and agree with each other;
- no fork under concurrent writers: several processes into one tenant's chain, on SQLite and
  on PostgreSQL.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import logging
import multiprocessing
import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from joserfc import jws as jose_jws
from sqlalchemy import func, select, text

from conftest import OTHER_TENANT, RS_CLIENT_ID, TENANT, dump_database, verify_access_token, wrong_code
from idp_bridge.cli import main as cli
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain import audit
from idp_bridge.domain.audit_chain import (GENESIS, SYSTEM_CHAIN, canonical_json, chain_of,
                                           content_digest, event_hash)
from idp_bridge.domain.audit_checkpoints import CHECKPOINT_TYPE, check_segment
from idp_bridge.storage.db import Database, utcnow
from idp_bridge.storage.models import AuditChainHead, AuditCheckpoint, AuditEvent
from test_pages_helpers import signed_in

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "verify_audit_chain.py"
CHAIN = chain_of(TENANT)
BOB = DEMO_USERS["bob"]["sub"]


# --- helpers --------------------------------------------------------------------------------
def populate(bridge) -> set[str]:
    """Real flows writing each kind of event the tenant's chain gets; returns the kinds."""
    bob = bridge.join("bob")
    code = bridge.current_code()
    assert bridge.exchange("carol", code=wrong_code(code)).status_code == 400
    bridge.join("carol")
    refreshed = bridge.token({"grant_type": "refresh_token", "refresh_token": bob["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.json
    revoked = bridge.client.post("/revoke", data={"token": refreshed.json["refresh_token"]},
                                 auth=bridge.auth())
    assert revoked.status_code == 200
    group = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                       json={"name": "Prüfer \"Q4\"", "permissions": ["payments:read"]})
    assert group.status_code == 201, group.json
    invitation = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                            json={"group": group.json["id"], "email": "guest@example.com"})
    assert invitation.status_code == 201, invitation.json
    removed = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/"
                                   f"{bridge.membership_id('carol')}")
    assert removed.status_code == 204
    claims = verify_access_token(bridge, bob["access_token"])[1]
    refused = bridge.client.post("/access-records", auth=(RS_CLIENT_ID, bridge.rs_secret), json={
        "records": [{"id": str(uuid.uuid4()), "tenant": TENANT, "grant_id": str(uuid.uuid4()),
                     "sid": claims["sid"], "sub": claims["sub"], "area": "ebics",
                     "action": "read", "method": "GET", "route": "/tenants/<tenant>/ebics",
                     "status": 200, "at": utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z")}]})
    assert refused.status_code == 200 and refused.json["refused"], refused.json
    return {"membership.created", "access_code.rotated", "token.issued", "access_code.failed",
            "token.refreshed", "token.family_revoked", "group.changed", "invitation.changed",
            "membership.ended", "access_record.refused"}


def stored_chain(db, chain: str = CHAIN) -> list[AuditEvent]:
    with db.read() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.chain == chain)
                                    .order_by(AuditEvent.seq)))


def head_of(db, chain: str = CHAIN):
    with db.read() as session:
        head = session.get(AuditChainHead, chain)
        return (head.seq, head.hash) if head else (0, GENESIS)


def intact(db, chain: str = CHAIN):
    seq, digest = head_of(db, chain)
    with db.read() as session:
        return check_segment(session, chain, 0, GENESIS, seq, digest)


def sign(bridge):
    signed, broken = bridge.services.checkpoints.sign_due(utcnow(), every_moved=True)
    return signed, broken


def export(bridge, tenant: str = TENANT, user: str = "anna", **query):
    return bridge.api("get", f"/api/tenants/{tenant}/audit/chain", user=user,
                      query_string={"limit": 5000, **query})


def document(bridge) -> dict:
    response = export(bridge)
    assert response.status_code == 200, response.json
    return response.json


def sql(bridge, statement: str, **params) -> None:
    with bridge.services.db.engine.begin() as connection:
        connection.execute(text(statement), params)


def standalone_module():
    spec = importlib.util.spec_from_file_location("verify_audit_chain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["audit", "verify", *map(str, args)])
    return result.exit_code, result.output.splitlines()


def run_script(*args) -> tuple[int, list[str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = standalone_module().main([str(a) for a in args])
    return code, out.getvalue().splitlines()


def verdicts(tmp_path, doc, *extra, name="chain.json") -> tuple:
    """(exit code, first line) of the CLI; the standalone script must say the same."""
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    code, lines = run_cli(path, *extra)
    script_code, script_lines = run_script(path, *extra)
    assert (script_code, script_lines[:1]) == (code, lines[:1]), (lines, script_lines)
    return code, lines[0]


def keys_file(bridge, tmp_path) -> Path:
    path = tmp_path / "audit-jwks.json"
    path.write_text(json.dumps(bridge.client.get("/audit/jwks").json))
    return path


# --- the chain ------------------------------------------------------------------------------
def test_every_kind_of_event_of_the_real_flows_is_chained(bridge):
    kinds = populate(bridge)
    events = stored_chain(bridge.services.db)
    assert kinds <= {e.event for e in events}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.id for e in events] == sorted(e.id for e in events)  # seq order is id order
    assert intact(bridge.services.db) is None
    assert head_of(bridge.services.db) == (events[-1].seq, events[-1].hash)
    prev = GENESIS
    for e in events:
        assert e.hash == event_hash(chain=CHAIN, seq=e.seq, prev=prev, values={
            "at": e.at, "tenant_id": e.tenant_id, "event": e.event, "actor": e.actor,
            "actor_role": e.actor_role, "membership_id": e.membership_id,
            "client_id": e.client_id, "detail": e.detail})
        prev = e.hash
    # The other tenant's chain is its own.
    assert stored_chain(bridge.services.db, chain_of(OTHER_TENANT)) == []


def test_every_event_name_goes_into_its_chain(migrated_db):
    """Each name of audit.EVENTS, with and without a tenant, with detail of every shape an
    event holds (text with quotes, controls, non-ASCII and a lone surrogate, numbers, lists,
    nested objects, None)."""
    detail = {"reason": "Grund: \"prüfen\"\n\t\x01€😀", "count": 3, "big": 2 ** 53 - 1,
              "list": ["a", 1, None, True], "nested": {"z": 1, "ä": {"b": []}},
              "nothing": None, "odd": "\ud800x", "ünicode-key": "x"}
    for event in audit.EVENTS:
        with migrated_db.transaction() as session:
            audit.record(session, event, utcnow(), tenant_id=TENANT, actor="a", **detail)
            audit.record(session, event, utcnow(), actor="system", actor_role="system")
    for chain in (CHAIN, SYSTEM_CHAIN):
        events = stored_chain(migrated_db, chain)
        assert [e.event for e in events] == list(audit.EVENTS)
        assert [e.seq for e in events] == list(range(1, len(audit.EVENTS) + 1))
        assert intact(migrated_db, chain) is None
    assert stored_chain(migrated_db)[0].detail == detail


def test_a_rolled_back_transaction_takes_no_position(migrated_db):
    with migrated_db.transaction() as session:
        audit.record(session, "token.issued", utcnow(), tenant_id=TENANT, actor="a")
    with pytest.raises(RuntimeError):
        with migrated_db.transaction() as session:
            audit.record(session, "token.issued", utcnow(), tenant_id=TENANT, actor="b")
            raise RuntimeError("refused")
    with migrated_db.transaction() as session:
        audit.record(session, "token.issued", utcnow(), tenant_id=TENANT, actor="c")
    events = stored_chain(migrated_db)
    assert [(e.seq, e.actor) for e in events] == [(1, "a"), (2, "c")]
    assert intact(migrated_db) is None


@pytest.mark.parametrize("value", [1.5, 2 ** 53, object()])
def test_a_value_the_chain_cannot_hold_fails_where_it_is_recorded(migrated_db, value):
    before = dump_database(migrated_db)
    with pytest.raises((TypeError, ValueError)):
        with migrated_db.transaction() as session:
            audit.record(session, "token.issued", utcnow(), tenant_id=TENANT, value=value)
    assert dump_database(migrated_db) == before


def test_the_serialization_is_rfc_8785_for_what_events_hold():
    assert canonical_json({"b": [1, None, True], "a": "é\"\\\n\x1f\u2028", "": {}}) == \
        '{"":{},"a":"é\\"\\\\\\n\\u001f\u2028","b":[1,null,true]}'
    # Keys sorted by UTF-16 code units: U+FFFD after U+1F600 (a surrogate pair, D83D …).
    assert canonical_json({"\ufffd": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ufffd":1}'
    assert canonical_json("\udc80") == '"\\udc80"'


def test_the_documented_example_hash_is_what_the_bridge_computes():
    """docs/audit-chain.md gives an event and its hash: an independent verifier can check
    its serialization against it."""
    doc = (ROOT / "docs" / "audit-chain.md").read_text(encoding="utf-8")
    serialized = re.search(r"```json canonical\n(.+?)\n```", doc, re.S).group(1)
    digest = re.search(r"its digest:\s*`([0-9a-f]{64})`", doc).group(1)
    expected = re.search(r"the hash:\s*`([0-9a-f]{64})`", doc).group(1)
    obj = json.loads(serialized)
    assert canonical_json(obj) == serialized
    values = {"tenant_id" if k == "tenant" else k: v for k, v in obj.items()}
    assert content_digest(chain=obj["chain"], values=values) == digest
    assert event_hash(chain=obj["chain"], seq=1, prev=GENESIS, values=values) == expected
    assert standalone_module().event_hash(obj["chain"], obj, 1, GENESIS) == expected


# --- migration 0015 -------------------------------------------------------------------------
@pytest.fixture
def empty_database_url(backend, tmp_path, request):
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/old.sqlite"
    return request.getfixturevalue("postgres").create_database(f"m_{uuid.uuid4().hex[:12]}")


def test_migration_0015_chains_the_events_written_before(empty_database_url):
    db = Database(empty_database_url)
    with db.engine.begin() as connection:
        config = db.alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0014")
    old = [(TENANT, {"reason": "ä \"x\"", "n": 1}), (None, None), (OTHER_TENANT, {}),
           (TENANT, None), (TENANT, {"list": [1, "b"]}), (None, {"x": "y"})]
    with db.engine.begin() as connection:
        for i, (tenant, detail) in enumerate(old):
            connection.execute(text(
                "INSERT INTO audit_events (at, tenant_id, event, actor, detail) "
                "VALUES (:at, :tenant, 'token.issued', :actor, :detail)"),
                {"at": datetime(2026, 11, 30, 12, 0, i, 654321), "tenant": tenant,
                 "actor": f"actor-{i}", "detail": None if detail is None else json.dumps(detail)})
    db.upgrade()
    try:
        for chain, expected in ((CHAIN, ["actor-0", "actor-3", "actor-4"]),
                                (SYSTEM_CHAIN, ["actor-1", "actor-5"]),
                                (chain_of(OTHER_TENANT), ["actor-2"])):
            events = stored_chain(db, chain)
            assert [e.actor for e in events] == expected  # in id order
            assert [e.seq for e in events] == list(range(1, len(expected) + 1))
            assert intact(db, chain) is None
            assert head_of(db, chain) == (events[-1].seq, events[-1].hash)
        assert stored_chain(db)[0].at == datetime(2026, 11, 30, 12, 0, 0, 654321, timezone.utc)
        with db.transaction() as session:  # the chain goes on from the migrated head
            audit.record(session, "token.issued", utcnow(), tenant_id=TENANT, actor="new")
        assert [e.seq for e in stored_chain(db)] == [1, 2, 3, 4]
        assert intact(db) is None
    finally:
        db.dispose()


# --- checkpoints ------------------------------------------------------------------------------
def test_checkpoints_are_signed_for_the_chains_that_moved(bridge):
    bridge.join("bob")
    checkpoints = bridge.services.checkpoints
    now = utcnow()
    signed, broken = checkpoints.sign_due(now)
    assert (signed, broken) == (1, [])  # a chain's first checkpoint at once
    assert checkpoints.sign_due(now) == (0, [])  # nothing moved
    bridge.exchange("bob")
    assert checkpoints.sign_due(now + timedelta(seconds=60)) == (0, [])  # not yet due
    assert checkpoints.sign_due(now + timedelta(seconds=601)) == (1, [])
    with bridge.services.db.read() as session:
        rows = checkpoints.of_chain(session, CHAIN)
    seq, digest = head_of(bridge.services.db)
    assert [(r.seq, r.hash) for r in rows][-1] == (seq, digest)
    header = jose_jws.extract_compact(rows[-1].jws.encode()).protected
    assert header["typ"] == CHECKPOINT_TYPE and header["alg"] == "ES256"
    assert header["kid"] == rows[-1].kid


def test_the_maintenance_loop_signs_due_checkpoints(bridge):
    bridge.join("bob")
    bridge.services.maintenance.run_once()
    with bridge.services.db.read() as session:
        assert bridge.services.checkpoints.latest(session, CHAIN).seq == head_of(
            bridge.services.db)[0]


def test_a_broken_chain_is_not_signed(bridge, caplog):
    bridge.join("bob")
    assert sign(bridge) == (1, [])
    signed_up_to = head_of(bridge.services.db)[0]
    bridge.exchange("bob")
    bridge.exchange("bob")
    # Changed after the last checkpoint: the bridge checks that stretch before signing.
    sql(bridge, "UPDATE audit_events SET actor = 'mallory' WHERE chain = :c AND seq = :s",
        c=CHAIN, s=signed_up_to + 1)
    with bridge.services.db.read() as session:
        before = bridge.services.checkpoints.latest(session, CHAIN).seq
    with caplog.at_level(logging.ERROR):
        signed, broken = sign(bridge)
    assert signed == 0
    assert [(b.chain, b.seq, b.problem) for b in broken] == [(CHAIN, signed_up_to + 1,
                                                              "changed")]
    assert f"does not verify at seq {signed_up_to + 1}" in caplog.text
    with bridge.services.db.read() as session:
        assert bridge.services.checkpoints.latest(session, CHAIN).seq == before


def test_checkpoint_keys_are_apart_from_the_token_keys(bridge):
    bridge.join("bob")
    sign(bridge)
    audit_keys = bridge.client.get("/audit/jwks")
    assert audit_keys.status_code == 200
    token_kids = {k["kid"] for k in bridge.client.get("/jwks").json["keys"]}
    set_kids = {k["kid"] for k in bridge.client.get("/ssf/jwks").json["keys"]}
    audit_kids = {k["kid"] for k in audit_keys.json["keys"]}
    assert audit_kids and not audit_kids & (token_kids | set_kids)
    assert all("d" not in k and k["alg"] == "ES256" for k in audit_keys.json["keys"])


def test_a_checkpoint_is_no_access_token(bridge_with):
    """Not at introspection, not at a resource server's guard (served bridge, real
    discovery and /jwks), and it carries nothing a resource server would accept."""
    from conftest import ServerThread
    from scopes.guard import InvalidToken, TokenGuard

    holder = {}
    with ServerThread(lambda environ, start: holder["app"](environ, start)) as server:
        served = bridge_with(issuer=f"http://127.0.0.1:{server.port}")
        holder["app"] = served.app
        issued = served.join("bob")
        sign(served)
        token = document(served)["checkpoints"][-1]["jws"]
        introspected = served.introspect(token)
        assert introspected.status_code == 200 and introspected.json == {"active": False}
        guard = TokenGuard(served.services.settings.issuer, "konfipay-api")
        assert guard.validate(issued["access_token"], tenant=TENANT, scope="payments:read")
        with pytest.raises(InvalidToken):
            guard.validate(token, tenant=TENANT, scope="payments:read")
    claims = json.loads(jose_jws.extract_compact(token.encode()).payload)
    assert not {"aud", "sub", "scope", "exp", "client_id", "grant_id"} & set(claims)


def test_old_checkpoints_verify_after_a_key_rotation(bridge, tmp_path):
    bridge.join("bob")
    sign(bridge)
    with bridge.services.db.transaction() as session:
        bridge.services.checkpoints.keys.rotate(session, utcnow())
    bridge.services.checkpoints.keys.ring.invalidate()
    bridge.exchange("bob")
    sign(bridge)
    doc = document(bridge)
    assert len({c["kid"] for c in doc["checkpoints"]}) == 2
    code, line = verdicts(tmp_path, doc, "--jwks", keys_file(bridge, tmp_path))
    assert code == 0 and "2 checkpoints verified" in line, line


# --- the export -----------------------------------------------------------------------------
def test_the_api_exports_the_chain_a_page_at_a_time(bridge, tmp_path):
    populate(bridge)
    sign(bridge)
    whole = document(bridge)
    head = whole["head"]["seq"]
    assert whole["format"] == "idp-bridge-audit-chain/1" and whole["chain"] == CHAIN
    assert [e["seq"] for e in whole["events"]] == list(range(1, head + 1))
    assert whole["next_after"] is None and whole["checkpoints"]
    assert whole["jwks_uri"] == "http://127.0.0.1:8000/audit/jwks"
    pages, after = [], 0
    while after is not None:
        response = export(bridge, limit=4, after=after)
        assert response.status_code == 200, response.json
        assert response.headers["Cache-Control"] == "no-store"
        pages.append(response.json)
        after = response.json["next_after"]
    assert [e for p in pages for e in p["events"]] == whole["events"]
    assert all(len(p["events"]) <= 4 for p in pages)
    # Each page verifies on its own (from its first event's prev).
    for number, page in enumerate(pages):
        code, line = verdicts(tmp_path, page, "--jwks", keys_file(bridge, tmp_path),
                              name=f"page-{number}.json")
        assert code == 0, line


def authorization_cases():
    other_admin = {"groups": ["/tenants/20077/admins"]}
    return [
        pytest.param({"token": "none"}, 401, "invalid_token", None, id="no-token"),
        pytest.param({"user": "bob"}, 403, "forbidden", "not_tenant_admin", id="advisor"),
        pytest.param({"user": "sam"}, 403, "forbidden", "not_tenant_admin", id="support"),
        pytest.param({"user": "eve", "claims": other_admin}, 403, "forbidden",
                     "not_tenant_admin", id="admin-of-another-tenant"),
        pytest.param({"query": {"limit": "0"}}, 400, "invalid_request", "limit_out_of_range",
                     id="limit-0"),
        pytest.param({"query": {"limit": "5001"}}, 400, "invalid_request", "limit_out_of_range",
                     id="limit-too-big"),
        pytest.param({"query": {"after": "-1"}}, 400, "invalid_request", "after_out_of_range",
                     id="after-negative"),
        pytest.param({"query": {"after": "1e3"}}, 400, "invalid_request", "after_out_of_range",
                     id="after-not-a-number"),
    ]


@pytest.mark.parametrize("how, status, error, code", authorization_cases())
def test_the_export_refuses_and_changes_nothing(bridge, how, status, error, code):
    populate(bridge)
    before = dump_database(bridge.services.db)
    headers = {}
    if how.get("token") != "none":
        token = bridge.upstream.issue_tokens(how.get("user", "anna"),
                                             extra_claims=how.get("claims"))["access_token"]
        headers["Authorization"] = f"Bearer {token}"
    response = bridge.client.get(f"/api/tenants/{TENANT}/audit/chain", headers=headers,
                                 query_string=how.get("query", {}))
    assert response.status_code == status, response.json
    assert response.json["error"] == error
    assert response.json.get("error_code") == code
    assert "events" not in response.json
    assert dump_database(bridge.services.db) == before


def test_anna_cannot_export_another_tenants_chain(bridge):
    before = dump_database(bridge.services.db)
    response = export(bridge, tenant=OTHER_TENANT)
    assert response.status_code == 403
    assert response.json["error_code"] == "not_tenant_admin"
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("suffix", ["json", "csv"])
def test_the_access_log_downloads_are_for_tenant_admins_only(app, bridge, suffix):
    populate(bridge)
    clients = {user: signed_in(app, user) for user in ("bob", "sam")}
    before = dump_database(bridge.services.db)
    for user, client in clients.items():
        response = client.get(f"/tenants/{TENANT}/log/chain.{suffix}")
        assert response.status_code == 403, user
        assert "seq" not in response.text
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("language, delimiter", [("en", ","), ("de", ";")])
def test_the_access_log_downloads_verify(app, bridge, tmp_path, language, delimiter,
                                         monkeypatch):
    from idp_bridge.web import audit_chain as downloads

    monkeypatch.setattr(downloads, "PAGE", 4)  # streamed over several pages
    populate(bridge)
    sign(bridge)
    anna = signed_in(app, "anna")
    page = anna.get(f"/tenants/{TENANT}/log", headers={"Accept-Language": language})
    assert page.status_code == 200
    assert 'id="chain-json-download"' in page.text and 'id="chain-checkpoint"' in page.text
    heading = "Manipulationssicheres Protokoll" if language == "de" else "Tamper-evident audit"
    assert heading in page.text
    as_json = anna.get(f"/tenants/{TENANT}/log/chain.json")
    assert as_json.status_code == 200
    assert as_json.headers["Content-Disposition"].startswith('attachment; filename="audit-chain-')
    doc = json.loads(as_json.data)
    assert doc["events"] == document(bridge)["events"]
    code, line = verdicts(tmp_path, doc, "--jwks", keys_file(bridge, tmp_path))
    assert code == 0 and line.startswith(f"OK: chain {CHAIN}, events 1-"), line
    as_csv = anna.get(f"/tenants/{TENANT}/log/chain.csv",
                      headers={"Accept-Language": language})
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    body = as_csv.data.decode("utf-8")
    assert body.startswith("\ufeffseq" + delimiter)
    code, line = verdicts(tmp_path, body, name="chain.csv")
    assert code == 0 and line == f"OK: chain {CHAIN}, events 1-{doc['head']['seq']} intact", line
    # With the JSON beside it, the CSV's chain is checked against the checkpoints too.
    (tmp_path / "beside.json").write_text(json.dumps(doc))
    code, line = verdicts(tmp_path, body, "--compare", tmp_path / "beside.json", "--jwks",
                          keys_file(bridge, tmp_path), name="chain.csv")
    assert code == 0 and "checkpoint" in line, line


def test_an_empty_chain_downloads_and_verifies(app, bridge, tmp_path):
    anna = signed_in(app, "anna")
    doc = json.loads(anna.get(f"/tenants/{TENANT}/log/chain.json").data)
    assert doc["events"] == [] and doc["head"] == {"seq": 0, "hash": GENESIS}
    code, line = verdicts(tmp_path, doc)
    assert (code, line) == (0, f"OK: chain {CHAIN} has no events")
    assert "Noch ist kein Prüfpunkt signiert" in anna.get(
        f"/tenants/{TENANT}/log", headers={"Accept-Language": "de"}).text


def test_a_csv_cell_that_a_spreadsheet_would_run_stays_verifiable(bridge, tmp_path, app):
    group = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                       json={"name": "=HYPERLINK(\"x\")", "permissions": ["payments:read"]})
    assert group.status_code == 201, group.json
    with bridge.services.db.transaction() as session:
        audit.record(session, "group.changed", utcnow(), tenant_id=TENANT, actor="-1",
                     actor_role="", change="x")
    body = signed_in(app, "anna").get(f"/tenants/{TENANT}/log/chain.csv").data.decode()
    assert ",'-1,'," in body  # formula start and empty string both kept apart
    code, line = verdicts(tmp_path, body, name="chain.csv")
    assert code == 0, line


# --- the verifier: tampering in the database --------------------------------------------------
def _edit(bridge, seq):
    sql(bridge, "UPDATE audit_events SET actor = 'mallory' WHERE chain = :c AND seq = :s",
        c=CHAIN, s=seq)


def _edit_detail(bridge, seq):
    sql(bridge, "UPDATE audit_events SET detail = :d WHERE chain = :c AND seq = :s",
        d=json.dumps({"reason": "nothing happened"}), c=CHAIN, s=seq)


def _delete(bridge, seq):
    sql(bridge, "DELETE FROM audit_events WHERE chain = :c AND seq = :s", c=CHAIN, s=seq)


def _swap(bridge, seq):
    for old, new in ((seq, -1), (seq + 1, seq), (-1, seq + 1)):
        sql(bridge, "UPDATE audit_events SET seq = :n WHERE chain = :c AND seq = :o",
            n=new, c=CHAIN, o=old)


def _swap_far(bridge, seq):
    for old, new in ((seq, -1), (seq + 3, seq), (-1, seq + 3)):
        sql(bridge, "UPDATE audit_events SET seq = :n WHERE chain = :c AND seq = :o",
            n=new, c=CHAIN, o=old)


def _cut_tail(bridge, seq):
    """The newest events removed from the events and from the head: only the checkpoint
    tells."""
    sql(bridge, "DELETE FROM audit_events WHERE chain = :c AND seq >= :s", c=CHAIN, s=seq)
    kept = stored_chain(bridge.services.db)[-1]
    sql(bridge, "UPDATE audit_chain_heads SET seq = :s, hash = :h WHERE chain = :c",
        s=kept.seq, h=kept.hash, c=CHAIN)


def _rewrite(bridge, seq):
    """An event changed and every hash from it on recomputed, the head too: the chain is
    consistent in itself; the checkpoint tells."""
    _edit(bridge, seq)
    events = stored_chain(bridge.services.db)
    prev = events[seq - 2].hash if seq > 1 else GENESIS
    for e in events[seq - 1:]:
        digest = event_hash(chain=CHAIN, seq=e.seq, prev=prev, values={
            "at": e.at, "tenant_id": e.tenant_id, "event": e.event, "actor": e.actor,
            "actor_role": e.actor_role, "membership_id": e.membership_id,
            "client_id": e.client_id, "detail": e.detail})
        sql(bridge, "UPDATE audit_events SET hash = :h WHERE id = :i", h=digest, i=e.id)
        prev = digest
    sql(bridge, "UPDATE audit_chain_heads SET hash = :h WHERE chain = :c", h=prev, c=CHAIN)


def _forge_checkpoint(bridge, _seq):
    with bridge.services.db.read() as session:
        row = bridge.services.checkpoints.latest(session, CHAIN)
    header, payload, signature = row.jws.split(".")
    claims = json.loads(jose_jws.extract_compact(row.jws.encode()).payload)
    import base64

    forged = base64.urlsafe_b64encode(json.dumps({**claims, "seq": claims["seq"] - 1})
                                      .encode()).rstrip(b"=").decode()
    sql(bridge, "UPDATE audit_checkpoints SET jws = :j WHERE id = :i",
        j=f"{header}.{forged}.{signature}", i=row.id)


def _move_checkpoint(bridge, _seq):
    with bridge.services.db.read() as session:
        row = bridge.services.checkpoints.latest(session, CHAIN)
    sql(bridge, "UPDATE audit_checkpoints SET hash = :h WHERE id = :i", h="a" * 64, i=row.id)


TAMPERING = [
    # (tamper, at which seq, expected kind, expected seq of the finding)
    pytest.param(_edit, 3, "changed", 3, id="edited-actor"),
    pytest.param(_edit_detail, 5, "changed", 5, id="edited-detail"),
    pytest.param(_delete, 4, "removed", 4, id="deleted"),
    pytest.param(_swap, 3, "reordered", 3, id="two-neighbours-swapped"),
    pytest.param(_swap_far, 2, "reordered", 2, id="two-events-swapped"),
    pytest.param(_cut_tail, 6, "removed", 6, id="newest-events-cut"),
    pytest.param(_rewrite, 4, "checkpoint_mismatch", None, id="rewritten-and-rehashed"),
    pytest.param(_forge_checkpoint, 0, "checkpoint_signature", None, id="checkpoint-forged"),
    pytest.param(_move_checkpoint, 0, "checkpoint_mismatch", None, id="checkpoint-row-edited"),
]


@pytest.mark.parametrize("tamper, seq, kind, found_at", TAMPERING)
def test_the_verifier_finds_tampering_in_the_database(bridge, tmp_path, tamper, seq, kind,
                                                      found_at):
    populate(bridge)
    sign(bridge)
    keys = keys_file(bridge, tmp_path)
    assert verdicts(tmp_path, document(bridge), "--jwks", keys)[0] == 0
    tamper(bridge, seq)
    code, line = verdicts(tmp_path, document(bridge), "--jwks", keys)
    assert code == 1
    assert line.startswith("BROKEN"), line
    assert f": {kind}: " in line, line
    if found_at is not None:
        assert line.startswith(f"BROKEN at seq {found_at}: "), line
    if tamper is _rewrite:
        # The bridge's own check: the next stretch no longer starts from what it signed.
        bridge.exchange("bob")
        signed, broken = sign(bridge)
        assert signed == 0 and [b.problem for b in broken] == ["changed"]


def test_the_bridge_finds_what_the_verifier_finds(bridge):
    """The maintenance check reads the stored chain itself: an edit after the last
    checkpoint is found before anything is signed for it."""
    populate(bridge)
    sign(bridge)
    bridge.exchange("bob")
    seq = head_of(bridge.services.db)[0]
    _edit(bridge, seq)
    assert [(b.seq, b.problem) for b in sign(bridge)[1]] == [(seq, "changed")]


# --- the verifier: tampering with the file ------------------------------------------------------
def _file_swap(doc):
    doc["events"][2], doc["events"][3] = doc["events"][3], doc["events"][2]


def _file_drop(doc):
    del doc["events"][4]


def _file_duplicate(doc):
    doc["events"].insert(3, dict(doc["events"][2], actor="someone else"))


def _file_edit(doc):
    doc["events"][1]["detail"] = {"changed": True}


def _file_fraction(doc):
    doc["events"][1]["detail"] = {"n": 1.5}


def _file_cut(doc):
    del doc["events"][-2:]


def _file_checkpoint_of_another_chain(doc):
    doc["chain"] = chain_of(OTHER_TENANT)
    doc["tenant"] = OTHER_TENANT


FILE_TAMPERING = [
    pytest.param(_file_swap, "reordered", 3, id="lines-swapped"),
    pytest.param(_file_drop, "removed", 5, id="line-removed"),
    pytest.param(_file_duplicate, "forked", 3, id="fork"),
    pytest.param(_file_edit, "changed", 2, id="detail-edited"),
    pytest.param(_file_fraction, "changed", 2, id="detail-not-an-event-value"),
    pytest.param(_file_cut, "removed", None, id="tail-cut"),
    pytest.param(_file_checkpoint_of_another_chain, "changed", 1, id="chain-renamed"),
]


@pytest.mark.parametrize("tamper, kind, found_at", FILE_TAMPERING)
def test_the_verifier_finds_tampering_with_the_file(bridge, tmp_path, tamper, kind, found_at):
    populate(bridge)
    sign(bridge)
    doc = document(bridge)
    tamper(doc)
    code, line = verdicts(tmp_path, doc, "--jwks", keys_file(bridge, tmp_path))
    assert code == 1 and f": {kind}: " in line, line
    if found_at is not None:
        assert line.startswith(f"BROKEN at seq {found_at}: "), line


def test_an_earlier_download_finds_a_chain_cut_and_its_checkpoints_removed(bridge, tmp_path):
    """The attacker removes the newest events, the head and the checkpoints that cover
    them: the tenant's earlier download still holds a signed checkpoint."""
    populate(bridge)
    sign(bridge)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(document(bridge)))
    keys = keys_file(bridge, tmp_path)
    seq = head_of(bridge.services.db)[0]
    _cut_tail(bridge, seq - 1)
    sql(bridge, "DELETE FROM audit_checkpoints WHERE chain = :c", c=CHAIN)
    cut = document(bridge)
    code, line = verdicts(tmp_path, cut, "--jwks", keys)
    assert code == 0, line  # alone, the shortened chain looks whole
    code, line = verdicts(tmp_path, cut, "--jwks", keys, "--compare", earlier)
    assert code == 1 and line.startswith(f"BROKEN at seq {seq - 1}: removed: "), line


def test_without_keys_the_verifier_says_what_it_used(app, bridge, tmp_path):
    populate(bridge)
    sign(bridge)
    # The API's pages bring no keys: the checkpoints stay unchecked, and the output says so.
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(document(bridge)))
    for run in (run_cli, run_script):
        code, lines = run(path)
        assert code == 0 and "checkpoint" not in lines[0], lines
        assert "note: 1 checkpoint was not checked: give the published keys with --jwks " \
               "http://127.0.0.1:8000/audit/jwks" in lines, lines
    # The page's download brings them: used, with a note to check them against /audit/jwks.
    path.write_text(signed_in(app, "anna").get(f"/tenants/{TENANT}/log/chain.json").text)
    for run in (run_cli, run_script):
        code, lines = run(path)
        assert code == 0 and "1 checkpoint verified" in lines[0], lines
        assert any("keys in the file itself" in line for line in lines), lines


@pytest.mark.parametrize("content", ["", "not json", "{\"format\": \"other\"}", "seq,x\n1,2\n",
                                     "{\"format\": \"idp-bridge-audit-chain/1\", \"events\": 1}"])
def test_an_unreadable_file_exits_2(tmp_path, content):
    path = tmp_path / "chain.json"
    path.write_text(content)
    code, lines = run_cli(path)
    assert code == 2 and lines[0].startswith("UNREADABLE: "), lines
    assert run_script(path)[0] == 2


def test_a_jwks_that_cannot_be_read_exits_2(bridge, tmp_path):
    populate(bridge)
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(document(bridge)))
    (tmp_path / "keys.json").write_text("[]")
    assert run_cli(path, "--jwks", tmp_path / "keys.json")[0] == 2
    assert run_cli(path, "--jwks", tmp_path / "missing.json")[0] != 0


def test_the_standalone_script_needs_only_the_standard_library_and_cryptography():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    import sys

    assert imported - set(sys.stdlib_module_names) == {"cryptography"}


@pytest.mark.slow
def test_the_standalone_script_runs_as_a_program(bridge, tmp_path):
    import subprocess
    import sys

    populate(bridge)
    sign(bridge)
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(document(bridge)))
    keys = keys_file(bridge, tmp_path)
    done = subprocess.run([sys.executable, "-I", str(SCRIPT), str(path), "--jwks", str(keys)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("OK: chain "), done
    _edit(bridge, 2)
    path.write_text(json.dumps(document(bridge)))
    done = subprocess.run([sys.executable, "-I", str(SCRIPT), str(path), "--jwks", str(keys)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout.startswith("BROKEN at seq 2: changed: "), done


def test_audit_checkpoint_command(operator_env):
    bridge = operator_env
    bridge.join("bob")
    result = CliRunner().invoke(cli, ["audit", "checkpoint"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("1 checkpoint signed")
    result = CliRunner().invoke(cli, ["audit", "checkpoint"])
    assert result.output.strip().endswith("0 checkpoints signed")


# --- concurrent writers -------------------------------------------------------------------------
PROCESSES, PER_PROCESS = 4, 150


def _write_events(url: str, worker: int, count: int, start) -> None:
    """One writer process: ``count`` transactions, each an event of the tenant's chain and,
    every few, of the system chain and the other tenant's, recorded in varying order."""
    from idp_bridge.domain import audit as audit_module
    from idp_bridge.storage.db import Database as Db, utcnow as now

    db = Db(url)
    start.wait(60)
    try:
        for i in range(count):
            with db.transaction() as session:
                if i % 2:
                    audit_module.record(session, "access_record.refused", now(), actor=f"w{worker}",
                                        n=i)
                audit_module.record(session, "token.issued", now(), tenant_id=TENANT,
                                    actor=f"w{worker}", n=i)
                if i % 3 == 0:
                    audit_module.record(session, "token.issued", now(), tenant_id=OTHER_TENANT,
                                        actor=f"w{worker}", n=i)
    finally:
        db.dispose()


def _concurrent_writers(url: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_write_events, args=(url, w, PER_PROCESS, start))
               for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    db = Database(url)
    try:
        for chain, per_worker in ((CHAIN, PER_PROCESS), (SYSTEM_CHAIN, PER_PROCESS // 2),
                                  (chain_of(OTHER_TENANT), (PER_PROCESS + 2) // 3)):
            events = stored_chain(db, chain)
            expected = PROCESSES * per_worker
            assert [e.seq for e in events] == list(range(1, expected + 1)), chain
            assert head_of(db, chain) == (expected, events[-1].hash)
            assert intact(db, chain) is None, chain
            # Each writer's events are in the chain in the order it wrote them.
            for w in range(PROCESSES):
                mine = [e.detail["n"] for e in events if e.actor == f"w{w}"]
                assert mine == sorted(mine) and len(mine) == per_worker
        with db.read() as session:
            forks = session.execute(select(AuditEvent.chain, AuditEvent.seq).group_by(
                AuditEvent.chain, AuditEvent.seq).having(func.count() > 1)).all()
        assert forks == []
    finally:
        db.dispose()


@pytest.mark.slow
def test_no_fork_with_several_writer_processes_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/concurrent.sqlite"
    db = Database(url)
    db.upgrade()
    db.dispose()
    _concurrent_writers(url)


@pytest.mark.slow
def test_no_fork_with_several_writer_processes_on_postgresql(postgres):
    url = postgres.create_database(f"c_{uuid.uuid4().hex[:12]}", template="bridge_template")
    _concurrent_writers(url)
