"""Refusals carry stable codes, and each entry point maps them in one place
(idp_bridge/domain/errors.py, idp_bridge/surfaces.py, idp_bridge/api/common.py,
idp_bridge/web/errors.py):

- every code raised anywhere (``code="…"``, or a class's ``code = "…"``) has a page text in
  English and German; a code without one would fall back to the generic text of its kind;
- each kind gets the same status on the API and the pages, and the API's ``error``;
- the two refusals that were 500s: a guest whose user group has no permissions pressing
  "Open" gets a 403 page (the token endpoint: ``invalid_scope``), a page join while the
  upstream account check (Keycloak) is down a 503 page (the token endpoint: 503) — and
  neither changes anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask_babel import force_locale

from conftest import TENANT, active_memberships, audit_events, dump_database
from idp_bridge import surfaces
from idp_bridge.api.common import ERRORS, problem
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain import errors
from idp_bridge.domain.errors import DomainError
from idp_bridge.upstream.oidc import UpstreamUnavailable
from idp_bridge.web.errors import FIELD_MESSAGES, PAGE_MESSAGES, explain
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of

ROOT = Path(__file__).resolve().parents[1]
BOB = DEMO_USERS["bob"]["sub"]
APP_URL = "https://app.konfipay.example/tenants/{tenant}/open"
_CODE_ARGUMENT = re.compile(r'\bcode="([a-z_]+)"')
_CODE_ATTRIBUTE = re.compile(r'^\s+(?:kind, )?code = (?:"[a-z_]+", )?"([a-z_]+)"$', re.M)
#: Codes of the base classes: the generic text of their kind is their page text.
GENERIC = {cls.code for cls in (errors.DomainError, errors.InvalidInput, errors.NotFound,
                                errors.Forbidden, errors.Conflict, errors.TargetRefused,
                                errors.Unavailable)}
EXPECTED = {  # kind: (status on the API and the pages, the API's error)
    "invalid": (400, "invalid_request"), "not_found": (404, "not_found"),
    "forbidden": (403, "forbidden"), "conflict": (409, "conflict"),
    "refused": (400, "invalid_request"), "scope": (403, "forbidden"),
    "target": (400, "invalid_request"), "unavailable": (503, "temporarily_unavailable"),
}


def raised_codes() -> set[str]:
    found = set()
    for path in (ROOT / "idp_bridge").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found.update(_CODE_ARGUMENT.findall(text), _CODE_ATTRIBUTE.findall(text))
    return found


class _Refusal(DomainError):
    def __init__(self, kind: str, code: str, field: str | None = None):
        super().__init__("a refusal", code=code)
        self.kind = kind
        if field is not None:
            self.field = field


def test_codes_are_found():
    codes = raised_codes()
    assert {"unknown_tenant", "not_member", "code_rate_limited", "not_tenant_admin",
            "no_permissions", "upstream_unavailable", "unsafe_text"} <= codes
    assert all(re.fullmatch(r"[a-z][a-z_]*", c) for c in codes)


def test_every_code_has_a_page_text():
    missing = sorted(raised_codes() - set(PAGE_MESSAGES) - GENERIC)
    assert missing == [], "add these codes to PAGE_MESSAGES in idp_bridge/web/errors.py"
    assert {code for code, _field in FIELD_MESSAGES} <= set(PAGE_MESSAGES)


def test_every_kind_has_a_status():
    assert set(errors.KINDS) == set(surfaces.STATUS) == set(ERRORS) == set(EXPECTED)


@pytest.mark.parametrize("code", sorted(set(PAGE_MESSAGES)))
def test_every_page_text_is_in_english_and_german(app, code):
    refusal = _Refusal("invalid", code)
    with app.test_request_context(f"/tenants/{TENANT}/help"):
        with force_locale("en"):
            english = explain(refusal)[1]
        with force_locale("de"):
            german = explain(refusal)[1]
    assert english and german and english != german, (english, german)


@pytest.mark.parametrize("code, field", sorted(FIELD_MESSAGES))
def test_field_texts_are_more_precise(app, code, field):
    with app.test_request_context("/"), force_locale("de"):
        precise = explain(_Refusal("invalid", code, field))[1]
        general = explain(_Refusal("invalid", code, "name"))[1]
    assert precise != general


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_maps_to_one_status_on_api_and_pages(app, kind):
    status, error = EXPECTED[kind]
    with app.test_request_context("/api/tenants/x"):
        response = problem(_Refusal(kind, "some_code"))
        assert (response.status_code, response.json["error"]) == (status, error)
        assert response.json["error_code"] == "some_code"
    with app.test_request_context("/"), force_locale("en"):
        page_status, text = explain(_Refusal(kind, "no_text_for_this_code"))
    assert page_status == status
    assert text  # the generic text of the status


def test_unknown_code_gets_the_generic_text_of_its_kind(app):
    with app.test_request_context("/"), force_locale("en"):
        assert explain(_Refusal("conflict", "no_such_code")) == (
            409, "This cannot be done in the current state.")
        assert explain(_Refusal("not_found", "no_such_code")) == (404, "This page does not exist.")


def test_api_refusals_carry_the_code(bridge):
    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/nope")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert response.json["error_code"] == "unknown_membership"
    refused = bridge.api("get", f"/api/tenants/{TENANT}/memberships", user="bob")
    assert (refused.status_code, refused.json["error"], refused.json["error_code"]) == (
        403, "forbidden", "not_tenant_admin")


# --- the two refusals that were 500s ---------------------------------------------------
@pytest.fixture
def with_app(bridge_with):
    return bridge_with(app_url=APP_URL)


def _guest_without_permissions(bridge) -> None:
    group = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                       json={"name": "Nothing yet", "permissions": []})
    assert group.status_code == 201, group.json
    invitation = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                            json={"group": group.json["id"], "subject": BOB})
    assert invitation.status_code == 201, invitation.json
    accepted = bridge.api("post", f"/api/me/invitations/{invitation.json['id']}/accept",
                          user="bob")
    assert accepted.status_code == 201, accepted.json


@pytest.mark.parametrize("headers, message", [
    (EN, "Your user group in this tenant has no permissions, so there is nothing to open."),
    (DE, "Ihre Benutzergruppe hat in diesem Mandanten keine Berechtigungen"),
])
def test_open_as_a_guest_without_permissions_is_a_403_page(with_app, headers, message):
    _guest_without_permissions(with_app)
    client = signed_in(with_app.app, "bob")
    before = dump_database(with_app.services.db)
    response = post_form_page(client, f"/advisor/tenants/{TENANT}/open", headers=headers)
    assert response.status_code == 403 and response.mimetype == "text/html"
    assert message in text_of(response)
    assert "handoff-form" not in response.text
    assert dump_database(with_app.services.db) == before  # no token family, no audit event
    # the token endpoint refuses the same request as invalid_scope
    token = with_app.exchange("bob")
    assert (token.status_code, token.json["error"]) == (400, "invalid_scope")


class _KeycloakDown:
    def check_account(self, subject):
        raise UpstreamUnavailable("Keycloak unreachable (ConnectError)")


@pytest.mark.parametrize("headers, message", [
    (EN, "The identity provider cannot be reached. Please try again in a moment."),
    (DE, "Der Identitätsanbieter ist nicht erreichbar."),
])
def test_page_join_while_keycloak_is_down_is_a_503_page(bridge, app, headers, message):
    bridge.services.tokens.accounts = _KeycloakDown()
    client = signed_in(app, "bob")
    code = bridge.current_code()
    before = dump_database(bridge.services.db)
    response = post_form_page(client, "/advisor/join", {"tenant": TENANT, "code": code,
                                                        "reason": ""}, headers=headers)
    assert response.status_code == 503 and response.mimetype == "text/html"
    assert response.headers["Retry-After"] == "5"
    assert message in text_of(response)
    assert dump_database(bridge.services.db) == before  # nothing joined, the code unchanged
    assert active_memberships(bridge) == [] and audit_events(bridge, "membership.created") == []
    assert bridge.current_code() == code
    # the token endpoint answers the same refusal with 503 temporarily_unavailable
    token = bridge.exchange("bob", code=code)
    assert (token.status_code, token.json["error"]) == (503, "temporarily_unavailable")
