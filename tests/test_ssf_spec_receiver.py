"""A receiver written from the SSF 1.0 Final text, the CAEP 1.0 and CAEP interoperability
profile texts and RFC 6749/6750/8414/8936 alone (issue 13 item 6): plain HTTP with
``requests`` and a JOSE library, nothing of ``scopes.guard`` nor of the bridge's code. It
drives the management API over real HTTP through a stream's whole life with OAuth 2.0
bearer tokens (client credentials) and validates a real removal's session-revoked SET field
by field, as a strict receiver would.

Each check names the section it comes from.
"""

from __future__ import annotations

import base64
import time

import pytest
import requests
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from conftest import RS_CLIENT_ID, TENANT, Bridge, ServerThread, build_app

pytestmark = pytest.mark.slow

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
POLL = "urn:ietf:rfc:8936"
ENTITIES = ("admin", "user", "policy", "system")  # CAEP 2


@pytest.fixture
def served(settings, upstream):
    """The bridge really served on loopback, its issuer being the URL it is served at."""
    holder = {}

    def app(environ, start_response):
        return holder["app"](environ, start_response)

    with ServerThread(app) as server:
        issuer = f"http://127.0.0.1:{server.port}"
        holder["app"] = build_app(settings.replace(issuer=issuer))
        yield issuer, Bridge(holder["app"], holder["app"].test_client(), upstream)


class SpecReceiver:
    def __init__(self, issuer: str, client_id: str, client_secret: str):
        self.issuer = issuer
        self.http = requests.Session()
        self.http.trust_env = False
        # SSF 7.2: the configuration at /.well-known/ssf-configuration, issuer identical.
        config = self.http.get(f"{issuer}/.well-known/ssf-configuration", timeout=10)
        assert config.status_code == 200
        assert config.headers["Content-Type"].startswith("application/json")
        self.config = config.json()
        assert self.config["issuer"] == issuer
        assert self.config["spec_version"] == "1_0"  # interop profile 2.3.1
        for name in ("jwks_uri", "configuration_endpoint", "status_endpoint",
                     "verification_endpoint", "delivery_methods_supported"):
            assert name in self.config  # interop profile 2.3.2 - 2.3.6
        assert {"spec_urn": "urn:ietf:rfc:6749"} in self.config["authorization_schemes"]
        # RFC 8414: where the token endpoint is; RFC 6749 4.4: client credentials.
        metadata = self.http.get(f"{issuer}/.well-known/oauth-authorization-server",
                                 timeout=10).json()
        answer = self.http.post(metadata["token_endpoint"], timeout=10,
                                data={"grant_type": "client_credentials",
                                      "scope": "ssf.manage"},
                                auth=(client_id, client_secret))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["token_type"].lower() == "bearer"
        assert "ssf.manage" in body["scope"].split()
        self.token = body["access_token"]
        self.aud = client_id

    def call(self, method, url, **kwargs):
        # RFC 6750 2.1: the token in the Authorization header.
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return self.http.request(method, url, headers=headers, timeout=10, **kwargs)

    def checked_config(self, response, status=200):
        assert response.status_code == status, response.text
        config = response.json()
        assert config["iss"] == self.issuer  # SSF 8.1.1.1: iss checked on every answer
        assert config["aud"] == self.aud or self.aud in config["aud"]
        assert config["delivery"]["method"] in self.config["delivery_methods_supported"]
        return config

    def keys(self) -> KeySet:
        return KeySet.import_key_set(self.http.get(self.config["jwks_uri"], timeout=10).json())

    def validate(self, token: str, stream: dict) -> dict:
        """A SET as SSF 4.1, RFC 8417 and the interop profile ask."""
        header = jws.extract_compact(token.encode()).protected
        assert header["typ"] == "secevent+jwt"  # SSF 4.1.1
        assert header["alg"] == "RS256"  # interop profile 2.7
        keys = self.keys()
        key = keys.get_by_kid(header["kid"])
        modulus = key.as_dict()["n"]
        assert key.key_type == "RSA"
        assert len(base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))) * 8 >= 2048
        claims = jwt.decode(token, keys, algorithms=["RS256"]).claims
        assert claims["iss"] == self.issuer == stream["iss"]  # SSF 4.1.6
        assert claims["aud"] == stream["aud"]  # SSF 4.1.8
        assert "sub" not in claims  # SSF 4.1.2
        assert "exp" not in claims  # SSF 4.1.7
        assert isinstance(claims["jti"], str) and claims["jti"]
        assert isinstance(claims["iat"], int) and abs(claims["iat"] - time.time()) < 300
        assert isinstance(claims["txn"], str) and claims["txn"]  # SSF 4.1.9 (SHOULD)
        assert isinstance(claims["sub_id"], dict) and claims["sub_id"]["format"]  # SSF 3.1
        assert len(claims["events"]) == 1  # interop profile 2.8
        return claims

    def poll(self, stream: dict, **body) -> dict:
        response = self.call("post", stream["delivery"]["endpoint_url"],
                             json={"returnImmediately": True, **body})
        assert response.status_code == 200, response.text
        document = response.json()
        assert isinstance(document["sets"], dict)
        assert document.get("moreAvailable", True) is True  # RFC 8936 2.3: present if true
        return document


