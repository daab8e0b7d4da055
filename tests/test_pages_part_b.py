"""The pages where they still surprised (issue 12, part B, items 5, 7, 8 and 9):

5. the help page's "(until HH:MM)" comes with the code from the status endpoint; the advisor
   page has its own status endpoint, and a stale "Open" or "Leave" leads back to the advisor
   page with a message instead of an error page;
7. the fixed rights table is collapsed (``<details>``), confirmation details are a styled
   list, and a confirmation that can only fail shows why and the way back, no button;
8. guests show how their access really ends, and the rights heading says "rights", not
   "read rights" (the profile changes in Auswertung);
9. the example application's Open page looks like the product (the bridge's stylesheet, the
   names, local time, the language, a way back).

The browser stories of the same items are in tests/browser/test_browser_pages.py.
"""

from __future__ import annotations

import importlib.util
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AccessCodeState, Membership
from scopes.catalog import AREAS, advisor_scopes
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of

BOB = DEMO_USERS["bob"]["sub"]
APP_URL = "https://app.konfipay.example/tenants/{tenant}/open"
EXAMPLE_RS = Path(__file__).resolve().parents[1] / "deploy" / "example-resource-server" / \
    "example_resource_server.py"


@pytest.fixture
def anna(app):
    return signed_in(app, "anna")


@pytest.fixture
def bob(app):
    return signed_in(app, "bob")


def make_guest(bridge, user="bob", *, group_name="Berater Zahlungsverkehr"):
    """A guest membership made in the domain (the pages are what is tested here)."""
    s = bridge.services
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, TENANT)
        group = s.guests.create_group(session, TENANT, group_name, ["payments:read"],
                                      by="anna", now=utcnow())
        membership = s.memberships.create(
            session, tenant, subject=DEMO_USERS[user]["sub"], name=user, kind="guest",
            created_by=DEMO_USERS[user]["sub"], actor_role="advisor", now=utcnow(),
            group_id=group.id)
        return group.id, membership.id


def make_invitation(bridge, group_id):
    s = bridge.services
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, TENANT)
        return s.guests.invite(session, tenant, group_id=group_id, email="bob@example.com",
                               by="anna", now=utcnow()).id


def remove(bridge, membership_id):
    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership_id}")
    assert response.status_code in (200, 204), response.json


def main_part(response) -> str:
    """The page below the header (the header has the language and sign-out forms)."""
    return response.text.split("<main", 1)[1]


# --- item 5: the code's "(until HH:MM)" follows a rotation ---
def _until(page) -> str:
    return re.search(r'<span id="code-until">([^<]+)</span>', page.text).group(1)


@pytest.mark.parametrize("headers", [EN, DE])
def test_the_codes_until_time_comes_with_the_code(anna, bridge, headers):
    def code_issued(ago):
        with bridge.services.db.transaction() as session:
            session.get(AccessCodeState, TENANT).issued_at = utcnow() - ago

    ttl = bridge.services.codes.ttl
    bridge.current_code()  # the tenant's code state exists from its first look
    code_issued(ttl - timedelta(minutes=10))  # the code has 10 minutes left
    page = anna.get(f"/tenants/{TENANT}/help", headers=headers)
    shown = _until(page)
    status = anna.get(f"/tenants/{TENANT}/status.json", headers=headers).json
    assert status["expires_at_text"] == shown  # formatted as the page formats it
    # The code runs out: the next poll has a new code and a new until time.
    code_issued(ttl + timedelta(minutes=5))
    rotated = anna.get(f"/tenants/{TENANT}/status.json", headers=headers).json
    assert rotated["code"] != status["code"]
    assert rotated["expires_at"] > status["expires_at"]
    assert rotated["expires_at_text"] != status["expires_at_text"]
    assert _until(anna.get(f"/tenants/{TENANT}/help", headers=headers)) == \
        rotated["expires_at_text"]


def test_the_script_updates_the_until_time():
    script = (Path(__file__).resolve().parents[1] / "idp_bridge" / "web" / "static" /
              "app.js").read_text()
    assert 'getElementById("code-until")' in script and "data.expires_at_text" in script
    assert "data-advisor-status-url" in script


# --- item 5: the advisor page's status and stale buttons ---
def test_advisor_page_carries_what_its_script_needs(bob, bridge):
    bridge.join("bob")
    page = bob.get("/advisor", headers=EN)
    membership_id = bridge.membership_id("bob")
    assert 'data-advisor-status-url="/advisor/status.json"' in page.text
    row = re.search(r'<tr data-tenant="10042".*?</tr>', page.text, flags=re.S).group(0)
    assert f'data-membership="{membership_id}"' in row
    assert f'data-ended-text="Your access to tenant {TENANT} has ended."' in row
    assert 'data-ended-label="Access ended"' in row
    assert "<script>" not in page.text and "onclick" not in page.text


