"""Server-side web sessions (issue 10, items 9 and 10): the cookie carries no upstream token
and no roles, and a sign-out here or upstream (back-channel logout by ``sid`` or by ``sub``)
signs the browser out at its very next request: pages redirect to the sign-in, "Open", joins
and the access code are refused, and nothing is minted."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from conftest import ID_TOKEN_TYPE, TENANT, active_memberships, dump_database
from idp_bridge.app import services
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import EndedUpstreamSession, TokenFamily, WebSession
from test_pages_helpers import csrf_token, post_form_page, signed_in
from test_web_login import id_token_of, web_session_of

BOB = DEMO_USERS["bob"]["sub"]
ANNA = DEMO_USERS["anna"]["sub"]
APP_URL = "https://app.konfipay.example/tenants/{tenant}/open"


@pytest.fixture
def with_app(bridge_with):
    """A bridge whose advisor page can "Open" a tenant in the application."""
    return bridge_with(app_url=APP_URL)


def cookie_payload(client) -> tuple[str, dict]:
    """The session cookie as sent, and what it says: Flask signs it, it does not encrypt."""
    app = client.application
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    value = cookie.value
    data = value[1:] if value.startswith(".") else value
    body = data.split(".")[0]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if value.startswith("."):
        raw = zlib.decompress(raw)
    decoded = app.session_interface.get_signing_serializer(app).loads(value)
    assert json.loads(raw) is not None
    return raw.decode(), decoded


def family_count(app) -> int:
    with services(app).db.read() as session:
        return session.scalar(select(func.count()).select_from(TokenFamily))


def logout(bridge, token):
    response = bridge.client.post("/backchannel-logout", data={"logout_token": token})
    assert response.status_code == 200, response.json
    return response


def assert_signed_out(client, path="/advisor"):
    response = client.get(path)
    assert response.status_code == 302, response.status_code
    assert response.headers["Location"].startswith("/login?next=")
    assert "Signed in as" not in client.get("/").text


def open_tenant(client, token):
    return client.post(f"/advisor/tenants/{TENANT}/open", data={"csrf_token": token})


# --- item 10: upstream tokens do not sit in the browser -----------------------------------

def test_cookie_holds_a_handle_only(app):
    client = signed_in(app, "anna")
    raw, decoded = cookie_payload(client)
    assert set(decoded) <= {"web_session", "_permanent", "csrf_token"}, set(decoded)
    assert "eyJ" not in raw  # no JWT (every JWT starts with the base64 of '{"')
    for leaked in ("groups", "roles", "/tenants/", ANNA, "anna"):
        assert leaked not in raw
    # The handle is random and only its hash is stored.
    handle = decoded["web_session"]
    assert len(handle) == 43
    row = web_session_of(client)
    assert row.id != handle and handle not in dump_database(services(app).db)


def test_database_holds_no_clear_upstream_token(app):
    client = signed_in(app, "bob")
    id_token = id_token_of(client)
    assert id_token and id_token.startswith("eyJ")
    dump = dump_database(services(app).db)
    assert id_token not in dump and id_token.split(".")[2] not in dump


def test_id_token_is_still_the_logout_hint(app, upstream):
    client = signed_in(app, "bob")
    id_token = id_token_of(client)
    row_id = web_session_of(client).id
    out = client.post("/logout", data={"csrf_token": csrf_token(client)})
    assert out.status_code == 302
    assert f"id_token_hint={id_token}" in out.headers["Location"]
    with services(app).db.read() as session:
        row = session.get(WebSession, row_id)
        assert (row.ended_reason, row.ended_at is not None) == ("signed_out", True)


def test_a_copied_cookie_dies_with_the_sign_out(app):
    client = signed_in(app, "bob")
    copy = app.test_client()
    name = app.config["SESSION_COOKIE_NAME"]
    copy.set_cookie(name, client.get_cookie(name).value)
    assert "Signed in as bob" in copy.get("/").text
    client.post("/logout", data={"csrf_token": csrf_token(client)})
    assert_signed_out(copy)


def test_sign_in_id_token_opens_no_token_family(app, bridge):
    """Even with the cookie's contents (or the ID token itself), /token mints nothing."""
    client = signed_in(app, "bob")
    response = bridge.exchange("bob", code=bridge.current_code(),
                               subject_token=id_token_of(client),
                               subject_token_type=ID_TOKEN_TYPE)
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert family_count(app) == 0 and active_memberships(bridge) == []


# --- item 9: sign-out upstream ends the bridge's web sessions -----------------------------

