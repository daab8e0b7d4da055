"""RFC 9728 and RFC 9470 with an independent client: panva's oauth4webapi (npm).

The bridge and the example resource server are served on loopback; oauth4webapi (the copy in
tests/interop_node, pinned by its package-lock.json) discovers the resource server's metadata
(``resourceDiscoveryRequest`` / ``processResourceDiscoveryResponse``, which enforces RFC 9728
section 3.3), the bridge from its ``authorization_servers`` (RFC 8414), calls the protected
resource (``protectedResourceRequest``), parses the challenges (``WWWAuthenticateChallengeError``)
and follows their ``resource_metadata``, checking the document against the URL it requested.
A document for another resource is refused by the library (the check is not vacuous).
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

#: The client's side, run by node in tests/interop_node (where oauth4webapi is installed).
CLIENT = r"""
import * as oauth from 'oauth4webapi'

let input = ''
for await (const chunk of process.stdin) input += chunk
const { resource, calls } = JSON.parse(input)
const insecure = { [oauth.allowInsecureRequests]: true }  // loopback http in this test
const out = { calls: [] }

async function refused(promise) {
  try { await promise; return null } catch (error) { return error.code || error.name }
}

const base = await oauth.processResourceDiscoveryResponse(
  new URL(resource), await oauth.resourceDiscoveryRequest(new URL(resource), insecure))
out.resource = base
const issuer = new URL(base.authorization_servers[0])
const as = await oauth.processDiscoveryResponse(
  issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
out.issuer = as.issuer

for (const call of calls) {
  const url = new URL(resource + call.path)
  const headers = new Headers({ 'content-type': 'application/json' })
  const body = call.method === 'POST' ? JSON.stringify({ title: 'Monatsauswertung' }) : null
  const result = { name: call.name }
  let challenges = null
  try {
    const response = await oauth.protectedResourceRequest(
      call.token, call.method, url, headers, body, insecure)
    result.status = response.status
  } catch (error) {
    if (!(error instanceof oauth.WWWAuthenticateChallengeError)) throw error
    result.status = error.response.status
    challenges = error.cause
  }
  result.challenges = []
  for (const challenge of challenges || []) {
    const found = { scheme: challenge.scheme, parameters: challenge.parameters }
    const location = challenge.parameters.resource_metadata
    if (location) {
      // RFC 9728 section 3.3: the resource must be the URL this client requested.
      const document = await oauth.processResourceDiscoveryResponse(url, await fetch(location))
      found.metadata_resource = document.resource
      found.other_resource_refused = await refused(
        oauth.processResourceDiscoveryResponse(new URL(resource), await fetch(location)))
    }
    result.challenges.push(found)
  }
  out.calls.push(result)
}
console.log(JSON.stringify(out))
"""


def node_client() -> Path:
    """tests/interop_node with oauth4webapi installed; with CI set, its absence fails."""
    missing = None
    if shutil.which("node") is None:
        missing = "node is not on PATH"
    elif not (NODE_DIR / "node_modules" / "oauth4webapi" / "package.json").exists():
        missing = ("oauth4webapi is not installed in tests/interop_node "
                   "(npm ci --prefix tests/interop_node; .ci/run installs it)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"oauth4webapi interop cannot run: {missing}")
        pytest.skip(missing)
    return NODE_DIR


@pytest.fixture
def served(settings, upstream, new_database_url):
    """The bridge and the example resource server, each on a loopback port; the resource
    server's resource identifier is its own URL."""
    with contextlib.ExitStack() as stack:
        holders = {"bridge": None, "rs": None}

        def route(name):
            return lambda environ, start_response: holders[name](environ, start_response)

        bridge_server = stack.enter_context(ServerThread(route("bridge")))
        rs_server = stack.enter_context(ServerThread(route("rs")))
        issuer = f"http://127.0.0.1:{bridge_server.port}"
        resource = f"http://127.0.0.1:{rs_server.port}"
        app = build_app(settings.replace(issuer=issuer, database_url=new_database_url()))
        stack.callback(services(app).db.dispose)
        holders["bridge"] = app
        spec = importlib.util.spec_from_file_location("example_rs_interop", EXAMPLE_RS)
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        guard = TokenGuard(issuer, "konfipay-api")
        guard.resource_metadata = example.resource_metadata(guard, resource)
        holders["rs"] = example.create_app(guard, write_step_up=example.write_requirement({}))
        yield Bridge(app, app.test_client(), upstream), issuer, resource


def run_client(resource: str, calls: list[dict]) -> dict:
    result = subprocess.run(["node", "--input-type=module", "-e", CLIENT], cwd=node_client(),
                            input=json.dumps({"resource": resource, "calls": calls}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_oauth4webapi_discovers_steps_up_and_validates_the_metadata(served):
    bridge, issuer, resource = served
    weak = bridge.join("bob")["access_token"]  # password sign-in: acr "1"
    strong = bridge.exchange("bob", subject_token=bridge.upstream_token(
        "bob", acr="2")).json["access_token"]
    reports = f"/tenants/{TENANT}/evaluation/reports"
    out = run_client(resource, [
        {"name": "not a token", "method": "GET", "path": f"/tenants/{TENANT}/payments",
         "token": "not-a-jwt"},
        {"name": "other tenant", "method": "GET", "path": "/tenants/20077/payments",
         "token": weak},
        {"name": "weak", "method": "POST", "path": reports, "token": weak},
        {"name": "strong", "method": "POST", "path": reports, "token": strong},
    ])
    assert out["resource"]["resource"] == resource
    assert out["resource"]["authorization_servers"] == [issuer]
    assert out["issuer"] == issuer
    calls = {call["name"]: call for call in out["calls"]}

    def metadata(path):
        return f"{resource}/.well-known/oauth-protected-resource{path}"

    garbage = calls["not a token"]
    assert garbage["status"] == 401
    assert [(c["scheme"], c["parameters"]) for c in garbage["challenges"]] == [
        ("bearer", {"realm": "konfipay-api", "error": "invalid_token",
                    "error_description": "token is not a compact JWS (three base64url segments)",
                    "resource_metadata": metadata(f"/tenants/{TENANT}/payments")})]

    other = calls["other tenant"]
    assert other["status"] == 401
    assert other["challenges"][0]["parameters"]["error"] == "invalid_token"
    assert other["challenges"][0]["metadata_resource"] == f"{resource}/tenants/20077/payments"

    step_up = calls["weak"]
    assert step_up["status"] == 401
    assert [(c["scheme"], c["parameters"]) for c in step_up["challenges"]] == [
        ("bearer", {"realm": "konfipay-api", "error": "insufficient_user_authentication",
                    "error_description": "a different authentication level is required",
                    "acr_values": "2 mfa urn:konfipay:acr:mfa", "max_age": "900",
                    "resource_metadata": metadata(reports)})]
    for call in (garbage, other, step_up):
        for challenge in call["challenges"]:
            # The library accepted the document for the URL it requested (section 3.3) and
            # refuses the same document for another resource identifier.
            assert challenge["metadata_resource"].startswith(resource + "/tenants/")
            assert challenge["other_resource_refused"] == "OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED"
    assert step_up["challenges"][0]["metadata_resource"] == resource + reports

    assert calls["strong"] == {"name": "strong", "status": 201, "challenges": []}
