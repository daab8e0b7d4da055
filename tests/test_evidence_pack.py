"""The evidence pack of a membership (issue 15 item 5; docs/evidence-pack.md).

- each way in tells its story: an access code redeemed, an access request approved under
  four eyes (both approvers), support's direct assignment, support's proposal accepted by
  the tenant (and re-confirmed); tokens, recorded access, the end and its receipts;
- the pack is a compact JWS with typ evidence-pack+jwt that verifies with joserfc against
  /audit/jwks, and the offline verifiers (``idp-bridge audit verify-evidence`` and
  docs/verify_evidence_pack.py) agree on it;
- a changed event in the database (alone, or with every hash after it recomputed), a changed
  event of another membership between the pack's events and the checkpoint, and a changed
  pack (unsigned, or re-signed with other keys; a proof cut short) are found;
- who may: the tenant's admins, support, the advisor its own; every refusal a 4xx with
  ``error`` and ``error_code`` that writes nothing (no audit event); each download audited;
- long lists are bounded (the first and the last half) and say so;
- the printable page in German and English, without script, linked from the membership.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from joserfc import jws as jose_jws
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select, text

from conftest import (OTHER_TENANT, RS_CLIENT_ID, TENANT, active_memberships, dump_database,
                      verify_access_token)
from idp_bridge.cli import main as cli
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain import audit
from idp_bridge.domain import evidence as evidence_module
from idp_bridge.domain.audit_chain import GENESIS, chain_of, event_hash
from idp_bridge.domain.evidence_verify import verify
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AuditEvent
from test_pages_helpers import signed_in

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "verify_evidence_pack.py"
CHAIN = chain_of(TENANT)
ANNA, DORA = DEMO_USERS["anna"]["sub"], DEMO_USERS["dora"]["sub"]
BOB, CAROL, SAM = DEMO_USERS["bob"]["sub"], DEMO_USERS["carol"]["sub"], DEMO_USERS["sam"]["sub"]
MEDIA_TYPE = "application/evidence-pack+jwt"


# --- helpers --------------------------------------------------------------------------------
def path_of(membership_id, tenant=TENANT) -> str:
    return f"/api/tenants/{tenant}/memberships/{membership_id}/evidence"


def download(bridge, membership_id, user="anna", tenant=TENANT, **claims):
    token = bridge.upstream_token(user, extra_claims=claims or None)
    return bridge.client.get(path_of(membership_id, tenant),
                             headers={"Authorization": f"Bearer {token}"})


def pack_of(bridge, membership_id, user="anna") -> tuple[str, dict]:
    response = download(bridge, membership_id, user)
    assert response.status_code == 200, response.get_data(True)
    assert response.mimetype == MEDIA_TYPE
    token = response.get_data(True).strip()
    return token, payload_of(token)


def payload_of(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def sign(bridge):
    signed, broken = bridge.services.checkpoints.sign_due(utcnow(), every_moved=True)
    assert not broken
    return signed


def jwks(bridge) -> dict:
    return bridge.client.get("/audit/jwks").json


def keys_file(bridge, tmp_path) -> Path:
    path = tmp_path / "audit-jwks.json"
    path.write_text(json.dumps(jwks(bridge)))
    return path


def sql(bridge, statement: str, **params) -> None:
    with bridge.services.db.engine.begin() as connection:
        connection.execute(text(statement), params)


def standalone():
    spec = importlib.util.spec_from_file_location("verify_evidence_pack", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verdicts(bridge, tmp_path, token: str) -> tuple[int, str]:
    """(exit code, first line) of the CLI; the standalone script must agree on the exit code
    and the kind of problem."""
    path = tmp_path / f"pack-{uuid.uuid4().hex[:8]}.jwt"
    path.write_text(token + "\n")
    keys = keys_file(bridge, tmp_path)
    result = CliRunner().invoke(cli, ["audit", "verify-evidence", str(path), "--jwks", str(keys)])
    out = io.StringIO()
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        with contextlib.redirect_stdout(out):
            code = standalone().main([str(path), "--jwks", str(keys)])
    finally:
        sys.path.remove(str(SCRIPT.parent))
    line, script_line = result.output.splitlines()[0], out.getvalue().splitlines()[0]
    assert code == result.exit_code, (result.output, out.getvalue())
    assert _gist(line) == _gist(script_line), (line, script_line)
    return result.exit_code, line


def _gist(line: str) -> str:
    """What both verifiers say alike: OK and whose pack, or BROKEN where and what kind."""
    return line.split(")")[0] if line.startswith("OK") else ":".join(line.split(":")[:2])


def resign(bridge, claims: dict) -> str:
    """``claims`` signed with the bridge's own audit key: what a bridge reading a tampered
    database (or a buggy one) would hand out; the verifier must still find the problem."""
    kid, alg, key = bridge.services.checkpoints.keys.signing_key()
    return jose_jwt.encode({"alg": alg, "kid": kid, "typ": "evidence-pack+jwt"}, claims, key)


def record_access(bridge, access_token: str, count: int = 1, area: str = "ebics"):
    claims = verify_access_token(bridge, access_token)[1]
    records = [{"id": str(uuid.uuid4()), "tenant": TENANT, "grant_id": claims["grant_id"],
                "sid": claims["sid"], "sub": claims["sub"], "area": area, "action": "read",
                "method": "GET", "route": f"/tenants/<tenant>/{area}", "status": 200,
                "at": utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"}
               for _ in range(count)]
    response = bridge.client.post("/access-records", auth=(RS_CLIENT_ID, bridge.rs_secret),
                                  json={"records": records})
    assert response.status_code == 200 and len(response.json["accepted"]) == count, response.json


def downloads(bridge) -> list[AuditEvent]:
    with bridge.services.db.read() as session:
        return list(session.scalars(select(AuditEvent).where(
            AuditEvent.event == "evidence.downloaded").order_by(AuditEvent.seq)))


def seqs(pack: dict, event: str) -> list[int]:
    return [e["seq"] for e in pack["events"] if e["event"] == event]


# --- the ways in ----------------------------------------------------------------------------
def test_the_pack_of_a_code_redemption_tells_the_whole_story(bridge, tmp_path):
    bob = bridge.join("bob", reason="Ticket 4711: EBICS")
    bridge.join("carol")
    mid = bridge.membership_id("bob")
    record_access(bridge, bob["access_token"], 2)
    record_access(bridge, bob["access_token"], 1, area="payments")
    refreshed = bridge.token({"grant_type": "refresh_token", "refresh_token": bob["refresh_token"]})
    assert refreshed.status_code == 200
    sign(bridge)
    removed = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}")
    assert removed.status_code == 204
    sign(bridge)

    token, pack = pack_of(bridge, mid)
    header = jose_jws.extract_compact(token.encode()).protected
    assert header["typ"] == "evidence-pack+jwt" and header["alg"] == "ES256"
    # The signature verifies with joserfc against the published audit keys (never /jwks).
    decoded = jose_jwt.decode(token, KeySet.import_key_set(jwks(bridge)), algorithms=["ES256"])
    assert decoded.claims == pack
    assert header["kid"] not in {k["kid"] for k in bridge.client.get("/jwks").json["keys"]}
    for claim in ("aud", "sub", "scope", "exp"):
        assert claim not in pack  # no resource server takes it for an access token

    assert pack["format"] == "idp-bridge-evidence/1"
    assert pack["iss"] == bridge.services.settings.issuer
    assert pack["tenant"] == {"id": TENANT, "name": "Muster GmbH"}
    m = pack["membership"]
    assert m["id"] == mid and m["kind"] == "temporary" and m["state"] == "ended"
    assert m["advisor"] == {"subject": BOB, "name": "Bob Advisor"}
    assert m["reason"] == "Ticket 4711: EBICS" and "ebics:read" in m["scopes"]
    assert m["created_at"] and m["expires_at"] and m["group"] is None
    began = pack["began"]
    assert began["way"] == "access_code" and began["by"]["subject"] == BOB
    assert began["client_id"] == "advisor-console" and began["approvers"] == []
    assert [s["event"] for s in began["steps"]] == ["membership.created"]
    tokens = pack["tokens"]
    assert tokens["count"] == 2 and not tokens["truncated"]
    assert [t["event"] for t in tokens["items"]] == ["token.issued", "token.refreshed"]
    assert all(t["sid"] and t["client_id"] == "advisor-console" and "ebics:read" in t["scope"]
               for t in tokens["items"])
    records = pack["access_records"]
    assert records["count"] == 3 and records["listed"] == 3 and not records["truncated"]
    assert RS_CLIENT_ID in records["reporting_resource_servers"]
    assert sorted((s["area"], s["count"]) for s in records["summary"]) == [("ebics", 2),
                                                                          ("payments", 1)]
    assert {r["route"] for r in records["items"]} == {"/tenants/<tenant>/ebics",
                                                      "/tenants/<tenant>/payments"}
    ended = pack["ended"]
    assert ended["cause"] == "removed_by_tenant" and ended["by"]["subject"] == ANNA
    assert ended["role"] == "tenant_admin" and ended["seq"] == seqs(pack, "membership.ended")[0]
    [grant] = [r for r in pack["revocations"] if r["kind"] == "grant"]
    assert grant["grant_id"] == m["grant_id"] and grant["reason"] == "removed_by_tenant"
    assert all({"stream_id", "resource_server", "confirmed"} <= set(x) for x in grant["receipts"])
    # Only this membership's events; carol's (in between) only as digests.
    assert {e["membership_id"] for e in pack["events"]} == {mid}
    assert not any(e["actor"] == CAROL for e in pack["events"])
    digests = [d for s in pack["chain"]["segments"] for d in s["digests"]]
    assert digests and all(len(d["digest"]) == 64 for d in digests)
    assert "Carol" not in json.dumps(pack["chain"])
    # The download itself: audited, newest, not yet under a checkpoint.
    [dl] = pack["downloads"]
    assert dl["by"]["subject"] == ANNA and dl["role"] == "tenant_admin" and dl["format"] == "jws"
    assert dl["pack"] == pack["jti"] and pack["chain"]["uncovered"] == [dl["seq"]]
    report = verify(token, jwks=jwks(bridge))
    assert report.ok, report.lines()
    assert report.linked == len(pack["events"]) - 1 and report.checkpoints >= 1
    code, line = verdicts(bridge, tmp_path, token)
    assert code == 0 and line.startswith("OK: evidence pack of membership " + mid), line


@pytest.fixture
def four_eyes(bridge):
    response = bridge.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True})
    assert response.status_code == 200, response.json
    return bridge


def test_the_pack_of_a_request_approved_under_four_eyes_names_both_approvers(four_eyes, tmp_path):
    bridge = four_eyes
    asked = bridge.api("post", "/api/me/access-requests", user="bob", json={
        "tenant": TENANT, "reason": "Ticket 4711: EBICS setup", "duration_hours": 8})
    assert asked.status_code == 201, asked.json
    first = bridge.api("post", f"/api/tenants/{TENANT}/access-requests/{asked.json['id']}/approve",
                       json={"duration_hours": 4})
    assert first.status_code == 202, first.json
    approval = first.json["pending_approval"]["id"]
    second = bridge.api("post", f"/api/tenants/{TENANT}/approvals/{approval}/approve", user="dora")
    assert second.status_code == 200, second.json
    assert bridge.exchange("bob").status_code == 200
    sign(bridge)
    mid = bridge.membership_id("bob")
    token, pack = pack_of(bridge, mid)
    began = pack["began"]
    assert began["way"] == "access_request" and began["four_eyes"] is True
    assert began["access_request"] == asked.json["id"]
    assert began["reason"] == "Ticket 4711: EBICS setup"
    assert [(a["step"], a["subject"], a["name"]) for a in began["approvers"]] == [
        ("first", ANNA, "Anna Admin"), ("second", DORA, "Dora Admin")]
    # In the chain's order: the second approval is recorded as it takes effect.
    assert [s["event"] for s in began["steps"]] == [
        "access_request.created", "approval.requested", "membership.created",
        "access_request.approved", "approval.completed"]
    assert began["steps"][0]["by"]["subject"] == BOB
    assert began["steps"][0]["duration_hours"] == 8
    completed = began["steps"][4]
    assert completed["first_approver"]["subject"] == ANNA
    assert completed["second_approver"]["subject"] == DORA
    # The request's events name the membership only in their detail: in the pack all the same.
    assert {e["event"] for e in pack["events"]} >= {"access_request.created", "approval.requested",
                                                    "approval.completed"}
    assert pack["membership"]["expires_at"] and pack["tokens"]["count"] == 1
    assert verify(token, jwks=jwks(bridge)).ok
    assert verdicts(bridge, tmp_path, token)[0] == 0


def test_the_pack_of_a_direct_support_assignment(bridge, tmp_path):
    assigned = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert assigned.status_code == 201, assigned.json
    sign(bridge)
    token, pack = pack_of(bridge, assigned.json["id"], user="sam")
    assert pack["membership"]["kind"] == "permanent" and pack["membership"]["expires_at"] is None
    assert pack["membership"]["confirmed_at"]
    began = pack["began"]
    assert began["way"] == "support_assignment" and began["by"] == {"subject": SAM,
                                                                    "name": "Sam Support"}
    assert [s["role"] for s in began["steps"]] == ["support_admin"]
    assert pack["generated_by"]["role"] == "support_admin"
    assert pack["tokens"]["count"] == 0 and pack["ended"] is None
    assert verify(token, jwks=jwks(bridge)).ok


def test_the_pack_of_a_proposal_accepted_by_the_tenant_and_reconfirmed(bridge, tmp_path):
    mode = bridge.api("patch", f"/api/tenants/{TENANT}", json={"permanent_mode": "accept"})
    assert mode.status_code == 200, mode.json
    proposed = bridge.api("post", f"/api/tenants/{TENANT}/permanent-proposals", user="sam",
                          json={"advisor": BOB, "reason": "Onboarding Q1"})
    assert proposed.status_code == 201, proposed.json
    accepted = bridge.api("post", f"/api/tenants/{TENANT}/permanent-proposals/"
                                  f"{proposed.json['id']}/accept")
    assert accepted.status_code == 200, accepted.json
    mid = accepted.json["membership"]["id"]
    again = bridge.api("post", f"/api/tenants/{TENANT}/memberships/{mid}/reconfirm", user="dora")
    assert again.status_code == 200, again.json
    sign(bridge)
    token, pack = pack_of(bridge, mid, user="bob")  # the advisor's own pack
    began = pack["began"]
    assert began["way"] == "tenant_acceptance" and began["proposal"] == proposed.json["id"]
    assert began["proposed_by"]["subject"] == SAM
    assert [(a["step"], a["subject"]) for a in began["approvers"]] == [("sole", ANNA)]
    assert [s["event"] for s in began["steps"]] == [
        "permanent_advisor.proposed", "membership.created", "permanent_advisor.accepted"]
    assert began["steps"][0]["reason"] == "Onboarding Q1"
    [reconfirmed] = pack["reconfirmations"]
    assert reconfirmed["by"]["subject"] == DORA and reconfirmed["due_at"]
    assert pack["generated_by"] == {"subject": BOB, "name": "Bob Advisor", "role": "advisor"}
    assert verify(token, jwks=jwks(bridge)).ok
    assert verdicts(bridge, tmp_path, token)[0] == 0


def test_the_pack_of_a_guest_invitation_names_the_group_and_who_invited(bridge):
    group = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                       json={"name": "Prüfer Q4", "permissions": ["payments:read"]})
    assert group.status_code == 201, group.json
    invitation = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                            json={"group": group.json["id"], "subject": BOB})
    assert invitation.status_code == 201, invitation.json
    joined = bridge.api("post", f"/api/me/invitations/{invitation.json['id']}/accept", user="bob")
    assert joined.status_code == 201, joined.json
    sign(bridge)
    token, pack = pack_of(bridge, joined.json["id"])
    m = pack["membership"]
    assert m["kind"] == "guest" and m["scopes"] == ["payments:read"]
    assert m["group"]["name"] == "Prüfer Q4" and m["group"]["permissions"] == ["payments:read"]
    began = pack["began"]
    assert began["way"] == "guest_invitation" and began["invitation"] == invitation.json["id"]
    assert began["invited_by"] == {"subject": ANNA, "name": "Anna Admin"}
    assert [(s["event"], s["by"]["subject"]) for s in began["steps"]] == [
        ("invitation.changed", ANNA), ("membership.created", BOB)]
    assert verify(token, jwks=jwks(bridge)).ok


def test_every_download_is_audited_and_the_next_pack_lists_it(bridge):
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    pack_of(bridge, mid, "anna")
    pack_of(bridge, mid, "sam")
    token, pack = pack_of(bridge, mid, "bob")
    assert [(e.actor, e.actor_role, e.detail["format"]) for e in downloads(bridge)] == [
        (ANNA, "tenant_admin", "jws"), (SAM, "support_admin", "jws"), (BOB, "advisor", "jws")]
    assert all(e.membership_id == mid and e.tenant_id == TENANT for e in downloads(bridge))
    assert [d["by"]["subject"] for d in pack["downloads"]] == [ANNA, SAM, BOB]
    assert pack["downloads"][-1]["pack"] == pack["jti"]


def test_the_json_answer_holds_the_same_signed_pack(bridge):
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    response = bridge.client.get(path_of(mid), headers={
        "Authorization": f"Bearer {bridge.upstream_token('anna')}", "Accept": "application/json"})
    assert response.status_code == 200 and response.is_json
    assert response.headers["Cache-Control"] == "no-store"
    assert json.loads(jose_jws.extract_compact(response.json["jws"].encode()).payload) == \
        response.json["pack"]


# --- who may, and refusals that change nothing ----------------------------------------------
def refusal_cases():
    other_admin = {"groups": ["/tenants/20077/admins"]}
    return [
        pytest.param({"token": "none"}, 401, "invalid_token", None, id="no-token"),
        pytest.param({"user": "eve"}, 403, "forbidden", "evidence_forbidden", id="no-role"),
        pytest.param({"user": "eve", "claims": other_admin}, 403, "forbidden",
                     "evidence_forbidden", id="admin-of-another-tenant"),
        pytest.param({"user": "carol"}, 403, "forbidden", "evidence_forbidden",
                     id="another-advisor"),
        pytest.param({"user": "carol", "id": "unknown"}, 403, "forbidden",
                     "evidence_forbidden", id="advisor-unknown-id"),
        pytest.param({"id": "unknown"}, 404, "not_found", "unknown_membership", id="unknown-id"),
        pytest.param({"user": "sam", "id": "unknown"}, 404, "not_found", "unknown_membership",
                     id="support-unknown-id"),
        pytest.param({"id": "other-tenant"}, 404, "not_found", "unknown_membership",
                     id="other-tenants-membership"),
        pytest.param({"user": "bob", "id": "other-tenant"}, 403, "forbidden",
                     "evidence_forbidden", id="own-membership-under-another-tenant"),
        pytest.param({"id": "not-a-uuid"}, 400, "invalid_request", "membership_id_malformed",
                     id="malformed-id"),
        pytest.param({"id": "ABCDEF00-0000-4000-8000-000000000000"}, 400, "invalid_request",
                     "membership_id_malformed", id="uppercase-uuid"),
        pytest.param({"id": "x" * 300}, 400, "invalid_request", "membership_id_malformed",
                     id="oversized-id"),
        pytest.param({"tenant": OTHER_TENANT}, 403, "forbidden", "evidence_forbidden",
                     id="anna-for-another-tenant"),
        pytest.param({"user": "sam", "tenant": "99999"}, 404, "not_found", "unknown_tenant",
                     id="unknown-tenant"),
    ]


@pytest.mark.parametrize("how, status, error, code", refusal_cases())
def test_a_refused_download_writes_nothing(bridge, how, status, error, code):
    bridge.join("bob")
    bridge.join("bob", tenant=OTHER_TENANT)
    [elsewhere] = active_memberships(bridge, OTHER_TENANT)
    ids = {None: bridge.membership_id("bob"), "unknown": str(uuid.uuid4()),
           "other-tenant": elsewhere.id}
    membership_id = ids.get(how.get("id"), how.get("id"))
    before = dump_database(bridge.services.db)
    headers = {}
    if how.get("token") != "none":
        token = bridge.upstream_token(how.get("user", "anna"), extra_claims=how.get("claims"))
        headers["Authorization"] = f"Bearer {token}"
    response = bridge.client.get(path_of(membership_id, how.get("tenant", TENANT)),
                                 headers=headers)
    assert response.status_code == status, response.get_data(True)
    assert response.json["error"] == error
    assert response.json.get("error_code") == code
    assert "jws" not in response.json and "events" not in response.get_data(True)
    assert dump_database(bridge.services.db) == before
    assert downloads(bridge) == []


def test_the_pages_refuse_alike_and_write_nothing(app, bridge):
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    clients = {user: signed_in(app, user) for user in ("carol", "eve", "anna")}
    before = dump_database(bridge.services.db)
    for user in ("carol", "eve"):
        for suffix in ("evidence", "evidence.jwt"):
            response = clients[user].get(f"/tenants/{TENANT}/memberships/{mid}/{suffix}")
            assert response.status_code == 403, (user, suffix)
            assert "seq" not in response.text
    response = clients["anna"].get(f"/tenants/{TENANT}/memberships/not-a-uuid/evidence")
    assert response.status_code == 400
    assert dump_database(bridge.services.db) == before


# --- tampering --------------------------------------------------------------------------------
def _story(bridge):
    """bob joins, refreshes, carol joins in between, bob is removed; all under checkpoints."""
    bob = bridge.join("bob")
    bridge.join("carol")
    assert bridge.token({"grant_type": "refresh_token",
                         "refresh_token": bob["refresh_token"]}).status_code == 200
    mid = bridge.membership_id("bob")
    carol = bridge.membership_id("carol")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    sign(bridge)
    return mid, carol


def _stored(bridge) -> list[AuditEvent]:
    with bridge.services.db.read() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.chain == CHAIN)
                                    .order_by(AuditEvent.seq)))


def _seq_of(bridge, event: str, membership_id: str) -> int:
    return next(e.seq for e in _stored(bridge)
                if e.event == event and e.membership_id == membership_id)


def _rehash_from(bridge, seq: int) -> None:
    events = _stored(bridge)
    prev = events[seq - 2].hash if seq > 1 else GENESIS
    for e in events[seq - 1:]:
        digest = event_hash(chain=CHAIN, seq=e.seq, prev=prev, values={
            "at": e.at, "tenant_id": e.tenant_id, "event": e.event, "actor": e.actor,
            "actor_role": e.actor_role, "membership_id": e.membership_id,
            "client_id": e.client_id, "detail": e.detail})
        sql(bridge, "UPDATE audit_events SET hash = :h WHERE id = :i", h=digest, i=e.id)
        prev = digest
    sql(bridge, "UPDATE audit_chain_heads SET hash = :h WHERE chain = :c", h=prev, c=CHAIN)


def _edit_own(bridge, mid, _carol):
    seq = _seq_of(bridge, "token.refreshed", mid)
    sql(bridge, "UPDATE audit_events SET actor = 'mallory' WHERE chain = :c AND seq = :s",
        c=CHAIN, s=seq)
    return seq


def _rewrite_own(bridge, mid, carol):
    seq = _edit_own(bridge, mid, carol)
    _rehash_from(bridge, seq)
    return seq


def _rewrite_other(bridge, mid, carol):
    """Carol's join (between bob's events) changed and the chain rehashed from there: bob's
    later events no longer lead to the checkpoint... with their stored hashes rewritten too,
    the chain no longer reaches the checkpoint's signed hash."""
    seq = _seq_of(bridge, "membership.created", carol)
    sql(bridge, "UPDATE audit_events SET detail = :d WHERE chain = :c AND seq = :s",
        d=json.dumps({"reason": "nothing happened"}), c=CHAIN, s=seq)
    _rehash_from(bridge, seq)
    return None


