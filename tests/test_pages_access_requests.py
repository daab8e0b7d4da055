"""Access requests and four eyes on the pages (issue 15 items 1, 3, 6): the advisor asks on
its page and sees the answer; the tenant's admins see open requests on the help page (also in
its live status), approve (optionally shorter) or deny with a note; under four eyes the first
approval shows as pending and a second admin completes it; the ways in and four eyes are
settings of the help page. German and English; every refusal a page with its reason that
changes nothing."""

from __future__ import annotations

import re

import pytest

from conftest import TENANT, active_memberships, audit_events, dump_database
from idp_bridge.devidp import DEMO_USERS
from test_api_access_requests import asked
from test_pages_helpers import DE, EN, csrf_token, post_form_page, signed_in, text_of

BOB = DEMO_USERS["bob"]["sub"]


@pytest.fixture
def anna(app):
    return signed_in(app, "anna")


@pytest.fixture
def dora(app):
    return signed_in(app, "dora")


@pytest.fixture
def bob(app):
    return signed_in(app, "bob")


def post(client, path, data=None, *, token_from="/", headers=None):
    return post_form_page(client, path, data, token_from=token_from, headers=headers)


def help_text(client, headers=EN) -> str:
    page = client.get(f"/tenants/{TENANT}/help", headers=headers)
    assert page.status_code == 200
    return text_of(page)


def requests_part(client) -> str:
    page = client.get(f"/tenants/{TENANT}/help", headers=EN).text
    return page.split('id="access-requests"')[1].split("</section>")[0]


# --- the advisor asks ---

@pytest.mark.parametrize("headers, texts", [
    (EN, ["Ask for access", "Ticket or reason", "Tenant to ask", "Send request", "8 hours",
          "30 days"]),
    (DE, ["Zugriff anfragen", "Ticket oder Grund", "Anzufragender Mandant", "Anfrage senden",
          "8 Stunden", "30 Tage"]),
])
def test_the_advisor_page_offers_a_request(bob, headers, texts):
    page = bob.get("/advisor", headers=headers)
    assert page.status_code == 200
    text = text_of(page)
    for expected in texts:
        assert expected in text
    assert '<option value="8" selected>' in page.text
    assert '<option value="721"' not in page.text  # never beyond the configured maximum


def test_an_advisor_asks_and_sees_the_request(bridge, bob):
    response = post(bob, "/advisor/requests", {"tenant": TENANT, "reason": "Ticket 4711",
                                               "duration_hours": "4"}, token_from="/advisor")
    assert response.status_code == 303, response.text
    page = bob.get("/advisor", headers=EN)
    text = text_of(page)
    assert "Your request for tenant 10042 (Muster GmbH) is sent." in text
    mine = page.text.split('id="my-requests"')[1]
    assert "Ticket 4711" in mine and "4 hours" in mine and "waiting for an answer" in mine
    assert len(audit_events(bridge, "access_request.created")) == 1


@pytest.mark.parametrize("form, status, headers, message", [
    ({"reason": ""}, 400, EN, "Please give a reason or ticket: the administrators decide on it."),
    ({"reason": ""}, 400, DE, "Bitte geben Sie einen Grund oder ein Ticket an"),
    ({"duration_hours": "721"}, 400, EN, "Please choose a duration from 1 hour to 30 days."),
    ({"duration_hours": "abc"}, 400, DE, "Bitte wählen Sie eine Dauer von 1 Stunde bis 30 Tage."),
    ({"tenant": "99999"}, 404, EN, "There is no tenant with this number."),
    ({"tenant": ""}, 400, EN, "Please enter the tenant number."),
])
def test_a_refused_request_says_why_and_changes_nothing(bridge, bob, form, status, headers,
                                                        message):
    data = {"tenant": TENANT, "reason": "Ticket 4711", "duration_hours": "8", **form}
    token = csrf_token(bob, "/advisor")
    before = dump_database(bridge.services.db)
    response = bob.post("/advisor/requests", data={**data, "csrf_token": token},
                        headers=headers)
    assert response.status_code == status
    assert message in text_of(response)
    assert dump_database(bridge.services.db) == before


def test_a_second_request_and_a_code_only_tenant_are_refused_on_the_page(bridge, bob):
    made = asked(bridge)
    before = dump_database(bridge.services.db)
    response = post(bob, "/advisor/requests", {"tenant": TENANT, "reason": "again",
                                               "duration_hours": "8"}, headers=DE)
    assert response.status_code == 409
    assert "Sie haben bereits eine offene Anfrage für diesen Mandanten." in text_of(response)
    assert dump_database(bridge.services.db) == before
    assert bridge.api("patch", f"/api/tenants/{TENANT}",
                      json={"access_modes": "code"}).status_code == 200
    assert post(bob, f"/advisor/requests/{made['id']}/withdraw").status_code == 303
    before = dump_database(bridge.services.db)
    response = post(bob, "/advisor/requests", {"tenant": TENANT, "reason": "Ticket",
                                               "duration_hours": "8"}, headers=EN)
    assert response.status_code == 403
    assert "This tenant does not accept access requests." in text_of(response)
    assert dump_database(bridge.services.db) == before


