"""Subject tokens are checked strictly (issue 10, item 3): every claim the bridge reads by type
and range (RFC 7519 section 4.1), and explicit typing (RFC 8725 section 3.11). Each token
below is signed with the trusted upstream key, so only the claim checks can stop it; each is
refused at the token endpoint (400 invalid_request) and at the management API (401
invalid_token), with a description that does not echo the value, and changes nothing."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jws
from sqlalchemy import func, select

from conftest import (
    ACCESS_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    TENANT,
    Bridge,
    active_memberships,
    build_app,
)
from idp_bridge.app import services
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.models import TokenFamily

BOB = DEMO_USERS["bob"]["sub"]
#: Put into string values: it must never come back in an answer.
MARK = "MARKER-7f3a"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def claims_of(token: str) -> dict:
    return json.loads(jws.extract_compact(token.encode()).payload)


def signed(upstream, header: dict | None, payload: bytes | dict) -> str:
    """A token signed with the development provider's own key (the trusted upstream key),
    by hand (RS256), so that header and payload may be anything: JSON the standard library
    would not write, such as ``1e309`` (infinity) or ``NaN``, or a ``typ`` that is no
    string."""
    assert upstream.alg == "RS256"
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    protected = {"alg": upstream.alg, "kid": upstream.kid}
    protected.update(header if header is not None else {"typ": "JWT"})
    protected = {k: v for k, v in protected.items() if v is not None}
    signing_input = f"{b64url(json.dumps(protected).encode())}.{b64url(payload)}"
    signature = upstream._key.private_key.sign(signing_input.encode(), padding.PKCS1v15(),
                                               hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(b: Bridge, user: str, header=None, **changes) -> str:
    """An upstream access token of ``user`` with claims changed (None removes one, a
    callable is called when the token is made)."""
    claims = claims_of(b.upstream_token(user))
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value() if callable(value) else value
    return signed(b.upstream, header, claims)


def raw_access_token(b: Bridge, user: str, **raw) -> str:
    """An access token whose claims ``raw`` are spliced into the JSON text as written."""
    claims = claims_of(b.upstream_token(user))
    for name in raw:
        claims.pop(name, None)
    text = json.dumps(claims)[:-1] + "".join(f', "{k}": {v}' for k, v in raw.items()) + "}"
    return signed(b.upstream, None, text.encode())


def at(header=None, **changes):
    return lambda b, user: access_token(b, user, header, **changes)


def raw(**values):
    return lambda b, user: raw_access_token(b, user, **values)


def logout_token_as_subject(b: Bridge, user: str) -> str:
    return b.upstream.logout_token(sub=DEMO_USERS[user]["sub"], sid="s-1")


#: (case, token maker); every one is refused as an access token.
REFUSED = [
    ("exp 1e309 (infinity)", raw(exp="1e309")),
    ("exp NaN", raw(exp="NaN")),
    ("exp -Infinity", raw(exp="-Infinity")),
    ("exp a string", at(exp=lambda: str(int(time.time()) + 300))),
    ("exp true", at(exp=True)),
    ("exp beyond year 9999", at(exp=10 ** 20)),
    ("exp null", raw(exp="null")),
    ("nbf infinity", raw(nbf="1e309")),
    ("iat NaN", raw(iat="NaN")),
    ("iat a string", at(iat="yesterday")),
    ("auth_time an object", at(auth_time={"at": 1767225600})),
    ("auth_time negative", at(auth_time=-5)),
    ("aud a JSON object", at(aud={"idp-bridge": True})),
    ("aud an array with a number", at(aud=["idp-bridge", 5])),
    ("aud a number", at(aud=5)),
    ("aud missing", at(aud=None)),
    ("sub a number", at(sub=4711)),
    ("sub with NUL", at(sub=f"{BOB}\u0000{MARK}")),
    ("sub with a bidi override", at(sub=f"\u202e{MARK}")),
    ("sub of 256 characters", at(sub=MARK + "x" * (256 - len(MARK)))),
    ("iss an array", at(iss=["http://issuer.example"])),
    ("sid a number", at(sid=42)),
    ("sid with a newline", at(sid=f"a\n{MARK}")),
    ("sid of 300 characters", at(sid=MARK * 30)),
    ("acr a number", at(acr=2)),
    ("amr a string", at(amr="pwd")),
    ("amr with a number", at(amr=["pwd", 1])),
    ("typ claim Refresh", at(typ="Refresh")),
    ("typ claim Offline", at(typ="Offline")),
    ("typ claim Logout", at(typ="Logout")),
    ("typ claim ID", at(typ="ID")),
    ("typ claim a list", at(typ=["Bearer"])),
    ("typ header logout+jwt", at(header={"typ": "logout+jwt"})),
    ("typ header secevent+jwt", at(header={"typ": "secevent+jwt"})),
    ("typ header a number", at(header={"typ": 1})),
    ("events claim (logout-token shape)", at(
        events={LOGOUT_EVENT: {}}, typ=None)),
    ("a logout token", logout_token_as_subject),
]
#: Tokens that are fine: the table above refuses because of the one claim it changes.
ACCEPTED = [
    ("as issued", at()),
    ("finite float exp", at(exp=lambda: time.time() + 300.5)),
    ("typ header at+jwt", at(header={"typ": "at+jwt"})),
    ("typ header application/at+jwt", at(header={"typ": "application/at+jwt"})),
    ("no typ header", at(header={"typ": None})),
    ("no typ claim", at(typ=None)),
    ("aud a string", at(aud="idp-bridge")),
]


def family_count(bridge: Bridge) -> int:
    with bridge.services.db.read() as session:
        return session.scalar(select(func.count()).select_from(TokenFamily))


def exchange(bridge: Bridge, token: str, token_type=ACCESS_TOKEN_TYPE, code=None):
    return bridge.exchange("bob", subject_token=token, subject_token_type=token_type,
                           code=code or bridge.current_code())


@pytest.mark.db_independent
@pytest.mark.parametrize("make", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_at_the_token_endpoint_and_nothing_changes(bridge, make):
    code = bridge.current_code()
    response = exchange(bridge, make(bridge, "bob"), code=code)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_request"
    assert MARK not in response.get_data(as_text=True)
    assert active_memberships(bridge) == []
    assert family_count(bridge) == 0
    assert bridge.current_code() == code  # nothing redeemed


@pytest.mark.parametrize("make", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_well_formed_tokens_are_accepted(bridge, make):
    response = exchange(bridge, make(bridge, "bob"))
    assert response.status_code == 200, response.json
    assert family_count(bridge) == 1


@pytest.mark.db_independent
@pytest.mark.parametrize("make", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_at_the_management_api(bridge, make):
    """The API authorises by the same validator: anna's token, changed the same way."""
    token = make(bridge, "anna")
    response = bridge.api("get", f"/api/tenants/{TENANT}/access-code", token=token)
    assert response.status_code == 401, response.json
    assert response.json["error"] == "invalid_token"
    assert "code" not in response.json
    assert MARK not in response.get_data(as_text=True)


