"""Hostile input at every route (issue 10, item 2): no request gets a 5xx because of what it
contains, machine endpoints answer errors as JSON with an ``error`` string, nothing changes
in the database, and nothing is logged as an unhandled error.

Routes come from ``app.url_map``: a new route is fuzzed by the rules of its blueprint
(machine endpoints or pages); a route of neither kind fails
:func:`test_every_route_is_fuzzed_or_excluded` until it is classified or listed in
:data:`EXCLUDED` with a reason.

Each request is one of three kinds, chosen so that it cannot legitimately change anything:

- ``unauthenticated``: no, broken or foreign credentials (or, on pages, no session / a
  session without the role / no CSRF token), with real or random path parameters;
- ``junk-ids``: valid credentials of the role the route wants, random parameters and
  bodies, path parameters random (the tenant may be the real one when the route names
  something else inside it, which is then random);
- ``poisoned``: valid credentials, real path parameters, and a body of which at least one
  field is refused whatever the rest says (:data:`POISON`: free text with control or
  bidirectional characters, wrong JSON types, numbers out of range). Only routes listed
  there get this kind.

Values are random text and bytes with the classes that broke the bridge before: quotes,
backslashes, control characters, NUL, non-ASCII, bidi controls, lone surrogates (JSON),
non-UTF-8 bytes, huge and non-decimal numbers, repeated fields, JSON of the wrong type.

SQLite only, a fixed and derandomized example budget (:data:`EXAMPLES` per route).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from functools import lru_cache
from urllib.parse import quote, urlencode

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import (ACCESS_TOKEN_TYPE, CLIENT_ID, ID_TOKEN_TYPE, RS_CLIENT_ID, TENANT,
                      TOKEN_EXCHANGE, Bridge, build_app, dump_database, make_settings)
from idp_bridge.devidp import DEMO_USERS
from test_pages_helpers import csrf_token, signed_in

#: Examples per route and method (more where most of the parsing is); with about 80 routes
#: the module stays well under a minute on SQLite.
EXAMPLES = 12
MORE_EXAMPLES = {"oauth.token": 80, "oauth.introspect": 24, "oauth.revoke": 24,
                 "api.audit_events": 24, "tenant.log": 24, "tenant.log_csv": 24,
                 "ssf.stream_poll": 24, "advisor.join": 24}


def fuzz_settings(endpoint: str):
    return settings(max_examples=MORE_EXAMPLES.get(endpoint, EXAMPLES), deadline=None,
                    derandomize=True, database=None, suppress_health_check=list(HealthCheck))

MACHINE_BLUEPRINTS = frozenset({"oauth", "api", "ssf", "upstream", "access_records", "ops"})
PAGE_BLUEPRINTS = frozenset({"pages", "auth", "tenant", "groups", "advisor", "support"})
#: Endpoints fuzzed with a fresh client without a session: each of them ends or replaces the
#: session it is called with (``/login`` signs out first, ``/logout`` signs out, the
#: callback starts a new one), which would sign the shared clients out.
FRESH_CLIENT = frozenset({"auth.login", "auth.logout", "auth.callback"})
#: Endpoints that create something from the body alone (no path parameter names where):
#: with valid credentials they only get poisoned bodies, a random body may be a valid one.
CREATES_FROM_BODY = frozenset({"ssf.stream_create", "api.my_access_request_create"})
#: Reads that are themselves audited (docs/evidence-pack.md: downloading an evidence pack is an
#: event of the tenant's chain): when one answers 200, the one change allowed is that event
#: (and its chain's head), exactly once.
AUDITED_READS = {"api.membership_evidence": "evidence.downloaded",
                 "tenant.evidence": "evidence.downloaded",
                 "tenant.evidence_file": "evidence.downloaded"}
#: Routes not fuzzed, with the reason. Empty today: every route is fuzzed.
EXCLUDED: dict[str, str] = {}

# --- values ---------------------------------------------------------------------------
NASTY = ['"', "\\", "'", "\x01", "\x08", "\x1b", "\x7f", "\x85", "\x9b", "\r", "\n",
         "\t", "\u2028", "\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c",
         "\ufeff", "\ufffd", "ä", "ß", "€", "😀", "＝", "|", "%", "%00", "../", "<script>",
         "{{7*7}}", "' OR 1=1 --", ";", ",", "=", "+", "-", "@", "*", "?", "#", "&", "/",
         " ", "  ", "\u00a0"]
NUMBERS = ["0", "-1", "1", "50", "500", "501", "1e309", "-1e309", "1e3", str(10 ** 23),
           str(-10 ** 23), str(2 ** 53 + 1), str(2 ** 63), str(2 ** 64), "9" * 30, "NaN",
           "inf", "0x10", "١٢", " 5 ", "5_0", "-0", "+5", "1.5", ""]
#: Parameter names the routes read, so that random requests reach their checks.
FIELDS = ["grant_type", "subject_token", "subject_token_type", "tenant", "access_code", "scope",
          "audience", "resource", "reason", "requested_token_type", "actor_token",
          "actor_token_type", "refresh_token", "client_id", "client_secret", "client_assertion",
          "client_assertion_type", "token", "token_type_hint", "logout_token", "limit",
          "before", "event", "name", "permissions", "group", "subject", "email",
          "temporary_max_age_days", "stream_id", "delivery", "events_requested", "state",
          "maxEvents", "returnImmediately", "ack", "setErrs", "code", "advisor",
          "notification_emails", "lang", "next", "from", "category", "since", "until",
          "error", "csrf_token", "duration_hours", "note", "access_modes", "four_eyes"]
GRANT_TYPES = [TOKEN_EXCHANGE, "refresh_token", "client_credentials", "authorization_code",
               "password", "urn:ietf:params:oauth:grant-type:jwt-bearer", "implicit"]

nasty_char = st.sampled_from(NASTY)
#: Any character a URL or form can carry as UTF-8 (no lone surrogate), NUL aside.
char = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
#: NUL is refused at the door (``idp_bridge.request_guard``); it comes in its own, rarer
#: places (query, raw bodies, JSON strings) so that most requests reach the views.
text = st.one_of(
    st.text(char, max_size=20),
    st.lists(st.one_of(nasty_char, char), max_size=12).map("".join),
    st.lists(nasty_char, min_size=1, max_size=4).map("".join),
    st.sampled_from(NUMBERS),
    st.integers(min_value=1, max_value=5000).map(lambda n: "x" * n),
)
path_junk = st.text(char.filter(lambda c: c != "/"), min_size=1, max_size=20) | text
#: Text a JSON string can carry that a form field cannot (lone surrogates).
json_text = st.one_of(text, st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u0000x"]))
#: Bytes, mostly not UTF-8 (NUL replaced: it has its own, rarer branch in ``text``).
form_value = st.one_of(text, st.binary(max_size=24).map(lambda b: b.replace(b"\x00", b"\xff")))
key = st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS), text)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10 ** 23, -10 ** 23, 2 ** 63, 2 ** 64,
                                                              10 ** 400]),
    st.floats(allow_nan=False, allow_infinity=False), json_text)
json_value = st.recursive(
    json_scalar,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.one_of(st.sampled_from(FIELDS), json_text), children, max_size=4),
    max_leaves=12)
raw_body = st.one_of(
    st.binary(max_size=64).map(lambda b: b.replace(b"\x00", b"\xfe")),
    st.binary(max_size=16),
    st.sampled_from([b"[" * 5000, b"{\"a\":" * 3000, b"NaN", b"Infinity", b"1e999",
                     b"{\"name\": NaN}", b"\xff\xfe", b"\xed\xa0\x80", b"%ff=%fe&%00=1",
                     b"a=1&a=2&a=3", b"{\"limit\": 1e309}", b"--x\r\n\r\n--x--",
                     b"[" + b"1," * 2000 + b"1]", b"\"" + b"\\u0000" * 10 + b"\""]))
content_type = st.sampled_from(["application/x-www-form-urlencoded", "application/json",
                                "text/plain", "multipart/form-data; boundary=x",
                                "application/json; charset=latin-1", ""])
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
#: Text a free-text field must refuse: a control or bidirectional character inside it.
unsafe_text = st.tuples(st.text(char, max_size=8), st.sampled_from(
    ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9b", "\u202e", "\u202a", "\u2066", "\u2069",
     "\u200e", "\u200f", "\u061c", "\u2028", "\n", "\r", "\t"]), st.text(char, max_size=8)).map(
    lambda parts: f"x{parts[0]}{parts[1]}{parts[2]}x")
not_a_scope = text.map(lambda s: "?" + s)
bad_days = st.one_of(text, st.sampled_from([0, -1, 10 ** 23, 1.5, True, None, "7", [7], {"d": 7}]))
#: Durations of access requests that are refused: the fuzz env's request asks for 8 hours.
bad_hours = st.one_of(text, st.sampled_from([0, -1, 9, 721, 10 ** 23, 1.5, True, "8", [8]]))
bad_delivery = st.one_of(
    json_scalar, st.lists(json_scalar, max_size=2),
    st.fixed_dictionaries({"method": json_text}),
    st.fixed_dictionaries({"method": st.just("urn:ietf:rfc:8935"),
                           "endpoint_url": st.one_of(json_scalar, text.map(lambda s: "ftp:" + s))}))


def _form_poison(**choices):
    return st.one_of(*(st.fixed_dictionaries({name: value}) for name, value in choices.items()))


#: Bodies of which one field is always refused (the ``poisoned`` kind): JSON objects for
#: machine endpoints, form fields for pages. ``{group}``, ``{stream}`` are the seeded ids.
POISON = {
    "oauth.token": lambda env: st.fixed_dictionaries({
        "grant_type": st.just(TOKEN_EXCHANGE), "subject_token": st.just(env.tokens["bob"]),
        "subject_token_type": st.just(ACCESS_TOKEN_TYPE), "tenant": st.just(TENANT),
    }).flatmap(lambda base: _form_poison(reason=unsafe_text, scope=not_a_scope,
                                         audience=not_a_scope, resource=not_a_scope)
               .map(lambda poison: {**base, **poison})),
    "api.groups_create": lambda env: st.one_of(
        st.fixed_dictionaries({"name": unsafe_text, "permissions": st.just([])}),
        st.fixed_dictionaries({"name": st.just("Fuzz"), "permissions": st.one_of(
            json_scalar, st.lists(not_a_scope, min_size=1, max_size=3))})),
    "api.groups_update": lambda env: st.one_of(
        st.fixed_dictionaries({"name": unsafe_text}),
        st.fixed_dictionaries({"permissions": st.one_of(
            json_scalar.filter(lambda v: v is not None),
            st.lists(not_a_scope, min_size=1, max_size=3))})),
    "api.invitations_create": lambda env: st.one_of(
        st.fixed_dictionaries({"group": st.just(env.group_id), "subject": unsafe_text}),
        st.fixed_dictionaries({"group": st.just(env.group_id),
                               "email": unsafe_text.map(lambda s: f"{s}@example.com")}),
        st.fixed_dictionaries({"group": json_scalar, "subject": st.just("someone")})),
    "api.tenant_update": lambda env: st.fixed_dictionaries({"temporary_max_age_days": bad_days}),
    "api.permanent_assign": lambda env: st.fixed_dictionaries({"name": st.one_of(
        unsafe_text, json_scalar.filter(lambda v: v is not None and not isinstance(v, str)))}),
    "ssf.stream_create": lambda env: st.one_of(
        st.fixed_dictionaries({"delivery": bad_delivery}),
        st.fixed_dictionaries({"events_requested": st.one_of(
            json_scalar, st.lists(json_scalar.filter(lambda v: not isinstance(v, str)),
                                  min_size=1, max_size=2))})),
    "ssf.stream_update": lambda env: st.fixed_dictionaries(
        {"stream_id": st.just(env.stream_id), "delivery": bad_delivery}),
    "ssf.stream_poll": lambda env: st.one_of(
        st.fixed_dictionaries({"maxEvents": st.one_of(
            st.sampled_from([-1, 1001, 10 ** 23, 1.5, True, "5", None, [1]]), json_text)}),
        st.fixed_dictionaries({"ack": st.one_of(json_scalar.filter(lambda v: v is not None),
                                                st.lists(st.integers(), min_size=1))}),
        st.fixed_dictionaries({"returnImmediately": st.one_of(json_text, st.integers())})),
    "ssf.stream_verify": lambda env: st.fixed_dictionaries({
        "stream_id": st.just(env.stream_id),
        "state": st.one_of(st.integers(), st.lists(json_scalar), st.just("x" * 501))}),
    # pages (form fields)
    "groups.create": lambda env: st.one_of(
        st.fixed_dictionaries({"name": unsafe_text}),
        st.fixed_dictionaries({"name": st.just("Fuzz"), "permissions": not_a_scope})),
    "groups.update": lambda env: st.fixed_dictionaries({"name": unsafe_text}),
    "groups.invite": lambda env: st.one_of(
        st.fixed_dictionaries({"group": st.just(env.group_id), "subject": unsafe_text}),
        st.fixed_dictionaries({"group": st.just(env.group_id),
                               "email": unsafe_text.map(lambda s: f"{s}@example.com")}),
        st.fixed_dictionaries({"group": text, "subject": st.just("someone")})),
    "tenant.set_max_age": lambda env: st.fixed_dictionaries({"temporary_max_age_days": st.one_of(
        text.filter(lambda s: not re.fullmatch(r"\s*[0-9]{1,2}\s*", s)),
        st.sampled_from(["0", "-1", "91", str(10 ** 23), "1e1"]))}),
    "tenant.set_notifications": lambda env: st.fixed_dictionaries(
        {"notification_emails": text.map(lambda s: "<" + s)}),
    "advisor.join": lambda env: st.fixed_dictionaries(
        {"tenant": st.just(TENANT), "code": text, "reason": unsafe_text}),
    "support.assign": lambda env: st.fixed_dictionaries(
        {"tenant": st.just(TENANT), "advisor": st.just("fuzz-advisor"), "name": unsafe_text}),
    # access requests and four eyes
    "api.my_access_request_create": lambda env: st.one_of(
        st.fixed_dictionaries({"tenant": st.just(TENANT), "reason": unsafe_text,
                               "duration_hours": st.just(8)}),
        st.fixed_dictionaries({"tenant": st.just(TENANT), "reason": st.just("Ticket"),
                               "duration_hours": bad_hours})),
    "api.access_request_approve": lambda env: st.one_of(
        st.fixed_dictionaries({"duration_hours": bad_hours}),
        st.fixed_dictionaries({"note": unsafe_text})),
    "api.access_request_deny": lambda env: st.fixed_dictionaries({"note": unsafe_text}),
    "api.approval_reject": lambda env: st.fixed_dictionaries({"note": unsafe_text}),
    "advisor.request_access": lambda env: st.fixed_dictionaries(
        {"tenant": st.just(TENANT), "reason": unsafe_text}),
    "tenant.approve_request": lambda env: st.one_of(
        st.fixed_dictionaries({"duration_hours": text.filter(
            lambda s: s.strip() and not re.fullmatch(r"[0-9]{1,20}", s.strip()))}),
        st.fixed_dictionaries({"duration_hours": st.sampled_from(["0", "-1", "9", "721"])}),
        st.fixed_dictionaries({"note": unsafe_text})),
    "tenant.deny_request": lambda env: st.fixed_dictionaries({"note": unsafe_text}),
    "tenant.reject_approval": lambda env: st.fixed_dictionaries({"note": unsafe_text}),
    "tenant.set_access": lambda env: st.fixed_dictionaries({"access_modes": text.filter(
        lambda s: s not in ("code", "request", "both"))}),
}


# --- routes ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def routes() -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    """(endpoint, method, rule, arguments) of every route, from a throwaway app's url_map."""
    import tempfile

    from idp_bridge.app import create_app
    from idp_bridge.settings import Settings
    from idp_bridge.storage.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        settings_ = Settings.load({
            "mode": "test", "issuer": "http://127.0.0.1:8000",
            "database_url": f"sqlite:///{tmp}/routes.sqlite",
            "secret_key": secrets.token_urlsafe(32),
            "key_encryption_key": Fernet.generate_key().decode(),
            "upstream_issuer": "http://127.0.0.1:9"}, environ={})
        db = Database(settings_.database_url)
        db.upgrade()
        app = create_app(settings_, database=db)
        found = sorted({(rule.endpoint, method, rule.rule, tuple(sorted(rule.arguments)))
                        for rule in app.url_map.iter_rules()
                        for method in rule.methods - {"HEAD", "OPTIONS"}})
        db.dispose()
    return tuple(found)