def test_the_advisor_withdraws_on_its_page(bridge, bob):
    made = asked(bridge)
    response = post(bob, f"/advisor/requests/{made['id']}/withdraw", token_from="/advisor")
    assert response.status_code == 303
    mine = bob.get("/advisor", headers=DE).text.split('id="my-requests"')[1]
    assert "zurückgezogen" in mine
    assert 'action="/advisor/requests/' not in mine  # no withdraw button any more


def test_the_advisor_status_reports_request_states(bridge, bob):
    made = asked(bridge)
    first = bob.get("/advisor/status.json").json["requests"]
    assert first == [{"id": made["id"], "status": "pending"}]
    assert bridge.api("post", f"/api/tenants/{TENANT}/access-requests/{made['id']}/deny",
                      json={"note": "no"}).status_code == 200
    assert bob.get("/advisor/status.json").json["requests"] == [
        {"id": made["id"], "status": "denied"}]


# --- the admins answer on the help page ---

def test_the_help_page_lists_the_request_with_approve_and_deny(bridge, anna):
    made = asked(bridge, hours=48)
    part = requests_part(anna)
    assert "Bob Advisor" in part and "Ticket 4711: EBICS setup" in part and "2 days" in part
    assert f'action="/tenants/{TENANT}/requests/{made["id"]}/approve"' in part
    assert f'action="/tenants/{TENANT}/requests/{made["id"]}/deny"' in part
    # The duration can only be shortened: nothing longer than asked is offered.
    options = re.findall(r'<option value="(\d+)"', part)
    assert options and max(int(o) for o in options) == 48
    german = help_text(anna, DE)
    assert "Zugriffsanfragen" in german and "bittet um 2 Tage temporären Zugriff." in german


def test_the_live_status_carries_the_requests(bridge, anna):
    first = anna.get(f"/tenants/{TENANT}/status.json").json
    assert first["requests"] == [] and "No open access requests." in first["requests_html"]
    made = asked(bridge)
    second = anna.get(f"/tenants/{TENANT}/status.json").json
    assert second["fingerprint"] != first["fingerprint"]
    assert second["requests"] == [made["id"]]
    assert "Bob Advisor" in second["requests_html"] and "csrf_token" in second["requests_html"]


def test_an_admin_approves_shorter_on_the_page_and_the_advisor_has_access(bridge, anna):
    made = asked(bridge, hours=48)
    response = post(anna, f"/tenants/{TENANT}/requests/{made['id']}/approve",
                    {"duration_hours": "8", "note": "ok"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("#requests")
    text = help_text(anna)
    assert "Bob Advisor now has temporary access until" in text
    [live] = active_memberships(bridge)
    assert (live.expires_at - live.created_at).total_seconds() == 8 * 3600
    assert bridge.exchange("bob").status_code == 200


def test_an_admin_denies_on_the_page_with_a_note(bridge, anna, bob):
    made = asked(bridge)
    help_text(anna)  # the tenant's code state exists (a refusal shows the help page again)
    before = dump_database(bridge.services.db)
    refused = post(anna, f"/tenants/{TENANT}/requests/{made['id']}/deny", {"note": ""},
                   headers=DE)
    assert refused.status_code == 400
    assert "Bitte schreiben Sie eine Notiz, warum" in text_of(refused)
    assert dump_database(bridge.services.db) == before
    response = post(anna, f"/tenants/{TENANT}/requests/{made['id']}/deny",
                    {"note": "Bitte über unser Ticket"})
    assert response.status_code == 303
    mine = bob.get("/advisor", headers=EN).text.split('id="my-requests"')[1]
    assert "denied" in mine and "Anna Admin" in mine and "Bitte über unser Ticket" in mine


@pytest.mark.parametrize("user", ["bob", "carol", "sam"])
def test_only_admins_answer_on_the_pages(bridge, app, user):
    made = asked(bridge)
    client = signed_in(app, user)
    before = dump_database(bridge.services.db)
    for path in (f"/tenants/{TENANT}/requests/{made['id']}/approve",
                 f"/tenants/{TENANT}/requests/{made['id']}/deny"):
        response = client.post(path, data={"csrf_token": csrf_token(client), "note": "x"})
        assert response.status_code == 403
    assert dump_database(bridge.services.db) == before


def test_answering_an_answered_request_says_so(bridge, anna, dora):
    made = asked(bridge)
    assert post(anna, f"/tenants/{TENANT}/requests/{made['id']}/deny",
                {"note": "no"}).status_code == 303
    help_text(dora)  # the tenant's code state exists (a refusal shows the help page again)
    before = dump_database(bridge.services.db)
    response = post(dora, f"/tenants/{TENANT}/requests/{made['id']}/approve", headers=EN)
    assert response.status_code == 409
    assert "This access request has already been denied." in text_of(response)
    assert dump_database(bridge.services.db) == before


# --- four eyes on the help page ---

def test_four_eyes_on_the_help_page(bridge, anna, dora):
    bridge.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True})
    made = asked(bridge)
    response = post(anna, f"/tenants/{TENANT}/requests/{made['id']}/approve",
                    {"duration_hours": "8"})
    assert response.status_code == 303
    assert "Four eyes: it takes effect when another administrator" in help_text(anna)
    assert active_memberships(bridge) == []
    # anna sees her approval waiting and no button; dora sees it with the button.
    mine = requests_part(anna)
    assert "You have approved this request." in mine and "/approve" not in mine
    hers = requests_part(dora)
    assert "1 of 2 approvals" in hers and "Approved by Anna Admin" in hers
    assert f'/requests/{made["id"]}/approve' in hers
    german = dora.get(f"/tenants/{TENANT}/help", headers=DE).text
    assert "1 von 2 Genehmigungen" in german and "Genehmigt von Anna Admin" in german
    # anna posting again is refused on the page and changes nothing.
    before = dump_database(bridge.services.db)
    again = post(anna, f"/tenants/{TENANT}/requests/{made['id']}/approve", headers=DE)
    assert again.status_code == 403
    assert "Vier-Augen-Prinzip: Sie haben das bereits genehmigt." in text_of(again)
    assert dump_database(bridge.services.db) == before
    # dora completes it; the access log names both.
    done = post(dora, f"/tenants/{TENANT}/requests/{made['id']}/approve",
                {"duration_hours": "8"})
    assert done.status_code == 303
    assert len(active_memberships(bridge)) == 1
    log = text_of(dora.get(f"/tenants/{TENANT}/log?category=requests", headers=EN))
    assert "approved for 8 hours by Anna Admin, Dora Admin" in log


