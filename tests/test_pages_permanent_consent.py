"""Permanent advisors with the tenant's consent on the help page (issue 15 items 2 and 6):
the setting among the ways in, support's proposals with accept and decline, four eyes'
first acceptance, each permanent advisor's "confirmed until" date and the re-confirm
button. German and English; every refusal a page with its reason that changes nothing."""

from __future__ import annotations

import pytest

from conftest import TENANT, active_memberships, audit_events, dump_database
from idp_bridge.devidp import DEMO_USERS
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of
from test_permanent_consent import admin_token, assign, proposed, set_mode

BOB = DEMO_USERS["bob"]["sub"]


@pytest.fixture
def anna(app):
    return signed_in(app, "anna")


@pytest.fixture
def dora(app):
    return signed_in(app, "dora")


def help_page(client, headers=EN):
    page = client.get(f"/tenants/{TENANT}/help", headers=headers)
    assert page.status_code == 200
    return page


def permanent_part(page) -> str:
    return page.text.split('id="permanent-advisors"')[1].split("</section>")[0]


def post(client, path, data=None, headers=None):
    return post_form_page(client, path, data, token_from="/", headers=headers)


@pytest.mark.parametrize("headers, texts", [
    (EN, ["How permanent advisors are added", "Support proposes them, an administrator of the "
          "tenant accepts", "Confirmed until", "Re-confirm"]),
    (DE, ["Wie permanente Kundenberater hinzukommen", "Der Support schlägt sie vor, ein "
          "Administrator des Mandanten nimmt sie an", "Bestätigt bis", "Erneut bestätigen"]),
])
def test_the_help_page_shows_the_setting_and_the_confirmation(bridge, anna, headers, texts):
    assert assign(bridge).status_code == 201
    text = text_of(help_page(anna, headers))
    for expected in texts:
        assert expected in text, expected


def test_the_setting_is_saved_from_the_page(bridge, anna):
    response = post(anna, f"/tenants/{TENANT}/settings/access",
                    {"access_modes": "both", "permanent_mode": "accept"})
    assert response.status_code == 303
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["permanent_mode"] == "accept"


@pytest.mark.parametrize("headers, texts", [
    (EN, ["Proposed by support", "is proposed as a permanent advisor by Sam Support",
          "Accept", "Decline"]),
    (DE, ["Vom Support vorgeschlagen", "wird von Sam Support als permanenter Kundenberater "
          "vorgeschlagen", "Annehmen", "Ablehnen"]),
])
def test_a_proposal_is_listed_with_accept_and_decline(bridge, anna, headers, texts):
    set_mode(bridge, "accept")
    proposed(bridge, reason="Annual accounts")
    page = help_page(anna, headers)
    part = text_of(page)
    for expected in texts:
        assert expected in part, expected
    assert "Annual accounts" in permanent_part(page)


def test_accepting_on_the_page_makes_the_advisor_permanent(bridge, anna):
    set_mode(bridge, "accept")
    made = proposed(bridge)
    response = post(anna, f"/tenants/{TENANT}/proposals/{made['id']}/accept")
    assert response.status_code == 303
    [live] = active_memberships(bridge)
    assert (live.kind, live.advisor_subject) == ("permanent", BOB)
    assert "is now a permanent advisor" in text_of(help_page(anna))


def test_under_four_eyes_the_page_shows_the_first_acceptance(bridge, anna, dora):
    set_mode(bridge, "accept")
    bridge.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True})
    made = proposed(bridge)
    assert post(anna, f"/tenants/{TENANT}/proposals/{made['id']}/accept").status_code == 303
    assert active_memberships(bridge) == []
    assert "You have accepted" in text_of(help_page(anna))
    assert "1 of 2 approvals" in text_of(help_page(dora))
    help_page(anna)  # the page shows the tenant's access code: made before the snapshot
    before = dump_database(bridge.services.db)
    again = post(anna, f"/tenants/{TENANT}/proposals/{made['id']}/accept")
    assert again.status_code == 403
    assert "second, different administrator" in text_of(again)
    assert dump_database(bridge.services.db) == before
    assert post(dora, f"/tenants/{TENANT}/proposals/{made['id']}/accept").status_code == 303
    assert [m.kind for m in active_memberships(bridge)] == ["permanent"]


@pytest.mark.parametrize("headers, message", [
    (EN, "Please write a note why: the advisor is told it."), (DE, "Bitte")])