def test_advisor_status_lists_live_memberships_and_drops_removed_ones(bob, bridge):
    empty = bob.get("/advisor/status.json")
    assert empty.status_code == 200 and empty.mimetype == "application/json"
    assert empty.json["memberships"] == [] and empty.json["invitations"] == []
    bridge.join("bob")
    membership_id = bridge.membership_id("bob")
    body = bob.get("/advisor/status.json").json
    assert body["memberships"] == [{"id": membership_id, "tenant": TENANT, "kind": "temporary",
                                    "expires_at": body["memberships"][0]["expires_at"]}]
    assert body["memberships"][0]["expires_at"] > body["now"]
    remove(bridge, membership_id)
    assert bob.get("/advisor/status.json").json["memberships"] == []


def test_advisor_status_lists_open_invitations(bob, bridge):
    group_id, _membership = make_guest(bridge, "carol")
    with bridge.services.db.transaction() as session:
        invitation = bridge.services.guests.invite(
            session, bridge.services.memberships.tenant(session, TENANT), group_id=group_id,
            subject=BOB, by="anna", now=utcnow())
        invitation_id = invitation.id
    assert bob.get("/advisor/status.json").json["invitations"] == [invitation_id]


@pytest.mark.parametrize("user,status,error", [(None, 401, "login_required"),
                                               ("anna", 403, "forbidden"),
                                               ("sam", 403, "forbidden")])
def test_advisor_status_refuses_in_json(app, user, status, error):
    client = signed_in(app, user) if user else app.test_client()
    response = client.get("/advisor/status.json")
    assert response.status_code == status
    assert response.json == {"error": error}


@pytest.fixture
def with_app(bridge_with):
    return bridge_with(app_url=APP_URL)


def _issued(bridge) -> int:
    return len(audit_events(bridge, "token.issued"))


@pytest.mark.parametrize("headers,message", [
    (EN, f"Your access to tenant {TENANT} has ended. If you need access again, please ask "
         "the tenant."),
    (DE, f"Ihr Zugriff auf Mandant {TENANT} ist beendet. Wenn Sie wieder Zugriff brauchen, "
         "wenden Sie sich bitte an den Mandanten.")])
def test_a_stale_open_after_removal_leads_back_with_a_message(with_app, headers, message):
    client = signed_in(with_app.app, "bob")
    with_app.join("bob")
    page = client.get("/advisor", headers=headers)
    assert f'action="/advisor/tenants/{TENANT}/open"' in page.text
    remove(with_app, with_app.membership_id("bob"))
    issued = _issued(with_app)
    response = post_form_page(client, f"/advisor/tenants/{TENANT}/open", headers=headers)
    assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    assert "handoff-form" not in response.text
    assert _issued(with_app) == issued  # nothing was minted
    back = client.get("/advisor", headers=headers)
    assert back.status_code == 200
    assert message in text_of(back)
    assert 'class="flash error" role="alert"' in back.text
    assert f'data-tenant="{TENANT}"' not in back.text


def test_a_stale_open_of_an_expired_access_leads_back_too(with_app):
    client = signed_in(with_app.app, "bob")
    with_app.join("bob")
    with with_app.services.db.transaction() as session:
        member = session.get(Membership, with_app.membership_id("bob"))
        member.expires_at = utcnow() - timedelta(seconds=1)
    response = post_form_page(client, f"/advisor/tenants/{TENANT}/open", headers=EN)
    assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    assert f"Your access to tenant {TENANT} has ended." in text_of(
        client.get("/advisor", headers=EN))


def test_open_still_refuses_what_is_not_a_stale_button(with_app):
    client = signed_in(with_app.app, "bob")
    unknown = post_form_page(client, "/advisor/tenants/99999/open", headers=EN)
    assert unknown.status_code == 404
    assert "There is no tenant with this number." in text_of(unknown)
    anna = signed_in(with_app.app, "anna")
    assert post_form_page(anna, f"/advisor/tenants/{TENANT}/open").status_code == 403
    with_app.join("bob")
    assert client.post(f"/advisor/tenants/{TENANT}/open").status_code == 400  # no CSRF token
    assert len(active_memberships(with_app)) == 1


