"""The people directory against the real Keycloak 26 (issue 12 part A, item 4).

The bridge runs with ``keycloak_admin`` on: its directory is Keycloak's admin REST API, asked
with the ``idp-bridge`` client's service account (``view-users``, ``manage-users``,
``query-groups`` of the realm template). tests/test_directory.py covers the same use cases
against a fake of that API; here Keycloak itself answers:

- searching (support admin sam, tenant admin anna) finds advisors by name, username and e-mail
  prefix, with Keycloak's user id as the subject and the name from Keycloak, also people who
  never signed in at the bridge; people without the advisor role are never offered;
- assigning a permanent advisor stores the subject and the name Keycloak gives;
- a disabled account, an unknown subject and subjects with path characters are refused with
  a 4xx and nothing is stored;
- the advisor role given through a Keycloak group counts (effective role mappings), and
  stops counting when the group goes;
- a tenant admin invites an advisor found by search as a guest.

Keycloak is shared by the whole session: every change made here (an account disabled, a group
created with a role, a member added) is put back in a ``finally``; names made here are unique.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from urllib.parse import quote

import pytest

from conftest import TENANT, build_app, dump_database
from idp_bridge.app import services
from test_keycloak_e2e import KeycloakBridge, kc, mirror_settings, set_enabled  # noqa: F401

pytestmark = [pytest.mark.keycloak, pytest.mark.slow]

GROUP_PREFIX = "directory-test-"


@pytest.fixture
def kc_directory(kc, settings):  # noqa: F811 (kc is a fixture)
    app = build_app(mirror_settings(settings, kc))
    bridge = KeycloakBridge(app, kc)
    assert bridge.services.use_cases.directory.source == "keycloak"
    yield bridge
    services(app).db.dispose()


def assert_error(response, status: int, error: str, code: str | None = None):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.json["error"] == error, response.json
    if code is not None:
        assert response.json.get("error_code") == code, response.json


def search(bridge, q, user="sam", **params):
    return bridge.api("get", "/api/directory/advisors", user=user,
                      query_string={"q": q, **params})


def found(bridge, q, user="sam") -> list[str]:
    """Usernames offered for ``q`` (the search must succeed)."""
    response = search(bridge, q, user=user)
    assert response.status_code == 200, response.json
    assert response.json["source"] == "keycloak"
    return [p["username"] for p in response.json["people"]]


def assign(bridge, subject: str):
    return bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/"
                             f"{quote(subject, safe='')}", user="sam")


def forget_roles(bridge) -> None:
    """As after ``ROLE_CACHE_SECONDS``: a search asks Keycloak for every result's roles anew
    (a search reuses a result's effective roles that long; resolving never does)."""
    bridge.services.use_cases.directory.directory._role_cache.clear()


def database(bridge) -> str:
    return dump_database(bridge.services.db)


@contextlib.contextmanager
def disabled(keycloak, username: str):
    set_enabled(keycloak, username, False)
    try:
        yield
    finally:
        set_enabled(keycloak, username, True)


@contextlib.contextmanager
def advisor_role_through_a_group(keycloak, username: str):
    """A new top-level group holding the realm role ``advisor``, with ``username`` in it;
    the group (and so the membership) is deleted afterwards."""
    name = GROUP_PREFIX + secrets.token_hex(4)
    created = keycloak.admin("POST", "/groups", json={"name": name})
    assert created.status_code == 201, created.text
    group = created.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    try:
        role = keycloak.admin("GET", "/roles/advisor").json()
        keycloak.admin("POST", f"/groups/{group}/role-mappings/realm", json=[role]
                       ).raise_for_status()
        user = keycloak.user_id(username)
        keycloak.admin("PUT", f"/users/{user}/groups/{group}").raise_for_status()
        direct = keycloak.admin("GET", f"/users/{user}/role-mappings/realm").json()
        assert "advisor" not in {r["name"] for r in direct}  # only through the group
        yield group
    finally:
        keycloak.admin("DELETE", f"/groups/{group}").raise_for_status()
    assert keycloak.admin("GET", f"/groups/{group}").status_code == 404


def kc_user(keycloak, username: str) -> dict:
    return keycloak.admin("GET", f"/users/{keycloak.user_id(username)}").json()


# --- 1. searching ---------------------------------------------------------------------------

def test_support_finds_carol_by_name_and_email_prefix_and_nobody_else(kc, kc_directory):
    bridge = kc_directory
    carol = kc_user(kc, "carol")
    with bridge.services.db.read() as session:  # carol never signed in at this bridge
        assert bridge.services.use_cases.directory.people.get(session, carol["id"]) is None

    response = search(bridge, "car")
    assert response.status_code == 200, response.json
    assert response.json == {"source": "keycloak", "people": [
        {"subject": carol["id"], "name": "Carol Beraterin", "username": "carol",
         "email": "carol@konfipay.example"}]}
    assert carol["id"] == kc.user_id("carol")
    # Name, username and e-mail prefix; case does not matter.
    assert found(bridge, "Beraterin") == ["carol"]
    assert found(bridge, "CAROL") == ["carol"]
    assert found(bridge, "carol@konfi") == ["carol"]
    assert found(bridge, "bob@konfipay.example") == ["bob"]
    assert found(bridge, "Berater") == ["bob", "carol"]  # sorted by name
    # Prefixes, as Keycloak searches: the middle of an address matches nobody.
    assert found(bridge, "konfipay") == []
    # People without the advisor role are never offered, whoever they are.
    for q in ("sam", "anna", "eve", "sam@konfipay.example", "Support", "service-account"):
        assert found(bridge, q) == [], q
    # Keycloak's search operators are plain characters here (no "list everyone").
    assert found(bridge, "**") == []
    assert found(bridge, '""') == []
    assert found(bridge, "*car*") == ["carol"]
    assert found(bridge, "zz-nobody-" + secrets.token_hex(4)) == []


def test_searching_is_for_support_and_tenant_admins_only(kc, kc_directory):
    bridge = kc_directory
    for user in ("anna", "bob", "eve"):
        assert_error(search(bridge, "car", user=user), 403, "forbidden")
    assert_error(search(bridge, "c"), 400, "invalid_request", "search_text_invalid")
    assert_error(search(bridge, "car", limit="21"), 400, "invalid_request",
                 "limit_out_of_range")
    response = bridge.api("get", f"/api/tenants/{TENANT}/directory/advisors", user="anna",
                          query_string={"q": "bob"})
    assert response.status_code == 200, response.json
    assert [p["subject"] for p in response.json["people"]] == [kc.user_id("bob")]


# --- 2. assigning the person found ----------------------------------------------------------

def test_sam_assigns_carol_by_the_subject_the_search_gave(kc, kc_directory):
    bridge = kc_directory
    [carol] = search(bridge, "car").json["people"]
    assigned = assign(bridge, carol["subject"])
    assert assigned.status_code == 201, assigned.json
    assert assigned.json["advisor"] == kc.user_id("carol")
    assert assigned.json["advisor_name"] == "Carol Beraterin"
    assert assigned.json["kind"] == "permanent"

    listed = bridge.api("get", f"/api/tenants/{TENANT}/memberships", user="anna")
    assert listed.status_code == 200, listed.json
    assert [(m["advisor"], m["advisor_name"], m["kind"]) for m in listed.json["memberships"]
            ] == [(kc.user_id("carol"), "Carol Beraterin", "permanent")]
    # The person is recorded from the directory (pages name her without asking Keycloak).
    with bridge.services.db.read() as session:
        person = bridge.services.use_cases.directory.people.get(session, carol["subject"])
    assert (person.name, person.email, person.source) == (
        "Carol Beraterin", "carol@konfipay.example", "directory")
    again = assign(bridge, carol["subject"])
    assert again.status_code == 200, again.json  # already assigned: the same membership
    assert again.json["id"] == assigned.json["id"]


# --- 3. a disabled account ------------------------------------------------------------------

def test_a_disabled_account_is_not_offered_and_not_assigned(kc, kc_directory):
    bridge = kc_directory
    carol = kc.user_id("carol")
    assert found(bridge, "car") == ["carol"]
    before = database(bridge)
    with disabled(kc, "carol"):
        assert kc_user(kc, "carol")["enabled"] is False
        assert found(bridge, "car") == []
        assert found(bridge, "Berater") == ["bob"]
        assert_error(assign(bridge, carol), 409, "conflict", "person_disabled")
        assert database(bridge) == before
    assert kc_user(kc, "carol")["enabled"] is True
    # Enabled again: offered and assignable again.
    assert found(bridge, "car") == ["carol"]
    assert assign(bridge, carol).status_code == 201


# --- 4. subjects Keycloak does not know ------------------------------------------------------

def test_an_unknown_subject_is_404_and_stores_nothing(kc, kc_directory):
    bridge = kc_directory
    assert found(bridge, "car") == ["carol"]  # sam is recorded; nothing more is written
    before = database(bridge)
    for subject in (str(uuid.uuid4()), kc.user_id("carol").upper(), "carol"):
        assert_error(assign(bridge, subject), 404, "not_found", "person_unknown")
    assert database(bridge) == before


@pytest.mark.parametrize("subject", [
    "../users", "x/y", "..", ".", "../../master", "..%2Fusers", "a?b=c", "a#b", "a b",
    "%00", "users/../../konfipay", "00000000-0000-4000-8000-000000000000/role-mappings",
    # Paths that would reach carol's own representation if they were followed: the answer
    # must be about the subject asked for, not about whom Keycloak's path leads to.
    "../users/{carol}", "x/../{carol}", "{carol}/", "{carol}/.", "./{carol}",
    "{carol}?briefRepresentation=true", "{carol}#", " {carol}",
])
def test_a_subject_with_path_characters_is_refused_and_stores_nothing(kc, kc_directory,
                                                                        subject):
    bridge = kc_directory
    assert found(bridge, "car") == ["carol"]
    before = database(bridge)
    response = assign(bridge, subject.format(carol=kc.user_id("carol")))
    assert_error(response, 404, "not_found", "person_unknown")  # never 5xx, never carol
    assert database(bridge) == before


def test_the_tenant_admins_and_the_service_account_are_not_advisors(kc, kc_directory):
    bridge = kc_directory
    assert found(bridge, "car") == ["carol"]
    before = database(bridge)
    service_account = kc.admin("GET", "/users", params={
        "username": "service-account-idp-bridge", "exact": "true"}).json()[0]["id"]
    for subject in (kc.user_id("anna"), kc.user_id("sam"), kc.user_id("eve"), service_account):
        assert_error(assign(bridge, subject), 400, "invalid_request", "person_not_advisor")
    assert database(bridge) == before


# --- 5. the advisor role through a group ----------------------------------------------------

def test_the_advisor_role_through_a_group_counts_and_ends_with_the_group(kc, kc_directory):
    bridge = kc_directory
    eve = kc.user_id("eve")
    assert found(bridge, "eve") == []
    before = database(bridge)
    assert_error(assign(bridge, eve), 400, "invalid_request", "person_not_advisor")
    assert database(bridge) == before

    with advisor_role_through_a_group(kc, "eve"):
        # Resolving asks Keycloak for the effective roles at once (the search above left
        # eve's "no roles" in the search's cache) ...
        assigned = assign(bridge, eve)
        assert assigned.status_code == 201, assigned.json
        # ... a search once that cache has expired.
        forget_roles(bridge)
        response = search(bridge, "eve")
        assert response.status_code == 200, response.json
        assert response.json["people"] == [{"subject": eve, "name": "Eve Nobody",
                                            "username": "eve",
                                            "email": "eve@konfipay.example"}]
        assert assigned.json["advisor_name"] == "Eve Nobody"
        membership = assigned.json["id"]
        removed = bridge.api("delete", f"/api/tenants/{TENANT}/permanent-advisors/{eve}",
                             user="sam")
        assert removed.status_code == 204, removed.get_data(True)

    # The group is gone: eve holds no advisor role any more.
    roles = kc.admin("GET", f"/users/{eve}/role-mappings/realm/composite").json()
    assert "advisor" not in {r["name"] for r in roles}
    after_removal = database(bridge)
    # At once, not after the search's role cache has expired (the search above put eve's
    # advisor role into it): a role taken away at Keycloak is never assignable.
    assert_error(assign(bridge, eve), 400, "invalid_request", "person_not_advisor")
    assert database(bridge) == after_removal
    forget_roles(bridge)
    assert found(bridge, "eve") == []
    listed = bridge.api("get", f"/api/tenants/{TENANT}/memberships", user="anna")
    assert membership not in {m["id"] for m in listed.json["memberships"]}


# --- 6. a tenant admin invites the person found ---------------------------------------------

def test_anna_invites_carol_as_a_guest_by_the_subject_the_search_gave(kc, kc_directory):
    bridge = kc_directory
    response = bridge.api("get", f"/api/tenants/{TENANT}/directory/advisors", user="anna",
                          query_string={"q": "car"})
    assert response.status_code == 200, response.json
    assert response.json["source"] == "keycloak"
    [carol] = response.json["people"]
    assert (carol["subject"], carol["name"]) == (kc.user_id("carol"), "Carol Beraterin")

    group = bridge.api("post", f"/api/tenants/{TENANT}/groups", user="anna",
                       json={"name": "Prüfer " + secrets.token_hex(3),
                             "permissions": ["payments:read"]})
    assert group.status_code == 201, group.json
    invited = bridge.api("post", f"/api/tenants/{TENANT}/invitations", user="anna",
                         json={"group": group.json["id"], "subject": carol["subject"]})
    assert invited.status_code == 201, invited.json
    assert invited.json["invitee_subject"] == kc.user_id("carol")
    assert invited.json["invitee_name"] == "Carol Beraterin"
    listed = bridge.api("get", f"/api/tenants/{TENANT}/invitations", user="anna")
    assert [(i["invitee_subject"], i["invitee_name"]) for i in listed.json["invitations"]] == [
        (kc.user_id("carol"), "Carol Beraterin")]

    # Refused invitations store nothing: unknown, disabled, not an advisor.
    before = database(bridge)
    for subject, status, error, code in (
            (str(uuid.uuid4()), 404, "not_found", "person_unknown"),
            (kc.user_id("eve"), 400, "invalid_request", "person_not_advisor")):
        assert_error(bridge.api("post", f"/api/tenants/{TENANT}/invitations", user="anna",
                                json={"group": group.json["id"], "subject": subject}),
                     status, error, code)
    with disabled(kc, "bob"):
        assert_error(bridge.api("post", f"/api/tenants/{TENANT}/invitations", user="anna",
                                json={"group": group.json["id"],
                                      "subject": kc.user_id("bob")}),
                     409, "conflict", "person_disabled")
    assert database(bridge) == before