def kind_of(endpoint: str) -> str | None:
    blueprint = endpoint.partition(".")[0] if "." in endpoint else None
    if blueprint in MACHINE_BLUEPRINTS:
        return "machine"
    if blueprint in PAGE_BLUEPRINTS or endpoint == "static":
        return "page"
    return None


def pytest_generate_tests(metafunc):
    if "route" in metafunc.fixturenames:
        fuzzed = [r for r in routes() if r[0] not in EXCLUDED and kind_of(r[0])]
        metafunc.parametrize("route", fuzzed, ids=[f"{m} {rule}" for _e, m, rule, _a in fuzzed])


def test_every_route_is_fuzzed_or_excluded():
    unclassified = [f"{m} {rule} ({e})" for e, m, rule, _a in routes()
                    if kind_of(e) is None and e not in EXCLUDED]
    assert unclassified == [], "add the blueprint to MACHINE/PAGE_BLUEPRINTS or to EXCLUDED"
    stale = set(EXCLUDED) - {e for e, *_rest in routes()}
    assert stale == set()
    assert set(POISON) <= {e for e, *_rest in routes()}, "POISON names an unknown endpoint"


# --- the bridge under fuzz ------------------------------------------------------------
class FuzzEnv:
    """One bridge on SQLite with something in every table a route reads: a temporary and a
    permanent advisor, a user group, an invitation, a feed stream, an access code."""

    def __init__(self, app, upstream):
        self.app = app
        self.bridge = Bridge(app, app.test_client(), upstream)
        self.upstream = upstream
        self.tokens = {user: upstream.issue_tokens(user, lifetime=3600)["access_token"]
                       for user in ("anna", "bob", "sam", "carol", "eve")}
        self.id_token_bob = upstream.issue_tokens("bob", lifetime=3600)["id_token"]
        b = self.bridge
        # An access request of bob, pending (bob then joins by code: answering it is refused)
        # and, under four eyes, a longer maximum age awaiting a second admin.
        asked = b.api("post", "/api/me/access-requests", token=self.tokens["bob"], json={
            "tenant": TENANT, "reason": "Ticket 4711", "duration_hours": 8})
        assert asked.status_code == 201, asked.json
        self.request_id = asked.json["id"]
        for change in ({"four_eyes": True}, {"temporary_max_age_days": 7}):
            changed = b.api("patch", f"/api/tenants/{TENANT}", token=self.tokens["anna"],
                            json=change)
            assert changed.status_code == 200, changed.json
        held = b.api("patch", f"/api/tenants/{TENANT}", token=self.tokens["anna"],
                     json={"temporary_max_age_days": 14})
        assert held.status_code == 202, held.json
        self.approval_id = held.json["pending_approvals"][0]["id"]
        code = b.current_code()
        joined = b.exchange("bob", code=code, subject_token=self.tokens["bob"])
        assert joined.status_code == 200, joined.json
        self.refresh_token = joined.json["refresh_token"]
        self.access_token = joined.json["access_token"]
        assigned = b.api("put", f"/api/tenants/{TENANT}/permanent-advisors/"
                         f"{DEMO_USERS['carol']['sub']}", token=self.tokens["sam"])
        assert assigned.status_code == 201, assigned.json
        # Support's pending proposal of bob as a permanent advisor (the tenant accepts).
        proposal = b.api("post", f"/api/tenants/{TENANT}/permanent-proposals",
                         token=self.tokens["sam"], json={"advisor": DEMO_USERS["bob"]["sub"]})
        assert proposal.status_code == 201, proposal.json
        self.proposal_id = proposal.json["id"]
        group = b.api("post", f"/api/tenants/{TENANT}/groups", token=self.tokens["anna"],
                      json={"name": "Lohnbuchhaltung", "permissions": ["payments:read"]})
        assert group.status_code == 201, group.json
        self.group_id = group.json["id"]
        invitation = b.api("post", f"/api/tenants/{TENANT}/invitations", token=self.tokens["anna"],
                           json={"group": self.group_id, "email": "someone@example.com"})
        assert invitation.status_code == 201, invitation.json
        self.invitation_id = invitation.json["id"]
        stream = b.client.post("/ssf/stream", json={"delivery": {"method": "urn:ietf:rfc:8936"}},
                               auth=(RS_CLIENT_ID, b.rs_secret))
        assert stream.status_code == 201, stream.json
        self.stream_id = stream.json["stream_id"]
        # The SET keys exist before anything is sent (serve and demo make them before the
        # first request; only a database that never had them makes them on first read).
        assert b.client.get("/ssf/jwks").status_code == 200
        self.membership_id = b.membership_id("bob")
        self.known = {"tenant_id": TENANT, "membership_id": self.membership_id,
                      "group_id": self.group_id, "invitation_id": self.invitation_id,
                      "stream_id": self.stream_id, "advisor_subject": DEMO_USERS["carol"]["sub"],
                      "request_id": self.request_id, "approval_id": self.approval_id,
                      "proposal_id": self.proposal_id, "filename": "web/app.css"}
        self.pages = {user: signed_in(app, user) for user in ("anna", "bob", "sam")}
        self.csrf = {user: csrf_token(client) for user, client in self.pages.items()}

    def snapshot(self) -> list[str]:
        return sorted(dump_database(self.bridge.services.db).splitlines())


