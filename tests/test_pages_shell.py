"""What every page shares: the start page per role, the language switch, error pages in both
languages (JSON stays JSON for the API), security headers and hardened cookies."""

from __future__ import annotations

import pytest

from conftest import TENANT, build_app
from test_pages_helpers import DE, EN, csrf_token, signed_in, text_of

pytestmark = pytest.mark.db_independent  # what every page shares, whatever is stored


@pytest.mark.parametrize("user,links", [
    ("anna", ["/tenants/10042/help"]),
    ("bob", ["/advisor"]),
    ("sam", ["/support"]),
])
def test_start_page_leads_each_role_to_its_pages(app, user, links):
    page = signed_in(app, user).get("/", headers=EN)
    assert f"Signed in as {user}" in page.text
    for link in links:
        assert f'href="{link}"' in page.text
    others = {"/tenants/10042/help", "/advisor", "/support"} - set(links)
    for link in others:
        assert f'href="{link}"' not in page.text


def test_start_page_for_a_user_without_role(app):
    text = text_of(signed_in(app, "eve").get("/", headers=DE))
    assert "Ihr Konto hat hier keine Rolle" in text


def test_anonymous_start_page_offers_sign_in(client):
    page = client.get("/", headers=DE)
    assert "Mit Ihrem Firmenkonto anmelden" in text_of(page)
    assert 'href="/login"' in page.text


# --- language ---
def test_accept_language_chooses_and_english_is_the_default(client):
    assert '<html lang="de">' in client.get("/", headers=DE).text
    assert '<html lang="en">' in client.get("/", headers=EN).text
    assert '<html lang="en">' in client.get("/").text
    assert '<html lang="en">' in client.get("/", headers={"Accept-Language": "fr"}).text


def test_language_switch_is_kept_in_a_cookie_across_sign_in(app):
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/language", data={"lang": "de", "next": "/advisor",
                                              "csrf_token": token}, headers=EN)
    assert response.status_code == 303 and response.headers["Location"] == "/advisor"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("idp-bridge-lang=de;")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert '<html lang="de">' in client.get("/", headers=EN).text  # the switch beats the header
    from test_pages_helpers import sign_in

    sign_in(client, "bob")  # a new session: the language stays
    assert "Meine Mandanten" in text_of(client.get("/advisor", headers=EN))


@pytest.mark.parametrize("data,status", [
    ({"lang": "fr", "next": "/"}, 400),
    ({"lang": "de", "next": "https://evil.example/"}, 303),
    ({"lang": "de", "next": "//evil.example/"}, 303),
])
def test_language_switch_refuses_unknown_languages_and_foreign_targets(client, data, status):
    data["csrf_token"] = csrf_token(client)
    response = client.post("/language", data=data)
    assert response.status_code == status
    if status == 303:
        assert response.headers["Location"] == "/"


def test_language_switch_needs_csrf_token(client):
    assert client.post("/language", data={"lang": "de"}).status_code == 400


# --- errors: pages for browsers, JSON for the API ---
def test_unknown_page_is_an_html_page_for_browsers_and_json_otherwise(client):
    browser = client.get("/no-such-page", headers={"Accept": "text/html,*/*;q=0.8", **DE})
    assert browser.status_code == 404 and browser.mimetype == "text/html"
    assert "Diese Seite gibt es nicht." in text_of(browser)
    machine = client.get("/no-such-page")
    assert machine.status_code == 404 and machine.json["error"] == "not_found"
    api = client.get("/api/tenants/10042/nothing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.json["error"] == "not_found"


def test_api_errors_stay_json(client):
    response = client.get(f"/api/tenants/{TENANT}/memberships", headers={"Accept": "text/html"})
    assert response.status_code == 401 and response.json["error"] == "invalid_token"


def test_wrong_method_on_a_page_is_an_error_page(app):
    client = signed_in(app, "bob")
    response = client.get("/advisor/join", headers={"Accept": "text/html", **EN})
    assert response.status_code == 405
    assert "This address cannot be used like this." in text_of(response)


def test_database_down_is_a_503_page(app, monkeypatch):
    from idp_bridge.storage.db import StorageUnavailable
    from idp_bridge.app import services

    client = signed_in(app, "anna")

    def down(*args, **kwargs):
        raise StorageUnavailable("the database is unreachable")

    monkeypatch.setattr(services(app).db, "read", down)
    response = client.get(f"/tenants/{TENANT}/help", headers=DE)
    assert response.status_code == 503
    assert "vorübergehend nicht verfügbar" in text_of(response)
    assert "Traceback" not in response.text and "unreachable" not in response.text


def test_sign_in_errors_are_translated(client):
    client.get("/login")
    response = client.get("/auth/callback", query_string={"error": "access_denied"}, headers=DE)
    assert response.status_code == 400
    assert "Die Anmeldung wurde abgebrochen" in text_of(response)


# --- headers and cookies ---
def test_security_headers_on_pages(app):
    page = signed_in(app, "anna").get(f"/tenants/{TENANT}/help")
    csp = page.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in page.headers  # http: no HSTS


def test_static_files_are_served_and_pages_use_no_inline_code(app):
    client = signed_in(app, "anna")
    page = client.get(f"/tenants/{TENANT}/help")
    assert '<script src="/static/web/app.js" defer></script>' in page.text
    assert ' style="' not in page.text and "<style" not in page.text and " on" + "click=" not in page.text
    script = client.get("/static/web/app.js")
    assert script.status_code == 200 and "status" in script.get_data(as_text=True)
    assert client.get("/static/web/app.css").status_code == 200


@pytest.fixture
def https_app(settings):
    return build_app(settings.replace(issuer="https://bridge.example"))


def test_https_hardens_cookies_and_sends_hsts(https_app):
    client = https_app.test_client()
    page = client.get("/", base_url="https://bridge.example")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("__Host-idp-bridge=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Domain=" not in cookie and "Path=/" in cookie
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    # Flask-WTF checks the Referer on https: our Referrer-Policy lets same-origin posts pass.
    switched = client.post("/language", base_url="https://bridge.example",
                           data={"lang": "de", "next": "/", "csrf_token": token},
                           headers={"Referer": "https://bridge.example/"})
    assert switched.status_code == 303
    assert switched.headers["Set-Cookie"].startswith("__Host-idp-bridge-lang=de;")
    assert "Secure" in switched.headers["Set-Cookie"]
    foreign = client.post("/language", base_url="https://bridge.example",
                          data={"lang": "de", "next": "/", "csrf_token": token},
                          headers={"Referer": "https://evil.example/"})
    assert foreign.status_code == 400
