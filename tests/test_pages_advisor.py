"""The advisor's pages: redeem a code with a reason, my tenants, leave, open a tenant in the
application (tokens handed over by an auto-submitted form POST)."""

from __future__ import annotations

import re
from html import unescape

import pytest

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events, wrong_code
from idp_bridge.devidp import DEMO_USERS
from test_pages_helpers import DE, EN, edit_signed_in_user, post_form_page, signed_in, text_of

BOB = DEMO_USERS["bob"]["sub"]
APP_URL = "https://app.konfipay.example/tenants/{tenant}/open"


@pytest.fixture
def bob(app):
    return signed_in(app, "bob")


def join(client, tenant=TENANT, code="", reason="", headers=EN):
    return post_form_page(client, "/advisor/join", {"tenant": tenant, "code": code,
                                                    "reason": reason}, headers=headers)


def test_advisor_page_has_the_redeem_form_and_the_rights(bob):
    page = bob.get("/advisor", headers=EN)
    assert page.status_code == 200
    text = text_of(page)
    assert "Join a tenant" in text and "You have no access to any tenant at the moment." in text
    for label, field in (("Tenant number", "tenant"), ("Access code", "code"),
                         ("Reason or ticket", "reason")):
        assert re.search(rf'<label for="{field}">{label}', page.text)
        assert f'id="{field}" name="{field}"' in page.text
    assert "Full access (read and change)" in text  # the fixed rights, for the advisor too


def test_redeem_with_a_reason_then_see_the_tenant(bob, bridge):
    code = bridge.current_code()
    response = join(bob, code=code.lower().replace("-", " "), reason="Ticket 4711")
    assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    page = bob.get("/advisor", headers=EN)
    text = text_of(page)
    assert f"You now have access to tenant {TENANT} (Muster GmbH)." in text
    row = re.search(rf'<tr data-tenant="{TENANT}"[^>]*>.*?</tr>', page.text, flags=re.S).group(0)
    assert "temporary" in row and "Muster GmbH" in row and "Leave" in row
    member = active_memberships(bridge)[0]
    assert (member.advisor_subject, member.reason, member.kind) == (BOB, "Ticket 4711", "temporary")
    created = audit_events(bridge, "membership.created")[0]
    assert created["client_id"] == "web" and created["actor"] == BOB
    assert bridge.current_code() != code  # redeemed codes rotate


@pytest.mark.parametrize("tenant,code,reason,status,message", [
    (TENANT, "AAAA-AAAA", "", 400, "The access code is wrong or no longer valid."),
    (TENANT, "ABC", "", 400, "An access code has 8 characters, like ABCD-EFGH."),
    (TENANT, "", "", 400, "Please enter the tenant number and the access code."),
    ("", "AAAA-AAAA", "", 400, "Please enter the tenant number and the access code."),
    ("99999", "AAAA-AAAA", "", 404, "There is no tenant with this number."),
    (TENANT, "{code}", "x" * 201, 400, "The reason is too long."),
    (TENANT, "{code}", "line\nbreak", 400, "The reason contains characters that are not allowed."),
])
def test_redeem_errors_are_clear_and_join_nothing(bob, bridge, tenant, code, reason, status,
                                                  message):
    response = join(bob, tenant=tenant, code=code.replace("{code}", bridge.current_code()),
                    reason=reason)
    assert response.status_code == status
    assert message in text_of(response)
    assert 'class="error-box" role="alert"' in response.text
    assert active_memberships(bridge) == []
    # The form keeps what was typed, except the code.
    assert f'value="{tenant}"' in response.text


def test_redeem_twice_says_so(bob, bridge):
    join(bob, code=bridge.current_code())
    again = join(bob, code=bridge.current_code())
    assert again.status_code == 409
    assert "You already have access to this tenant." in text_of(again)
    assert len(active_memberships(bridge)) == 1


def test_too_many_wrong_codes_are_limited(bob, bridge):
    for _ in range(10):
        join(bob, code=wrong_code(bridge.current_code()))
    response = join(bob, code=bridge.current_code())
    assert response.status_code == 400
    assert "Too many wrong access codes." in text_of(response)
    assert active_memberships(bridge) == []


def test_redeem_without_csrf_token_is_rejected(bob, bridge):
    response = bob.post("/advisor/join", data={"tenant": TENANT, "code": bridge.current_code()})
    assert response.status_code == 400
    assert active_memberships(bridge) == []