def test_a_stale_leave_leads_back_with_a_message(bob, bridge):
    bridge.join("bob")
    remove(bridge, bridge.membership_id("bob"))
    for response in (bob.get(f"/advisor/tenants/{TENANT}/leave", headers=EN),
                     post_form_page(bob, f"/advisor/tenants/{TENANT}/leave", headers=EN)):
        assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    assert f"Your access to tenant {TENANT} has ended." in text_of(bob.get("/advisor",
                                                                          headers=EN))


def test_open_hands_over_the_names_and_the_language(with_app):
    client = signed_in(with_app.app, "bob")
    with_app.join("bob")
    page = post_form_page(client, f"/advisor/tenants/{TENANT}/open", headers=DE)
    assert page.status_code == 200
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                             page.text.split('id="handoff-form"')[1]))
    assert fields["tenant_name"] == "Muster GmbH" and fields["lang"] == "de"
    member = active_memberships(with_app)[0]
    assert fields["advisor_name"] == (member.advisor_name or member.advisor_subject)
    assert "(Muster GmbH)" in text_of(page)


# --- item 7: rights collapsed, styled details, confirmations that can only fail ---
def test_the_rights_table_is_collapsed_with_a_summary(anna, bob):
    page = anna.get(f"/tenants/{TENANT}/help", headers=EN)
    details = re.search(r'<details id="rights">(.*?)</details>', page.text, flags=re.S)
    assert details, "the rights table is inside a closed <details>"
    summary = re.search(r"<summary>(.*?)</summary>", details.group(1), flags=re.S).group(1)
    assert 'id="rights-heading">Advisor rights (fixed)</h2>' in summary
    assert (f"Read access to all {len(AREAS)} functional areas, also changing in: Evaluation. "
            "Secrets such as PINs, keys and passwords are never included.") in summary
    assert "Functional area" in details.group(1)  # the table itself, inside
    german = anna.get(f"/tenants/{TENANT}/help", headers=DE).text
    assert "Lesezugriff auf alle 15 Funktionsbereiche, Ändern auch in: Auswertung." in german
    # The advisor's page collapses it too, in words for the advisor.
    mine = bob.get("/advisor", headers=EN)
    assert re.search(r"<details>\s*<summary><h2 id=\"rights-heading\">My rights in a tenant",
                     mine.text)
    assert "As an advisor you have the same fixed rights in every tenant" in text_of(mine)
    assert "Alternatively you can invite an advisor" not in text_of(mine)


def test_the_summary_follows_the_profile():
    """Every area is read, and exactly the areas with write in the profile are named."""
    granted = set(advisor_scopes())
    assert all(f"{area.key}:read" in granted for area in AREAS)
    assert [a.key for a in AREAS if f"{a.key}:write" in granted] == ["evaluation"]


def test_confirmation_details_are_a_styled_list(anna, bridge):
    bridge.join("bob", reason="Ticket 4711")
    membership_id = bridge.membership_id("bob")
    page = anna.get(f"/tenants/{TENANT}/advisors/{membership_id}/remove", headers=EN)
    assert page.status_code == 200
    assert re.search(r'<dl class="details">.*<dt>Reason / ticket</dt><dd>Ticket 4711</dd>',
                     page.text, flags=re.S)
    assert 'class="danger">Remove from tenant</button>' in page.text
    css = (Path(__file__).resolve().parents[1] / "idp_bridge" / "web" / "static" /
           "app.css").read_text()
    assert "dl.details {" in css and "dl.details dt" in css


def test_removing_an_ended_access_offers_no_button(anna, bridge):
    bridge.join("bob")
    membership_id = bridge.membership_id("bob")
    remove(bridge, membership_id)
    path = f"/tenants/{TENANT}/advisors/{membership_id}/remove"
    page = anna.get(f"{path}?from=users", headers=EN)
    assert page.status_code == 409
    text = text_of(page)
    assert "This access has already ended" in text
    assert "There is nothing to remove" in text
    assert 'method="post"' not in main_part(page)
    assert f'<a class="button" href="/tenants/{TENANT}/users">Back to the list</a>' in page.text
    german = anna.get(path, headers=DE)
    assert "Dieser Zugriff ist bereits beendet" in text_of(german)
    assert "Zurück zur Liste" in text_of(german)


