"""Regression tests of issue 10, items 2 and 12: each request that once made the bridge
answer 500 (or accept what it must refuse) gets a clear 4xx with the right ``error``, an
``error_description`` of RFC 6749 characters that does not repeat the input, no unhandled
error in the log, and changes nothing in the database.

The property-based sweep over every route is ``tests/test_fuzz.py``; these are the concrete
findings, on both backends (NUL in a lookup failed on PostgreSQL only).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from hypothesis import given, settings, strategies as st

from conftest import (ACCESS_TOKEN_TYPE, RS_CLIENT_ID, TENANT, TOKEN_EXCHANGE, dump_database,
                      active_memberships, post_form)
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain.errors import InvalidInput
from idp_bridge.domain.text import BIDI_CONTROLS, UnsafeText, check_text
from idp_bridge.oauth.errors import safe_description
from idp_bridge.request_guard import MAX_QUERY_INT, parse_int
from idp_bridge.web.access_log import _cell
from test_pages_helpers import EN, post_form_page, signed_in, text_of

CAROL = DEMO_USERS["carol"]["sub"]
#: The RFC 6749 section 5.2 set: %x20-21 / %x23-5B / %x5D-7E.
RFC6749 = {chr(c) for c in range(0x20, 0x7F)} - {'"', "\\"}
#: Characters that once broke an error answer, or must be refused in free text.
QUOTE, BACKSLASH, NUL, UMLAUT, RLO, NEWLINE = '"', "\\", "\x00", "ä", "\u202e", "\n"
UNSAFE = ["\x01", "\x1b", "\x7f", "\x85", "\x9b", "\u202a", "\u202b", "\u202c", "\u202d",
          "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f", "\u061c",
          "\u2028", "\u2029", "\t", "\n", "\r"]


@pytest.fixture
def unchanged(bridge, caplog):
    """Call after the test's setup: asserts at teardown that the database did not change
    and that nothing was logged as an unhandled error."""
    state = {}

    def start():
        state["before"] = dump_database(bridge.services.db)
        caplog.clear()
        caplog.set_level(logging.WARNING)

    yield start
    assert "before" in state, "the test did not start the check"
    assert dump_database(bridge.services.db) == state["before"]
    assert [r for r in caplog.records if r.exc_info or "unhandled error" in r.getMessage()] == []


def assert_refused(response, status: int, error: str, *echo: str):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    body = response.get_json()
    assert body["error"] == error, body
    description = body.get("error_description") or ""
    assert set(description) <= RFC6749, description
    for value in echo:
        if len(value) > 2:
            assert value not in description, description


# --- error descriptions: the RFC 6749 set, never the input ------------------------------
@pytest.mark.db_independent
@pytest.mark.parametrize("value", [QUOTE, BACKSLASH, UMLAUT, RLO, NEWLINE, "a'b\"c\\d",
                                   "Müller \u202egnp.exe", "x" * 5000])
@pytest.mark.parametrize("field,error", [
    ("tenant", "invalid_request"),
    ("audience", "invalid_target"),
    ("resource", "invalid_target"),
    ("scope", "invalid_scope"),
])
def test_token_exchange_with_hostile_parameters(bridge, unchanged, field, error, value):
    bridge.join("bob")
    unchanged()
    response = bridge.exchange("bob", **{field: f"{value}x{value}"})
    assert_refused(response, 400, error, f"{value}x{value}")


@pytest.mark.db_independent
@pytest.mark.parametrize("char", UNSAFE)
def test_token_exchange_refuses_reason_with_control_or_bidi_characters(bridge, unchanged, char):
    bridge.join("bob")  # a member: without the check, the exchange would mint tokens
    unchanged()
    response = bridge.exchange("bob", reason=f"Ticket{char}4711")
    assert_refused(response, 400, "invalid_request", f"Ticket{char}4711")
    assert response.json["error_description"].startswith("reason contains characters")


def test_token_exchange_keeps_a_reason_with_ordinary_non_ascii_text(bridge):
    reason = "Prüfung «Jahresabschluss» – Ticket #4711 ✓"
    bridge.join("bob", reason=reason)
    response = bridge.api("get", f"/api/tenants/{TENANT}/memberships")
    assert [m["reason"] for m in response.json["memberships"]] == [reason]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.text())
def test_no_description_can_break_an_error_answer(text):
    # Authlib raises ValueError for descriptions outside the set, at construction; the
    # guard cleans them first, also for the WWW-Authenticate header built from them.
    error = InvalidRequestError(description=text)
    assert set(error.description or "") <= RFC6749
    assert safe_description(text) == (error.description if text else safe_description(text))
    status, body, headers = InvalidClientError(description=text, status_code=401)()
    assert status == 401 and set(body.get("error_description", "")) <= RFC6749
    assert all("\n" not in value and "\r" not in value for _name, value in headers)


def test_safe_description_replaces_and_cuts():
    assert safe_description('unknown "x\\y" ä\x00') == "unknown ?x?y? ??"
    assert len(safe_description("a" * 1000)) == 300
    assert safe_description(None) is None


# --- integer query parameters -----------------------------------------------------------
@pytest.mark.db_independent
@pytest.mark.parametrize("query", [
    f"before={10 ** 23}", "before=-1", "before=0", "before=abc", "before=1e3", "before=١٢",
    "before=%205", "before=1_0", f"before={2 ** 63}", f"before={MAX_QUERY_INT + 1}",
    "before=", f"limit={10 ** 23}", "limit=-1", "limit=0", "limit=501", "limit=1.5",
    "limit=" + "9" * 5000, "limit=", "limit=+5",
])
def test_audit_api_range_checks_its_integers(bridge, unchanged, query):
    unchanged()
    response = bridge.api("get", f"/api/tenants/{TENANT}/audit-events?{query}")
    assert_refused(response, 400, "invalid_request", query.partition("=")[2])


@pytest.mark.parametrize("query", [f"before={MAX_QUERY_INT}", "before=1", "limit=1",
                                   "limit=500"])
def test_audit_api_accepts_its_integer_bounds(bridge, query):
    response = bridge.api("get", f"/api/tenants/{TENANT}/audit-events?{query}")
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("value,expected", [
    ("1", 1), (str(MAX_QUERY_INT), MAX_QUERY_INT), ("-3", None), ("0", None), ("", None),
    (" 1", None), ("1 ", None), ("١", None), ("1_0", None), ("+1", None), ("1e3", None),
    (str(10 ** 23), None), ("9" * 5000, None), (None, None), (7, None), ("-", None),
])
def test_parse_int(value, expected):
    assert parse_int(value) == expected


@pytest.mark.db_independent
@pytest.mark.parametrize("query,message", [
    (f"before={10 ** 23}", "The page address is not valid."),
    ("before=-5", "The page address is not valid."),
    ("before=%D9%A1", "The page address is not valid."),
    ("until=9999-12-31", "Please enter dates as YYYY-MM-DD."),
    ("since=0001-01-01", "Please enter dates as YYYY-MM-DD."),
    ("since=" + "2" * 5000, "Please enter dates as YYYY-MM-DD."),
])
def test_access_log_page_refuses_out_of_range_parameters(app, bridge, unchanged, query, message):
    anna = signed_in(app, "anna")
    unchanged()
    page = anna.get(f"/tenants/{TENANT}/log?{query}", headers=EN)
    assert page.status_code == 400
    assert message in text_of(page)
    if "before" not in query:
        assert anna.get(f"/tenants/{TENANT}/log.csv?{query}", headers=EN).status_code == 400


# --- JSON bodies of the wrong type --------------------------------------------------------
@pytest.mark.db_independent
@pytest.mark.parametrize("path_suffix,method,body", [
    ("groups", "post", {"name": ["a"], "permissions": []}),
    ("groups", "post", {"name": {"a": 1}, "permissions": []}),
    ("groups", "post", {"name": 5, "permissions": []}),
    ("groups", "post", {"name": "G", "permissions": "payments:read"}),
    ("groups", "post", {"name": "G", "permissions": {"payments:read": True}}),
    ("groups", "post", {"name": "G", "permissions": [1, 2]}),
    ("groups", "post", {"name": "G", "permissions": ["payments:read\"x"]}),
    ("groups", "post", {"name": f"Lohn{RLO}gnp", "permissions": []}),
    ("invitations", "post", {"group": 5, "subject": "x"}),
    ("invitations", "post", {"group": ["g"], "subject": "x"}),
    ("invitations", "post", {"group": "g", "subject": 5}),
    ("invitations", "post", {"group": "g", "email": {"a": "b"}}),
    ("", "patch", {"temporary_max_age_days": "7"}),
    ("", "patch", {"temporary_max_age_days": 7.5}),
    ("", "patch", {"temporary_max_age_days": True}),
    ("", "patch", {"temporary_max_age_days": 10 ** 23}),
    ("", "patch", {"temporary_max_age_days": [7]}),
    ("", "patch", {"unknown\"field": 1}),
])
def test_api_refuses_wrong_json_types(bridge, unchanged, path_suffix, method, body):
    unchanged()
    path = f"/api/tenants/{TENANT}" + (f"/{path_suffix}" if path_suffix else "")
    response = bridge.api(method, path, json=body)
    # Distinctive inputs (a quote, a bidi control) must not come back in the description.
    echo = [text for text in [*map(str, body.values()), *body]
            if QUOTE in text or RLO in text]
    assert_refused(response, 400, "invalid_request", *echo)


@pytest.mark.parametrize("field,value", [("email", f"someone{RLO}@example.com"),
                                         ("email", "some\x1bone@example.com"),
                                         ("subject", f"partner{RLO}|bob")])
def test_invitation_fields_refuse_control_and_bidi_characters(bridge, unchanged, field, value):
    group = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                       json={"name": "Lohn", "permissions": ["payments:read"]})
    assert group.status_code == 201
    unchanged()
    response = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                          json={"group": group.json["id"], field: value})
    assert_refused(response, 400, "invalid_request", value)


@pytest.mark.db_independent
@pytest.mark.parametrize("name", [f"Carol{RLO}", "Car\x85ol", "Carol\u2066x\u2069", 5, ["C"]])
def test_permanent_advisor_name_is_checked_text(bridge, unchanged, name):
    unchanged()
    response = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{CAROL}",
                          user="sam", json={"name": name})
    assert_refused(response, 400, "invalid_request", str(name))


@pytest.mark.db_independent
@pytest.mark.parametrize("body,error", [
    ({"delivery": ["urn:ietf:rfc:8936"]}, "invalid_request"),
    ({"delivery": "urn:ietf:rfc:8936"}, "invalid_request"),
    ({"delivery": 5}, "invalid_request"),
    ({"delivery": {"method": ["x"]}}, "invalid_request"),
    ({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": 5}}, "invalid_request"),
    ({"events_requested": {"a": 1}}, "invalid_request"),
    ({"events_requested": [1, 2]}, "invalid_request"),
])
def test_stream_create_refuses_wrong_types(bridge, unchanged, body, error):
    unchanged()
    response = bridge.client.post("/ssf/stream", json=body, auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert_refused(response, 400, error)


@pytest.mark.parametrize("body", [
    {"maxEvents": "5"}, {"maxEvents": 1.5}, {"maxEvents": True}, {"maxEvents": 10 ** 23},
    {"maxEvents": -1}, {"maxEvents": None}, {"ack": "jti"}, {"ack": {"a": 1}}, {"ack": [1]},
    {"ack": ["x" * 101]}, {"returnImmediately": "yes"}, {"returnImmediately": 1},
    {"setErrs": ["x"]}, [], "poll", 5,
])
def test_poll_refuses_wrong_types(bridge, unchanged, body):
    auth = (RS_CLIENT_ID, bridge.rs_secret)
    stream = bridge.client.post("/ssf/stream", json={"delivery": {"method": "urn:ietf:rfc:8936"}},
                                auth=auth)
    assert stream.status_code == 201
    unchanged()
    response = bridge.client.post(f"/ssf/poll/{stream.json['stream_id']}", json=body, auth=auth)
    assert_refused(response, 400, "invalid_request")


@pytest.mark.parametrize("state", [5, ["s"], {"s": 1}, "x" * 501])
def test_verify_refuses_wrong_state(bridge, unchanged, state):
    auth = (RS_CLIENT_ID, bridge.rs_secret)
    stream = bridge.client.post("/ssf/stream", json={"delivery": {"method": "urn:ietf:rfc:8936"}},
                                auth=auth)
    unchanged()
    response = bridge.client.post("/ssf/verify", json={"stream_id": stream.json["stream_id"],
                                                       "state": state}, auth=auth)
    assert_refused(response, 400, "invalid_request")


# --- the door: NUL, lone surrogates, broken JSON ------------------------------------------
@pytest.mark.db_independent
@pytest.mark.parametrize("raw", [
    b'{"name": "a\\u0000b", "permissions": []}',
    b'{"name": "a\\ud800b", "permissions": []}',
    b'{"name\\u0000": "a", "permissions": []}',
    b'{"name": "G", "permissions": ["\\udfff"]}',
    b'{"name": NaN, "permissions": []}',
    b'{"name": "G", "permissions": [Infinity]}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 40 + b"1" + b"}" * 40,
    b"\xff\xfe{}",
    b'{"name": "G"',
])
def test_json_bodies_the_door_refuses(bridge, unchanged, raw):
    unchanged()
    response = bridge.api("post", f"/api/tenants/{TENANT}/groups", data=raw,
                          content_type="application/json")
    assert_refused(response, 400, "invalid_request")


@pytest.mark.db_independent
@pytest.mark.parametrize("path", [
    f"/api/tenants/{TENANT}/groups/a%00b",
    f"/api/tenants/{TENANT}/invitations/%00",
    f"/api/tenants/{TENANT}/memberships/x%00",
    f"/api/tenants/{TENANT}/permanent-advisors/bob%00",
    "/api/me/memberships/%00",
])
def test_nul_in_api_paths(bridge, unchanged, path):
    unchanged()
    response = bridge.api("delete", path)
    assert_refused(response, 400, "invalid_request")


@pytest.mark.db_independent
@pytest.mark.parametrize("pairs", [
    [("tenant", "100\x0042")], [("scope", "\x00")], [("reason", "a\x00")],
    [("x\x00", "1")],
])
def test_nul_in_token_requests(bridge, unchanged, pairs):
    bridge.join("bob")
    unchanged()
    base = [("grant_type", TOKEN_EXCHANGE), ("subject_token", bridge.upstream_token("bob")),
            ("subject_token_type", ACCESS_TOKEN_TYPE), ("tenant", TENANT)]
    names = {name for name, _value in pairs}
    form = [(k, v) for k, v in base if k not in names] + pairs
    response = post_form(bridge.client, "/token", form, auth=bridge.auth())
    assert_refused(response, 400, "invalid_request")


def test_nul_in_query_of_a_stream_lookup(bridge, unchanged):
    unchanged()
    response = bridge.client.get("/ssf/stream?stream_id=a%00", auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert_refused(response, 400, "invalid_request")


def test_nul_in_page_filters(app, bridge, unchanged):
    anna = signed_in(app, "anna")
    sam = signed_in(app, "sam")
    unchanged()
    assert anna.get(f"/tenants/{TENANT}/log?advisor=a%00b", headers=EN).status_code == 400
    assert sam.get("/support?tenant=%00", headers=EN).status_code == 400


def test_non_utf8_bytes_are_ordinary_wrong_text(bridge, unchanged):
    unchanged()
    response = post_form(bridge.client, "/token", [
        ("grant_type", TOKEN_EXCHANGE), ("subject_token", bridge.upstream_token("bob")),
        ("subject_token_type", ACCESS_TOKEN_TYPE), ("tenant", b"\xff\xfe10042")],
        auth=bridge.auth())
    assert_refused(response, 400, "invalid_request")
    assert response.json["error_description"] == "unknown tenant"


# --- free text shown to tenants: one rule ----------------------------------------------
@pytest.mark.parametrize("char", UNSAFE)
def test_check_text_refuses_control_and_bidi_characters(char):
    with pytest.raises(UnsafeText) as raised:
        check_text(f"a{char}b", field="reason", max_length=100)
    assert raised.value.field == "reason"
    assert char not in raised.value.description


@pytest.mark.parametrize("value,expected", [
    ("  Ticket 4711 \n", "Ticket 4711"), ("", None), ("   ", None), (None, None),
    ("Müller & Söhne – «Prüfung» 😀", "Müller & Söhne – «Prüfung» 😀"),
])
def test_check_text_keeps_ordinary_text(value, expected):
    assert check_text(value, field="reason", max_length=100) == expected


@pytest.mark.parametrize("value,description", [
    (5, "reason must be a string"), (["a"], "reason must be a string"),
    ("x" * 101, "reason is longer than 100 characters"), ("\ud800", None),
])
def test_check_text_refuses_other_bad_values(value, description):
    with pytest.raises(InvalidInput) as raised:
        check_text(value, field="reason", max_length=100)
    if description:
        assert raised.value.description == description


def test_bidi_list_is_complete():
    assert BIDI_CONTROLS == {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A),
                                              0x200E, 0x200F, 0x061C]}


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\x85", "\x1b"])
def test_join_page_refuses_reason_with_control_or_bidi_characters(app, bridge, unchanged, char):
    bob = signed_in(app, "bob")
    code = bridge.current_code()
    unchanged()
    page = post_form_page(bob, "/advisor/join", {"tenant": TENANT, "code": code,
                                                  "reason": f"Ticket{char}4711"},
                          token_from="/advisor", headers=EN)
    assert page.status_code == 400
    assert "The reason contains characters that are not allowed." in text_of(page)


@pytest.mark.parametrize("name", [f"Lohn{RLO}gnp", "Lohn\u2067x", "Lohn\x9bx"])
def test_group_form_refuses_name_with_control_or_bidi_characters(app, bridge, unchanged, name):
    anna = signed_in(app, "anna")
    unchanged()
    page = post_form_page(anna, f"/tenants/{TENANT}/groups", {"name": name,
                                                              "permissions": "payments:read"},
                          headers=EN)
    assert page.status_code == 400
    assert "The entry contains characters that are not allowed" in text_of(page)


def test_support_form_takes_no_name_from_the_form(app, bridge):
    """The form has no name field any more; a crafted one is not stored or shown: the
    name is the directory's."""
    sam = signed_in(app, "sam")
    page = post_form_page(sam, "/support/assign", {"tenant": TENANT, "advisor": CAROL,
                                                    "name": f"Carol{RLO}"}, headers=EN)
    assert page.status_code == 303
    names = [m.advisor_name for m in active_memberships(bridge)]
    assert names == ["Carol Advisor"]
    assert RLO not in sam.get("/support", headers=EN).text