@pytest.mark.parametrize("user", ["anna", "sam", "eve"])
def test_non_advisors_are_refused(app, bridge, user):
    client = signed_in(app, user)
    assert client.get("/advisor", headers=EN).status_code == 403
    response = join(client, code=bridge.current_code())
    assert response.status_code == 403
    assert "This page is for advisors." in text_of(response)
    assert active_memberships(bridge) == []


def test_redeem_needs_mfa_when_required(bridge_with):
    strict = bridge_with(mfa_required=True)
    client = signed_in(strict.app, "bob")  # the development provider signs in with acr 1
    response = join(client, code=strict.current_code())
    assert response.status_code == 403
    assert "second factor" in text_of(response)
    assert active_memberships(strict) == []


def test_leave_asks_first_then_ends_the_grant(bob, bridge):
    tokens = bridge.join("bob")
    confirm = bob.get(f"/advisor/tenants/{TENANT}/leave", headers=EN)
    assert confirm.status_code == 200
    assert f"Leave tenant {TENANT} (Muster GmbH)?" in text_of(confirm)
    assert len(active_memberships(bridge)) == 1
    response = post_form_page(bob, f"/advisor/tenants/{TENANT}/leave", headers=EN)
    assert response.status_code == 303
    assert active_memberships(bridge) == []
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    page = bob.get("/advisor", headers=EN)
    assert f"You have left tenant {TENANT}. Your access has ended." in text_of(page)
    assert f'data-tenant="{TENANT}"' not in page.text
    ended = audit_events(bridge, "membership.ended")[0]
    assert ended["detail"]["reason"] == "left"


def test_leave_is_only_for_own_memberships(app, bob, bridge):
    bridge.join("carol")
    # bob has no access here: back to his page with a message (issue 12, item 5), not a
    # 404 page; carol's membership is untouched.
    for response in (bob.get(f"/advisor/tenants/{TENANT}/leave"),
                     post_form_page(bob, f"/advisor/tenants/{TENANT}/leave")):
        assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    assert bob.post(f"/advisor/tenants/{TENANT}/leave").status_code == 400  # no CSRF token
    anna = signed_in(app, "anna")
    assert post_form_page(anna, f"/advisor/tenants/{TENANT}/leave").status_code == 403
    assert len(active_memberships(bridge)) == 1


# --- open a tenant in the application ---
@pytest.fixture
def with_app(bridge_with):
    return bridge_with(app_url=APP_URL)


def _hidden_fields(html: str) -> dict:
    """The hidden fields of the hand-over form."""
    form = re.search(r'<form id="handoff-form".*?</form>', html, flags=re.S).group(0)
    return {name: unescape(value) for name, value in
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)}


def test_open_hands_tenant_scoped_tokens_to_the_application(with_app):
    client = signed_in(with_app.app, "bob")
    with_app.join("bob")
    page = client.get("/advisor", headers=EN)
    assert f'action="/advisor/tenants/{TENANT}/open"' in page.text
    response = post_form_page(client, f"/advisor/tenants/{TENANT}/open", headers=EN)
    assert response.status_code == 200
    target = APP_URL.format(tenant=TENANT)
    assert f'<form id="handoff-form" method="post" action="{target}"' in response.text
    fields = _hidden_fields(response.text)
    assert set(fields) == {"access_token", "token_type", "expires_in", "scope", "refresh_token",
                           "tenant", "tenant_name", "advisor_name", "lang"}
    assert fields["tenant"] == TENANT and fields["token_type"] == "Bearer"
    assert fields["tenant_name"] == "Muster GmbH" and fields["lang"] == "en"
    assert "payments:read" in fields["scope"].split()
    introspection = with_app.introspect(fields["access_token"]).json
    assert introspection["active"] is True
    assert introspection["tenant"] == TENANT and introspection["sub"] == BOB
    assert introspection["client_id"] == "advisor-console"
    # Only this page may post to the application's origin; it is never cached or framed.
    csp = response.headers["Content-Security-Policy"]
    assert "form-action 'self'" in csp and "https://app.konfipay.example" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "https://app.konfipay.example" not in client.get("/advisor").headers[
        "Content-Security-Policy"]
    # The application refreshes with its own client credentials.
    refreshed = with_app.token({"grant_type": "refresh_token",
                                "refresh_token": fields["refresh_token"]})
    assert refreshed.status_code == 200