def test_deleting_a_group_in_use_offers_no_button_but_the_way_back(anna, bridge):
    group_id, membership_id = make_guest(bridge)
    page = anna.get(f"/tenants/{TENANT}/groups/{group_id}/delete", headers=EN)
    assert page.status_code == 200
    text = text_of(page)
    assert "User group Berater Zahlungsverkehr cannot be deleted yet" in text
    assert "Guest users 1 Open invitations 0" in text
    assert 'method="post"' not in main_part(page)
    assert f'href="/tenants/{TENANT}/groups#guests">Back to user groups and guests' in page.text
    # Once the guest is gone the button is there.
    remove(bridge, membership_id)
    free = anna.get(f"/tenants/{TENANT}/groups/{group_id}/delete", headers=EN)
    assert 'class="danger">Delete user group</button>' in free.text
    # An open invitation blocks it the same way, and the way back leads to the invitations.
    make_invitation(bridge, group_id)
    invited = anna.get(f"/tenants/{TENANT}/groups/{group_id}/delete", headers=DE)
    assert "Benutzergruppe Berater Zahlungsverkehr kann noch nicht gelöscht werden" in \
        text_of(invited)
    assert f'href="/tenants/{TENANT}/groups#invitations"' in invited.text
    assert 'method="post"' not in main_part(invited)


def test_withdrawing_an_invitation_no_longer_open_offers_no_button(anna, bridge):
    group_id, _membership = make_guest(bridge)
    invitation_id = make_invitation(bridge, group_id)
    path = f"/tenants/{TENANT}/invitations/{invitation_id}/withdraw"
    assert 'class="danger">Withdraw invitation</button>' in anna.get(path, headers=EN).text
    assert post_form_page(anna, path).status_code == 303
    page = anna.get(path, headers=EN)
    assert page.status_code == 404
    assert "This invitation is no longer open" in text_of(page)
    assert 'method="post"' not in main_part(page)
    assert f'href="/tenants/{TENANT}/groups#invitations"' in page.text


# --- item 8: how guests' access ends; the rights heading ---
def test_guests_show_that_their_access_has_no_end_date(anna, bob, bridge):
    make_guest(bridge)
    help_page = anna.get(f"/tenants/{TENANT}/help", headers=EN)
    guests = help_page.text.split('id="guest-users"')[1].split("</section>")[0]
    assert "No end date" in guests
    assert "until you remove the guest user or the advisor leaves" in guests
    status = anna.get(f"/tenants/{TENANT}/status.json", headers=EN).json
    assert "until you remove the guest user or the advisor leaves" in status["guests_html"]
    users = text_of(anna.get(f"/tenants/{TENANT}/users", headers=DE))
    assert "Kein Enddatum bis Sie den Gastbenutzer entfernen oder er den Mandanten verlässt" \
        in users
    mine = text_of(bob.get("/advisor", headers=EN))
    assert "No end date until the tenant removes you or you leave" in mine
    assert "does not expire" not in mine


def test_a_guest_access_really_has_no_end_date(bridge):
    """What the pages say is what the domain does: no expiry, and a shorter maximum age of
    temporary access leaves guests alone."""
    _group, membership_id = make_guest(bridge)
    s = bridge.services
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, TENANT)
        assert s.memberships.set_temporary_max_age(session, tenant, 1, utcnow()) == 0
        assert s.memberships.expire_due(session, utcnow() + timedelta(days=3650)) == 0
    with s.db.read() as session:
        member = session.get(Membership, membership_id)
        assert member.expires_at is None and member.ended_at is None


@pytest.mark.parametrize("headers,heading,wrong", [
    (EN, "Advisor rights (fixed)", "Read rights"),
    (DE, "Rechte des Kundenberaters (fest vorgegeben)", "Leserechte")])
def test_the_rights_heading_does_not_say_read_rights(anna, bob, headers, heading, wrong):
    help_page = text_of(anna.get(f"/tenants/{TENANT}/help", headers=headers))
    assert heading in help_page and wrong not in help_page
    assert wrong not in text_of(bob.get("/advisor", headers=headers))


def test_the_catalog_has_no_read_rights_heading():
    po = (Path(__file__).resolve().parents[1] / "idp_bridge" / "web" / "translations" / "de" /
          "LC_MESSAGES" / "messages.po").read_text(encoding="utf-8")
    assert "Leserechte" not in po