def test_refusal_page_does_not_repeat_a_crafted_tenant(app):
    bob = signed_in(app, "bob")
    page = bob.get(f"/tenants/10042{RLO}gnp/help", headers=EN)
    assert page.status_code == 403
    assert RLO not in text_of(page) and "gnp" not in text_of(page)
    assert "You are not allowed to do this." in text_of(page)


# --- CSV neutraliser ----------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "\n=1",
                                  " =1", '"=1"', "|calc", "＝1", "＋1", "－1", "＠x", "｜x",
                                  "\u00a0=1"])
def test_csv_cells_that_could_run_are_neutralised(cell):
    assert _cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Ticket 4711", "10042", "2026-01-01 10:00:00", "", "a=b"])
def test_csv_ordinary_cells_are_kept(cell):
    assert _cell(cell) == cell


def test_csv_export_neutralises_a_reason(app, bridge):
    bridge.join("bob", reason='"=HYPERLINK("http://evil.example")')
    anna = signed_in(app, "anna")
    response = anna.get(f"/tenants/{TENANT}/log.csv?category=joins", headers=EN)
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    details = [row[8] for row in rows[1:]]
    assert details and all(not cell[:1] in '=+-@|"' for row in rows[1:] for cell in row)
    assert any('=HYPERLINK' in cell for cell in details)


# --- /login builds redirect_uri from the configured issuer ------------------------------
def test_login_redirect_uri_ignores_the_host_header(client, settings):
    response = client.get("/login", headers={"Host": "evil.example"})
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["redirect_uri"] == [settings.issuer.rstrip("/") + "/auth/callback"]
    assert "evil.example" not in response.headers["Location"]


def test_logout_redirect_ignores_the_host_header(app, settings):
    bob = signed_in(app, "bob")
    page = bob.get("/")
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    cookie = bob.get_cookie(app.config["SESSION_COOKIE_NAME"])
    bob.set_cookie(cookie.key, cookie.value, domain="evil.example")  # the forged host's jar
    response = bob.post("/logout", data={"csrf_token": token}, headers={"Host": "evil.example"})
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["post_logout_redirect_uri"] == [settings.issuer.rstrip("/") + "/"]


def test_json_dumps_of_refusals_are_json(bridge):
    # Sanity of assert_refused itself: a refusal is JSON with a string error.
    response = bridge.client.post("/token", data=urlencode({"grant_type": "x"}),
                                  content_type="application/x-www-form-urlencoded")
    assert isinstance(json.loads(response.get_data(as_text=True))["error"], str)