def test_open_is_refused_without_membership_or_role(with_app):
    client = signed_in(with_app.app, "bob")
    response = post_form_page(client, f"/advisor/tenants/{TENANT}/open", headers=EN)
    # No membership: back to the advisor page with a message (issue 12, item 5).
    assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    assert f"Your access to tenant {TENANT} has ended." in text_of(
        client.get("/advisor", headers=EN))
    anna = signed_in(with_app.app, "anna")
    assert post_form_page(anna, f"/advisor/tenants/{TENANT}/open").status_code == 403
    with_app.join("bob")
    assert client.post(f"/advisor/tenants/{TENANT}/open").status_code == 400  # no CSRF token
    other = post_form_page(client, f"/advisor/tenants/{OTHER_TENANT}/open")
    assert other.status_code == 303 and "handoff-form" not in other.text


def test_open_needs_a_configured_application(bob, bridge):
    bridge.join("bob")
    assert "/open" not in bob.get("/advisor").text
    response = post_form_page(bob, f"/advisor/tenants/{TENANT}/open", headers=EN)
    assert response.status_code == 404
    assert "No application is configured" in text_of(response)


def test_advisor_page_in_german(bob, bridge):
    bridge.join("bob", reason="Ticket 4711")
    text = text_of(bob.get("/advisor", headers=DE))
    for words in ("Meine Mandanten", "Einem Mandanten beitreten", "Mandantennummer",
                  "Zugangscode", "Grund oder Ticket", "temporär", "Verlassen",
                  "Mandanten, auf die ich Zugriff habe"):
        assert words in text, words
    wrong = join(bob, tenant=OTHER_TENANT, code="AAAA-AAAA", headers=DE)
    assert "Der Zugangscode ist falsch oder nicht mehr gültig." in text_of(wrong)


def test_app_url_setting_is_validated(settings):
    from idp_bridge.settings import SettingsError

    with pytest.raises(SettingsError, match="app_url"):
        settings.replace(app_url="javascript:alert(1)")
    with pytest.raises(SettingsError, match="app_url"):
        settings.replace(mode="production", app_url="http://app.example/",
                         issuer="https://b.example", upstream_issuer="https://sso.example")


# --- invitations as a guest user (issue 7) ---
def _invite(bridge, *, name="Berater Zahlungsverkehr", **who):
    group = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                       json={"name": name, "permissions": ["payments:read"]})
    assert group.status_code == 201, group.json
    invitation = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                            json={"group": group.json["id"], **(who or {"subject": BOB})})
    assert invitation.status_code == 201, invitation.json
    return invitation.json["id"]


def accept(client, invitation_id, headers=EN):
    return post_form_page(client, f"/advisor/invitations/{invitation_id}/accept",
                          headers=headers)


def test_invitations_are_listed_and_accepted(bob, bridge):
    invitation_id = _invite(bridge)
    page = bob.get("/advisor", headers=EN)
    row = re.search(rf'<tr data-invitation="{invitation_id}">.*?</tr>', page.text,
                    flags=re.S).group(0)
    assert TENANT in row and "Muster GmbH" in row and "Berater Zahlungsverkehr" in row
    assert f'action="/advisor/invitations/{invitation_id}/accept"' in row
    assert "in 7 days" in text_of(page)
    assert active_memberships(bridge) == []  # listing changes nothing
    response = accept(bob, invitation_id)
    assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    [member] = active_memberships(bridge)
    assert (member.advisor_subject, member.kind) == (BOB, "guest")
    assert member.group_id is not None
    page = bob.get("/advisor", headers=EN)
    text = text_of(page)
    assert (f"You are now a guest user of tenant {TENANT} (Muster GmbH) with the user group "
            "Berater Zahlungsverkehr.") in text
    assert "data-invitation=" not in page.text
    mine = re.search(rf'<tr data-tenant="{TENANT}"[^>]*>.*?</tr>', page.text, flags=re.S).group(0)
    assert "guest" in mine and "User group: Berater Zahlungsverkehr" in mine
    # the guest's tokens carry the group's permissions
    tokens = bridge.exchange("bob")
    assert tokens.status_code == 200 and tokens.json["scope"] == "payments:read"