@pytest.fixture(scope="module")
def fuzz_env(upstream, tmp_path_factory):
    settings_ = make_settings(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.sqlite'}",
                              upstream)
    app = build_app(settings_)
    env = FuzzEnv(app, upstream)
    yield env
    env.bridge.services.db.dispose()


# --- requests -------------------------------------------------------------------------
def role_for(endpoint: str, rule: str) -> str:
    """The user whose credentials a route wants."""
    if endpoint.startswith(("advisor.", "api.my_", "api.leave", "api.accept_invitation")):
        return "bob"
    if endpoint.startswith(("support.", "api.permanent_")):
        return "sam"
    return "anna"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{quote(user)}:{quote(password)}".encode()).decode()


def machine_auth(draw, env, endpoint: str, rule: str, valid: bool) -> dict:
    blueprint = endpoint.partition(".")[0]
    b = env.bridge
    if blueprint == "oauth":
        # The token endpoint's client is the exchange client; the resource server
        # introspects and revokes.
        good = [_basic(CLIENT_ID, b.secret)] if endpoint == "oauth.token" else [
            _basic(CLIENT_ID, b.secret), _basic(RS_CLIENT_ID, b.rs_secret)]
        bad = [_basic(CLIENT_ID, "wrong"), _basic(draw(header_text), draw(header_text))]
    elif blueprint == "api":
        good = [f"Bearer {env.tokens[role_for(endpoint, rule)]}"]
        bad = [f"Bearer {env.tokens['eve']}", f"Bearer {env.id_token_bob}",
               f"Bearer {env.access_token}", "Bearer " + draw(header_text)]
    elif blueprint == "ssf":
        good = [_basic(RS_CLIENT_ID, b.rs_secret)]
        bad = [_basic(CLIENT_ID, b.secret), _basic(RS_CLIENT_ID, "wrong")]
    else:
        good = []
        bad = []
    bad = bad + [draw(header_text), "Basic " + draw(header_text), "Bearer"]
    if valid and good:
        return {"Authorization": draw(st.sampled_from(good))}
    choice = draw(st.sampled_from(bad + [None]))
    return {"Authorization": choice} if choice is not None else {}


