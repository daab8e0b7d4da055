"""The advisor's pages: redeem a code with a reason, my tenants, leave, open a tenant in the
application (tokens handed over by an auto-submitted form POST)."""

from __future__ import annotations

import re
from html import unescape

import pytest

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events, wrong_code
from idp_bridge.devidp import DEMO_USERS
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of

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
    row = re.search(rf'<tr data-tenant="{TENANT}">.*?</tr>', page.text, flags=re.S).group(0)
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
    assert bob.get(f"/advisor/tenants/{TENANT}/leave").status_code == 404
    assert post_form_page(bob, f"/advisor/tenants/{TENANT}/leave").status_code == 404
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
                           "tenant"}
    assert fields["tenant"] == TENANT and fields["token_type"] == "Bearer"
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
    assert response.status_code == 400
    assert "You have no access to this tenant (any more)." in text_of(response)
    assert "handoff-form" not in response.text
    anna = signed_in(with_app.app, "anna")
    assert post_form_page(anna, f"/advisor/tenants/{TENANT}/open").status_code == 403
    with_app.join("bob")
    assert client.post(f"/advisor/tenants/{TENANT}/open").status_code == 400  # no CSRF token
    other = post_form_page(client, f"/advisor/tenants/{OTHER_TENANT}/open")
    assert other.status_code == 400 and "handoff-form" not in other.text


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
