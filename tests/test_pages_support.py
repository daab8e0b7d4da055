"""The support page: assign, list and remove permanent advisors (support admins only, with
the API's rules)."""

from __future__ import annotations

import pytest

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events, dump_database
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain.people import People, PersonInfo
from idp_bridge.storage.db import utcnow
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of

CAROL = DEMO_USERS["carol"]["sub"]


@pytest.fixture
def sam(app):
    return signed_in(app, "sam")


def assign(client, tenant=TENANT, advisor=CAROL, headers=EN, **extra):
    return post_form_page(client, "/support/assign",
                          {"tenant": tenant, "advisor": advisor, **extra}, headers=headers)


def test_assign_lists_and_tells(sam, bridge):
    response = assign(sam)
    assert response.status_code == 303 and response.headers["Location"] == "/support"
    page = sam.get("/support", headers=EN)
    text = text_of(page)
    assert f"Carol Advisor is now a permanent advisor of tenant {TENANT}." in text
    assert f"{TENANT} · Muster GmbH Carol Advisor" in text
    assert CAROL not in text  # nobody reads a subject id
    member = active_memberships(bridge)[0]
    assert (member.kind, member.advisor_subject, member.advisor_name) == (
        "permanent", CAROL, "Carol Advisor")
    assert audit_events(bridge, "membership.created")[0]["actor_role"] == "support_admin"
    again = assign(sam)
    assert again.status_code == 303
    assert "already is a permanent advisor" in text_of(sam.get("/support", headers=EN))
    assert len(active_memberships(bridge)) == 1


def test_assign_supersedes_temporary_access(sam, bridge):
    tokens = bridge.join("carol")
    assign(sam)
    members = active_memberships(bridge)
    assert [m.kind for m in members] == ["permanent"]
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}


def test_search_offers_matching_advisors_to_choose(sam, bridge):
    page = sam.get("/support?q=car", headers=EN)
    assert page.status_code == 200
    choices = page.text.split('id="advisor-choices"')[1].split("</fieldset>")[0]
    assert f'value="{CAROL}" checked' in choices and "Carol Advisor · carol@advisors.example" in choices
    assert DEMO_USERS["bob"]["sub"] not in choices
    # Only advisors: sam (support admin) and anna (tenant admin) are not offered.
    for query, absent in (("sam", "Sam Support"), ("anna", "Anna Admin")):
        assert absent not in sam.get(f"/support?q={query}", headers=EN).text.split(
            'id="advisor-choices"')[1].split("</fieldset>")[0]
    # An e-mail address finds the person too; a one-letter search asks for more.
    assert "Carol Advisor" in sam.get("/support?q=carol@advisors", headers=EN).text
    short = text_of(sam.get("/support?q=c", headers=EN))
    assert "Type at least two characters" in short
    assert "The identity provider offers no directory here" in text_of(page)


def test_type_ahead_answers_json(sam, app):
    found = sam.get("/support/directory.json?q=Adv", headers=EN)
    assert found.status_code == 200
    assert {p["name"] for p in found.json["people"]} == {"Bob Advisor", "Carol Advisor"}
    assert found.json["source"] == "sign_ins"
    assert sam.get("/support/directory.json?q=x").json == {"people": []}
    anna = signed_in(app, "anna")
    refused = anna.get("/support/directory.json?q=car")
    assert refused.status_code == 403 and refused.json["error"] == "forbidden"
    assert app.test_client().get("/support/directory.json?q=car").status_code == 401


@pytest.mark.parametrize("who", ["unknown", "disabled", "not-advisor"])
def test_assign_refuses_who_the_directory_does_not_offer(sam, bridge, who):
    subject = {"unknown": "00000000-0000-4000-8000-00000000beef",
               "disabled": "d15ab1ed-0000-4000-8000-000000000001",
               "not-advisor": DEMO_USERS["eve"]["sub"]}[who]
    if who == "disabled":
        with bridge.services.db.transaction() as session:
            People().record(session, PersonInfo(subject=subject, name="Dora Disabled",
                                                advisor=True, enabled=False,
                                                source="directory"), utcnow())
    before = dump_database(bridge.services.db)
    response = assign(sam, advisor=subject)
    status, message = {"unknown": (404, "The directory knows no such person"),
                       "disabled": (409, "account is disabled"),
                       "not-advisor": (400, "does not hold the advisor role")}[who]
    assert response.status_code == status
    assert message in text_of(response)
    assert dump_database(bridge.services.db) == before


