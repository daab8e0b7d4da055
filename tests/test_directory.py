"""The directory (issue 12 part A): finding advisors by name or e-mail, resolving the subject
a choice names, recording who signs in, and naming people from the directory's rows only.

Two directories: the fallback built from sign-ins (the test databases start with the
development provider's people as if each had signed in once) and Keycloak's admin API (here
a fake of its REST calls; the real Keycloak is in test_keycloak_e2e.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import OTHER_TENANT, TENANT, active_memberships, dump_database
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain.people import People, PersonInfo, person_from_claims
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Invitation, Person
from idp_bridge.upstream.oidc import UpstreamUnavailable
from test_keycloak_mirror import FakeKeycloak, keycloak_env, work  # noqa: F401 (fixtures)

BOB = DEMO_USERS["bob"]["sub"]
CAROL = DEMO_USERS["carol"]["sub"]
EVE = DEMO_USERS["eve"]["sub"]
NOBODY = "00000000-0000-4000-8000-00000000beef"
RLO = "\u202e"


def assert_error(response, status: int, error: str, code: str | None = None):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.json["error"] == error, response.json
    if code is not None:
        assert response.json.get("error_code") == code, response.json


def record(bridge, person: PersonInfo, *, signed_in=False):
    with bridge.services.db.transaction() as session:
        People().record(session, person, utcnow(), signed_in=signed_in)


def search(bridge, q, user="sam", **params):
    return bridge.api("get", "/api/directory/advisors", user=user,
                      query_string={"q": q, **params})


# --- searching ---
def test_support_finds_advisors_by_name_username_and_email(bridge):
    found = search(bridge, "car")
    assert found.status_code == 200
    assert found.json == {"source": "sign_ins", "people": [
        {"subject": CAROL, "name": "Carol Advisor", "username": "carol",
         "email": "carol@advisors.example"}]}
    assert [p["subject"] for p in search(bridge, "bob@advisors").json["people"]] == [BOB]
    assert [p["subject"] for p in search(bridge, "ADVISOR").json["people"]] == [BOB, CAROL]
    # Only advisors: the support admin and the tenant admin are not offered.
    assert search(bridge, "sam").json["people"] == []
    assert search(bridge, "anna").json["people"] == []
    # A wildcard is a character here, not a pattern.
    assert search(bridge, "%%").json["people"] == []
    assert search(bridge, "__").json["people"] == []


def test_a_disabled_person_is_not_offered(bridge):
    record(bridge, PersonInfo(subject="d15ab1ed-0000-4000-8000-000000000001",
                              name="Carla Disabled", advisor=True, enabled=False,
                              source="directory"))
    assert [p["name"] for p in search(bridge, "car").json["people"]] == ["Carol Advisor"]


def test_tenant_admins_search_for_their_tenant_only(bridge):
    found = bridge.api("get", f"/api/tenants/{TENANT}/directory/advisors", user="anna",
                       query_string={"q": "bob"})
    assert found.status_code == 200 and [p["subject"] for p in found.json["people"]] == [BOB]
    assert_error(bridge.api("get", f"/api/tenants/{OTHER_TENANT}/directory/advisors",
                            user="anna", query_string={"q": "bob"}), 403, "forbidden")


@pytest.mark.parametrize("user", ["anna", "bob", "eve"])
def test_only_support_admins_search_the_whole_directory(bridge, user):
    assert_error(search(bridge, "car", user=user), 403, "forbidden")


@pytest.mark.parametrize("params, code", [
    ({"q": "c"}, "search_text_invalid"),
    ({"q": "x" * 101}, "search_text_invalid"),
    ({"q": f"car{RLO}"}, "search_text_invalid"),
    ({"q": "car\x00"}, None),  # refused at the door (NUL)
    ({"q": "car", "limit": "0"}, "limit_out_of_range"),
    ({"q": "car", "limit": "21"}, "limit_out_of_range"),
    ({"q": "car", "limit": "-1"}, "limit_out_of_range"),
])
def test_bad_searches_are_400(bridge, params, code):
    rest = {k: v for k, v in params.items() if k != "q"}  # the table is shared by backends
    assert_error(search(bridge, params["q"], **rest), 400, "invalid_request", code)


def test_missing_search_text_is_400(bridge):
    response = bridge.api("get", "/api/directory/advisors", user="sam")
    assert_error(response, 400, "invalid_request", "search_text_invalid")


# --- resolving: what support assigns and tenants invite ---
@pytest.mark.parametrize("who, status, error, code", [
    ("unknown", 404, "not_found", "person_unknown"),
    ("disabled", 409, "conflict", "person_disabled"),
    ("not-advisor", 400, "invalid_request", "person_not_advisor"),
])
def test_assigning_who_the_directory_does_not_offer_stores_nothing(bridge, who, status, error,
                                                                    code):
    subject = {"unknown": NOBODY, "disabled": "d15ab1ed-0000-4000-8000-000000000001",
               "not-advisor": EVE}[who]
    if who == "disabled":
        record(bridge, PersonInfo(subject=subject, name="Dora Disabled", advisor=True,
                                  enabled=False, source="directory"))
    before = dump_database(bridge.services.db)
    response = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{subject}",
                          user="sam")
    assert_error(response, status, error, code)
    assert dump_database(bridge.services.db) == before


def test_a_typed_name_is_refused_and_nothing_is_stored(bridge):
    before = dump_database(bridge.services.db)
    response = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{CAROL}",
                          user="sam", json={"name": "Chef"})
    assert_error(response, 400, "invalid_request", "name_from_directory")
    assert dump_database(bridge.services.db) == before


def test_directory_unreachable_is_503_and_stores_nothing(bridge, monkeypatch):
    directory = bridge.services.use_cases.directory.directory

    def down(*args, **kwargs):
        raise UpstreamUnavailable("directory down")

    monkeypatch.setattr(directory, "resolve", down)
    monkeypatch.setattr(directory, "search", down)
    before = dump_database(bridge.services.db)
    response = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{CAROL}",
                          user="sam")
    assert_error(response, 503, "temporarily_unavailable", "directory_unavailable")
    assert_error(search(bridge, "car"), 503, "temporarily_unavailable", "directory_unavailable")
    invite = bridge.api("post", f"/api/tenants/{TENANT}/invitations", json={
        "group": _group(bridge), "subject": CAROL})
    assert_error(invite, 503, "temporarily_unavailable", "directory_unavailable")
    assert len(dump_database(bridge.services.db)) > 0
    with bridge.services.db.read() as session:
        assert session.scalars(select(Invitation)).all() == []


def _group(bridge) -> str:
    response = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                          json={"name": "Prüfer", "permissions": ["payments:read"]})
    assert response.status_code == 201, response.json
    return response.json["id"]


@pytest.mark.parametrize("subject, status, code", [
    (NOBODY, 404, "person_unknown"), (EVE, 400, "person_not_advisor")])
def test_inviting_who_the_directory_does_not_offer_stores_nothing(bridge, subject, status,
                                                                   code):
    group = _group(bridge)
    before = dump_database(bridge.services.db)
    response = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                          json={"group": group, "subject": subject})
    assert response.status_code == status and response.json["error_code"] == code
    assert dump_database(bridge.services.db) == before


def test_an_invitation_names_the_invitee(bridge):
    response = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                          json={"group": _group(bridge), "subject": CAROL})
    assert response.status_code == 201
    assert response.json["invitee_name"] == "Carol Advisor"
    listed = bridge.api("get", f"/api/tenants/{TENANT}/invitations").json["invitations"]
    assert [i["invitee_name"] for i in listed] == ["Carol Advisor"]


# --- who signs in is recorded ---
def _person(bridge, subject):
    with bridge.services.db.read() as session:
        return People.get(session, subject)


def test_an_exchange_records_the_advisor_and_unchanged_claims_write_nothing(bridge):
    with bridge.services.db.transaction() as session:
        session.delete(session.get(Person, CAROL))
    assert _person(bridge, CAROL) is None
    assert search(bridge, "carol").json["people"] == []  # never seen: not offered
    bridge.services.use_cases.directory.people.forget_recent()
    assert bridge.join("carol")["access_token"]
    carol = _person(bridge, CAROL)
    assert (carol.name, carol.username, carol.email, carol.advisor, carol.source) == (
        "Carol Advisor", "carol", "carol@advisors.example", True, "sign_in")
    assert carol.last_sign_in_at is not None
    # The same claims again, in another process (nothing remembered): nothing is written.
    bridge.services.use_cases.directory.people.forget_recent()
    before = dump_database(bridge.services.db)
    assert bridge.api("get", "/api/me/memberships", user="carol").status_code == 200
    assert dump_database(bridge.services.db) == before


def test_changed_claims_update_the_name(bridge):
    token = bridge.upstream_token("bob", extra_claims={"name": "Robert Advisor"})
    assert bridge.api("get", "/api/me/memberships", token=token).status_code == 200
    assert _person(bridge, BOB).name == "Robert Advisor"
    bridge.join("bob")
    items = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert [m["advisor_name"] for m in items] == ["Bob Advisor"]  # the join's own token


@pytest.mark.parametrize("claims, name", [
    ({"name": f"Bob{RLO}rosiavdA"}, "Bob B"),          # bidi override: not shown
    ({"name": "Bob\x1b[31m"}, "Bob B"),                # escape sequence: not shown
    ({"name": 42}, "Bob B"),
    ({"name": "x" * 300}, "Bob B"),
    ({"name": None, "given_name": "Bob", "family_name": "B"}, "Bob B"),
])
def test_names_from_tokens_are_plain_text_or_not_used(claims, name):
    base = {"given_name": "Bob", "family_name": "B", "preferred_username": "bob"}
    person = person_from_claims(BOB, {**base, **claims}, advisor=True, support_admin=False)
    assert person.name == name


def test_email_needs_an_at_and_is_verified_only_when_said():
    person = person_from_claims(BOB, {"email": "Bob@Advisors.Example"}, advisor=True,
                                support_admin=False)
    assert (person.email, person.email_verified) == ("bob@advisors.example", False)
    assert person_from_claims(BOB, {"email": "bob", "email_verified": True}, advisor=True,
                              support_admin=False).email is None
    assert person_from_claims(BOB, {"email": "b@x.example", "email_verified": "true"},
                              advisor=True, support_admin=False).email_verified is False


# --- names shown ---
def test_people_sharing_a_name_are_told_apart_by_email(bridge):
    other = "b0b0b0b0-0000-4000-8000-000000000002"
    record(bridge, PersonInfo(subject=other, name="Bob Advisor", username="bob2",
                              email="bob@elsewhere.example", advisor=True), signed_in=True)
    assert bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{other}",
                      user="sam").status_code == 201
    bridge.join("bob")
    names = sorted(m["advisor_name"] for m in bridge.api(
        "get", f"/api/tenants/{TENANT}/memberships").json["memberships"])
    assert names == ["Bob Advisor (bob@advisors.example)", "Bob Advisor (bob@elsewhere.example)"]


def test_unknown_people_fall_back_to_the_subject(bridge):
    with bridge.services.db.transaction() as session:
        People().record(session, PersonInfo(subject="s1", name="Temp", advisor=True), utcnow())
    assert bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/s1",
                      user="sam").status_code == 201
    with bridge.services.db.transaction() as session:
        session.delete(session.get(Person, "s1"))
    listed = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert [m["advisor_name"] for m in listed] == ["Temp"]  # what the assignment recorded


def test_support_admins_are_named_in_the_access_log(bridge):
    from test_pages_helpers import EN, signed_in, text_of

    assert bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{CAROL}",
                      user="sam").status_code == 201
    anna = signed_in(bridge.app, "anna")
    text = text_of(anna.get(f"/tenants/{TENANT}/log", headers=EN))
    assert "Carol Advisor was assigned as a permanent advisor. Sam Support (support admin)" \
        in text
    assert DEMO_USERS["sam"]["sub"][:8] not in text


# --- Keycloak as the directory (a fake of its admin REST API) ---
def test_keycloak_directory_search_resolve_and_refusals(keycloak_env):  # noqa: F811
    bridge, fake = keycloak_env
    found = search(bridge, "car")
    assert found.status_code == 200
    assert found.json == {"source": "keycloak", "people": [
        {"subject": CAROL, "name": "Carol Advisor", "username": "carol",
         "email": "carol@advisors.example"}]}
    assert search(bridge, "sam").json["people"] == []  # no advisor role
    # A person who never signed in here: Keycloak knows her.
    dora = "d0ra0000-0000-4000-8000-000000000009"
    fake.users[dora] = {"enabled": True, "username": "dora", "firstName": "Dora",
                        "lastName": "Neu", "email": "dora@advisors.example",
                        "emailVerified": True}
    fake.roles[dora] = {"advisor"}
    assert [p["subject"] for p in search(bridge, "dor").json["people"]] == [dora]
    assigned = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{dora}",
                          user="sam")
    assert assigned.status_code == 201 and assigned.json["advisor_name"] == "Dora Neu"
    assert _person(bridge, dora).source == "directory"
    # Disabled at Keycloak: not offered, not assigned.
    fake.users[CAROL]["enabled"] = False
    assert search(bridge, "car").json["people"] == []
    before = dump_database(bridge.services.db)
    refused = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{CAROL}", user="sam")
    assert_error(refused, 409, "conflict", "person_disabled")
    unknown = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{NOBODY}",
                         user="sam")
    assert_error(unknown, 404, "not_found", "person_unknown")
    assert dump_database(bridge.services.db) == before
    # Keycloak down: nothing is assigned, searching says so.
    fake.down = True
    assert_error(search(bridge, "bob"), 503, "temporarily_unavailable", "directory_unavailable")
    assert active_memberships(bridge)[0].advisor_subject == dora


def test_keycloak_directory_needs_a_roles_claim_it_can_ask_for(settings):
    from idp_bridge.settings import SettingsError

    with pytest.raises(SettingsError, match="roles_claim"):
        settings.replace(keycloak_admin=True, keycloak_client_secret="x" * 40,
                         upstream_issuer="http://127.0.0.1:9/realms/x", roles_claim="roles")
    ok = settings.replace(keycloak_admin=True, keycloak_client_secret="x" * 40,
                          upstream_issuer="http://127.0.0.1:9/realms/x",
                          roles_claim="resource_access.konfipay.roles")
    assert ok.roles_claim == "resource_access.konfipay.roles"