def path_for(rule: str, values: dict) -> str:
    def fill(match):
        converter, name = (match.group(1) or ""), match.group(2)
        return quote(values[name], safe="/" if converter == "path:" else "")
    return re.sub(r"<([a-z]+:)?([a-z_]+)>", fill, rule)


def path_values(draw, env, arguments, mode: str) -> dict:
    """Path parameters: ``known`` real ids; ``junk`` random ones (the tenant may stay real
    when something else is named inside it); ``any`` either."""
    values = {}
    for name in arguments:
        known = env.known[name]
        junk = draw(unsafe_text if name == "advisor_subject" else path_junk)
        if mode == "known":
            values[name] = known
        elif mode == "junk":
            keep_tenant = name == "tenant_id" and len(arguments) > 1 and draw(st.booleans())
            values[name] = known if keep_tenant else junk
        else:
            values[name] = draw(st.sampled_from([known, junk]))
    return values


def random_pairs(draw) -> list:
    return draw(st.lists(st.tuples(key, form_value), max_size=6))


def body_for(draw, method: str):
    """(data, content_type) of a random body."""
    if method == "GET":
        return None, None
    shape = draw(st.sampled_from(["none", "form", "json", "raw"]))
    if shape == "none":
        return None, None
    if shape == "form":
        return urlencode(random_pairs(draw)), "application/x-www-form-urlencoded"
    if shape == "json":
        return json.dumps(draw(json_value)), "application/json"
    return draw(raw_body), draw(content_type)