def test_list_can_be_filtered_by_tenant(sam, bridge):
    assign(sam)
    assign(sam, tenant=OTHER_TENANT, advisor=DEMO_USERS["bob"]["sub"])
    def listed(query=""):
        return sam.get(f"/support{query}", headers=EN).text.split('id="assignments"')[1]

    assert "Carol Advisor" in listed() and "Bob Advisor" in listed()
    only = listed(f"?tenant={OTHER_TENANT}")
    assert "Bob Advisor" in only and "Carol Advisor" not in only


@pytest.mark.parametrize("tenant,advisor,status,message", [
    ("", CAROL, 400, "Please enter the tenant number and choose the advisor"),
    (TENANT, "", 400, "Please enter the tenant number and choose the advisor"),
    (TENANT, "x" * 256, 400, "Please choose the advisor from the matches"),
    (TENANT, "tab\tin", 400, "Please choose the advisor from the matches"),
    ("99999", CAROL, 404, "There is no tenant with this number."),
])
def test_assign_errors_are_clear_and_change_nothing(sam, bridge, tenant, advisor, status,
                                                    message):
    before = dump_database(bridge.services.db)
    response = assign(sam, tenant=tenant, advisor=advisor)
    assert response.status_code == status
    assert message in text_of(response)
    assert dump_database(bridge.services.db) == before


def test_remove_asks_first_then_ends_the_grant(sam, bridge):
    assign(sam)
    member = active_memberships(bridge)[0]
    confirm = sam.get(f"/support/assignments/{member.id}/remove", headers=EN)
    assert confirm.status_code == 200
    assert f"Remove Carol Advisor from tenant {TENANT}?" in text_of(confirm)
    assert len(active_memberships(bridge)) == 1
    response = post_form_page(sam, f"/support/assignments/{member.id}/remove", headers=EN)
    assert response.status_code == 303
    assert active_memberships(bridge) == []
    assert "is no longer a permanent advisor" in text_of(sam.get("/support", headers=EN))
    assert audit_events(bridge, "membership.ended")[0]["detail"]["reason"] == "removed_by_support"
    again = post_form_page(sam, f"/support/assignments/{member.id}/remove", headers=EN)
    assert again.status_code == 404


def test_only_permanent_assignments_can_be_removed_here(sam, bridge):
    bridge.join("bob")
    member = active_memberships(bridge)[0]
    assert sam.get(f"/support/assignments/{member.id}/remove").status_code == 404
    assert post_form_page(sam, f"/support/assignments/{member.id}/remove").status_code == 404
    assert len(active_memberships(bridge)) == 1


@pytest.mark.parametrize("user", ["anna", "bob", "eve"])
def test_other_roles_are_refused_and_nothing_changes(app, bridge, sam, user):
    assign(sam)
    member = active_memberships(bridge)[0]
    client = signed_in(app, user)
    assert client.get("/support", headers=EN).status_code == 403
    refused = assign(client, advisor=DEMO_USERS["bob"]["sub"])
    assert refused.status_code == 403
    assert "This page is for support administrators." in text_of(refused)
    assert post_form_page(client, f"/support/assignments/{member.id}/remove").status_code == 403
    assert [m.advisor_subject for m in active_memberships(bridge)] == [CAROL]


def test_posts_without_csrf_token_are_rejected(sam, bridge):
    assert sam.post("/support/assign", data={"tenant": TENANT, "advisor": CAROL}).status_code == 400
    assert active_memberships(bridge) == []


def test_support_page_in_german(sam):
    assign(sam, headers=DE)
    text = text_of(sam.get("/support", headers=DE))
    for words in ("Permanente Kundenberater", "Permanenten Kundenberater zuweisen",
                  "Mandantennummer", "Kundenberater finden", "Zuweisungen",
                  "Aus Mandant entfernen", "ist jetzt permanenter Kundenberater von Mandant"):
        assert words in text, words
