"""Token Revocation (RFC 7009) at ``/revoke``: revoking a token revokes its family (``sid``),
never the membership (DESIGN.md sections 5, 6 and 8)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    RS_CLIENT_ID,
    TENANT,
    TOKEN_EXCHANGE,
    active_memberships,
    audit_events,
    post_form,
    verify_access_token,
)
from idp_bridge.services.operator import add_client
from idp_bridge.storage.models import Revocation

INACTIVE = {"active": False}


def revoke(bridge, token, hint=None, auth=None):
    pairs = [("token", token)] + ([("token_type_hint", hint)] if hint else [])
    return post_form(bridge.client, "/revoke", pairs, auth=auth or bridge.auth())


def refresh(bridge, refresh_token):
    return bridge.token({"grant_type": "refresh_token", "refresh_token": refresh_token})


@pytest.mark.parametrize("which, hint", [
    ("refresh_token", None),
    ("refresh_token", "refresh_token"),
    ("refresh_token", "access_token"),   # a wrong hint only changes the search order
    ("access_token", None),
    ("access_token", "access_token"),
    ("access_token", "refresh_token"),
])
def test_revoking_a_token_revokes_its_family_not_the_membership(bridge, which, hint):
    body = bridge.join("bob")
    successor = refresh(bridge, body["refresh_token"]).json  # same family
    other = bridge.exchange("bob").json                      # another family, same grant
    sid = verify_access_token(bridge, body["access_token"])[1]["sid"]

    response = revoke(bridge, successor[which], hint)
    assert response.status_code == 200
    assert response.json == {}
    assert response.headers["Cache-Control"] == "no-store"

    for token in (body["access_token"], successor["access_token"], successor["refresh_token"]):
        assert bridge.introspect(token).json == INACTIVE
    response = refresh(bridge, successor["refresh_token"])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    # The membership and its other families live on.
    assert len(active_memberships(bridge)) == 1
    assert bridge.introspect(other["access_token"]).json["active"] is True
    assert refresh(bridge, other["refresh_token"]).status_code == 200
    assert bridge.exchange("bob").status_code == 200
    events = audit_events(bridge, "token.family_revoked")
    assert [(e["detail"]["sid"], e["detail"]["reason"], e["actor"]) for e in events] == [
        (sid, "revoked_by_client", CLIENT_ID)]
    with bridge.services.db.read() as session:
        published = session.scalars(select(Revocation)).all()
        assert [(r.kind, r.value) for r in published] == [("family", sid)]


def test_revoking_twice_is_fine(bridge):
    body = bridge.join("bob")
    assert revoke(bridge, body["refresh_token"]).status_code == 200
    assert revoke(bridge, body["refresh_token"]).status_code == 200
    assert revoke(bridge, body["access_token"]).status_code == 200
    assert len(audit_events(bridge, "token.family_revoked")) == 1


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
@pytest.mark.parametrize("intruder", ["second-console", RS_CLIENT_ID])
def test_another_client_cannot_revoke(bridge, which, intruder):
    secret = add_client(bridge.services.db, "second-console")
    auth = ("second-console", secret) if intruder == "second-console" else \
        (RS_CLIENT_ID, bridge.rs_secret)
    body = bridge.join("bob")
    response = revoke(bridge, body[which], auth=auth)
    # Authlib's RevocationEndpoint refuses a token issued to another client so.
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert bridge.introspect(body["access_token"]).json["active"] is True
    assert refresh(bridge, body["refresh_token"]).status_code == 200
    assert audit_events(bridge, "token.family_revoked") == []


@pytest.mark.parametrize("token", ["garbage", "", "a.b.c", "x" * 9000])
def test_unknown_token_is_answered_200(bridge, token):
    body = bridge.join("bob")
    response = revoke(bridge, token)
    assert response.status_code == 200
    assert response.json == {}
    assert bridge.introspect(body["access_token"]).json["active"] is True


def test_token_of_an_ended_membership_is_answered_200(bridge):
    body = bridge.join("bob")
    bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{bridge.membership_id()}")
    assert revoke(bridge, body["refresh_token"]).status_code == 200
    assert audit_events(bridge, "token.family_revoked") == []


@pytest.mark.parametrize("auth", [
    None,
    (CLIENT_ID, "w" * 43),
    ("no-such-client", "w" * 43),
], ids=["none", "wrong secret", "unknown client"])
def test_revocation_needs_client_authentication(bridge, auth):
    body = bridge.join("bob")
    response = post_form(bridge.client, "/revoke", [("token", body["refresh_token"])], auth=auth)
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert bridge.secret not in response.get_data(as_text=True)
    assert refresh(bridge, body["refresh_token"]).status_code == 200


@pytest.mark.parametrize("pairs, error", [
    ([], "invalid_request"),
    ([("token", "{refresh_token}"), ("token_type_hint", "id_token")], "unsupported_token_type"),
], ids=["no token", "unsupported hint"])
def test_malformed_revocation_requests(bridge, pairs, error):
    body = bridge.join("bob")
    response = post_form(bridge.client, "/revoke",
                         [(k, v.format(**body)) for k, v in pairs], auth=bridge.auth())
    assert response.status_code == 400
    assert response.json["error"] == error
    assert refresh(bridge, body["refresh_token"]).status_code == 200


def test_revocation_of_a_client_secret_post_client(bridge):
    body = bridge.join("bob")
    response = post_form(bridge.client, "/revoke", [
        ("token", body["access_token"]), ("client_id", CLIENT_ID),
        ("client_secret", bridge.secret)])
    assert response.status_code == 200
    assert bridge.introspect(body["access_token"]).json == INACTIVE


def test_exchange_after_revocation_starts_a_new_family(bridge):
    body = bridge.join("bob")
    revoke(bridge, body["refresh_token"])
    response = bridge.token({"grant_type": TOKEN_EXCHANGE, "tenant": TENANT,
                             "subject_token": bridge.upstream_token("bob"),
                             "subject_token_type": ACCESS_TOKEN_TYPE})
    assert response.status_code == 200, response.json
    old = verify_access_token(bridge, body["access_token"])[1]
    new = verify_access_token(bridge, response.json["access_token"])[1]
    assert new["grant_id"] == old["grant_id"] and new["sid"] != old["sid"]
    assert bridge.introspect(response.json["access_token"]).json["active"] is True


def test_oversized_revocation_request(bridge):
    body = bridge.join("bob")
    response = post_form(bridge.client, "/revoke", [("token", "x" * (65 * 1024))],
                         auth=bridge.auth())
    assert response.status_code == 413
    assert response.json["error"] == "invalid_request"
    assert refresh(bridge, body["refresh_token"]).status_code == 200
