"""DPoP interop with an independent client (issue 13 item 10): panva's oauth4webapi (npm, pinned
in tests/interop_node/package-lock.json, installed by .ci/install-node-interop) performs a
DPoP-bound token exchange at the bridge (with server nonces on, so it must follow
``use_dpop_nonce``), a DPoP request to the example resource server and a DPoP-bound refresh,
both served over HTTP on loopback; proofs it made, presented replayed, for another URL or with
another key's signature, are refused with 401 ``invalid_dpop_proof`` (the token endpoint: 400),
and the bound token sent as Bearer with 401 ``invalid_token``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import TENANT, Bridge, ServerThread, build_app
from idp_bridge.app import services
from scopes.guard import TokenGuard

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "interop_node"
EXAMPLE_RS = ROOT / "deploy" / "example-resource-server" / "example_resource_server.py"


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (run .ci/install-node-interop)")
    pytest.skip(reason)


def load_example():
    spec = importlib.util.spec_from_file_location("example_rs_dpop", EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served(settings, upstream, new_database_url):
    node = shutil.which("node")
    if node is None:
        _missing("node is not on PATH")
    if not (NODE_DIR / "node_modules" / "oauth4webapi" / "package.json").exists():
        _missing("oauth4webapi is not installed in tests/interop_node/node_modules")
    with contextlib.ExitStack() as stack:
        holder = {}
        bridge_server = stack.enter_context(ServerThread(
            lambda environ, start_response: holder["bridge"](environ, start_response)))
        issuer = f"http://127.0.0.1:{bridge_server.port}"
        app = build_app(settings.replace(issuer=issuer, database_url=new_database_url(),
                                         dpop_nonce_required=True))
        stack.callback(services(app).db.dispose)
        holder["bridge"] = app
        rs_server = stack.enter_context(ServerThread(
            lambda environ, start_response: holder["rs"](environ, start_response)))
        rs_url = f"http://127.0.0.1:{rs_server.port}"
        guard = TokenGuard(issuer, "konfipay-api", dpop_url=rs_url)
        holder["rs"] = load_example().create_app(guard, write_step_up=None)
        yield Bridge(app, app.test_client(), upstream), issuer, rs_url, node


def test_oauth4webapi_dpop_exchange_resource_request_and_refusals(served):
    bridge, issuer, rs_url, node = served
    bridge.join("bob")  # a member: the exchange needs no access code
    config = {"issuer": issuer, "client_id": "advisor-console", "client_secret": bridge.secret,
              "subject_token": bridge.upstream_token("bob"), "tenant": TENANT,
              "resource_url": rs_url}
    done = subprocess.run([node, "dpop_client.mjs"], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "DPOP_INTEROP": json.dumps(config)})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert "ES256" in out["dpop_signing_alg_values_supported"]
    assert out["nonce_retries"] >= 1  # the bridge asked for its nonce; oauth4webapi followed
    assert out["exchange"]["token_type"] == "dpop"  # oauth4webapi lower-cases it
    assert out["resource"]["status"] == 200
    assert out["resource"]["body"]["tenant"] == TENANT
    assert out["refresh"] == {"token_type": "dpop", "rotated": True}
    assert out["resource_after_refresh"]["status"] == 200
    assert out["first_use"]["status"] == 200

    for case in ("replayed", "another_url", "another_key"):
        assert out[case]["status"] == 401, (case, out[case])
        assert out[case]["error"] == "invalid_dpop_proof", (case, out[case])
        assert 'DPoP realm="konfipay-api", algs=' in out[case]["challenge"]
        assert 'error="invalid_dpop_proof"' in out[case]["challenge"]
    assert out["as_bearer"] == {"status": 401, "error": "invalid_token"}
    assert out["token_proof_replayed"] == {"status": 400, "error": "invalid_dpop_proof"}
