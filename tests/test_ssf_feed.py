"""The revocation feed: SSF transmitter, RFC 8417 SETs, RFC 8936 poll, RFC 8935 push."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import update

from conftest import CLIENT_ID, RS_CLIENT_ID, TENANT, ServerThread
from idp_bridge.ssf.rfc8417 import SESSION_REVOKED, VERIFICATION
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Revocation

POLL = "urn:ietf:rfc:8936"


class Feed:
    def __init__(self, bridge):
        self.bridge = bridge
        self.client = bridge.app.test_client()
        self.auth = (RS_CLIENT_ID, bridge.rs_secret)

    def create(self, body=None, auth=None):
        return self.client.post("/ssf/stream", json=body or {"delivery": {"method": POLL}},
                                auth=auth or self.auth)

    def poll(self, stream_id, body=None, auth=None, client=None):
        body = {"returnImmediately": True} if body is None else body
        return (client or self.client).post(f"/ssf/poll/{stream_id}", json=body,
                                            auth=auth or self.auth)

    def decode(self, token, alg="RS256"):
        # SETs are signed with the feed's own keys (/ssf/jwks), RS256 unless the stream
        # chose ES256 (CAEP interoperability profile 2.7).
        keys = KeySet.import_key_set(self.client.get("/ssf/jwks").json)
        decoded = jwt.decode(token, keys, algorithms=[alg])
        assert decoded.header["typ"] == "secevent+jwt"
        assert "sub" not in decoded.claims and "exp" not in decoded.claims
        return decoded.claims


@pytest.fixture
def feed(bridge):
    return Feed(bridge)


@pytest.fixture
def stream_id(feed):
    response = feed.create()
    assert response.status_code == 201
    return response.json["stream_id"]


@pytest.fixture
def loopback_bridge(settings, upstream):
    """A bridge that may push to receivers on loopback: the explicit opt-in of tests and the
    demo (ssf_push_allow_loopback, refused in production mode)."""
    from conftest import Bridge, build_app

    app = build_app(settings.replace(ssf_push_allow_loopback=True))
    return Bridge(app, app.test_client(), upstream)


@pytest.fixture
def loopback_feed(loopback_bridge):
    return Feed(loopback_bridge)


def remove(bridge, user="bob"):
    mid = bridge.membership_id(user)
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204


def test_configuration(feed):
    doc = feed.client.get("/.well-known/ssf-configuration").json
    assert doc["issuer"] == "http://127.0.0.1:8000"
    assert doc["jwks_uri"].endswith("/jwks")
    assert set(doc["delivery_methods_supported"]) == {"urn:ietf:rfc:8936", "urn:ietf:rfc:8935"}
    for key in ("configuration_endpoint", "status_endpoint", "verification_endpoint"):
        assert doc[key].startswith(doc["issuer"])


@pytest.mark.parametrize("auth,status,error", [
    (None, 401, "invalid_client"),
    ((RS_CLIENT_ID, "wrong-secret-" + "x" * 30), 401, "invalid_client"),
    (("unknown-client", "x" * 40), 401, "invalid_client"),
    ("advisor-console", 403, "forbidden"),
])
def test_receiver_authentication(feed, bridge, stream_id, auth, status, error):
    if auth == "advisor-console":
        auth = (CLIENT_ID, bridge.secret)
    for response in (
        feed.client.post("/ssf/stream", json={"delivery": {"method": POLL}}, auth=auth),
        feed.client.get(f"/ssf/stream?stream_id={stream_id}", auth=auth),
        feed.client.post(f"/ssf/poll/{stream_id}", json={"returnImmediately": True}, auth=auth),
    ):
        assert response.status_code == status
        assert response.json["error"] == error


def test_stream_management(loopback_feed):
    feed = loopback_feed
    stream_id = feed.create().json["stream_id"]
    config = feed.client.get(f"/ssf/stream?stream_id={stream_id}", auth=feed.auth).json
    assert config["aud"] == RS_CLIENT_ID
    assert config["delivery"] == {"method": POLL,
                                  "endpoint_url": f"http://127.0.0.1:8000/ssf/poll/{stream_id}"}
    assert SESSION_REVOKED in config["events_delivered"]
    second = feed.create().json["stream_id"]
    listed = feed.client.get("/ssf/stream", auth=feed.auth).json
    assert [s["stream_id"] for s in listed] == [stream_id, second]
    status = feed.client.get(f"/ssf/status?stream_id={stream_id}", auth=feed.auth)
    assert status.json == {"stream_id": stream_id, "status": "enabled"}
    assert status.headers["Cache-Control"] == "no-store"
    patched = feed.client.patch("/ssf/stream", auth=feed.auth, json={
        "stream_id": second, "delivery": {"method": "urn:ietf:rfc:8935",
                                          "endpoint_url": "http://127.0.0.1:9/events"}})
    assert patched.json["delivery"]["method"] == "urn:ietf:rfc:8935"
    assert feed.client.delete(f"/ssf/stream?stream_id={second}", auth=feed.auth).status_code == 204
    gone = feed.client.get(f"/ssf/stream?stream_id={second}", auth=feed.auth)
    assert gone.status_code == 404 and gone.json["error"] == "not_found"


@pytest.mark.parametrize("body,error", [
    ({"delivery": {"method": "urn:example:carrier-pigeon"}}, "invalid_request"),
    ({"delivery": {"method": "urn:ietf:rfc:8935"}}, "invalid_request"),
    ({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "ftp://x"}}, "invalid_request"),
    ({"delivery": "poll"}, "invalid_request"),
    ({"events_requested": "all"}, "invalid_request"),
])
def test_bad_stream_requests(feed, body, error):
    response = feed.create(body)
    assert response.status_code == 400
    assert response.json["error"] == error
    assert feed.client.get("/ssf/stream", auth=feed.auth).json == []


def test_another_receivers_stream_is_not_found(feed, bridge, stream_id):
    from idp_bridge.services.operator import add_client

    secret = add_client(bridge.services.db, "rs-2", roles=("receiver",))
    for response in (feed.poll(stream_id, auth=("rs-2", secret)),
                     feed.client.get(f"/ssf/stream?stream_id={stream_id}", auth=("rs-2", secret)),
                     feed.client.delete(f"/ssf/stream?stream_id={stream_id}", auth=("rs-2", secret))):
        assert response.status_code == 404
        assert response.json["error"] == "not_found"


@pytest.mark.parametrize("body", [
    {"maxEvents": -1}, {"maxEvents": "10"}, {"maxEvents": 5000}, {"returnImmediately": "yes"},
    {"ack": "r1"}, {"ack": [1, 2]}, {"setErrs": []}, [1, 2],
])
def test_bad_poll_requests(feed, stream_id, body):
    response = feed.poll(stream_id, body)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_removal_is_delivered_signed_and_acknowledged(feed, bridge, stream_id):
    tokens = bridge.join("bob")
    grant_id = bridge.introspect(tokens["access_token"]).json["grant_id"]
    assert feed.poll(stream_id).json == {"sets": {}}  # moreAvailable only when true
    remove(bridge)
    sets = feed.poll(stream_id).json["sets"]
    assert len(sets) == 1
    jti, token = next(iter(sets.items()))
    claims = feed.decode(token)
    assert claims["iss"] == "http://127.0.0.1:8000"
    assert claims["aud"] == RS_CLIENT_ID
    assert claims["jti"] == jti
    assert claims["sub_id"] == {"format": "opaque", "id": grant_id}
    event = claims["events"][SESSION_REVOKED]
    assert event["subject_kind"] == "grant_id"
    assert event["initiating_entity"] == "admin"
    assert event["reason_admin"] == {"en": "removed_by_tenant"}
    assert event["tenant"] == TENANT
    # Not acknowledged: delivered again. Acknowledged: never again.
    assert list(feed.poll(stream_id).json["sets"]) == [jti]
    assert feed.poll(stream_id, {"returnImmediately": True, "ack": [jti]}).json["sets"] == {}
    assert feed.poll(stream_id).json["sets"] == {}


def test_events_in_order_with_max_events(feed, bridge, stream_id):
    bridge.join("bob")
    bridge.join("carol")
    remove(bridge, "bob")
    remove(bridge, "carol")
    first = feed.poll(stream_id, {"returnImmediately": True, "maxEvents": 1}).json
    assert first["moreAvailable"] is True
    (jti1,) = first["sets"]
    second = feed.poll(stream_id, {"returnImmediately": True, "ack": [jti1]}).json
    (jti2,) = second["sets"]
    assert "moreAvailable" not in second
    assert int(jti1[1:].split(".")[0]) < int(jti2[1:].split(".")[0])


def test_family_revocation_is_delivered_by_sid(feed, bridge, stream_id):
    tokens = bridge.join("bob")
    sid = bridge.introspect(tokens["access_token"]).json["sid"]
    first = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    replay = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 400 and replay.json["error"] == "invalid_grant"
    (token,) = feed.poll(stream_id).json["sets"].values()
    claims = feed.decode(token)
    assert claims["sub_id"]["id"] == sid
    assert claims["events"][SESSION_REVOKED]["subject_kind"] == "sid"
    assert claims["events"][SESSION_REVOKED]["reason_admin"] == {"en": "refresh_token_reuse"}


def test_offline_receiver_catches_up_on_relevant_events_only(feed, bridge):
    bridge.join("bob")
    bridge.join("carol")
    remove(bridge, "bob")
    remove(bridge, "carol")
    # bob's removal is older than any token it could revoke: no longer relevant.
    with bridge.services.db.transaction() as session:
        session.execute(update(Revocation).where(Revocation.id == 1)
                        .values(created_at=utcnow() - timedelta(hours=1)))
    stream_id = feed.create().json["stream_id"]  # the receiver comes (back) online
    sets = feed.poll(stream_id).json["sets"]
    assert [feed.decode(t)["events"][SESSION_REVOKED]["reason_admin"] for t in sets.values()] == \
        [{"en": "removed_by_tenant"}]
    assert [jti.split(".")[0] for jti in sets] == ["r2"]


def test_each_stream_acknowledges_for_itself(feed, bridge, stream_id):
    other = feed.create().json["stream_id"]
    bridge.join("bob")
    remove(bridge)
    (jti,) = feed.poll(stream_id).json["sets"]
    feed.poll(stream_id, {"returnImmediately": True, "ack": [jti]})
    assert len(feed.poll(other).json["sets"]) == 1


def test_long_poll_returns_when_a_revocation_commits(feed, bridge, stream_id):
    bridge.join("bob")
    result = {}
    waiting = threading.Event()

    def long_poll():
        client = bridge.app.test_client()
        waiting.set()
        result["response"] = feed.poll(stream_id, {"returnImmediately": False}, client=client)

    thread = threading.Thread(target=long_poll)
    thread.start()
    waiting.wait(5)
    remove(bridge)
    thread.join(30)
    assert not thread.is_alive()
    sets = result["response"].json["sets"]
    assert len(sets) == 1


def test_long_poll_times_out_empty(bridge, upstream, new_database_url):
    from conftest import build_app

    app = build_app(bridge.services.settings.replace(
        ssf_long_poll_seconds=0.3, database_url=new_database_url()))
    client = app.test_client()
    auth = (RS_CLIENT_ID, app.config["TEST_RS_SECRET"])
    stream_id = client.post("/ssf/stream", json={}, auth=auth).json["stream_id"]
    response = client.post(f"/ssf/poll/{stream_id}", json={}, auth=auth)
    assert response.status_code == 200
    assert response.json == {"sets": {}}


def test_verification_event(feed, stream_id):
    assert feed.client.post("/ssf/verify", auth=feed.auth,
                            json={"stream_id": stream_id, "state": "abc"}).status_code == 204
    (jti, token), = feed.poll(stream_id).json["sets"].items()
    claims = feed.decode(token)
    assert claims["events"] == {VERIFICATION: {"state": "abc"}}
    feed.poll(stream_id, {"returnImmediately": True, "ack": [jti]})
    assert feed.poll(stream_id).json["sets"] == {}


def test_set_errors_are_acknowledged(feed, bridge, stream_id):
    bridge.join("bob")
    remove(bridge)
    (jti,) = feed.poll(stream_id).json["sets"]
    body = {"returnImmediately": True,
            "setErrs": {jti: {"err": "invalid_key", "description": "unknown kid"}}}
    assert feed.poll(stream_id, body).json["sets"] == {}


class PushReceiver:
    def __init__(self, status=202):
        self.received, self.headers, self.status = [], [], status

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.received.append(environ["wsgi.input"].read(length).decode())
        self.headers.append((environ.get("CONTENT_TYPE"), environ.get("HTTP_AUTHORIZATION")))
        start_response(f"{self.status} X", [("Content-Length", "0")])
        return [b""]


def test_push_delivery(loopback_feed, loopback_bridge):
    feed, bridge = loopback_feed, loopback_bridge
    receiver = PushReceiver()
    with ServerThread(receiver) as server:
        created = feed.create({"delivery": {
            "method": "urn:ietf:rfc:8935", "endpoint_url": f"http://127.0.0.1:{server.port}/events",
            "authorization_header": "Bearer push-secret"}})
        assert created.status_code == 201
        bridge.join("bob")
        remove(bridge)
        pusher = bridge.services.pusher
        assert pusher.deliver_once() == 1
        assert pusher.deliver_once() == 0  # acknowledged by the 202
    claims = feed.decode(receiver.received[0])
    assert claims["events"][SESSION_REVOKED]["subject_kind"] == "grant_id"
    assert receiver.headers[0] == ("application/secevent+jwt", "Bearer push-secret")


def test_push_failure_is_retried_not_lost(loopback_feed, loopback_bridge):
    feed, bridge = loopback_feed, loopback_bridge
    receiver = PushReceiver(status=503)
    with ServerThread(receiver) as server:
        created = feed.create({"delivery": {
            "method": "urn:ietf:rfc:8935", "endpoint_url": f"http://127.0.0.1:{server.port}/e"}})
        stream_id = created.json["stream_id"]
        bridge.join("bob")
        remove(bridge)
        assert bridge.services.pusher.deliver_once() == 0
    # Still pending for the stream: nothing was acknowledged.
    sets, _ = bridge.services.transmitter.pending(stream_id, RS_CLIENT_ID, 10, utcnow())
    assert len(sets) == 1


def test_maintenance_publishes_expired_memberships(feed, bridge, stream_id):
    from idp_bridge.storage.models import Membership

    tokens = bridge.join("bob")
    with bridge.services.db.transaction() as session:
        session.execute(update(Membership).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert bridge.services.maintenance.run_once() == 1
    (token,) = feed.poll(stream_id).json["sets"].values()
    event = feed.decode(token)["events"][SESSION_REVOKED]
    assert event["reason_admin"] == {"en": "expired"}
    assert event["initiating_entity"] == "policy"
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert bridge.services.maintenance.run_once() == 0  # idempotent