def test_declining_without_a_note_is_refused_and_changes_nothing(bridge, anna, headers,
                                                                 message):
    set_mode(bridge, "accept")
    made = proposed(bridge)
    help_page(anna)
    before = dump_database(bridge.services.db)
    response = post(anna, f"/tenants/{TENANT}/proposals/{made['id']}/decline", {"note": ""},
                    headers=headers)
    assert response.status_code == 400
    assert 'id="permanent-error"' in response.text
    assert message in text_of(response)
    assert dump_database(bridge.services.db) == before


def test_declining_with_a_note(bridge, anna):
    set_mode(bridge, "accept")
    made = proposed(bridge)
    response = post(anna, f"/tenants/{TENANT}/proposals/{made['id']}/decline",
                    {"note": "Not needed"})
    assert response.status_code == 303
    assert active_memberships(bridge) == []
    [event] = audit_events(bridge, "permanent_advisor.declined")
    assert event["detail"]["note"] == "Not needed"
    assert "Proposed by support" not in text_of(help_page(anna))


def test_re_confirming_on_the_page_moves_the_date(bridge, anna):
    made = assign(bridge).json
    response = post(anna, f"/tenants/{TENANT}/memberships/{made['id']}/reconfirm")
    assert response.status_code == 303
    [event] = audit_events(bridge, "permanent_advisor.reconfirmed")
    assert event["actor"] == DEMO_USERS["anna"]["sub"]
    assert "is re-confirmed until" in text_of(help_page(anna))


@pytest.mark.parametrize("headers, message", [
    (EN, "This proposal does not exist."), (DE, "Diesen Vorschlag gibt es nicht.")])
def test_an_unknown_proposal_is_a_page_with_the_reason(bridge, anna, headers, message):
    help_page(anna)
    before = dump_database(bridge.services.db)
    response = post(anna, f"/tenants/{TENANT}/proposals/nope/accept", headers=headers)
    assert response.status_code == 404
    assert message in text_of(response)
    assert dump_database(bridge.services.db) == before


def test_the_api_and_the_page_agree_on_the_advisor_themselves(bridge):
    set_mode(bridge, "accept")
    made = proposed(bridge)
    refused = bridge.api("post", f"/api/tenants/{TENANT}/permanent-proposals/{made['id']}/accept",
                         token=admin_token(bridge))
    assert refused.status_code == 403 and refused.json["error_code"] == "own_permanent_access"


# --- the support page ---

@pytest.fixture
def sam(app):
    return signed_in(app, "sam")


@pytest.mark.parametrize("headers, texts", [
    (EN, ["Propose to the tenant", "Reason for the tenant", "Confirmed until"]),
    (DE, ["Dem Mandanten vorschlagen", "Begründung für den Mandanten", "Bestätigt bis"]),
])
def test_the_support_page_offers_a_proposal(bridge, sam, headers, texts):
    assert assign(bridge).status_code == 201
    page = sam.get("/support", headers=headers)
    assert page.status_code == 200
    for expected in texts:
        assert expected in text_of(page), expected


def test_support_proposes_on_the_page_and_withdraws(bridge, sam):
    set_mode(bridge, "accept")
    before = dump_database(bridge.services.db)
    refused = post_form_page(sam, "/support/assign", {"tenant": TENANT, "advisor": BOB},
                             token_from="/support")
    assert refused.status_code == 409
    assert "propose the advisor" in text_of(refused)
    assert dump_database(bridge.services.db) == before
    response = post_form_page(sam, "/support/assign", {"tenant": TENANT, "advisor": BOB,
                                                       "action": "propose",
                                                       "reason": "Onboarding"},
                              token_from="/support")
    assert response.status_code == 303
    [proposal] = bridge.api("get", f"/api/tenants/{TENANT}/permanent-proposals").json[
        "proposals"]
    assert (proposal["advisor"], proposal["reason"]) == (BOB, "Onboarding")
    assert active_memberships(bridge) == []
    page = sam.get("/support", headers=EN)
    assert "Proposals awaiting the tenant" in text_of(page)
    withdrawn = post_form_page(sam, f"/support/proposals/{TENANT}/{proposal['id']}/withdraw",
                               token_from="/support")
    assert withdrawn.status_code == 303
    assert bridge.api("get", f"/api/tenants/{TENANT}/permanent-proposals").json[
        "proposals"] == []