def test_management_api_accepts_anna_as_issued(bridge):
    response = bridge.api("get", f"/api/tenants/{TENANT}/access-code",
                          token=at()(bridge, "anna"))
    assert response.status_code == 200 and response.json["code"]


# --- ID tokens as subject tokens -------------------------------------------------------------

@pytest.fixture
def id_bridge(settings, upstream, new_database_url):
    """ID tokens of the advisor console (audience advisor-console) are accepted here."""
    app = build_app(settings.replace(upstream_audiences=("idp-bridge", "advisor-console"),
                                     database_url=new_database_url()))
    yield Bridge(app, app.test_client(), upstream)
    services(app).db.dispose()


def id_token(client_id="advisor-console", header=None, **changes):
    """A maker of bob's ID token for ``client_id`` with claims changed (None removes one)."""
    def make(b: Bridge) -> str:
        claims = claims_of(b.upstream.issue_tokens("bob", client_id=client_id)["id_token"])
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return signed(b.upstream, header, claims)
    return make


def id_token_with_infinite_exp(b: Bridge) -> str:
    claims = claims_of(id_token()(b))
    claims.pop("exp")
    return signed(b.upstream, None, (json.dumps(claims)[:-1] + ', "exp": 1e309}').encode())


ID_REFUSED = [
    ("typ header at+jwt", id_token(header={"typ": "at+jwt"})),
    ("typ header logout+jwt", id_token(header={"typ": "logout+jwt"})),
    ("typ claim Bearer", id_token(typ="Bearer")),
    ("typ claim Refresh", id_token(typ="Refresh")),
    ("events claim", id_token(events={LOGOUT_EVENT: {}})),
    ("exp infinity", id_token_with_infinite_exp),
    ("issued to the bridge's own sign-in client", id_token(client_id="idp-bridge")),
    ("a logout token", lambda b: logout_token_as_subject(b, "bob")),
]


@pytest.mark.db_independent
@pytest.mark.parametrize("make", [c[1] for c in ID_REFUSED], ids=[c[0] for c in ID_REFUSED])
def test_id_tokens_refused_and_nothing_changes(id_bridge, make):
    code = id_bridge.current_code()
    response = exchange(id_bridge, make(id_bridge), ID_TOKEN_TYPE, code=code)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_request"
    assert active_memberships(id_bridge) == []
    assert family_count(id_bridge) == 0
    assert id_bridge.current_code() == code


@pytest.mark.parametrize("make", [id_token(), id_token(header={"typ": None}),
                                  id_token(typ=None)], ids=["as issued", "no typ header",
                                                            "no typ claim"])
def test_id_tokens_of_the_console_are_accepted(id_bridge, make):
    response = exchange(id_bridge, make(id_bridge), ID_TOKEN_TYPE)
    assert response.status_code == 200, response.json


def test_sign_in_id_token_is_no_subject_token_with_default_audiences(bridge):
    """The bridge's own sign-in ID token names ``idp-bridge``, an accepted audience by
    default; it still opens nothing (issue 10, item 10)."""
    token = bridge.upstream.issue_tokens("bob", client_id="idp-bridge")["id_token"]
    code = bridge.current_code()
    response = exchange(bridge, token, ID_TOKEN_TYPE, code=code)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert "own sign-in" in response.json["error_description"]
    assert family_count(bridge) == 0 and active_memberships(bridge) == []


@pytest.mark.parametrize("name", [f"\u202e{MARK}", MARK * 40, f"a\nb{MARK}", 4711],
                         ids=["bidi override", "300 characters", "newline", "a number"])
def test_display_names_that_cannot_be_shown_fall_back_to_the_subject(bridge, name):
    """``preferred_username`` is display only: one that could not be shown (or stored) as it
    is does not refuse the token, the tenant is shown the subject instead."""
    response = exchange(bridge, at(preferred_username=name, email=None)(bridge, "bob"))
    assert response.status_code == 200, response.json
    (member,) = active_memberships(bridge)
    assert member.advisor_name == BOB
