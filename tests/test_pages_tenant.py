"""Pages of a tenant's admins: help page, live status, user list, removal with confirmation,
settings, access log and CSV. Rights exactly as the API's: admins of this tenant only."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest

from conftest import OTHER_TENANT, TENANT, active_memberships
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership, Tenant
from test_pages_helpers import DE, EN, edit_signed_in_user, post_form_page, signed_in, text_of

BOB = DEMO_USERS["bob"]["sub"]


@pytest.fixture
def anna(app):
    return signed_in(app, "anna")


def test_help_page_shows_code_tenant_and_rights(anna, bridge):
    page = anna.get(f"/tenants/{TENANT}/help", headers=EN)
    assert page.status_code == 200
    code = bridge.current_code()
    assert f'<span id="access-code" class="big code">{code}</span>' in page.text
    assert f'<span id="tenant-number" class="big">{TENANT}</span>' in page.text
    text = text_of(page)
    assert "Access code for advisors" in text and "Muster GmbH" in text
    assert "No advisor has temporary access at the moment." in text
    assert "No permanent advisor is assigned to this tenant." in text
    # The fixed rights: every area, read only, full access to Evaluation, what read excludes.
    for name in ("Bank accounts", "EBICS", "ISO 20022 and SEPA payments", "Evaluation",
                 "Notifications"):
        assert name in text
    assert "Full access (read and change)" in text
    assert "EBICS private keys" in text and "API client secrets" in text
    assert "evaluation:write" in text and "ebics:write" not in text
    assert page.headers["Cache-Control"] == "no-store"
    # The live parts the script refreshes, with what it needs, and no inline script.
    assert 'data-status-url="/tenants/10042/status.json"' in page.text
    assert "<script>" not in page.text and "onclick" not in page.text


def test_help_page_lists_temporary_and_permanent_advisors(anna, bridge):
    bridge.join("bob", reason="Ticket 4711")
    post = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/"
                      f"{DEMO_USERS['carol']['sub']}", user="sam")
    assert post.status_code == 201
    page = anna.get(f"/tenants/{TENANT}/help")
    temporary = page.text.split('id="temporary-advisors"')[1].split('id="rights-heading"')[0]
    permanent = page.text.split('id="permanent-advisors"')[1]
    assert "Bob Advisor" in temporary and "Ticket 4711" in temporary and "Carol" not in temporary
    assert "Carol Advisor" in permanent and "Bob" not in permanent
    # The permanent advisors come after the rights table: the lower part of the page.
    assert page.text.index('id="permanent-advisors"') > page.text.index('id="rights-heading"')
    for m in active_memberships(bridge):
        assert f"/tenants/{TENANT}/advisors/{m.id}/remove?from=help" in page.text


@pytest.mark.parametrize("path", ["help", "users", "log", "log.csv",
                                  "advisors/00000000-0000-0000-0000-000000000000/remove"])
def test_pages_need_sign_in(client, path):
    response = client.get(f"/tenants/{TENANT}/{path}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("user,tenant", [("bob", TENANT), ("sam", TENANT), ("eve", TENANT),
                                         ("anna", OTHER_TENANT)])
@pytest.mark.parametrize("path", ["help", "users", "log", "log.csv"])
def test_wrong_role_or_other_tenant_is_refused(app, user, tenant, path):
    client = signed_in(app, user)
    response = client.get(f"/tenants/{tenant}/{path}", headers=EN)
    assert response.status_code == 403
    assert f"Only administrators of tenant {tenant} may open this page." in text_of(response)
    assert "access-code" not in response.text


def test_unknown_tenant_is_404_for_its_admin(app):
    client = signed_in(app, "anna")
    edit_signed_in_user(client, lambda user: user.update(groups=["/tenants/99999/admins"]))
    response = client.get("/tenants/99999/help", headers=EN)
    assert response.status_code == 404
    assert "There is no tenant with this number." in text_of(response)
    status = client.get("/tenants/99999/status.json")
    assert status.status_code == 404 and status.json["error"] == "not_found"


# --- status endpoint (polled by the page's script) ---
def test_status_reports_code_and_advisors_and_changes_after_a_join(anna, bridge):
    first = anna.get(f"/tenants/{TENANT}/status.json")
    assert first.status_code == 200 and first.mimetype == "application/json"
    body = first.json
    assert body["code"] == bridge.current_code()
    assert body["expires_at"] > body["now"]
    assert "No advisor has temporary access" in body["temporary_html"]
    bridge.join("bob", reason="Ticket 4711")
    second = anna.get(f"/tenants/{TENANT}/status.json").json
    assert second["fingerprint"] != body["fingerprint"]
    assert second["code"] != body["code"]  # single use: redeemed codes rotate
    assert "Ticket 4711" in second["temporary_html"]
    assert anna.get(f"/tenants/{TENANT}/status.json").json["fingerprint"] == second["fingerprint"]


@pytest.mark.parametrize("user,status,error", [(None, 401, "login_required"),
                                               ("bob", 403, "forbidden")])
def test_status_refuses_in_json(app, user, status, error):
    client = signed_in(app, user) if user else app.test_client()
    response = client.get(f"/tenants/{TENANT}/status.json")
    assert response.status_code == status
    assert response.json == {"error": error}


def test_status_of_another_tenant_is_refused(anna):
    response = anna.get(f"/tenants/{OTHER_TENANT}/status.json")
    assert response.status_code == 403 and response.json["error"] == "forbidden"


# --- removal with confirmation ---
def test_remove_asks_first_then_ends_the_grant(anna, bridge):
    tokens = bridge.join("bob", reason="Ticket 4711")
    membership_id = bridge.membership_id("bob")
    path = f"/tenants/{TENANT}/advisors/{membership_id}/remove"
    confirm = anna.get(f"{path}?from=users", headers=EN)
    assert confirm.status_code == 200
    text = text_of(confirm)
    assert f"Remove Bob Advisor from tenant {TENANT}?" in text and "Ticket 4711" in text
    assert 'name="from" value="users"' in confirm.text
    assert len(active_memberships(bridge)) == 1  # asking changes nothing
    response = post_form_page(anna, path, {"from": "users"}, headers=EN)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/tenants/{TENANT}/users"
    assert active_memberships(bridge) == []
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    followed = anna.get(response.headers["Location"], headers=EN)
    assert f"Bob Advisor was removed from tenant {TENANT}." in text_of(followed)
    # Removing again: a clear 409 page, nothing else happens.
    again = post_form_page(anna, path, headers=EN)
    assert again.status_code == 409
    assert "This access has already ended." in text_of(again)


def test_remove_without_csrf_token_is_rejected(anna, bridge):
    bridge.join("bob")
    membership_id = bridge.membership_id("bob")
    response = anna.post(f"/tenants/{TENANT}/advisors/{membership_id}/remove", headers=EN)
    assert response.status_code == 400
    assert "The form has expired or did not come from this site." in text_of(response)
    wrong = anna.post(f"/tenants/{TENANT}/advisors/{membership_id}/remove",
                      data={"csrf_token": "forged"})
    assert wrong.status_code == 400
    assert len(active_memberships(bridge)) == 1


@pytest.mark.parametrize("user", ["bob", "sam", "eve"])
def test_remove_by_a_wrong_role_is_403_and_changes_nothing(app, bridge, user):
    bridge.join("carol")
    membership_id = bridge.membership_id("carol")
    client = signed_in(app, user)
    response = post_form_page(client, f"/tenants/{TENANT}/advisors/{membership_id}/remove")
    assert response.status_code == 403
    assert len(active_memberships(bridge)) == 1


def test_membership_of_another_tenant_cannot_be_removed_here(anna, bridge):
    bridge.join("bob", tenant=OTHER_TENANT)
    other = active_memberships(bridge, OTHER_TENANT)[0]
    response = post_form_page(anna, f"/tenants/{TENANT}/advisors/{other.id}/remove", headers=EN)
    assert response.status_code == 404
    assert "This advisor has no access to this tenant." in text_of(response)
    assert len(active_memberships(bridge, OTHER_TENANT)) == 1
    # And anna cannot address the other tenant's page at all.
    response = post_form_page(anna, f"/tenants/{OTHER_TENANT}/advisors/{other.id}/remove")
    assert response.status_code == 403
    assert len(active_memberships(bridge, OTHER_TENANT)) == 1


def test_permanent_advisor_can_be_removed_from_the_help_page(anna, bridge):
    bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    membership_id = active_memberships(bridge)[0].id
    response = post_form_page(anna, f"/tenants/{TENANT}/advisors/{membership_id}/remove")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/tenants/{TENANT}/help"
    assert active_memberships(bridge) == []


# --- user list ---
def test_user_list_marks_advisors(anna, bridge):
    bridge.join("bob")
    bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{DEMO_USERS['carol']['sub']}",
               user="sam")
    page = anna.get(f"/tenants/{TENANT}/users", headers=EN)
    assert page.status_code == 200
    text = text_of(page)
    assert "anna (you) Tenant administrator" in text
    assert "Bob Advisor bob@advisors.example Advisor temporary" in text
    assert DEMO_USERS["bob"]["sub"] not in text  # nobody reads a subject id
    assert re.search(r"Carol Advisor .* Advisor permanent", text)
    assert text.count("Remove from tenant") == 2
    german = text_of(anna.get(f"/tenants/{TENANT}/users", headers=DE))
    assert "Benutzer-Liste" in german and "Kundenberater" in german and "temporär" in german
    assert "Aus Mandant entfernen" in german


# --- settings: maximum age of temporary access (the API's rule: may only shorten) ---
def _max_age(bridge):
    with bridge.services.db.read() as session:
        return session.get(Tenant, TENANT).temporary_max_age_days


def test_max_age_shortens_and_applies_to_current_advisors(anna, bridge):
    bridge.join("bob")
    response = post_form_page(anna, f"/tenants/{TENANT}/settings/max-age",
                              {"temporary_max_age_days": "7"}, headers=EN)
    assert response.status_code == 303
    assert _max_age(bridge) == 7
    member = active_memberships(bridge)[0]
    assert member.expires_at <= member.created_at + timedelta(days=7)
    page = anna.get(response.headers["Location"], headers=EN)
    assert "Temporary access now lasts at most 7 days." in text_of(page)
    assert 'value="7"' in page.text


def test_max_age_ends_access_that_is_already_older(anna, bridge):
    bridge.join("bob")
    with bridge.services.db.transaction() as session:
        member = session.get(Membership, bridge.membership_id("bob"))
        member.created_at = utcnow() - timedelta(days=3)
    response = post_form_page(anna, f"/tenants/{TENANT}/settings/max-age",
                              {"temporary_max_age_days": "2"}, headers=EN)
    assert response.status_code == 303
    assert active_memberships(bridge) == []
    text = text_of(anna.get(response.headers["Location"], headers=EN))
    assert "1 temporary access ended because it was older." in text


@pytest.mark.parametrize("value", ["0", "31", "365", "-1", "abc", "", "7.5", "1e2"])
def test_max_age_outside_the_rule_is_refused(anna, bridge, value):
    response = post_form_page(anna, f"/tenants/{TENANT}/settings/max-age",
                              {"temporary_max_age_days": value}, headers=EN)
    assert response.status_code == 400
    assert "Please enter a whole number of days from 1 to 30." in text_of(response)
    assert 'aria-invalid="true"' in response.text
    assert _max_age(bridge) is None


def test_max_age_needs_csrf_and_the_tenant_admin(app, anna, bridge):
    response = anna.post(f"/tenants/{TENANT}/settings/max-age",
                         data={"temporary_max_age_days": "3"})
    assert response.status_code == 400
    for user in ("bob", "sam"):
        client = signed_in(app, user)
        response = post_form_page(client, f"/tenants/{TENANT}/settings/max-age",
                                  {"temporary_max_age_days": "3"})
        assert response.status_code == 403
    other = post_form_page(anna, f"/tenants/{OTHER_TENANT}/settings/max-age",
                           {"temporary_max_age_days": "3"})
    assert other.status_code == 403
    assert _max_age(bridge) is None


# --- settings: notification addresses ---
def _emails(bridge):
    with bridge.services.db.read() as session:
        return session.get(Tenant, TENANT).notification_emails


def test_notification_addresses_are_saved(anna, bridge):
    response = post_form_page(anna, f"/tenants/{TENANT}/settings/notifications",
                              {"notification_emails": "it@muster.example; anna@muster.example,"
                                                      " it@muster.example"}, headers=EN)
    assert response.status_code == 303
    assert _emails(bridge) == "it@muster.example, anna@muster.example"
    page = anna.get(response.headers["Location"], headers=EN)
    assert "Notifications go to: it@muster.example, anna@muster.example" in text_of(page)
    cleared = post_form_page(anna, f"/tenants/{TENANT}/settings/notifications",
                             {"notification_emails": " "})
    assert cleared.status_code == 303 and _emails(bridge) is None


@pytest.mark.parametrize("value,message", [
    ("not-an-address", "This is not an e-mail address: not-an-address"),
    ("a@b.example\r\nBcc: x@evil.example", "This is not an e-mail address"),
    ("Anna <anna@muster.example>", "This is not an e-mail address"),
    (",".join(f"u{i}@muster.example" for i in range(11)), "Please enter at most 10 addresses."),
])
def test_bad_notification_addresses_are_refused(anna, bridge, value, message):
    response = post_form_page(anna, f"/tenants/{TENANT}/settings/notifications",
                              {"notification_emails": value}, headers=EN)
    assert response.status_code == 400
    assert message in text_of(response)
    assert _emails(bridge) is None


# --- access log ---
def _story(bridge, anna):
    from conftest import wrong_code

    bridge.exchange("carol", code=wrong_code(bridge.current_code()))
    bridge.join("bob", reason="=HYPERLINK(\"http://evil.example\")")
    removed = post_form_page(anna, f"/tenants/{TENANT}/advisors/{bridge.membership_id('bob')}/remove")
    anna.get(removed.headers["Location"])  # shows (and so consumes) the flash message


def test_access_log_tells_who_did_what(anna, bridge):
    _story(bridge, anna)
    page = anna.get(f"/tenants/{TENANT}/log", headers=EN)
    assert page.status_code == 200
    text = text_of(page)
    assert "Wrong access code entered (attempt 1 for this code)." in text
    assert "Bob Advisor joined with the access code (temporary access)." in text
    assert "Tokens issued for the application advisor-console." in text
    assert "Bob Advisor was removed from the tenant. you (anna)" in text
    assert "Carol Advisor (advisor)" in text
    assert "New access code: the previous one was redeemed." in text
    assert text.index("Bob Advisor was removed") < text.index("Bob Advisor joined")  # newest first


@pytest.mark.parametrize("query,present,absent", [
    ("category=joins", ["Bob Advisor joined"], ["Wrong access code", "was removed"]),
    ("category=failed", ["Wrong access code"], ["Bob Advisor joined"]),
    ("category=removals", ["Bob Advisor was removed"], ["Bob Advisor joined"]),
    ("category=tokens", ["Tokens issued"], ["Bob Advisor joined"]),
    ("advisor=carol", ["Wrong access code"], ["Bob Advisor joined", "Tokens issued"]),
    # By username, name or e-mail: the advisor's token events too (they name no advisor).
    ("advisor=BOB", ["Bob Advisor joined", "Bob Advisor was removed", "Tokens issued"],
     ["Wrong access code"]),
    ("advisor=bob%40advisors", ["Bob Advisor joined", "Tokens issued"], ["Wrong access code"]),
    ("advisor=Bob+Adv", ["Bob Advisor joined", "Tokens issued"], ["Wrong access code"]),
    ("until=2000-01-01", ["No events match."], ["Bob Advisor joined"]),
    ("since=2000-01-01", ["Bob Advisor joined"], ["No events match."]),
])
def test_access_log_filters(anna, bridge, query, present, absent):
    _story(bridge, anna)
    text = text_of(anna.get(f"/tenants/{TENANT}/log?{query}", headers=EN))
    for item in present:
        assert item in text
    for item in absent:
        assert item not in text


@pytest.mark.parametrize("query", ["category=nonsense", "since=yesterday", "before=x"])
def test_access_log_bad_filter_is_400_with_a_message(anna, query):
    response = anna.get(f"/tenants/{TENANT}/log?{query}", headers=EN)
    assert response.status_code == 400
    assert 'class="error-box" role="alert"' in response.text


def test_access_log_pages_through_older_events(anna, bridge, monkeypatch):
    from conftest import wrong_code
    from idp_bridge.web import access_log

    monkeypatch.setattr(access_log, "PAGE_SIZE", 3)
    for _ in range(5):  # more wrong codes than fit on a page
        bridge.exchange("carol", code=wrong_code(bridge.current_code()))
    first = anna.get(f"/tenants/{TENANT}/log?category=failed", headers=EN)
    older = re.search(r'href="(/tenants/10042/log\?before=\d+[^"]*)"', first.text)
    assert older and "category=failed" in older.group(1)
    second = anna.get(older.group(1).replace("&amp;", "&"), headers=EN)
    assert second.status_code == 200
    assert text_of(second).count("Wrong access code") == 2


def test_access_log_csv_in_english_and_german(anna, bridge):
    _story(bridge, anna)
    english = anna.get(f"/tenants/{TENANT}/log.csv", headers=EN)
    assert english.status_code == 200 and english.mimetype == "text/csv"
    assert re.match(r'attachment; filename="access-log-10042-\d{8}-\d{4}\.csv"',
                    english.headers["Content-Disposition"])
    body = english.data.decode("utf-8")
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body[1:])))
    assert rows[0][:5] == ["Time", "Time (UTC)", "Event", "What happened", "Who"]
    events = [row[2] for row in rows[1:]]
    assert {"membership.created", "membership.ended", "access_code.failed",
            "token.issued"} <= set(events)
    # A reason that a spreadsheet would run as a formula is neutralised.
    joined = next(row for row in rows if row[2] == "membership.created")
    assert "'=HYPERLINK" not in joined[3]  # inside a sentence it is harmless text
    assert all(not cell.startswith(("=", "+", "@")) for row in rows for cell in row)
    german = anna.get(f"/tenants/{TENANT}/log.csv?category=joins", headers=DE)
    assert 'filename="zugriffsprotokoll-10042-' in german.headers["Content-Disposition"]
    german_rows = list(csv.reader(io.StringIO(german.data.decode("utf-8")[1:]), delimiter=";"))
    assert german_rows[0][:4] == ["Zeit", "Zeit (UTC)", "Ereignis", "Was geschah"]
    assert [row[2] for row in german_rows[1:]] == ["membership.created"]
    assert "ist mit dem Zugangscode beigetreten" in german_rows[1][3]


def test_csv_cells_that_look_like_formulas_are_prefixed():
    from idp_bridge.web.access_log import _cell

    assert _cell("=1+1") == "'=1+1"
    assert _cell("+49 30") == "'+49 30"
    assert _cell("@SUM(A1)") == "'@SUM(A1)"
    assert _cell("-2") == "'-2"
    assert _cell("bob") == "bob"


# --- language ---
def test_help_page_in_german(anna):
    page = anna.get(f"/tenants/{TENANT}/help", headers=DE)
    assert '<html lang="de">' in page.text
    text = text_of(page)
    for words in ("Hilfeseite", "Zugangscode für Kundenberater", "Mandantennummer",
                  "Kundenberater mit Zugriff", "Permanente Kundenberater", "Funktionsbereich",
                  "Berechtigungen des Kundenberaters", "Zahlungsverkehr", "Mandantenverwaltung",
                  "ISO 20022- und SEPA-Zahlungen", "Außenwirtschaftsverkehrs-Zahlungen",
                  "Voller Zugriff", "Lesen", "private EBICS-Schlüssel", "Benutzergruppe",
                  "Höchstdauer eines temporären Zugriffs", "Zugriffsprotokoll", "Benutzer-Liste"):
        assert words in text, words
    for english in ("Access code", "Advisors with access", "Functional area", "Bank accounts"):
        assert english not in text, english


def test_csrf_token_is_on_every_form(anna, bridge):
    bridge.join("bob")
    for path in (f"/tenants/{TENANT}/help", f"/tenants/{TENANT}/users",
                 f"/tenants/{TENANT}/advisors/{bridge.membership_id('bob')}/remove"):
        page = anna.get(path)
        forms = re.findall(r"<form[^>]*>.*?</form>", page.text, flags=re.S)
        post_forms = [f for f in forms if 'method="post"' in f]
        assert post_forms
        for form in post_forms:
            assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]{20,}">', form)


def test_every_audit_event_has_a_filter_and_a_sentence():
    from idp_bridge.domain import audit
    from idp_bridge.storage.models import AuditEvent
    from idp_bridge.web.access_log import CATEGORIES, describe

    assert sorted(e for events in CATEGORIES.values() for e in events) == sorted(audit.EVENTS)
    from flask import Flask
    from flask_babel import Babel

    app = Flask(__name__)
    Babel(app)
    with app.test_request_context():  # the sentences are translated, so they need a request
        for event in audit.EVENTS:
            assert describe(AuditEvent(event=event, detail={}), {}) != event