def query_for(draw) -> bytes:
    pairs = random_pairs(draw)
    query = urlencode(pairs).encode()
    if draw(st.integers(0, 3)):
        return query
    return query + b"&" + draw(st.sampled_from([b"before=" + str(10 ** 23).encode(),
                                                b"limit=-1", b"%ff%fe=%c3%28", b"a=%00",
                                                b"before=1e3&before=2", b"since=9999-12-31",
                                                b"until=9999-12-31", b"limit=" + b"9" * 5000]))


@st.composite
def machine_request(draw, env, route):
    endpoint, method, rule, arguments = route
    if method == "GET":  # reading: valid credentials with real or random path parameters
        kinds = ["unauthenticated", "signed-in", "signed-in"]
    else:
        kinds = ["unauthenticated"] + ([] if endpoint in CREATES_FROM_BODY else ["junk-ids"]) \
            + (["poisoned"] if endpoint in POISON else [])
    kind = draw(st.sampled_from(kinds))
    headers = machine_auth(draw, env, endpoint, rule, valid=kind != "unauthenticated")
    values = path_values(draw, env, arguments, {"unauthenticated": "any", "junk-ids": "junk",
                                                "poisoned": "known", "signed-in": "any"}[kind])
    data, ctype = body_for(draw, method)
    if endpoint.startswith("oauth.") and kind == "junk-ids" and draw(st.integers(0, 3)):
        # Reach the grants and endpoints: the parameters they need, every other one random.
        pairs = [(k, v) for k, v in random_pairs(draw) if k not in (
            "grant_type", "subject_token", "subject_token_type", "token")]
        if endpoint == "oauth.token":
            pairs.append(("grant_type", draw(st.one_of(
                st.just(TOKEN_EXCHANGE), st.just("refresh_token"), st.sampled_from(GRANT_TYPES),
                text))))
            pairs += list(draw(st.dictionaries(st.sampled_from(
                ["tenant", "scope", "audience", "resource", "reason", "access_code",
                 "refresh_token", "requested_token_type"]), form_value)).items())
            if draw(st.booleans()):
                pairs += [("subject_token", draw(st.sampled_from(
                    [env.tokens["bob"], env.id_token_bob, env.access_token]))),
                    ("subject_token_type", draw(st.sampled_from(
                        [ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE])))]
            # No real tenant: bob is a member, and a valid request would mint tokens.
            pairs = [(k, v) for k, v in pairs if k != "tenant" or v != TENANT]
        elif endpoint == "oauth.introspect":  # reading: real tokens too
            pairs.append(("token", draw(st.one_of(text, st.sampled_from(
                [env.access_token, env.refresh_token, env.tokens["bob"]])))))
        else:  # revocation of a real token would change something: random ones only
            pairs.append(("token", draw(text)))
        data, ctype = urlencode(pairs), "application/x-www-form-urlencoded"
    if kind == "poisoned":
        poison = draw(POISON[endpoint](env))
        if endpoint == "oauth.token":
            data, ctype = urlencode(list(poison.items())), "application/x-www-form-urlencoded"
        else:
            extra = draw(st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=2))
            data, ctype = json.dumps({**extra, **poison}), "application/json"
    return {"method": method, "path": path_for(rule, values), "query_string": query_for(draw),
            "headers": headers, "data": data, "content_type": ctype, "client": None}