def test_invitations_in_german(bob, bridge):
    invitation_id = _invite(bridge)
    text = text_of(bob.get("/advisor", headers=DE))
    for words in ("Einladungen als Gastbenutzer", "Benutzergruppe", "Gültig bis", "Annehmen",
                  "Berater Zahlungsverkehr"):
        assert words in text, words
    accept(bob, invitation_id, headers=DE)
    text = text_of(bob.get("/advisor", headers=DE))
    assert (f"Sie sind jetzt Gastbenutzer des Mandanten {TENANT} (Muster GmbH) mit der "
            "Benutzergruppe Berater Zahlungsverkehr.") in text
    assert "Gast Benutzergruppe: Berater Zahlungsverkehr" in text


def test_no_invitation_section_without_invitations(bob):
    assert 'id="invitations"' not in bob.get("/advisor").text


def test_accept_needs_the_csrf_token(bob, bridge):
    invitation_id = _invite(bridge)
    response = bob.post(f"/advisor/invitations/{invitation_id}/accept", headers=EN)
    assert response.status_code == 400
    assert "The form has expired or did not come from this site." in text_of(response)
    assert active_memberships(bridge) == []


@pytest.mark.parametrize("user", ["anna", "sam", "eve"])
def test_accept_by_a_non_advisor_is_403(app, bridge, user):
    invitation_id = _invite(bridge)
    response = accept(signed_in(app, user), invitation_id)
    assert response.status_code == 403
    assert "This page is for advisors." in text_of(response)
    assert active_memberships(bridge) == []


def test_an_invitation_for_someone_else_cannot_be_accepted(app, bridge):
    invitation_id = _invite(bridge)  # for bob
    carol = signed_in(app, "carol")
    assert "data-invitation=" not in carol.get("/advisor").text
    response = accept(carol, invitation_id)
    assert response.status_code == 404
    assert "This invitation does not exist or is not meant for you." in text_of(response)
    unknown = accept(carol, "00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404
    assert active_memberships(bridge) == []


def _withdraw(bridge, invitation_id):
    assert bridge.api("delete", f"/api/tenants/{TENANT}/invitations/{invitation_id}"
                      ).status_code == 204


def _expire(bridge, invitation_id):
    from datetime import timedelta

    from sqlalchemy import update

    from idp_bridge.storage.db import utcnow
    from idp_bridge.storage.models import Invitation

    with bridge.services.db.transaction() as session:
        session.execute(update(Invitation).where(Invitation.id == invitation_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))


@pytest.mark.parametrize("spoil,message", [
    (_withdraw, "This invitation was withdrawn by the tenant."),
    (_expire, "This invitation has expired. Please ask the tenant for a new one."),
])
def test_withdrawn_or_expired_invitations_are_refused(bob, bridge, spoil, message):
    invitation_id = _invite(bridge)
    spoil(bridge, invitation_id)
    assert "data-invitation=" not in bob.get("/advisor").text
    response = accept(bob, invitation_id)
    assert response.status_code == 409
    assert message in text_of(response)
    assert 'id="invitation-error" class="error-box" role="alert"' in response.text
    assert active_memberships(bridge) == []


def test_accepting_twice_and_as_a_temporary_advisor_is_refused(bob, bridge):
    invitation_id = _invite(bridge)
    assert accept(bob, invitation_id).status_code == 303
    again = accept(bob, invitation_id)
    assert again.status_code == 409
    assert "You have already accepted this invitation." in text_of(again)
    # carol joins with a code first: an advisor membership is not turned into a guest one
    bridge.join("carol")
    invitation_id = _invite(bridge, name="Zweite", subject=DEMO_USERS["carol"]["sub"])
    carol = signed_in(bridge.app, "carol")
    response = accept(carol, invitation_id, headers=DE)
    assert response.status_code == 409
    assert "Sie haben bereits als Kundenberater Zugriff auf diesen Mandanten." in text_of(response)
    kinds = sorted(m.kind for m in active_memberships(bridge))
    assert kinds == ["guest", "temporary"]


def test_an_invitation_by_email_needs_a_verified_address(bob, bridge):
    invitation_id = _invite(bridge, email="Bob@Advisors.example")
    # the development provider does not say that bob's address is verified
    assert "data-invitation=" not in bob.get("/advisor").text
    assert accept(bob, invitation_id).status_code == 404
    edit_signed_in_user(bob, lambda user: user.update(email_verified=True))
    assert f'data-invitation="{invitation_id}"' in bob.get("/advisor").text
    assert accept(bob, invitation_id).status_code == 303
    assert [m.kind for m in active_memberships(bridge)] == ["guest"]
