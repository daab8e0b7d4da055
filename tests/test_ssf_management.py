"""SSF 1.0 Final stream management (section 8.1) and SET profile (section 4.1, CAEP
interoperability profile): streams, status, subjects, verification, events_requested,
per-stream signing algorithm, txn, Stream Updated events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select, update

from conftest import RS_CLIENT_ID, TENANT
from idp_bridge.ssf.rfc8417 import SESSION_REVOKED, STREAM_UPDATED, VERIFICATION
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import SsfStream

POLL = "urn:ietf:rfc:8936"
ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def api(bridge):
    return Api(bridge)


class Api:
    def __init__(self, bridge):
        self.bridge = bridge
        self.client = bridge.client
        self.auth = (RS_CLIENT_ID, bridge.rs_secret)

    def call(self, method, path, **kwargs):
        return getattr(self.client, method)(path, auth=self.auth, **kwargs)

    def create(self, body=None):
        response = self.call("post", "/ssf/stream", json={} if body is None else body)
        assert response.status_code == 201, response.json
        return response.json

    def config(self, stream_id):
        return self.call("get", f"/ssf/stream?stream_id={stream_id}").json

    def poll(self, stream_id, **body):
        response = self.call("post", f"/ssf/poll/{stream_id}",
                             json={"returnImmediately": True, **body})
        assert response.status_code == 200, response.json
        return response.json

    def status(self, stream_id, status, reason=None):
        body = {"stream_id": stream_id, "status": status}
        if reason is not None:
            body["reason"] = reason
        return self.call("post", "/ssf/status", json=body)

    def decode(self, token):
        keys = KeySet.import_key_set(self.client.get("/ssf/jwks").json)
        return jwt.decode(token, keys, algorithms=["RS256", "ES256"])

    def events(self, stream_id, ack=True):
        """[(jti, event type, claims)] of one poll, acknowledged."""
        sets = self.poll(stream_id)["sets"]
        found = []
        for jti, token in sets.items():
            claims = self.decode(token).claims
            (event_type,) = claims["events"]
            found.append((jti, event_type, claims))
        if ack and sets:
            self.poll(stream_id, ack=list(sets))
        return found

    def count(self):
        with self.bridge.services.db.read() as session:
            return session.execute(select(func.count()).select_from(SsfStream)).scalar_one()


def remove(bridge, user="bob"):
    bridge.join(user)
    mid = bridge.membership_id(user)
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204


def revoked_ids(api, stream_id):
    return [c["sub_id"]["id"] for _, t, c in api.events(stream_id) if t == SESSION_REVOKED]


def test_transmitter_configuration(api):
    doc = api.client.get("/.well-known/ssf-configuration").json
    assert doc["spec_version"] == "1_0"
    assert {"spec_urn": "urn:ietf:rfc:6749"} in doc["authorization_schemes"]
    assert {"spec_urn": "urn:ietf:rfc:7617"} in doc["authorization_schemes"]
    assert doc["jwks_uri"] == f"{ISSUER}/ssf/jwks"
    assert doc["add_subject_endpoint"] == f"{ISSUER}/ssf/subjects:add"
    assert doc["remove_subject_endpoint"] == f"{ISSUER}/ssf/subjects:remove"
    assert doc["set_signing_alg_values_supported"] == ["RS256", "ES256"]


def test_create_without_delivery_is_poll_and_keeps_the_description(api):
    config = api.create({"description": "rs-1 in eu-1", "events_requested": [VERIFICATION]})
    stream_id = config["stream_id"]
    assert config["delivery"] == {"method": POLL, "endpoint_url": f"{ISSUER}/ssf/poll/{stream_id}"}
    assert config["description"] == "rs-1 in eu-1"
    assert config["iss"] == ISSUER and config["aud"] == RS_CLIENT_ID
    assert config["events_delivered"] == [VERIFICATION]
    assert config["set_signing_alg"] == "RS256"
    assert config["min_verification_interval"] == 30
    assert api.config(stream_id) == config
    assert api.call("get", "/ssf/stream").json == [config]


def test_only_requested_events_are_delivered(api, bridge):
    only_verification = api.create({"events_requested": [VERIFICATION, "urn:example:unknown"]})
    everything = api.create()
    assert only_verification["events_delivered"] == [VERIFICATION]
    remove(bridge)
    assert api.poll(only_verification["stream_id"]) == {"sets": {}}
    assert len(revoked_ids(api, everything["stream_id"])) == 1
    assert api.call("post", "/ssf/verify",
                    json={"stream_id": only_verification["stream_id"]}).status_code == 204
    assert [t for _, t, _ in api.events(only_verification["stream_id"])] == [VERIFICATION]


@pytest.mark.parametrize("body", [
    {"unknown": 1},
    {"stream_id": "0" * 32},
    {"events_delivered": [SESSION_REVOKED]},
    {"delivery": {"method": POLL, "extra": True}},
    {"delivery": {"method": POLL, "endpoint_url": "https://elsewhere.example/poll"}},
    {"delivery": {"method": POLL, "authorization_header": "Bearer x"}},
    {"set_signing_alg": "HS256"},
    {"set_signing_alg": "none"},
    {"description": 42},
    {"events_requested": ["x"] * 33},
])
def test_create_refuses_what_it_does_not_accept(api, body):
    response = api.call("post", "/ssf/stream", json=body)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert api.count() == 0


def test_patch_changes_only_what_it_names(api, bridge):
    config = api.create({"description": "first"})
    stream_id = config["stream_id"]
    patched = api.call("patch", "/ssf/stream", json={
        "stream_id": stream_id, "events_requested": [VERIFICATION],
        "events_delivered": config["events_delivered"], "iss": ISSUER}).json
    assert patched["events_requested"] == [VERIFICATION]
    assert patched["events_delivered"] == [VERIFICATION]
    assert patched["description"] == "first"
    remove(bridge)
    assert api.poll(stream_id) == {"sets": {}}  # session-revoked no longer requested
    back = api.call("patch", "/ssf/stream", json={
        "stream_id": stream_id, "events_requested": [SESSION_REVOKED]}).json
    assert back["events_delivered"] == [SESSION_REVOKED]
    # Still relevant and never acknowledged: delivered now.
    assert len(revoked_ids(api, stream_id)) == 1


@pytest.mark.parametrize("change", [
    {"aud": "someone-else"},
    {"iss": "https://other.example"},
    {"events_delivered": [VERIFICATION]},
    {"min_verification_interval": 0},
    {"unknown": True},
    {"delivery": {"method": POLL, "endpoint_url": f"{ISSUER}/ssf/poll/{'1' * 32}"}},
    {"description": ["a list"]},
])
@pytest.mark.parametrize("method", ["patch", "put"])
def test_update_and_replace_refuse_wrong_values_changing_nothing(api, method, change):
    config = api.create({"description": "kept"})
    response = api.call(method, "/ssf/stream", json={"stream_id": config["stream_id"], **change})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert api.config(config["stream_id"]) == config


@pytest.mark.parametrize("method", ["patch", "put"])
def test_update_of_an_unknown_stream(api, method):
    for body, status, error in (({"stream_id": "f" * 32}, 404, "not_found"),
                                ({"description": "x"}, 400, "invalid_request")):
        response = api.call(method, "/ssf/stream", json=body)
        assert response.status_code == status
        assert response.json["error"] == error


def test_put_replaces_and_deletes_what_is_missing(api):
    config = api.create({"description": "old", "events_requested": [VERIFICATION],
                         "set_signing_alg": "ES256"})
    replaced = api.call("put", "/ssf/stream", json={
        "stream_id": config["stream_id"], "delivery": config["delivery"],
        "events_requested": [SESSION_REVOKED, VERIFICATION]}).json
    assert "description" not in replaced
    assert replaced["set_signing_alg"] == "RS256"
    assert replaced["events_delivered"] == [SESSION_REVOKED, VERIFICATION]
    assert api.config(config["stream_id"]) == replaced


def test_paused_streams_hold_events_in_order_and_disabled_ones_drop_them(api, bridge):
    stream_id = api.create()["stream_id"]
    paused = api.status(stream_id, "paused", "maintenance window")
    assert paused.status_code == 200
    assert paused.json == {"stream_id": stream_id, "status": "paused",
                           "reason": "maintenance window"}
    assert api.call("get", f"/ssf/status?stream_id={stream_id}").json == paused.json
    remove(bridge, "bob")
    remove(bridge, "carol")
    assert api.poll(stream_id) == {"sets": {}}
    assert api.status(stream_id, "enabled").json == {"stream_id": stream_id, "status": "enabled"}
    held = api.events(stream_id)
    assert [t for _, t, _ in held] == [SESSION_REVOKED, SESSION_REVOKED]
    assert [int(j[1:].split(".")[0]) for j, _, _ in held] == \
        sorted(int(j[1:].split(".")[0]) for j, _, _ in held)

    assert api.status(stream_id, "disabled", "not needed").status_code == 200
    remove(bridge, "bob")
    assert api.poll(stream_id) == {"sets": {}}
    assert api.status(stream_id, "enabled").status_code == 200
    assert api.poll(stream_id) == {"sets": {}}  # dropped, not held
    remove(bridge, "carol")
    assert len(revoked_ids(api, stream_id)) == 1


@pytest.mark.parametrize("body,status,error", [
    ({"status": "stopped"}, 400, "invalid_request"),
    ({"status": "paused", "reason": 5}, 400, "invalid_request"),
    ({"status": "paused", "reason": "x" * 501}, 400, "invalid_request"),
    ({"status": "paused", "extra": 1}, 400, "invalid_request"),
    ({"status": "paused", "stream_id": "f" * 32}, 404, "not_found"),
])
def test_bad_status_updates_change_nothing(api, body, status, error):
    stream_id = api.create()["stream_id"]
    response = api.call("post", "/ssf/status", json={"stream_id": stream_id, **body})
    assert response.status_code == status
    assert response.json["error"] == error
    assert api.call("get", f"/ssf/status?stream_id={stream_id}").json["status"] == "enabled"


def test_status_needs_a_stream_id(api):
    response = api.call("get", "/ssf/status")
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_the_transmitter_announces_a_pause_before_stopping(api, bridge):
    stream_id = api.create({"events_requested": [SESSION_REVOKED]})["stream_id"]
    transmitter = bridge.services.transmitter
    transmitter.change_status(stream_id, "paused", "receiver misbehaves", utcnow())
    remove(bridge)
    (jti, event_type, claims), = api.events(stream_id, ack=False)
    assert event_type == STREAM_UPDATED  # not requested, still sent (SSF 8.1.5)
    assert claims["sub_id"] == {"format": "opaque", "id": stream_id}
    assert claims["events"][STREAM_UPDATED] == {"status": "paused",
                                                "reason": "receiver misbehaves"}
    assert list(api.poll(stream_id)["sets"]) == [jti]  # until acknowledged
    api.poll(stream_id, ack=[jti])
    assert api.poll(stream_id) == {"sets": {}}  # paused: the revocation is held
    transmitter.change_status(stream_id, "enabled", None, utcnow())
    found = api.events(stream_id)
    assert [t for _, t, _ in found] == [STREAM_UPDATED, SESSION_REVOKED]
    assert found[0][2]["events"][STREAM_UPDATED] == {"status": "enabled"}


def test_removed_subjects_are_not_sent(api, bridge):
    stream_id = api.create()["stream_id"]
    tokens = bridge.join("bob")
    grant_id = bridge.introspect(tokens["access_token"]).json["grant_id"]
    removed = api.call("post", "/ssf/subjects:remove", json={
        "stream_id": stream_id, "subject": {"format": "opaque", "id": grant_id}})
    assert removed.status_code == 204
    remove(bridge, "bob")
    remove(bridge, "carol")
    ids = revoked_ids(api, stream_id)
    assert len(ids) == 1 and grant_id not in ids
    tenant = {"format": "complex", "tenant": {"format": "opaque", "id": TENANT}}
    assert api.call("post", "/ssf/subjects:remove",
                    json={"stream_id": stream_id, "subject": tenant}).status_code == 204
    remove(bridge, "bob")
    assert api.poll(stream_id) == {"sets": {}}
    added = api.call("post", "/ssf/subjects:add",
                     json={"stream_id": stream_id, "subject": tenant, "verified": True})
    assert added.status_code == 200 and added.data == b""
    remove(bridge, "carol")
    assert len(revoked_ids(api, stream_id)) == 1


@pytest.mark.parametrize("path", ["/ssf/subjects:add", "/ssf/subjects:remove"])
@pytest.mark.parametrize("subject", [
    None, "bob", {"id": "x"}, {"format": "martian", "id": "x"}, {"format": "opaque"},
    {"format": "opaque", "id": 5}, {"format": "complex"},
    {"format": "complex", "tenant": "10042"}, {"format": "opaque", "id": "x" * 3000},
])
def test_bad_subjects_are_refused(api, path, subject):
    stream_id = api.create()["stream_id"]
    response = api.call("post", path, json={"stream_id": stream_id, "subject": subject})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    with api.bridge.services.db.read() as session:
        assert session.get(SsfStream, stream_id).removed_subjects is None


def test_verification_and_its_minimum_interval(api, bridge):
    stream_id = api.create()["stream_id"]
    first = api.call("post", "/ssf/verify", json={"stream_id": stream_id, "state": "s1"})
    assert first.status_code == 204 and first.data == b""
    again = api.call("post", "/ssf/verify", json={"stream_id": stream_id, "state": "s2"})
    assert again.status_code == 429
    assert again.json["error"] == "rate_limited"
    assert 1 <= int(again.headers["Retry-After"]) <= 30
    (jti, event_type, claims), = api.events(stream_id)
    assert claims["sub_id"] == {"format": "opaque", "id": stream_id}
    assert claims["events"] == {VERIFICATION: {"state": "s1"}}  # the refused one changed nothing
    with bridge.services.db.transaction() as session:
        session.execute(update(SsfStream).values(
            verification_requested_at=utcnow() - timedelta(seconds=31)))
    assert api.call("post", "/ssf/verify", json={"stream_id": stream_id}).status_code == 204
    (_, _, claims), = api.events(stream_id)
    assert claims["events"] == {VERIFICATION: {}}


def test_sets_follow_the_ssf_profile(api, bridge):
    first = api.create()["stream_id"]
    second = api.create({"set_signing_alg": "ES256"})["stream_id"]
    tokens = bridge.join("bob")
    grant_id = bridge.introspect(tokens["access_token"]).json["grant_id"]
    remove(bridge)
    tokens_a = api.poll(first)["sets"]
    tokens_b = api.poll(second)["sets"]
    (token_a,), (token_b,) = tokens_a.values(), tokens_b.values()
    a, b = api.decode(token_a), api.decode(token_b)
    assert a.header == {"alg": "RS256", "kid": a.header["kid"], "typ": "secevent+jwt"}
    assert b.header["alg"] == "ES256"
    assert a.claims["txn"] == b.claims["txn"]  # one cause, one txn, on every stream
    assert a.claims["jti"] != b.claims["jti"]
    claims = a.claims
    assert set(claims) == {"iss", "aud", "jti", "iat", "txn", "sub_id", "events"}
    assert claims["sub_id"] == {"format": "opaque", "id": grant_id}
    event = claims["events"][SESSION_REVOKED]
    assert event["subject"] == {
        "format": "complex", "session": {"format": "opaque", "id": grant_id},
        "tenant": {"format": "opaque", "id": TENANT},
        "user": {"format": "iss_sub", "iss": bridge.upstream.issuer,
                 "sub": event["subject"]["user"]["sub"]}}
    assert event["reason_admin"]["en"]
    assert event["initiating_entity"] == "admin"
    assert isinstance(event["event_timestamp"], int)


def test_set_keys_are_not_access_token_keys(api, bridge):
    stream_id = api.create()["stream_id"]
    remove(bridge)
    (token,) = api.poll(stream_id)["sets"].values()
    set_keys = api.client.get("/ssf/jwks").json["keys"]
    token_keys = api.client.get("/jwks").json["keys"]
    assert {k["kid"] for k in set_keys}.isdisjoint({k["kid"] for k in token_keys})
    rsa = [k for k in set_keys if k["kty"] == "RSA"]
    assert rsa and all(len(k["n"]) >= 342 for k in rsa)  # >= 2048 bits, base64url
    with pytest.raises(Exception):
        jwt.decode(token, KeySet.import_key_set({"keys": token_keys}),
                   algorithms=["RS256", "ES256"])
    # And an access token does not verify with the feed's keys.
    with pytest.raises(Exception):
        jwt.decode(bridge.join("carol")["access_token"],
                   KeySet.import_key_set({"keys": set_keys}), algorithms=["RS256", "ES256"])


def test_the_operator_command_pauses_a_stream_with_an_announcement(api, bridge, monkeypatch):
    """`idp-bridge ssf status STREAM paused --reason …` on the bridge's own database."""
    from click.testing import CliRunner

    import idp_bridge.cli as cli

    stream_id = api.create({"events_requested": [SESSION_REVOKED]})["stream_id"]
    monkeypatch.setattr(cli, "_settings", lambda obj: bridge.services.settings)
    runner = CliRunner()
    result = runner.invoke(cli.main, ["ssf", "status", stream_id, "paused", "--reason",
                                      "maintenance"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"stream {stream_id}: paused (maintenance)"
    (_, event_type, claims), = api.events(stream_id)
    assert event_type == STREAM_UPDATED
    assert claims["events"][STREAM_UPDATED] == {"status": "paused", "reason": "maintenance"}
    unknown = runner.invoke(cli.main, ["ssf", "status", "nosuchstream", "disabled"])
    assert unknown.exit_code == 1 and "no such stream" in unknown.output
    wrong = runner.invoke(cli.main, ["ssf", "status", stream_id, "sleeping"])
    assert wrong.exit_code == 2  # click refuses the value
    assert api.call("get", f"/ssf/status?stream_id={stream_id}").json["status"] == "paused"