def _edit_ended(bridge, mid, _carol):
    seq = _seq_of(bridge, "membership.ended", mid)
    sql(bridge, "UPDATE audit_events SET detail = :d WHERE chain = :c AND seq = :s",
        d=json.dumps({"reason": "left"}), c=CHAIN, s=seq)
    return seq


def _delete_other(bridge, mid, carol):
    """Carol's join, between bob's events, deleted: the segment misses its position."""
    seq = _seq_of(bridge, "membership.created", carol)
    sql(bridge, "DELETE FROM audit_events WHERE chain = :c AND seq = :s", c=CHAIN, s=seq)
    return seq


def _delete_before_own(bridge, mid, _carol):
    """The event right before bob's refresh deleted: the pack has no prev for it."""
    seq = _seq_of(bridge, "token.refreshed", mid) - 1
    sql(bridge, "DELETE FROM audit_events WHERE chain = :c AND seq = :s", c=CHAIN, s=seq)
    return seq


@pytest.mark.parametrize("tamper, kind", [
    pytest.param(_delete_other, "removed", id="other-event-deleted"),
    pytest.param(_delete_before_own, "removed", id="event-before-own-deleted"),
    pytest.param(_edit_own, "changed", id="own-event-edited"),
    pytest.param(_edit_ended, "changed", id="end-edited"),
    pytest.param(_rewrite_own, "changed", id="own-event-edited-and-chain-rehashed"),
    pytest.param(_rewrite_other, "changed", id="other-event-edited-and-chain-rehashed"),
])
def test_the_verifier_finds_an_event_changed_in_the_database(bridge, tmp_path, tamper, kind):
    mid, carol = _story(bridge)
    token, _pack = pack_of(bridge, mid)
    assert verify(token, jwks=jwks(bridge)).ok
    seq = tamper(bridge, mid, carol)
    token, _pack = pack_of(bridge, mid)
    report = verify(token, jwks=jwks(bridge))
    assert not report.ok and report.problem.kind == kind, report.lines()
    if seq is not None:
        assert report.problem.seq is not None and report.problem.seq >= seq
    code, line = verdicts(bridge, tmp_path, token)
    assert code == 1 and f": {kind}:" in line, line
    # The printable page says so too.
    page = signed_in(bridge.app, "anna").get(f"/tenants/{TENANT}/memberships/{mid}/evidence")
    assert page.status_code == 200 and 'id="verdict" class="broken"' in page.text


