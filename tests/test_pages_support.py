"""The support page: assign, list and remove permanent advisors (support admins only, with
the API's rules)."""

from __future__ import annotations

import pytest

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events
from idp_bridge.devidp import DEMO_USERS
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of

CAROL = DEMO_USERS["carol"]["sub"]


@pytest.fixture
def sam(app):
    return signed_in(app, "sam")


def assign(client, tenant=TENANT, advisor=CAROL, name="Carol Advisor", headers=EN):
    return post_form_page(client, "/support/assign",
                          {"tenant": tenant, "advisor": advisor, "name": name}, headers=headers)


def test_assign_lists_and_tells(sam, bridge):
    response = assign(sam)
    assert response.status_code == 303 and response.headers["Location"] == "/support"
    page = sam.get("/support", headers=EN)
    text = text_of(page)
    assert f"Carol Advisor is now a permanent advisor of tenant {TENANT}." in text
    assert f"{TENANT} · Muster GmbH Carol Advisor {CAROL}" in text
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


def test_known_advisors_are_suggested(sam, bridge):
    bridge.join("bob")
    page = sam.get("/support")
    assert f'<option value="{DEMO_USERS["bob"]["sub"]}">bob</option>' in page.text


def test_list_can_be_filtered_by_tenant(sam, bridge):
    assign(sam)
    assign(sam, tenant=OTHER_TENANT, advisor=DEMO_USERS["bob"]["sub"], name="Bob Advisor")
    def listed(query=""):
        return sam.get(f"/support{query}", headers=EN).text.split('id="assignments"')[1]

    assert "Carol Advisor" in listed() and "Bob Advisor" in listed()
    only = listed(f"?tenant={OTHER_TENANT}")
    assert "Bob Advisor" in only and "Carol Advisor" not in only


@pytest.mark.parametrize("tenant,advisor,name,status,message", [
    ("", CAROL, "", 400, "Please enter the tenant number and the advisor's user ID"),
    (TENANT, "", "", 400, "Please enter the tenant number and the advisor's user ID"),
    (TENANT, "x" * 256, "", 400, "Please enter the tenant number and the advisor's user ID"),
    (TENANT, "tab\tin", "", 400, "Please enter the tenant number and the advisor's user ID"),
    (TENANT, CAROL, "n" * 256, 400, "The name may have at most 255 characters."),
    ("99999", CAROL, "", 404, "There is no tenant with this number."),
])
def test_assign_errors_are_clear_and_change_nothing(sam, bridge, tenant, advisor, name, status,
                                                    message):
    response = assign(sam, tenant=tenant, advisor=advisor, name=name)
    assert response.status_code == status
    assert message in text_of(response)
    assert active_memberships(bridge) == []


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
                  "Mandantennummer", "Benutzer-ID des Kundenberaters", "Zuweisungen",
                  "Aus Mandant entfernen", "ist jetzt permanenter Kundenberater von Mandant"):
        assert words in text, words
