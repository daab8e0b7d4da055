"""Management API, support admin side (DESIGN.md sections 1, 6 and 8): permanent advisors."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from conftest import OTHER_TENANT, TENANT, dump_database
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain.people import People, PersonInfo
from idp_bridge.storage.db import utcnow

BOB = DEMO_USERS["bob"]["sub"]
CAROL = DEMO_USERS["carol"]["sub"]
SAM = DEMO_USERS["sam"]["sub"]


def assert_error(response, status: int, error: str):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.json["error"] == error, response.json
    assert response.json.get("error_description")


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def assign(bridge, subject=BOB, tenant=TENANT, user="sam", **kwargs):
    return bridge.api("put", f"/api/tenants/{tenant}/permanent-advisors/{subject}", user=user,
                      **kwargs)


def permanent_list(bridge, tenant=TENANT):
    response = bridge.api("get", f"/api/tenants/{tenant}/permanent-advisors", user="sam")
    assert response.status_code == 200, response.json
    return response.json["memberships"]


def test_assign_then_repeat(bridge):
    first = assign(bridge)
    assert first.status_code == 201, first.json
    assert first.json["kind"] == "permanent"
    assert first.json["expires_at"] is None
    assert first.json["advisor"] == BOB
    assert first.json["advisor_name"] == "Bob Advisor"
    assert first.json["tenant"] == TENANT
    assert first.json["created_by"] == SAM
    again = assign(bridge)
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]
    assert [m["id"] for m in permanent_list(bridge)] == [first.json["id"]]


def test_permanent_advisor_exchanges_without_a_code(bridge):
    assert assign(bridge).status_code == 201
    code_before = bridge.current_code()
    response = bridge.exchange("bob")
    assert response.status_code == 200, response.json
    token = claims(response.json["access_token"])
    assert token["membership"] == "permanent"
    assert token["tenant"] == TENANT
    assert bridge.introspect(response.json["access_token"]).json["membership"] == "permanent"
    assert bridge.current_code() == code_before  # no code was used up


def test_assign_supersedes_a_temporary_membership(bridge):
    temporary = bridge.join("bob")
    temporary_id = bridge.membership_id("bob")
    response = assign(bridge)
    assert response.status_code == 201
    assert response.json["id"] != temporary_id
    assert bridge.introspect(temporary["access_token"]).json == {"active": False}
    refresh = bridge.token({"grant_type": "refresh_token",
                            "refresh_token": temporary["refresh_token"]})
    assert_error(refresh, 400, "invalid_grant")
    items = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert [(m["advisor"], m["kind"]) for m in items] == [(BOB, "permanent")]
    fresh = bridge.exchange("bob")
    assert fresh.status_code == 200
    assert claims(fresh.json["access_token"])["membership"] == "permanent"
    assert claims(fresh.json["access_token"])["grant_id"] != claims(
        temporary["access_token"])["grant_id"]
    ended = bridge.api("get", f"/api/tenants/{TENANT}/audit-events",
                       query_string={"event": "membership.ended"}).json["events"]
    assert [(e["membership_id"], e["detail"]["reason"], e["actor"]) for e in ended] == [
        (temporary_id, "superseded", SAM)]


def test_list_shows_only_permanent_advisors_of_the_tenant(bridge):
    assign(bridge, BOB)
    assign(bridge, CAROL, tenant=OTHER_TENANT)
    bridge.join("carol")  # temporary in TENANT: not listed
    items = permanent_list(bridge)
    assert [(m["advisor"], m["kind"]) for m in items] == [(BOB, "permanent")]
    assert [m["advisor"] for m in permanent_list(bridge, OTHER_TENANT)] == [CAROL]


def test_remove_permanent_advisor_kills_tokens(bridge):
    assign(bridge)
    tokens = bridge.exchange("bob").json
    response = bridge.api("delete", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert response.status_code == 204
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert permanent_list(bridge) == []
    assert_error(bridge.exchange("bob"), 400, "invalid_grant")  # now needs a code again
    ended = bridge.api("get", f"/api/tenants/{TENANT}/audit-events",
                       query_string={"event": "membership.ended"}).json["events"]
    assert [(e["actor"], e["actor_role"], e["detail"]["reason"]) for e in ended] == [
        (SAM, "support_admin", "removed_by_support")]


@pytest.mark.parametrize("setup", ["nobody", "temporary", "other-tenant", "ended"])
def test_remove_unknown_permanent_advisor(bridge, setup):
    tokens = None
    if setup == "temporary":
        tokens = bridge.join("bob")
    elif setup == "other-tenant":
        assign(bridge, tenant=OTHER_TENANT)
    elif setup == "ended":
        assign(bridge)
        bridge.api("delete", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    before = dump_database(bridge.services.db)
    response = bridge.api("delete", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert_error(response, 404, "not_found")
    assert dump_database(bridge.services.db) == before
    if tokens:
        assert bridge.introspect(tokens["access_token"]).json["active"] is True


def test_tenant_admin_may_remove_a_permanent_advisor(bridge):
    assign(bridge)
    tokens = bridge.exchange("bob").json
    membership = bridge.membership_id("bob")
    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}")
    assert response.status_code == 204
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert permanent_list(bridge) == []


def test_advisor_may_leave_a_permanent_membership(bridge):
    assign(bridge)
    tokens = bridge.exchange("bob").json
    assert bridge.api("delete", f"/api/me/memberships/{TENANT}", user="bob").status_code == 204
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert permanent_list(bridge) == []


SUPPORT_ENDPOINTS = [
    pytest.param("get", "/api/tenants/{t}/permanent-advisors", id="list"),
    pytest.param("put", "/api/tenants/{t}/permanent-advisors/" + CAROL, id="assign"),
    pytest.param("delete", "/api/tenants/{t}/permanent-advisors/" + BOB, id="remove"),
]


@pytest.mark.parametrize("method, path", SUPPORT_ENDPOINTS)
@pytest.mark.parametrize("caller", ["anna", "bob", "carol", "eve"])
def test_non_support_callers_are_forbidden(bridge, method, path, caller):
    assign(bridge)
    tokens = bridge.exchange("bob").json
    before = dump_database(bridge.services.db)
    response = bridge.api(method, path.format(t=TENANT), user=caller)
    assert_error(response, 403, "forbidden")
    assert "memberships" not in response.json
    assert dump_database(bridge.services.db) == before
    assert bridge.introspect(tokens["access_token"]).json["active"] is True


@pytest.mark.parametrize("method, path", SUPPORT_ENDPOINTS)
def test_no_token_is_unauthorized(bridge, method, path):
    response = getattr(bridge.client, method)(path.format(t=TENANT))
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method, path", SUPPORT_ENDPOINTS)
def test_unknown_tenant_is_not_found(bridge, method, path):
    before = dump_database(bridge.services.db)
    assert_error(bridge.api(method, path.format(t="99999"), user="sam"), 404, "not_found")
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("subject, kwargs", [
    pytest.param("x" * 256, {}, id="subject-too-long"),
    pytest.param(quote("bob\x00"), {}, id="subject-nul"),
    pytest.param(quote("bob\tadmin"), {}, id="subject-tab"),
    pytest.param(quote("bob\x1b[31m"), {}, id="subject-escape"),
    pytest.param(BOB, {"data": "{not json", "content_type": "application/json"}, id="bad-json"),
    pytest.param(BOB, {"json": ["name"]}, id="json-array"),
    pytest.param(BOB, {"json": "Bob"}, id="json-string"),
    pytest.param(BOB, {"json": {"name": "Carol Advisor"}}, id="name-typed"),
    pytest.param(BOB, {"json": {"name": 42}}, id="name-not-string"),
    pytest.param(BOB, {"json": {"label": "x"}}, id="unknown-field"),
])
def test_assign_bad_input(bridge, subject, kwargs):
    before = dump_database(bridge.services.db)
    response = assign(bridge, subject, **kwargs)
    assert_error(response, 400, "invalid_request")
    assert dump_database(bridge.services.db) == before


def test_subject_of_maximum_length_is_accepted(bridge):
    # The directory knows the subject (here: the fallback directory, from a sign-in).
    with bridge.services.db.transaction() as session:
        People().record(session, PersonInfo(subject="s" * 255, name="Long Subject",
                                            advisor=True), utcnow(), signed_in=True)
    response = assign(bridge, "s" * 255)
    assert response.status_code == 201
    assert response.json["advisor"] == "s" * 255