def _payload_edited(bridge, token, pack):
    head, _payload, signature = token.split(".")
    pack["membership"]["reason"] = "a harmless visit"
    encoded = base64.urlsafe_b64encode(json.dumps(pack).encode()).decode().rstrip("=")
    return f"{head}.{encoded}.{signature}"


def _signed_with_other_key(bridge, token, pack):
    header = jose_jws.extract_compact(token.encode()).protected
    return jose_jwt.encode({**header}, pack, ECKey.generate_key("P-256"))


def _event_edited_and_resigned(bridge, token, pack):
    event = next(e for e in pack["events"] if e["event"] == "token.refreshed")
    event["actor"] = "mallory"
    return resign(bridge, pack)


def _event_and_hash_edited_and_resigned(bridge, token, pack):
    event = next(e for e in pack["events"] if e["event"] == "token.issued")
    event["detail"]["scope"] = "payments:read"
    event["hash"] = event_hash(chain=CHAIN, seq=event["seq"], prev=event["prev"], values={
        "at": event["at"], "tenant_id": event["tenant"], "event": event["event"],
        "actor": event["actor"], "actor_role": event["actor_role"],
        "membership_id": event["membership_id"], "client_id": event["client_id"],
        "detail": event["detail"]})
    return resign(bridge, pack)


