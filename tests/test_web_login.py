"""SSO sign-in of the web pages against the development OpenID provider (served over HTTP):
code flow with PKCE, state and nonce, ID token validation, open-redirect and CSRF guards."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests


def start_login(client, next_path="/"):
    response = client.get("/login", query_string={"next": next_path})
    assert response.status_code == 302
    return response.headers["Location"]


def provider_redirect(authorize_url, user="bob"):
    """The provider signs ``user`` in and redirects back (no browser needed)."""
    response = requests.get(authorize_url, params={"login_hint": user, "auto": "1"},
                            allow_redirects=False, timeout=5)
    assert response.status_code in (302, 303), response.text
    return response.headers["Location"]


def sign_in(client, user="bob", next_path="/"):
    callback = provider_redirect(start_login(client, next_path), user)
    parts = urlsplit(callback)
    return client.get(f"{parts.path}?{parts.query}")


def web_session_of(client):
    """The server-side row of ``client``'s web session, or None (no handle in its cookie)."""
    from idp_bridge.app import services
    from idp_bridge.domain.web_sessions import session_key
    from idp_bridge.storage.models import WebSession

    with client.session_transaction() as session:
        handle = session.get("web_session")
    if handle is None:
        return None
    with services(client.application).db.read() as session:
        return session.get(WebSession, session_key(handle))


def id_token_of(client) -> str | None:
    """The upstream ID token kept (encrypted) for ``client``'s web session."""
    from idp_bridge.domain.web_sessions import decrypt_id_token

    with client.session_transaction() as session:
        handle = session.get("web_session")
    row = web_session_of(client)
    return decrypt_id_token(handle, row.id_token) if row is not None else None


def edit_signed_in_user(client, edit) -> None:
    """Change what the server keeps of ``client``'s signed-in user: ``edit(claims)`` changes
    the dict in place (for page tests that need, say, a verified e-mail address)."""
    from idp_bridge.app import services
    from idp_bridge.storage.models import WebSession

    row = web_session_of(client)
    assert row is not None, "not signed in"
    claims = dict(row.claims)
    edit(claims)
    with services(client.application).db.transaction() as session:
        session.get(WebSession, row.id).claims = claims


@pytest.mark.db_independent
def test_authorization_request_uses_pkce_state_and_nonce(client, upstream):
    url = start_login(client)
    assert url.startswith(upstream.issuer + "/authorize?")
    query = parse_qs(urlsplit(url).query)
    assert query["response_type"] == ["code"]
    assert query["client_id"] == ["idp-bridge"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert query["state"][0] and query["nonce"][0]
    assert "openid" in query["scope"][0].split()


def test_sign_in_and_out(client, upstream):
    response = sign_in(client, "bob", "/somewhere?x=1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/somewhere?x=1"
    page = client.get("/")
    assert "Signed in as bob" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    out = client.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 302
    target = urlsplit(out.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == upstream.issuer + "/logout"
    assert "id_token_hint" in parse_qs(target.query)
    assert "Signed in as" not in client.get("/").text


def test_roles_come_from_the_upstream_tokens(client, app):
    sign_in(client, "anna")
    user = web_session_of(client).claims
    assert user["groups"] == ["/tenants/10042/admins"]
    assert user["preferred_username"] == "anna"
    sign_in(client, "bob")
    assert web_session_of(client).claims["roles"] == ["advisor"]
    with client.session_transaction() as session:
        assert set(session) <= {"web_session", "_permanent", "csrf_token"}, set(session)


@pytest.mark.db_independent
@pytest.mark.parametrize("next_path", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                       "javascript:alert(1)", "/%0d%0aSet-Cookie:x=y"])
def test_no_open_redirect_after_sign_in(client, next_path):
    response = sign_in(client, "bob", next_path)
    location = response.headers["Location"]
    assert urlsplit(location).netloc == ""
    assert not location.startswith("//")
    assert "evil.example" not in location or location.startswith("/%")


@pytest.mark.db_independent
def test_wrong_state_is_refused(client):
    callback = provider_redirect(start_login(client))
    parts = urlsplit(callback)
    query = parse_qs(parts.query)
    response = client.get(parts.path, query_string={"code": query["code"][0], "state": "forged"})
    assert response.status_code == 400
    assert "not valid" in response.text
    assert "Signed in as" not in client.get("/").text


@pytest.mark.db_independent
def test_callback_in_another_browser_is_refused(app, client):
    callback = provider_redirect(start_login(client))
    parts = urlsplit(callback)
    other = app.test_client()  # no state in its session (login CSRF)
    response = other.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 400


@pytest.mark.db_independent
def test_provider_error_is_shown(client):
    start_login(client)
    response = client.get("/auth/callback", query_string={"error": "access_denied", "state": "x"})
    assert response.status_code == 400
    assert "cancelled or refused" in response.text


def test_logout_needs_csrf_token(client):
    sign_in(client, "bob")
    response = client.post("/logout")
    assert response.status_code == 400
    assert "Signed in as bob" in client.get("/").text


@pytest.mark.db_independent
def test_pages_cannot_be_framed(client):
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


@pytest.mark.db_independent
def test_session_cookie_is_hardened(client):
    response = client.get("/login")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
