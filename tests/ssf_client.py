"""A receiver's calls to the feed (RFC 8936 poll delivery), shared by the feed's tests."""

from __future__ import annotations

from conftest import RS_CLIENT_ID

POLL = "urn:ietf:rfc:8936"


def new_stream(bridge, auth=None, **body) -> str:
    """A poll stream of the receiver ``auth`` (default: the example resource server)."""
    response = bridge.client.post("/ssf/stream", json={"delivery": {"method": POLL}, **body},
                                  auth=auth or (RS_CLIENT_ID, bridge.rs_secret))
    assert response.status_code == 201, response.json
    return response.json["stream_id"]