def _digest_dropped(bridge, token, pack):
    segment = next(s for s in pack["chain"]["segments"] if s["digests"])
    segment["digests"].pop(0)
    return resign(bridge, pack)


def _digest_changed(bridge, token, pack):
    segment = next(s for s in pack["chain"]["segments"] if s["digests"])
    segment["digests"][0]["digest"] = "0" * 64
    return resign(bridge, pack)


def _checkpoint_forged(bridge, token, pack):
    checkpoint = pack["chain"]["segments"][0]["checkpoint"]
    head, payload, _sig = checkpoint["jws"].split(".")
    checkpoint["jws"] = f"{head}.{payload}.{'A' * 86}"
    return resign(bridge, pack)


def _unlinked_claimed_uncovered(bridge, token, pack):
    segment = pack["chain"]["segments"][0]
    pack["chain"]["uncovered"].append(segment["from_seq"])
    return resign(bridge, pack)


def _event_dropped_from_story(bridge, token, pack):
    seq = pack["ended"]["seq"]
    pack["events"] = [e for e in pack["events"] if e["seq"] != seq]
    return resign(bridge, pack)


@pytest.mark.parametrize("tamper, kind", [
    pytest.param(_payload_edited, "signature", id="payload-edited"),
    pytest.param(_signed_with_other_key, "signature", id="signed-with-another-key"),
    pytest.param(_event_edited_and_resigned, "changed", id="event-edited"),
    pytest.param(_event_and_hash_edited_and_resigned, "changed", id="event-and-its-hash-edited"),
    pytest.param(_digest_dropped, "removed", id="digest-dropped"),
    pytest.param(_digest_changed, "changed", id="digest-changed"),
    pytest.param(_checkpoint_forged, "checkpoint_signature", id="checkpoint-forged"),
    pytest.param(_unlinked_claimed_uncovered, "checkpoint_mismatch", id="claimed-uncovered"),
    pytest.param(_event_dropped_from_story, "removed", id="event-dropped"),
])
def test_the_verifier_finds_a_changed_pack(bridge, tmp_path, tamper, kind):
    mid, _carol = _story(bridge)
    token, pack = pack_of(bridge, mid)
    assert verify(token, jwks=jwks(bridge)).ok
    forged = tamper(bridge, token, json.loads(json.dumps(pack)))
    report = verify(forged, jwks=jwks(bridge))
    assert not report.ok and report.problem.kind == kind, report.lines()
    code, line = verdicts(bridge, tmp_path, forged)
    assert code == 1 and f": {kind}:" in line, line