@st.composite
def page_request(draw, env, route):
    endpoint, method, rule, arguments = route
    if endpoint in FRESH_CLIENT:
        kinds = ["unauthenticated"]
    elif method == "GET":
        kinds = ["signed-in", "unauthenticated"]
    else:
        kinds = ["unauthenticated", "junk-ids"] + (["poisoned"] if endpoint in POISON else [])
    kind = draw(st.sampled_from(kinds))
    user = role_for(endpoint, rule)
    if kind == "unauthenticated":
        session_user = draw(st.sampled_from([None, "anna", "bob", "sam"]))
        if endpoint in FRESH_CLIENT:
            session_user = None
    else:
        session_user = user if kind != "signed-in" else draw(st.sampled_from([user, user, "bob"]))
    mode = {"unauthenticated": "any", "junk-ids": "junk", "poisoned": "known",
            "signed-in": "any"}[kind]
    values = path_values(draw, env, arguments, mode)
    data, ctype = body_for(draw, method)
    if method != "GET":
        # Unauthenticated: no CSRF token or a wrong one; otherwise a valid one, so that the
        # request reaches the view.
        if kind == "unauthenticated" or session_user is None:
            token = draw(st.sampled_from([None, "wrong", env.csrf["anna"]]))
        else:
            token = env.csrf[session_user]
        pairs = random_pairs(draw)
        if kind == "poisoned":
            pairs = [(k, v) for k, v in pairs if k not in ("tenant", "group", "name")]
            pairs += list(draw(POISON[endpoint](env)).items())
        if token is not None:
            pairs.append(("csrf_token", token))
        form = urlencode(pairs).encode()
        if ctype in (None, "application/x-www-form-urlencoded") or kind != "unauthenticated":
            if isinstance(data, bytes) and kind != "poisoned":
                form += b"&" + data
            data, ctype = form, "application/x-www-form-urlencoded"
    client = env.pages[session_user] if session_user else None
    return {"method": method, "path": path_for(rule, values), "query_string": query_for(draw),
            "headers": {}, "data": data, "content_type": ctype, "client": client}


