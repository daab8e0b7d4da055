"""A receiver cannot silence its own future revocations (issue 10, item 8).

Event ids were ``r<revocation id>.<stream id>``, so a receiver could acknowledge revocations
before they happened and never be told of them. Event ids now carry a MAC only the bridge can
compute, stay the same on redelivery, and an acknowledgement counts only for an event that
was delivered to that stream.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from conftest import RS_CLIENT_ID, TENANT
from ssf_client import new_stream
from idp_bridge.ssf.rfc8417 import VERIFICATION
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Revocation, SsfAck



@pytest.fixture
def auth(bridge):
    return (RS_CLIENT_ID, bridge.rs_secret)


def poll(bridge, auth, stream_id, **body):
    response = bridge.client.post(f"/ssf/poll/{stream_id}", auth=auth,
                                  json={"returnImmediately": True, **body})
    assert response.status_code == 200, response.json
    return response.json


def revoke(bridge, user="bob") -> int:
    """End user's membership; returns the new revocation's id."""
    bridge.join(user)
    mid = bridge.membership_id(user)
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    with bridge.services.db.read() as session:
        return session.execute(select(func.max(Revocation.id))).scalar_one()


def ack_count(bridge) -> int:
    with bridge.services.db.read() as session:
        return session.execute(select(func.count()).select_from(SsfAck)).scalar_one()


def forged(kind, stream_id):
    """Event ids a receiver could make up for the next revocations (ids 1 to 5)."""
    forms = {
        "old format": [f"r{n}.{stream_id}" for n in range(1, 6)],
        "zero mac": [f"r{n}.{'0' * 32}" for n in range(1, 6)],
        "upper-case old format": [f"r{n}.{stream_id.upper()}" for n in range(1, 6)],
        "truncated": [f"r{n}.{stream_id[:16]}" for n in range(1, 6)],
    }
    return forms[kind]


@pytest.mark.parametrize("field", ["ack", "setErrs"])
@pytest.mark.parametrize("kind", ["old format", "zero mac", "upper-case old format", "truncated"])
def test_acknowledging_a_future_event_does_not_silence_it(bridge, auth, kind, field):
    stream_id = new_stream(bridge, auth)
    jtis = forged(kind, stream_id)
    body = {field: jtis if field == "ack" else {j: {"err": "x", "description": "y"} for j in jtis}}
    assert poll(bridge, auth, stream_id, **body)["sets"] == {}
    assert ack_count(bridge) == 0
    revocation_id = revoke(bridge)
    sets = poll(bridge, auth, stream_id)["sets"]
    assert [jti.split(".")[0] for jti in sets] == [f"r{revocation_id}"]
    assert not set(sets) & set(jtis)


@pytest.mark.parametrize("kind", ["old format", "zero mac", "upper-case old format", "truncated"])
def test_a_made_up_id_of_a_delivered_event_does_not_acknowledge_it(bridge, auth, kind):
    stream_id = new_stream(bridge, auth)
    revocation_id = revoke(bridge)
    (jti,) = poll(bridge, auth, stream_id)["sets"]  # delivered, so within the stream's ceiling
    made_up = forged(kind, stream_id)[revocation_id - 1]
    assert made_up.split(".")[0] == jti.split(".")[0] and made_up != jti
    assert list(poll(bridge, auth, stream_id, ack=[made_up])["sets"]) == [jti]
    assert ack_count(bridge) == 0


def test_another_streams_event_ids_are_ignored(bridge, auth):
    first, second = new_stream(bridge, auth), new_stream(bridge, auth)
    revoke(bridge)
    (first_jti,) = poll(bridge, auth, first)["sets"]
    (second_jti,) = poll(bridge, auth, second)["sets"]
    assert second_jti != first_jti  # same revocation, an id of its own on each stream
    assert list(poll(bridge, auth, second, ack=[first_jti])["sets"]) == [second_jti]
    assert ack_count(bridge) == 0
    assert first_jti.split(".")[0] == second_jti.split(".")[0]
    # And the other way round: the first stream's own ack still works.
    poll(bridge, auth, first, ack=[first_jti])
    assert ack_count(bridge) == 1
    assert poll(bridge, auth, first)["sets"] == {}
    assert list(poll(bridge, auth, second)["sets"]) == [second_jti]


def test_a_genuine_ack_works_and_is_recorded_once(bridge, auth):
    stream_id = new_stream(bridge, auth)
    revoke(bridge)
    (jti,) = poll(bridge, auth, stream_id)["sets"]
    assert poll(bridge, auth, stream_id, ack=[jti, jti])["sets"] == {}
    poll(bridge, auth, stream_id, ack=[jti])
    assert ack_count(bridge) == 1


def test_event_ids_are_stable_across_redelivery(bridge, auth):
    stream_id = new_stream(bridge, auth)
    revoke(bridge)
    revoke(bridge, "carol")
    first = poll(bridge, auth, stream_id)["sets"]
    again = poll(bridge, auth, stream_id)["sets"]
    assert list(first) == list(again) and len(first) == 2
    # The push path hands out the same ids (it uses the same pending events).
    pushed, _ = bridge.services.transmitter.pending(stream_id, RS_CLIENT_ID, 10, utcnow())
    assert list(pushed) == list(first)
    # Acknowledging one keeps the other's id.
    one, two = first
    assert list(poll(bridge, auth, stream_id, ack=[one])["sets"]) == [two]


def test_event_ids_are_unpredictable(bridge, auth):
    stream_id = new_stream(bridge, auth)
    revocation_id = revoke(bridge)
    (jti,) = poll(bridge, auth, stream_id)["sets"]
    match = re.fullmatch(r"r(\d+)\.([0-9a-f]{32})", jti)
    assert match and int(match.group(1)) == revocation_id  # 128-bit MAC after the id
    assert stream_id not in jti and match.group(2) != stream_id


def test_a_valid_id_of_an_undelivered_event_is_not_acknowledged(bridge, auth):
    """Even with a correct MAC (as if the key had leaked), an id above the highest one
    delivered to the stream is ignored."""
    stream_id = new_stream(bridge, auth)
    first_id = revoke(bridge)
    second_id = revoke(bridge, "carol")
    transmitter = bridge.services.transmitter
    (delivered,) = poll(bridge, auth, stream_id, maxEvents=1)["sets"]
    assert delivered == transmitter.event_id("r", stream_id, first_id)
    undelivered = transmitter.event_id("r", stream_id, second_id)
    future = transmitter.event_id("r", stream_id, second_id + 1)
    assert list(poll(bridge, auth, stream_id, ack=[undelivered, future])["sets"]) == \
        [delivered, undelivered]
    assert ack_count(bridge) == 0
    poll(bridge, auth, stream_id, ack=[delivered, undelivered])
    assert ack_count(bridge) == 2
    third_id = revoke(bridge, "bob")
    assert list(poll(bridge, auth, stream_id)["sets"]) == \
        [transmitter.event_id("r", stream_id, third_id)]


def test_verification_acks_need_the_delivered_id(bridge, auth):
    stream_id = new_stream(bridge, auth)

    def verify(state):
        response = bridge.client.post("/ssf/verify", auth=auth,
                                      json={"stream_id": stream_id, "state": state})
        assert response.status_code == 204

    verify("one")
    (first,) = poll(bridge, auth, stream_id)["sets"]
    number = first[1:].split(".")[0]
    for guess in (f"v{number}.{stream_id}", f"v{number}.{'f' * 32}", f"v{int(number) + 1}.x"):
        poll(bridge, auth, stream_id, ack=[guess])
        assert list(poll(bridge, auth, stream_id)["sets"]) == [first]
    poll(bridge, auth, stream_id, ack=[first])
    assert poll(bridge, auth, stream_id)["sets"] == {}


def test_an_old_verification_id_does_not_acknowledge_a_newer_one(bridge, auth):
    stream_id = new_stream(bridge, auth)
    transmitter = bridge.services.transmitter
    with bridge.services.db.transaction() as session:
        stream = transmitter.stream(session, RS_CLIENT_ID, stream_id)
        stream.verification_id, stream.verification_state = 1000, "old"
    (old,) = poll(bridge, auth, stream_id)["sets"]
    with bridge.services.db.transaction() as session:
        stream = transmitter.stream(session, RS_CLIENT_ID, stream_id)
        stream.verification_id, stream.verification_state = 2000, "new"
    poll(bridge, auth, stream_id, ack=[old])
    sets = poll(bridge, auth, stream_id)["sets"]
    (jti,) = sets
    assert jti != old
    from joserfc import jwt
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set(bridge.client.get("/ssf/jwks").json)  # the feed's own keys
    claims = jwt.decode(sets[jti], keys, algorithms=["RS256"]).claims
    assert claims["events"] == {VERIFICATION: {"state": "new"}}
    assert claims["jti"] == jti