def test_the_operator_writes_a_pack_from_the_command_line(operator_env, tmp_path):
    bridge = operator_env
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    sign(bridge)
    path = tmp_path / "pack.jwt"
    done = CliRunner().invoke(cli, ["audit", "evidence", "--tenant", TENANT, "--membership", mid,
                                    "--output", str(path)])
    assert done.exit_code == 0, done.output
    token = path.read_text().strip()
    pack = payload_of(token)
    assert pack["generated_by"] == {"subject": "operator", "name": None, "role": "operator"}
    assert [(d["by"]["subject"], d["role"]) for d in pack["downloads"]] == [("operator",
                                                                            "operator")]
    assert verdicts(bridge, tmp_path, token)[0] == 0
    log = signed_in(bridge.app, "anna").get(f"/tenants/{TENANT}/log",
                                            headers={"Accept-Language": "de"})
    assert "Der Betreiber hat den Nachweis eines Zugriffs heruntergeladen" in log.text
    before = dump_database(bridge.services.db)
    for tenant, membership in ((TENANT, str(uuid.uuid4())), (OTHER_TENANT, mid),
                               ("99999", mid), (TENANT, "nope")):
        refused = CliRunner().invoke(cli, ["audit", "evidence", "--tenant", tenant,
                                           "--membership", membership,
                                           "--output", str(tmp_path / "refused.jwt")])
        assert refused.exit_code == 1 and refused.output.startswith("refused: "), refused.output
    assert not (tmp_path / "refused.jwt").exists()
    assert dump_database(bridge.services.db) == before