def test_a_receiver_from_the_spec_text(served):
    issuer, bridge = served
    receiver = SpecReceiver(issuer, RS_CLIENT_ID, bridge.rs_secret)
    configuration = receiver.config["configuration_endpoint"]
    status_endpoint = receiver.config["status_endpoint"]

    # SSF 8.1.1.1: create; no delivery means poll, with the transmitter's endpoint_url.
    created = receiver.checked_config(receiver.call("post", configuration, json={
        "events_requested": [SESSION_REVOKED, VERIFICATION],
        "description": "spec receiver"}), 201)
    stream_id = created["stream_id"]
    assert created["delivery"]["method"] == POLL and created["delivery"]["endpoint_url"]
    assert created["description"] == "spec receiver"
    assert set(created["events_delivered"]) <= set(created["events_supported"]) & \
        set(created["events_requested"])

    # SSF 8.1.1.2: read one, and the list.
    assert receiver.checked_config(receiver.call(
        "get", configuration, params={"stream_id": stream_id})) == created
    listed = receiver.call("get", configuration)
    assert listed.status_code == 200 and [s["stream_id"] for s in listed.json()] == [stream_id]

    # SSF 8.1.1.3: PATCH changes what it names; transmitter values sent back must match.
    patched = receiver.checked_config(receiver.call("patch", configuration, json={
        "stream_id": stream_id, "description": "patched",
        "events_delivered": created["events_delivered"]}))
    assert patched["description"] == "patched"
    assert patched["events_requested"] == created["events_requested"]
    wrong = receiver.call("patch", configuration, json={"stream_id": stream_id,
                                                        "aud": "not-me"})
    assert wrong.status_code == 400

    # SSF 8.1.1.4: PUT replaces: the missing description is deleted.
    replaced = receiver.checked_config(receiver.call("put", configuration, json={
        "stream_id": stream_id, "delivery": {"method": POLL},
        "events_requested": [SESSION_REVOKED, VERIFICATION]}))
    assert "description" not in replaced
    assert SESSION_REVOKED in replaced["events_delivered"]

    # SSF 8.1.2: status read and update, with reasons.
    status = receiver.call("get", status_endpoint, params={"stream_id": stream_id})
    assert status.status_code == 200 and status.json()["status"] == "enabled"
    for value, reason in (("paused", "deploying"), ("enabled", None),
                          ("disabled", "not needed now"), ("enabled", "needed again")):
        body = {"stream_id": stream_id, "status": value}
        if reason:
            body["reason"] = reason
        answer = receiver.call("post", status_endpoint, json=body)
        assert answer.status_code == 200
        assert answer.json()["stream_id"] == stream_id and answer.json()["status"] == value
        assert answer.json().get("reason") == reason
        assert receiver.call("get", status_endpoint,
                             params={"stream_id": stream_id}).json() == answer.json()

    # SSF 8.1.3: add and remove a subject.
    subject = {"format": "opaque", "id": "a-grant-we-do-not-want"}
    removed = receiver.call("post", receiver.config["remove_subject_endpoint"],
                            json={"stream_id": stream_id, "subject": subject})
    assert removed.status_code == 204
    added = receiver.call("post", receiver.config["add_subject_endpoint"],
                          json={"stream_id": stream_id, "subject": subject, "verified": True})
    assert added.status_code == 200

    # SSF 8.1.4.2: verification, then too soon again: 429 with min_verification_interval.
    verify = receiver.config["verification_endpoint"]
    assert receiver.call("post", verify, json={"stream_id": stream_id,
                                               "state": "c3RhdGU"}).status_code == 204
    if replaced.get("min_verification_interval"):
        again = receiver.call("post", verify, json={"stream_id": stream_id})
        assert again.status_code == 429
        assert int(again.headers["Retry-After"]) >= 1

    # A real removal: the tenant admin ends bob's membership.
    tokens = bridge.join("bob")
    grant_id = bridge.introspect(tokens["access_token"]).json["grant_id"]
    membership = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}"
                      ).status_code == 204

    # RFC 8936: poll, validate, acknowledge.
    document = receiver.poll(replaced, maxEvents=10)
    by_type = {}
    for jti, token in document["sets"].items():
        claims = receiver.validate(token, replaced)
        assert claims["jti"] == jti
        (event_type,) = claims["events"]
        by_type[event_type] = claims
    assert set(by_type) == {VERIFICATION, SESSION_REVOKED}

    verification = by_type[VERIFICATION]
    assert verification["sub_id"] == {"format": "opaque", "id": stream_id}  # SSF 8.1.4.1
    assert verification["events"][VERIFICATION] == {"state": "c3RhdGU"}

    revoked = by_type[SESSION_REVOKED]
    assert revoked["sub_id"] == {"format": "opaque", "id": grant_id}
    event = revoked["events"][SESSION_REVOKED]
    assert isinstance(event["event_timestamp"], int)  # CAEP 3.1
    assert abs(event["event_timestamp"] - time.time()) < 300
    assert event["initiating_entity"] in ENTITIES and event["initiating_entity"] == "admin"
    assert isinstance(event["reason_admin"], dict) and event["reason_admin"]  # profile 3.1
    assert all(isinstance(k, str) and isinstance(v, str) and v
               for k, v in event["reason_admin"].items())

    acked = receiver.poll(replaced, ack=list(document["sets"]))
    assert acked["sets"] == {}
    assert receiver.poll(replaced)["sets"] == {}  # acknowledged: never again

    # SSF 8.1.1.5: delete; the stream is gone.
    deleted = receiver.call("delete", configuration, params={"stream_id": stream_id})
    assert deleted.status_code == 204
    gone = receiver.call("get", configuration, params={"stream_id": stream_id})
    assert gone.status_code == 404


def test_the_spec_receivers_refusals(served):
    issuer, bridge = served
    receiver = SpecReceiver(issuer, RS_CLIENT_ID, bridge.rs_secret)
    configuration = receiver.config["configuration_endpoint"]
    # RFC 6750 3.1 / SSF 8.1.1: no or a wrong token is 401, an unknown stream 404.
    anonymous = receiver.http.post(configuration, json={}, timeout=10)
    assert anonymous.status_code == 401
    forged = receiver.http.post(configuration, json={}, timeout=10,
                                headers={"Authorization": "Bearer forged.token.here"})
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_token"
    unknown = receiver.call("get", configuration, params={"stream_id": "f" * 32})
    assert unknown.status_code == 404
    # Interop profile 2.9.3: no access token in the query.
    query = receiver.http.get(configuration, params={"access_token": receiver.token},
                              timeout=10)
    assert query.status_code == 400 and query.json()["error"] == "invalid_request"
    assert receiver.call("get", configuration).json() == []