def test_four_eyes_for_the_maximum_age_on_the_help_page(bridge, anna, dora):
    bridge.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True,
                                                        "temporary_max_age_days": 7})
    response = post(anna, f"/tenants/{TENANT}/settings/max-age",
                    {"temporary_max_age_days": "14"})
    assert response.status_code == 303 and response.headers["Location"].endswith("#approvals")
    text = help_text(anna)
    assert "the longer maximum of 14 days takes effect when another administrator" in text
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["temporary_max_age_days"] == 7
    page = dora.get(f"/tenants/{TENANT}/help", headers=EN).text
    part = page.split('id="pending-approvals"')[1].split("</section>")[0]
    assert "Lengthen the maximum duration of temporary access to 14 days" in part
    assert "Proposed by Anna Admin" in part
    [approval] = bridge.api("get", f"/api/tenants/{TENANT}/approvals").json["approvals"]
    assert f'/approvals/{approval["id"]}/approve' in part
    # anna's own proposal offers no approval button, only taking it back.
    own = anna.get(f"/tenants/{TENANT}/help", headers=EN).text.split(
        'id="pending-approvals"')[1].split("</section>")[0]
    assert "/approve" not in own and "Take back my proposal" in own
    done = post(dora, f"/tenants/{TENANT}/approvals/{approval['id']}/approve")
    assert done.status_code == 303
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["temporary_max_age_days"] == 14
    assert "Approved by two administrators" in help_text(dora)


# --- the ways in ---

def test_the_ways_in_on_the_help_page(bridge, anna, bob):
    response = post(anna, f"/tenants/{TENANT}/settings/access", {"access_modes": "request"})
    assert response.status_code == 303
    page = anna.get(f"/tenants/{TENANT}/help", headers=EN)
    assert 'id="codes-off"' in page.text and 'id="access-code"' not in page.text
    assert "Saved: Access request only; four eyes off." in text_of(page)
    # A code is refused on the advisor page, and nothing changes.
    code = bridge.current_code()
    before = dump_database(bridge.services.db)
    joined = post(bob, "/advisor/join", {"tenant": TENANT, "code": code, "reason": ""},
                  headers=DE, token_from="/advisor")
    assert joined.status_code == 403
    assert "Dieser Mandant nimmt keine Zugangscodes an." in text_of(joined)
    assert dump_database(bridge.services.db) == before


def test_a_bad_way_in_is_refused_on_the_page(bridge, anna):
    help_text(anna)  # the tenant's code state exists (a refusal shows the help page again)
    before = dump_database(bridge.services.db)
    response = post(anna, f"/tenants/{TENANT}/settings/access", {"access_modes": "all"},
                    headers=DE)
    assert response.status_code == 400
    assert "Bitte wählen Sie, wie Kundenberater Zugriff erhalten" in text_of(response)
    assert dump_database(bridge.services.db) == before


def test_turning_four_eyes_off_on_the_page_waits_for_a_second_admin(bridge, anna, dora):
    assert post(anna, f"/tenants/{TENANT}/settings/access",
                {"access_modes": "both", "four_eyes": "on"}).status_code == 303
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["four_eyes"] is True
    off = post(anna, f"/tenants/{TENANT}/settings/access", {"access_modes": "both"})
    assert off.status_code == 303
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["four_eyes"] is True
    assert "Turn four eyes off" in help_text(dora)
    [approval] = bridge.api("get", f"/api/tenants/{TENANT}/approvals").json["approvals"]
    assert post(dora, f"/tenants/{TENANT}/approvals/{approval['id']}/approve").status_code == 303
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["four_eyes"] is False