@pytest.mark.slow
def test_the_standalone_script_runs_isolated_beside_its_sibling(bridge, tmp_path):
    """``python3 -I verify_evidence_pack.py`` (no site, no current folder on the path): it
    finds verify_audit_chain.py beside itself and needs nothing of the bridge."""
    import subprocess

    bridge.join("bob")
    sign(bridge)
    token, _pack = pack_of(bridge, bridge.membership_id("bob"))
    (tmp_path / "pack.jwt").write_text(token + "\n")
    keys = keys_file(bridge, tmp_path)
    done = subprocess.run([sys.executable, "-I", str(SCRIPT), "pack.jwt", "--jwks", str(keys)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("OK: evidence pack"), done


def test_an_unreadable_pack_or_keys_exit_2(bridge, tmp_path):
    path = tmp_path / "not-a-pack.jwt"
    path.write_text("hello")
    keys = keys_file(bridge, tmp_path)
    result = CliRunner().invoke(cli, ["audit", "verify-evidence", str(path), "--jwks", str(keys)])
    assert result.exit_code == 2 and result.output.startswith("UNREADABLE")
    bad_keys = tmp_path / "keys.json"
    bad_keys.write_text("[]")
    result = CliRunner().invoke(cli, ["audit", "verify-evidence", str(path), "--jwks",
                                      str(bad_keys)])
    assert result.exit_code == 2


# --- bounds -----------------------------------------------------------------------------------
def test_a_pack_beyond_joserfcs_default_payload_limit_verifies(bridge, tmp_path):
    """joserfc refuses JWS payloads above 128 kB by default; the verifier raises its limit."""
    bob = bridge.join("bob")
    with bridge.services.db.transaction() as session:
        for number in range(1500):  # other advisors' events between bob's and the checkpoint
            audit.record(session, "token.issued", utcnow(), tenant_id=TENANT, actor=CAROL,
                         actor_role="advisor", membership_id=str(uuid.UUID(int=number)),
                         client_id="advisor-console", sid=str(uuid.UUID(int=number)),
                         scope="ebics:read", audience="konfipay-api")
    assert bridge.token({"grant_type": "refresh_token",
                         "refresh_token": bob["refresh_token"]}).status_code == 200
    sign(bridge)
    token, pack = pack_of(bridge, bridge.membership_id("bob"))
    assert len(token.split(".")[1]) * 3 // 4 > 128_000
    assert sum(len(s["digests"]) for s in pack["chain"]["segments"]) == 1500
    assert verify(token, jwks=jwks(bridge)).ok
    assert verdicts(bridge, tmp_path, token)[0] == 0


def test_long_lists_keep_the_first_and_the_last_half_and_say_so(bridge, monkeypatch, tmp_path):
    monkeypatch.setattr(evidence_module, "LIST_LIMIT", 4)
    tokens = bridge.join("bob")
    access = tokens["access_token"]
    for _ in range(5):
        tokens = bridge.token({"grant_type": "refresh_token",
                               "refresh_token": tokens["refresh_token"]}).json
    record_access(bridge, access, 7)
    sign(bridge)
    token, pack = pack_of(bridge, bridge.membership_id("bob"))
    t = pack["tokens"]
    assert (t["count"], t["listed"], t["truncated"]) == (6, 4, True)
    assert [i["event"] for i in t["items"]] == ["token.issued", "token.refreshed",
                                                "token.refreshed", "token.refreshed"]
    stored = [e.seq for e in _stored(bridge) if e.event in ("token.issued", "token.refreshed")]
    assert [i["seq"] for i in t["items"]] == stored[:2] + stored[-2:]
    r = pack["access_records"]
    assert (r["count"], r["listed"], r["truncated"]) == (7, 4, True)
    assert sum(s["count"] for s in r["summary"]) == 7
    report = verify(token, jwks=jwks(bridge))
    assert report.ok and any("4 of 6 listed" in n for n in report.notes), report.lines()


def test_beyond_the_proof_limit_events_are_listed_unlinked(bridge, monkeypatch):
    monkeypatch.setattr(evidence_module, "PROOF_LIMIT", 0)
    bridge.join("bob")
    bridge.join("carol")
    mid = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    sign(bridge)
    token, pack = pack_of(bridge, mid)
    assert pack["chain"]["unlinked"], pack["chain"]
    report = verify(token, jwks=jwks(bridge))
    assert report.ok and any("not linked within this pack" in n for n in report.notes)


# --- the printable page -----------------------------------------------------------------------
@pytest.mark.parametrize("language, words", [
    ("en", ("Evidence pack", "How it began", "The advisor redeemed the tenant's access code.",
            "Positions in the audit chain", "Access ended: removed from the tenant")),
    ("de", ("Nachweis", "Wie der Zugriff begann",
            "Der Kundenberater hat den Zugangscode des Mandanten eingelöst.",
            "Positionen in der Protokollkette", "Zugriff beendet")),
])
def test_the_printable_page_in_both_languages_without_script(app, bridge, language, words):
    bob = bridge.join("bob", reason="Ticket 4711")
    record_access(bridge, bob["access_token"], 1)
    mid = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    sign(bridge)
    anna = signed_in(app, "anna")
    assert bridge.join("carol")
    users = anna.get(f"/tenants/{TENANT}/users")
    assert f'href="/tenants/{TENANT}/memberships/{bridge.membership_id("carol")}"' in users.text
    detail = anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers={"Accept-Language": language})
    assert detail.status_code == 200
    assert f'href="/tenants/{TENANT}/memberships/{mid}/evidence"' in detail.text
    assert f'href="/tenants/{TENANT}/memberships/{mid}/evidence.jwt"' in detail.text
    page = anna.get(f"/tenants/{TENANT}/memberships/{mid}/evidence",
                    headers={"Accept-Language": language})
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.text
    assert f'<html lang="{language}">' in html
    for word in words:
        assert word in html.replace("&#39;", "'"), word
    assert "<script" not in html.lower() and " on" + "click" not in html.lower()
    assert "evidence.css" in html and "Ticket 4711" in html and "Bob Advisor" in html
    assert 'id="verdict" class="ok"' in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    css = anna.get("/static/web/evidence.css")
    assert css.status_code == 200 and b"@media print" in css.data
    [viewed] = [e for e in downloads(bridge) if e.detail["format"] == "html"]
    assert viewed.actor == ANNA and viewed.membership_id == mid
    signed = anna.get(f"/tenants/{TENANT}/memberships/{mid}/evidence.jwt")
    assert signed.status_code == 200 and signed.mimetype == MEDIA_TYPE
    assert "attachment" in signed.headers["Content-Disposition"]
    assert verify(signed.get_data(True), jwks=jwks(bridge)).ok


def _by_request_under_four_eyes(bridge) -> str:
    assert bridge.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True}).status_code == 200
    asked = bridge.api("post", "/api/me/access-requests", user="bob", json={
        "tenant": TENANT, "reason": "Ticket 4711", "duration_hours": 8})
    first = bridge.api("post", f"/api/tenants/{TENANT}/access-requests/{asked.json['id']}/approve",
                       json={"note": "ok"})
    second = bridge.api("post", f"/api/tenants/{TENANT}/approvals/"
                                f"{first.json['pending_approval']['id']}/approve", user="dora")
    assert second.status_code == 200, second.json
    return bridge.membership_id("bob")