# --- item 9: the example application's Open page ---
def _example():
    spec = importlib.util.spec_from_file_location("example_rs_part_b", EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StubGuard:
    """Validates like the real guard would for one token: the page is what is tested (the
    real guard on the page: tests/browser/test_browser_pages.py)."""

    issuer = "https://bridge.example"
    resource_metadata = None  # no RFC 9728 metadata to publish

    def __init__(self, example, claims, *, scopes=("payments:read",)):
        self.example, self.claims, self.scopes = example, claims, scopes

    def validate(self, token, *, tenant, scope):
        if token != "good" or tenant != self.claims["tenant"]:
            raise self.example.InvalidToken("the token is not valid")
        if scope not in self.scopes:
            raise self.example.InsufficientScope(scope)
        return self.claims

    def require(self, _scope, **_step_up):  # evaluation:write's acr_values and max_age
        return lambda view: view


@pytest.fixture
def example():
    return _example()


def _open(example, form, *, claims=None, zone="Europe/Berlin", headers=None):
    exp = int(datetime(2026, 12, 2, 13, 5, tzinfo=timezone.utc).timestamp())
    claims = claims or {"sub": BOB, "tenant": TENANT, "membership": "temporary",
                        "scope": "payments:read", "exp": exp}
    app = example.create_app(StubGuard(example, claims), zone=zone)
    return app.test_client().post(f"/tenants/{TENANT}/open", data=form, headers=headers or {})


def test_the_open_page_looks_like_the_product(example):
    response = _open(example, {"access_token": "good", "tenant_name": "Muster GmbH",
                               "advisor_name": "Bob Advisor", "lang": "en"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # The bridge's own stylesheet, allowed by the CSP; no inline style or script at all.
    assert '<link rel="stylesheet" href="https://bridge.example/static/web/app.css">' in html
    csp = response.headers["Content-Security-Policy"]
    assert "style-src https://bridge.example;" in csp and "script-src" not in csp
    assert "default-src 'none'" in csp and "form-action 'none'" in csp
    assert "<script" not in html and "style=" not in html and "<style" not in html
    assert 'class="top"' in html and 'class="card' in html and 'class="stack"' in html
    # Tenant and advisor names, local time (13:05 UTC is 14:05 in Berlin), a way back.
    assert '<h1 id="tenant-title">Tenant 10042 <span class="hint">(Muster GmbH)</span></h1>' in html
    assert '<span class="user" id="advisor">Bob Advisor</span>' in html
    assert "Signed in as advisor Bob Advisor (temporary access) until 14:05." in html
    assert "Times are shown in Europe/Berlin." in html
    assert '<a class="button small" id="back" href="https://bridge.example/advisor">' \
        'Back to my tenants</a>' in html
    assert "ISO 20022 and SEPA payments" in html and "EBICS" not in html


def test_the_open_page_speaks_the_bridges_language(example):
    html = _open(example, {"access_token": "good", "tenant_name": "Muster GmbH",
                           "advisor_name": "Bob Advisor", "lang": "de"}).get_data(as_text=True)
    assert '<html lang="de">' in html
    assert "Angemeldet als Kundenberater Bob Advisor (temporärer Zugriff) bis 14:05 Uhr." in html
    assert "Zurück zu meinen Mandanten" in html and "ISO 20022- und SEPA-Zahlungen" in html
    assert "Nie angezeigt: Signaturzugangsdaten, Freigaben (Unterschriften)." in html
    # Without a lang field: the browser's preference.
    accept = _open(example, {"access_token": "good"}, headers=DE).get_data(as_text=True)
    assert '<html lang="de">' in accept


def test_the_open_page_shows_local_time_of_its_zone(example):
    html = _open(example, {"access_token": "good", "lang": "en"},
                 zone="America/New_York").get_data(as_text=True)
    assert "until 08:05." in html and "Times are shown in America/New_York." in html
    with pytest.raises(Exception):
        example.create_app(StubGuard(example, {}), zone="Mars/Olympus")


def test_every_exclusion_has_a_german_text_on_the_open_page(example):
    assert {item for area in AREAS for item in area.read_excludes} == set(example.EXCLUDES_DE)


@pytest.mark.parametrize("name", ["Bob\u202eAdvisor", "Bob\nAdvisor", "x\u0000y"])
def test_names_with_control_or_direction_characters_are_not_shown(example, name):
    html = _open(example, {"access_token": "good", "advisor_name": name,
                           "tenant_name": name, "lang": "en"}).get_data(as_text=True)
    assert name not in html
    assert f"Signed in as advisor {BOB} (temporary access)" in html  # the token's subject


def test_a_rejected_token_shows_no_names_and_the_way_back(example):
    response = _open(example, {"access_token": "forged", "tenant_name": "Evil GmbH",
                               "advisor_name": "Mallory", "lang": "en"})
    assert response.status_code == 401
    html = response.get_data(as_text=True)
    assert "The access token was rejected" in html
    assert "Evil GmbH" not in html and "Mallory" not in html
    assert 'href="https://bridge.example/advisor"' in html
    assert 'class="error-box" role="alert"' in html


def test_other_tenant_open_with_a_token_for_this_tenant_is_rejected(example):
    claims = {"sub": BOB, "tenant": OTHER_TENANT, "membership": "temporary", "scope": "",
              "exp": 0}
    response = _open(example, {"access_token": "good", "lang": "en"}, claims=claims)
    assert response.status_code == 401