def send(env, spec):
    client = spec["client"] or env.app.test_client()
    kwargs = {"query_string": spec["query_string"].decode("ascii"), "headers": spec["headers"]}
    if spec["data"] is not None:
        kwargs["data"] = spec["data"]
        if spec["content_type"]:
            kwargs["content_type"] = spec["content_type"]
    return client.open(spec["path"], method=spec["method"], **kwargs)


def test_route_survives_hostile_input(fuzz_env, route, caplog):
    endpoint = route[0]
    machine = kind_of(endpoint) == "machine"
    strategy = machine_request(fuzz_env, route) if machine else page_request(fuzz_env, route)
    caplog.set_level(logging.WARNING)

    @fuzz_settings(endpoint)
    @given(spec=strategy)
    def run(spec):
        before = fuzz_env.snapshot()
        caplog.clear()
        response = send(fuzz_env, spec)
        shown = f"{spec['method']} {spec['path']} -> {response.status_code}"
        assert response.status_code < 500, shown + " " + response.get_data(as_text=True)[:300]
        if machine and response.status_code >= 400:
            body = response.get_json(silent=True)
            assert isinstance(body, dict) and isinstance(body.get("error"), str), \
                shown + " " + response.get_data(as_text=True)[:300]
        problems = [r.getMessage() for r in caplog.records
                    if r.exc_info or "unhandled error" in r.getMessage()
                    or "Traceback" in r.getMessage()]
        assert problems == [], shown
        after = fuzz_env.snapshot()
        if endpoint in AUDITED_READS and response.status_code == 200:
            added = [line for line in set(after) - set(before)
                     if line.startswith("audit_events: ")]
            assert len(added) == 1 and f"| {AUDITED_READS[endpoint]} |" in added[0], shown
            after, before = ([line for line in lines if line not in added
                              and not line.startswith("audit_chain_heads: ")]
                             for lines in (after, before))
        assert after == before, shown + ": the database changed: " + repr(
            sorted(set(after) ^ set(before))[:6])

    run()