def _by_acceptance(bridge) -> str:
    assert bridge.api("patch", f"/api/tenants/{TENANT}",
                      json={"permanent_mode": "accept"}).status_code == 200
    proposed = bridge.api("post", f"/api/tenants/{TENANT}/permanent-proposals", user="sam",
                          json={"advisor": BOB, "reason": "Onboarding"})
    accepted = bridge.api("post", f"/api/tenants/{TENANT}/permanent-proposals/"
                                  f"{proposed.json['id']}/accept")
    assert accepted.status_code == 200, accepted.json
    return accepted.json["membership"]["id"]


def _by_assignment(bridge) -> str:
    assigned = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert assigned.status_code == 201, assigned.json
    return assigned.json["id"]


def _as_guest(bridge) -> str:
    group = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                       json={"name": "Prüfer Q4", "permissions": ["payments:read"]})
    invitation = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                            json={"group": group.json["id"], "subject": BOB})
    joined = bridge.api("post", f"/api/me/invitations/{invitation.json['id']}/accept", user="bob")
    assert joined.status_code == 201, joined.json
    return joined.json["id"]


@pytest.mark.parametrize("way_in, way, shown", [
    pytest.param(_by_request_under_four_eyes, "access_request",
                 ("Anna Admin", "Dora Admin", "Two different admins approved"), id="request"),
    pytest.param(_by_acceptance, "tenant_acceptance", ("Sam Support", "Anna Admin"),
                 id="acceptance"),
    pytest.param(_by_assignment, "support_assignment", ("Sam Support",), id="assignment"),
    pytest.param(_as_guest, "guest_invitation", ("Prüfer Q4", "Invited as a guest user"),
                 id="guest"),
])
@pytest.mark.parametrize("language", ["en", "de"])
def test_the_printable_page_of_every_way_in(app, bridge, way_in, way, shown, language):
    mid = way_in(bridge)
    sign(bridge)
    page = signed_in(app, "anna").get(f"/tenants/{TENANT}/memberships/{mid}/evidence",
                                      headers={"Accept-Language": language})
    assert page.status_code == 200, page.text[:2000]
    assert f'data-way="{way}"' in page.text and 'id="verdict" class="ok"' in page.text
    for text in shown:
        if language == "en" or "Admin" in text or "Support" in text or "Q4" in text:
            assert text in page.text, text
    assert "<script" not in page.text.lower()


def test_support_opens_the_page_from_its_list(app, bridge):
    assigned = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert assigned.status_code == 201, assigned.json
    sam = signed_in(app, "sam")
    listed = sam.get("/support")
    link = f'/tenants/{TENANT}/memberships/{assigned.json["id"]}/evidence'
    assert f'href="{link}"' in listed.text
    page = sam.get(link)
    assert page.status_code == 200 and 'data-way="support_assignment"' in page.text
    assert [e.actor_role for e in downloads(bridge)] == ["support_admin"]


def test_the_advisor_opens_its_own_page(app, bridge):
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    bob = signed_in(app, "bob")
    mine = bob.get("/advisor")
    assert f'href="/tenants/{TENANT}/memberships/{mid}/evidence"' in mine.text
    page = bob.get(f"/tenants/{TENANT}/memberships/{mid}/evidence")
    assert page.status_code == 200 and "Bob Advisor" in page.text
    assert 'href="/advisor"' in page.text  # back to its tenants, not to the admins' page
    assert f'href="/tenants/{TENANT}/memberships/{mid}"' not in page.text
    assert [e.actor_role for e in downloads(bridge)] == ["advisor"]