def test_logout_by_sid_signs_that_browser_out_and_open_mints_nothing(with_app):
    bridge = with_app
    client = signed_in(bridge.app, "bob")
    other = signed_in(bridge.app, "bob")  # another upstream session of bob
    bridge.join("bob")
    token = csrf_token(client)
    assert open_tenant(client, token).status_code == 200  # "Open" works while signed in
    families = family_count(bridge.app)
    sid = web_session_of(client).upstream_sid
    assert sid and sid != web_session_of(other).upstream_sid
    logout(bridge, bridge.upstream.logout_token(sid=sid))
    response = open_tenant(client, token)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert family_count(bridge.app) == families  # nothing minted after the logout
    assert_signed_out(client)
    assert web_session_of(other) is not None and "Signed in as bob" in other.get("/").text
    assert web_session_of(client) is None or web_session_of(client).ended_at is not None


def test_logout_by_sub_signs_out_every_browser_of_the_subject(with_app):
    bridge = with_app
    first, second = signed_in(bridge.app, "bob"), signed_in(bridge.app, "bob")
    carol = signed_in(bridge.app, "carol")
    bridge.join("bob")
    tokens = [csrf_token(first), csrf_token(second)]
    families = family_count(bridge.app)
    logout(bridge, bridge.upstream.logout_token(sub=BOB))
    for client, token in zip((first, second), tokens):
        assert open_tenant(client, token).status_code == 302
        join = client.post("/advisor/join", data={"csrf_token": token, "tenant": TENANT,
                                                  "code": bridge.current_code()})
        assert join.status_code == 302 and join.headers["Location"].startswith("/login")
        assert_signed_out(client)
    assert family_count(bridge.app) == families
    assert "Signed in as carol" in carol.get("/").text
    with bridge.services.db.read() as session:
        reasons = session.scalars(select(WebSession.ended_reason)
                                  .where(WebSession.subject == BOB)).all()
    assert reasons == ["upstream_logout", "upstream_logout"]


def test_tenant_admin_signed_out_upstream_reads_no_access_code(bridge):
    anna = signed_in(bridge.app, "anna")
    assert anna.get(f"/tenants/{TENANT}/status.json").json["code"]
    logout(bridge, bridge.upstream.logout_token(sub=ANNA))
    status = anna.get(f"/tenants/{TENANT}/status.json")
    assert status.status_code == 401 and status.json == {"error": "login_required"}
    page = anna.get(f"/tenants/{TENANT}/help")
    assert page.status_code == 302 and "access-code" not in page.text


def test_signing_in_again_after_a_subject_wide_logout_works(with_app):
    bridge = with_app
    bridge.join("bob")
    logout(bridge, bridge.upstream.logout_token(sub=BOB))
    # The logout happened a minute ago (explicit timestamps; no waiting for the clock).
    with bridge.services.db.transaction() as session:
        session.execute(update(EndedUpstreamSession).values(
            ended_at=utcnow() - timedelta(minutes=1)))
    client = signed_in(bridge.app, "bob")
    assert open_tenant(client, csrf_token(client)).status_code == 200


def test_expired_or_unknown_sessions_are_signed_out(app):
    client = signed_in(app, "bob")
    with services(app).db.transaction() as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_signed_out(client)
    stranger = app.test_client()
    with stranger.session_transaction() as session:
        session["web_session"] = "A" * 43  # well-formed, never issued
    assert_signed_out(stranger)


def test_maintenance_forgets_expired_sessions_only(app):
    old, live = signed_in(app, "bob"), signed_in(app, "carol")
    old_id = web_session_of(old).id
    with services(app).db.transaction() as session:
        session.execute(update(WebSession).where(WebSession.id == old_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    services(app).maintenance.run_once()
    with services(app).db.read() as session:
        assert session.get(WebSession, old_id) is None
        assert session.get(WebSession, web_session_of(live).id) is not None


def test_signing_in_again_ends_the_previous_session(app):
    client = signed_in(app, "bob")
    first = web_session_of(client).id
    from test_web_login import sign_in

    assert sign_in(client, "carol").status_code == 302
    with services(app).db.read() as session:
        assert session.get(WebSession, first).ended_reason == "signed_in_again"
    assert "Signed in as carol" in client.get("/").text


def test_page_requests_read_the_session_once(app, monkeypatch):
    """One indexed read per page request, however often the page asks who is signed in."""
    client = signed_in(app, "anna")
    calls = []
    web_sessions = services(app).web_sessions
    original = web_sessions.find
    monkeypatch.setattr(web_sessions, "find", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert client.get(f"/tenants/{TENANT}/help").status_code == 200
    assert len(calls) == 1
