"""Management API, tenant admin side (DESIGN.md sections 6 and 8): the access code, the
tenant's memberships and their removal, the audit log, the tenant's settings, and rights."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from conftest import OTHER_TENANT, TENANT, dump_database
from idp_bridge.devidp import DEMO_USERS, DevProvider
from idp_bridge.storage.models import Membership, Tenant

CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
ANNA = DEMO_USERS["anna"]["sub"]
BOB = DEMO_USERS["bob"]["sub"]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def now() -> datetime:
    return datetime.now(timezone.utc)


def assert_error(response, status: int, error: str):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.is_json, response.get_data(True)
    assert response.json["error"] == error, response.json
    assert response.json.get("error_description")


def admin_token(bridge, tenant: str) -> str:
    return bridge.upstream.issue_tokens(
        "anna", extra_claims={"groups": [f"/tenants/{tenant}/admins"]})["access_token"]


def stored_membership(bridge, user="bob", tenant=TENANT) -> Membership | None:
    from sqlalchemy import select

    with bridge.services.db.read() as session:
        return session.scalars(select(Membership).where(
            Membership.tenant_id == tenant, Membership.advisor_subject == DEMO_USERS[user]["sub"],
            Membership.ended_at.is_(None))).first()


def grant_of(bridge, access_token: str) -> str:
    body = bridge.introspect(access_token).json
    assert body["active"] is True, body
    return body["grant_id"]


def refresh(bridge, refresh_token: str):
    return bridge.token({"grant_type": "refresh_token", "refresh_token": refresh_token})


# --- access code ---

def test_access_code_shape(bridge):
    before = now()
    response = bridge.api("get", f"/api/tenants/{TENANT}/access-code")
    assert response.status_code == 200
    assert set(response.json) == {"code", "tenant", "expires_at"}
    assert CODE.match(response.json["code"]), response.json
    assert response.json["tenant"] == TENANT
    assert "no-store" in response.headers["Cache-Control"]
    expires = parse_time(response.json["expires_at"])
    assert expires.tzinfo is not None
    assert before < expires <= now() + timedelta(minutes=60)


def test_access_code_is_stable_until_redeemed(bridge):
    first = bridge.current_code()
    assert bridge.current_code() == first
    bridge.join("bob")
    assert bridge.current_code() != first


def test_access_codes_differ_per_tenant(bridge):
    own = bridge.current_code()
    other = bridge.api("get", f"/api/tenants/{OTHER_TENANT}/access-code",
                       token=admin_token(bridge, OTHER_TENANT))
    assert other.status_code == 200
    assert other.json["code"] != own


# --- memberships ---

def test_memberships_list_after_join(bridge):
    before = now().replace(microsecond=0)
    bridge.join("bob", reason="Ticket 4711")
    response = bridge.api("get", f"/api/tenants/{TENANT}/memberships")
    assert response.status_code == 200
    [m] = response.json["memberships"]
    assert m["tenant"] == TENANT
    assert m["advisor"] == BOB
    assert m["advisor_name"] == "Bob Advisor"  # the directory's name (bob's sign-in)
    assert m["kind"] == "temporary"
    assert m["reason"] == "Ticket 4711"
    since = parse_time(m["since"])
    assert before <= since <= now()
    assert parse_time(m["expires_at"]) == since + timedelta(days=30)
    assert m["last_token_issued_at"] is not None
    assert since <= parse_time(m["last_token_issued_at"]) <= now()
    assert m["id"] and m["created_by"] == BOB


def test_memberships_list_is_per_tenant(bridge):
    bridge.join("bob", tenant=OTHER_TENANT)
    assert bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"] == []
    bridge.join("carol")
    items = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert [m["advisor"] for m in items] == [DEMO_USERS["carol"]["sub"]]


def test_remove_membership_kills_the_grant(bridge):
    tokens = bridge.join("bob")
    old_grant = grant_of(bridge, tokens["access_token"])
    membership = bridge.membership_id("bob")

    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}")
    assert response.status_code == 204
    assert response.get_data() == b""

    items = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert membership not in [m["id"] for m in items]
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert bridge.introspect(tokens["refresh_token"]).json == {"active": False}
    assert_error(refresh(bridge, tokens["refresh_token"]), 400, "invalid_grant")

    # no way back without a new code
    assert_error(bridge.exchange("bob"), 400, "invalid_grant")
    assert stored_membership(bridge) is None
    again = bridge.join("bob")
    new_grant = grant_of(bridge, again["access_token"])
    assert new_grant != old_grant
    assert bridge.membership_id("bob") != membership
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}


def test_remove_only_touches_that_membership(bridge):
    bob = bridge.join("bob")
    carol = bridge.join("carol")
    bob_elsewhere = bridge.join("bob", tenant=OTHER_TENANT)
    membership = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}").status_code == 204
    assert bridge.introspect(bob["access_token"]).json["active"] is False
    assert bridge.introspect(carol["access_token"]).json["active"] is True
    assert bridge.introspect(bob_elsewhere["access_token"]).json["active"] is True


def test_remove_twice_is_a_conflict(bridge):
    bridge.join("bob")
    membership = bridge.membership_id("bob")
    path = f"/api/tenants/{TENANT}/memberships/{membership}"
    assert bridge.api("delete", path).status_code == 204
    assert_error(bridge.api("delete", path), 409, "conflict")


@pytest.mark.parametrize("membership_id", [
    "00000000-0000-0000-0000-000000000000", "nope", "x" * 65,
])
def test_remove_unknown_membership(bridge, membership_id):
    bridge.join("bob")
    before = dump_database(bridge.services.db)
    assert_error(bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership_id}"),
                 404, "not_found")
    assert dump_database(bridge.services.db) == before


def test_remove_membership_of_another_tenant_is_not_found(bridge):
    tokens = bridge.join("bob", tenant=OTHER_TENANT)
    other = stored_membership(bridge, tenant=OTHER_TENANT).id
    assert_error(bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{other}"),
                 404, "not_found")
    assert bridge.introspect(tokens["access_token"]).json["active"] is True


# --- audit events ---

def events(bridge, **params):
    response = bridge.api("get", f"/api/tenants/{TENANT}/audit-events", query_string=params)
    assert response.status_code == 200, response.json
    return response.json


def test_audit_events_record_join_token_and_removal(bridge):
    bridge.join("bob", reason="Ticket 4711")
    membership = bridge.membership_id("bob")
    bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}")
    page = events(bridge)
    by_event = {}
    for e in page["events"]:
        by_event.setdefault(e["event"], []).append(e)
    assert page["next_before"] is None

    [created] = by_event["membership.created"]
    assert (created["actor"], created["actor_role"]) == (BOB, "advisor")
    assert created["membership_id"] == membership
    assert created["detail"]["kind"] == "temporary"
    assert created["detail"]["reason"] == "Ticket 4711"

    [issued] = by_event["token.issued"]
    assert issued["actor"] == BOB and issued["membership_id"] == membership
    assert issued["client_id"] == "advisor-console"

    [ended] = by_event["membership.ended"]
    assert (ended["actor"], ended["actor_role"]) == (ANNA, "tenant_admin")
    assert ended["membership_id"] == membership
    assert ended["detail"]["reason"] == "removed_by_tenant"
    assert ended["detail"]["advisor"] == BOB

    ids = [e["id"] for e in page["events"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert ids.index(ended["id"]) < ids.index(issued["id"]) < ids.index(created["id"])
    for e in page["events"]:
        parse_time(e["at"])


def test_audit_events_are_per_tenant(bridge):
    bridge.join("bob", tenant=OTHER_TENANT)
    assert events(bridge)["events"] == []


def test_audit_events_paging(bridge):
    bridge.join("bob")
    for _ in range(4):
        assert bridge.exchange("bob").status_code == 200
    everything = events(bridge, limit=500)["events"]
    assert len(everything) == 7  # code rotated, membership created, 5 tokens issued
    seen, before = [], None
    pages = 0
    while True:
        params = {"limit": 3} if before is None else {"limit": 3, "before": before}
        page = events(bridge, **params)
        pages += 1
        assert len(page["events"]) <= 3
        seen += page["events"]
        before = page["next_before"]
        if before is None:
            break
        assert before == page["events"][-1]["id"]
    assert pages == 3
    assert seen == everything


def test_audit_events_before_excludes_that_id(bridge):
    bridge.join("bob")
    ids = [e["id"] for e in events(bridge)["events"]]
    assert [e["id"] for e in events(bridge, before=ids[0])["events"]] == ids[1:]


def test_audit_events_filter_by_event(bridge):
    bridge.join("bob")
    bridge.exchange("bob")
    page = events(bridge, event="token.issued")
    assert len(page["events"]) == 2
    assert {e["event"] for e in page["events"]} == {"token.issued"}
    assert events(bridge, event="membership.ended")["events"] == []


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "501"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "1.5"},
    {"limit": ""}, {"before": "abc"}, {"before": "1e3"}, {"event": "membership.exploded"},
    {"event": ""},
])
def test_audit_events_bad_params(bridge, params):
    response = bridge.api("get", f"/api/tenants/{TENANT}/audit-events", query_string=params)
    assert_error(response, 400, "invalid_request")


# --- tenant settings ---

def test_show_tenant(bridge):
    response = bridge.api("get", f"/api/tenants/{TENANT}")
    assert response.status_code == 200
    assert response.json["id"] == TENANT
    assert response.json["temporary_max_age_days"] == 30


def test_patch_shortens_existing_temporary_memberships(bridge):
    bridge.join("bob")
    response = bridge.api("patch", f"/api/tenants/{TENANT}", json={"temporary_max_age_days": 7})
    assert response.status_code == 200, response.json
    assert response.json["temporary_max_age_days"] == 7
    assert response.json["memberships_expired"] == 0
    [m] = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert parse_time(m["expires_at"]) == parse_time(m["since"]) + timedelta(days=7)
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["temporary_max_age_days"] == 7
    # and new joiners get the shorter maximum too
    bridge.join("carol")
    carol = next(m for m in bridge.api("get", f"/api/tenants/{TENANT}/memberships")
                 .json["memberships"] if m["advisor"] == DEMO_USERS["carol"]["sub"])
    assert parse_time(carol["expires_at"]) == parse_time(carol["since"]) + timedelta(days=7)


def test_patch_ends_memberships_older_than_the_new_maximum(bridge):
    tokens = bridge.join("bob")
    membership = bridge.membership_id("bob")
    with bridge.services.db.transaction() as session:
        row = session.get(Membership, membership)
        row.created_at -= timedelta(days=10)
    response = bridge.api("patch", f"/api/tenants/{TENANT}", json={"temporary_max_age_days": 7})
    assert response.status_code == 200
    assert response.json["memberships_expired"] == 1
    assert bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"] == []
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}


@pytest.mark.parametrize("body, status, error", [
    pytest.param({"temporary_max_age_days": 0}, 400, "invalid_request", id="zero"),
    pytest.param({"temporary_max_age_days": -3}, 400, "invalid_request", id="negative"),
    pytest.param({"temporary_max_age_days": 31}, 400, "invalid_request", id="above-limit"),
    pytest.param({"temporary_max_age_days": 10**9}, 400, "invalid_request", id="huge"),
    pytest.param({"temporary_max_age_days": "7"}, 400, "invalid_request", id="string"),
    pytest.param({"temporary_max_age_days": 7.5}, 400, "invalid_request", id="float"),
    pytest.param({"temporary_max_age_days": True}, 400, "invalid_request", id="bool"),
    pytest.param({"temporary_max_age_days": None}, 400, "invalid_request", id="null"),
    pytest.param({}, 400, "invalid_request", id="empty"),
    pytest.param([7], 400, "invalid_request", id="array"),
    pytest.param({"temporary_max_age_days": 7, "colour": "red"}, 400, "invalid_request",
                 id="unknown-field"),
    pytest.param({"scopes": ["payments:write"]}, 403, "profile_immutable", id="scopes"),
    pytest.param({"temporary_max_age_days": 7, "scopes": []}, 403, "profile_immutable",
                 id="scopes-with-valid-field"),
    pytest.param({"advisor_scopes": ["ebics:read"]}, 403, "profile_immutable", id="advisor-scopes"),
])
def test_patch_tenant_rejections(bridge, body, status, error):
    bridge.join("bob")
    before = dump_database(bridge.services.db)
    response = bridge.api("patch", f"/api/tenants/{TENANT}", json=body)
    assert_error(response, status, error)
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("data, content_type", [
    ("{not json", "application/json"),
    ("temporary_max_age_days=7", "application/x-www-form-urlencoded"),
    ('"7"', "application/json"),
])
def test_patch_tenant_bad_body(bridge, data, content_type):
    response = bridge.api("patch", f"/api/tenants/{TENANT}", data=data, content_type=content_type)
    assert_error(response, 400, "invalid_request")
    with bridge.services.db.read() as session:
        assert session.get(Tenant, TENANT).temporary_max_age_days is None


# --- rights ---

ENDPOINTS = [
    pytest.param("get", "/api/tenants/{t}", None, id="show-tenant"),
    pytest.param("patch", "/api/tenants/{t}", {"temporary_max_age_days": 3}, id="patch-tenant"),
    pytest.param("get", "/api/tenants/{t}/access-code", None, id="access-code"),
    pytest.param("get", "/api/tenants/{t}/memberships", None, id="memberships"),
    pytest.param("delete", "/api/tenants/{t}/memberships/{m}", None, id="remove"),
    pytest.param("get", "/api/tenants/{t}/audit-events", None, id="audit-events"),
]


@pytest.fixture
def members(bridge):
    """bob in both tenants, codes shown in both: the state a forbidden call must not change."""
    tokens = {TENANT: bridge.join("bob"), OTHER_TENANT: bridge.join("bob", tenant=OTHER_TENANT)}
    bridge.current_code()
    ids = {t: stored_membership(bridge, tenant=t).id for t in tokens}
    return tokens, ids


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
@pytest.mark.parametrize("caller, tenant", [
    ("bob", TENANT), ("carol", TENANT), ("sam", TENANT), ("eve", TENANT),
    ("anna", OTHER_TENANT),
], ids=["bob", "carol", "sam", "eve", "anna-other-tenant"])
def test_only_the_tenants_admin_may(bridge, members, method, path, body, caller, tenant):
    tokens, ids = members
    before = dump_database(bridge.services.db)
    kwargs = {"json": body} if body is not None else {}
    response = bridge.api(method, path.format(t=tenant, m=ids[tenant]), user=caller, **kwargs)
    assert_error(response, 403, "forbidden")
    assert "code" not in response.json and "memberships" not in response.json
    assert dump_database(bridge.services.db) == before
    assert bridge.introspect(tokens[tenant]["access_token"]).json["active"] is True


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_no_token_is_unauthorized(bridge, members, method, path, body):
    _, ids = members
    before = dump_database(bridge.services.db)
    kwargs = {"json": body} if body is not None else {}
    response = getattr(bridge.client, method)(path.format(t=TENANT, m=ids[TENANT]), **kwargs)
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert dump_database(bridge.services.db) == before


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _unsigned(bridge, alg: str, key: bytes = b"") -> str:
    claims = _claims(bridge.upstream_token("anna"))
    head = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": bridge.upstream.kid}).encode())
    body = _b64(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    sig = _b64(hmac.new(key, signing_input, hashlib.sha256).digest()) if key else ""
    return f"{head}.{body}.{sig}"


def _public_pem(bridge) -> bytes:
    from joserfc.jwk import RSAKey

    return RSAKey.import_key(bridge.upstream.public_jwks()["keys"][0]).as_pem(private=False)


def _tampered(bridge) -> str:
    head, _, sig = bridge.upstream_token("eve").split(".")
    claims = _claims(bridge.upstream_token("anna"))
    return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"


def _foreign_key(bridge) -> str:
    impostor = DevProvider(bridge.upstream.issuer, mode="test")
    return impostor.issue_tokens("anna")["access_token"]


BAD_TOKENS = {
    "garbage": lambda b: "not-a-jwt",
    "expired": lambda b: b.upstream.issue_tokens("anna", lifetime=-3600)["access_token"],
    "foreign-key": _foreign_key,
    "tampered": _tampered,
    "alg-none": lambda b: _unsigned(b, "none"),
    "hs256-with-public-key": lambda b: _unsigned(b, "HS256", _public_pem(b)),
    "wrong-issuer": lambda b: b.upstream.issue_tokens(
        "anna", extra_claims={"iss": "https://evil.example"})["access_token"],
    "wrong-audience": lambda b: b.upstream.issue_tokens(
        "anna", extra_claims={"aud": "someone-else"})["access_token"],
    "id-token": lambda b: b.upstream.issue_tokens("anna")["id_token"],
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_upstream_token_is_unauthorized(bridge, make):
    bridge.join("bob")
    before = dump_database(bridge.services.db)
    membership = stored_membership(bridge).id
    for method, path in (("get", f"/api/tenants/{TENANT}/access-code"),
                         ("delete", f"/api/tenants/{TENANT}/memberships/{membership}")):
        response = bridge.api(method, path, token=make(bridge))
        assert_error(response, 401, "invalid_token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "code" not in response.json
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("authorization", ["Basic YW5uYTpwdw==", "Bearer", "Bearer    ", "anna"])
def test_malformed_authorization_header(bridge, authorization):
    response = bridge.client.get(f"/api/tenants/{TENANT}/access-code",
                                 headers={"Authorization": authorization})
    assert_error(response, 401, "invalid_token")
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_unknown_tenant_is_not_found(bridge, method, path, body):
    kwargs = {"json": body} if body is not None else {}
    response = bridge.api(method, path.format(t="99999", m="00000000-0000-0000-0000-000000000000"),
                          token=admin_token(bridge, "99999"), **kwargs)
    assert_error(response, 404, "not_found")
    with bridge.services.db.read() as session:
        assert session.get(Tenant, "99999") is None


def test_expired_membership_is_not_listed(bridge):
    tokens = bridge.join("bob")
    bridge.join("carol")
    membership = bridge.membership_id("bob")
    with bridge.services.db.transaction() as session:
        row = session.get(Membership, membership)
        row.created_at -= timedelta(days=31)
        row.expires_at -= timedelta(days=31)
    items = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert [m["advisor"] for m in items] == [DEMO_USERS["carol"]["sub"]]
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert_error(refresh(bridge, tokens["refresh_token"]), 400, "invalid_grant")


def test_patch_counts_and_ends_only_its_own_tenants_memberships(bridge):
    elsewhere = bridge.join("bob", tenant=OTHER_TENANT)
    with bridge.services.db.transaction() as session:
        row = session.get(Membership, stored_membership(bridge, tenant=OTHER_TENANT).id)
        row.expires_at = now() - timedelta(seconds=1)
    before = bridge.api("get", f"/api/tenants/{OTHER_TENANT}/memberships",
                        token=admin_token(bridge, OTHER_TENANT)).json
    response = bridge.api("patch", f"/api/tenants/{TENANT}", json={"temporary_max_age_days": 7})
    assert response.status_code == 200
    assert response.json["memberships_expired"] == 0  # another tenant's advisors are not ours
    assert stored_membership(bridge, tenant=OTHER_TENANT) is not None
    assert before == bridge.api("get", f"/api/tenants/{OTHER_TENANT}/memberships",
                                token=admin_token(bridge, OTHER_TENANT)).json
    assert events(bridge, event="membership.ended")["events"] == []
    assert bridge.introspect(elsewhere["access_token"]).json["active"] is False  # expired anyway
