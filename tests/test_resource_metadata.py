"""RFC 9728 protected resource metadata in scopes.guard and the example resource server.

- The well-known URL of a resource identifier (section 3.1) and what a resource identifier may
  be (section 1.2); the configuration is checked when made.
- The document (sections 2 and 3.2), read by a checker written here from the RFC's text alone:
  registered parameters with their types, no parameter without values.
- Every challenge of the guard (400, 401, 403, step-up) names the metadata of the URL the client
  requested, and the document found there has that URL as its ``resource`` (section 3.3, the
  check a client must make before using it); the ``Host`` header plays no part.
- The chain a client follows: challenge -> resource metadata -> the bridge's RFC 8414 metadata.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask

from test_guard import AUDIENCE, TENANT, FakeIssuer, loopback  # noqa: F401
from scopes.catalog import ALL_SCOPES
from scopes.guard import WELL_KNOWN_PATH, ResourceMetadata, TokenGuard
from scopes.guard.flask_adapter import publish_resource_metadata
from scopes.guard.resource_metadata import check_resource_identifier, metadata_url

EXAMPLE_RS = Path(__file__).resolve().parents[1] / "deploy" / "example-resource-server" / \
    "example_resource_server.py"
RESOURCE = "https://api.konfipay.example"
BRIDGE = "https://bridge.konfipay.example"


def load_example():
    spec = importlib.util.spec_from_file_location("example_rs_metadata", EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- a client's checks, from RFC 9728's text ---

#: Section 2 parameters and the JSON type each has.
REGISTERED = {
    "resource": str, "authorization_servers": list, "jwks_uri": str, "scopes_supported": list,
    "bearer_methods_supported": list, "resource_signing_alg_values_supported": list,
    "resource_name": str, "resource_documentation": str, "resource_policy_uri": str,
    "resource_tos_uri": str, "tls_client_certificate_bound_access_tokens": bool,
    "authorization_details_types_supported": list, "dpop_signing_alg_values_supported": list,
    "dpop_bound_access_tokens_required": bool, "signed_metadata": str,
}


def assert_rfc9728(document, resource_used: str) -> None:
    """What a client checks before using ``document`` fetched for ``resource_used``."""
    assert isinstance(document, dict)
    assert document["resource"] == resource_used  # section 3.3: identical, code point by point
    for name, value in document.items():
        assert name in REGISTERED, f"{name} is not a registered parameter"
        assert type(value) is REGISTERED[name], name
        if isinstance(value, list):
            assert value, f"{name}: parameters with zero values are omitted (section 3.2)"
            assert all(isinstance(v, str) and v and " " not in v for v in value), name
            assert len(set(value)) == len(value), name
    for server in document.get("authorization_servers", ()):
        parts = urlsplit(server)  # RFC 8414 issuer identifiers
        assert parts.scheme in ("https", "http") and parts.netloc
        assert not parts.query and not parts.fragment
    assert set(document.get("bearer_methods_supported", ())) <= {"header", "body", "query"}
    for name in ("resource_signing_alg_values_supported", "dpop_signing_alg_values_supported"):
        assert "none" not in document.get(name, ())
    for name in ("jwks_uri", "resource_documentation", "resource_policy_uri",
                 "resource_tos_uri"):
        if name in document:
            assert urlsplit(document[name]).scheme == "https", name
    resource = urlsplit(document["resource"])
    assert resource.scheme in ("https", "http") and not resource.fragment  # section 1.2


def challenge_params(header: str) -> dict:
    assert header.startswith("Bearer ")
    params = {}
    for part in header[len("Bearer "):].split('", '):
        name, _, value = part.partition("=")
        params[name.strip()] = value.strip('"')
    return params


def fetch(client, url: str):
    """GET ``url`` (absolute) from the Flask test client serving its origin."""
    parts = urlsplit(url)
    return client.get(parts.path, base_url=f"{parts.scheme}://{parts.netloc}")


# --- section 3.1 and 1.2 ---

@pytest.mark.parametrize("resource, url", [
    ("https://resource.example.com", "https://resource.example.com/.well-known/"
                                     "oauth-protected-resource"),
    ("https://resource.example.com/", "https://resource.example.com/.well-known/"
                                      "oauth-protected-resource"),
    ("https://resource.example.com/resource1", "https://resource.example.com/.well-known/"
                                               "oauth-protected-resource/resource1"),
    ("https://h.example:8443/a/b", "https://h.example:8443/.well-known/"
                                   "oauth-protected-resource/a/b"),
    ("http://127.0.0.1:8002", "http://127.0.0.1:8002/.well-known/oauth-protected-resource"),
])
def test_well_known_url(resource, url):
    assert metadata_url(resource) == url
    assert ResourceMetadata(resource, authorization_servers=[BRIDGE]).url() == url


@pytest.mark.parametrize("resource", [
    "https://api.example", "https://api.example/konfipay", "http://127.0.0.1:8002",
    "http://localhost:8002", "http://[::1]:8002/api",
])
def test_resource_identifiers_accepted(resource):
    assert check_resource_identifier(resource) == resource


@pytest.mark.parametrize("resource", [
    "http://api.example",               # https outside loopback
    "ftp://api.example", "https://", "/tenants", "api.example",
    "https://api.example/#top",         # no fragment
    "https://api.example/?tenant=1",    # no query (SHOULD NOT; refused here)
    "https://user@api.example",
    "https://api.example/a b", 'https://api.example/"x"', "https://api.example/ä",
    "https://api.example/konfipay/",    # its URLs would be .../konfipay//tenants
    None, 42,
])
def test_resource_identifiers_refused(resource):
    with pytest.raises(ValueError):
        check_resource_identifier(resource)


@pytest.mark.parametrize("kwargs", [
    {"authorization_servers": []},
    {"authorization_servers": BRIDGE},
    {"authorization_servers": ["bridge.example"]},
    {"authorization_servers": [f"{BRIDGE}/?x=1"]},
    {"authorization_servers": [BRIDGE, BRIDGE]},
    {"scopes_supported": ["payments:delete"]},
    {"scopes_supported": "payments:read"},
    {"bearer_methods_supported": ["cookie"]},
    {"dpop_signing_alg_values_supported": ["none"]},
    {"dpop_signing_alg_values_supported": ["HS256"]},
    {"resource_signing_alg_values_supported": ["none"]},
    {"dpop_bound_access_tokens_required": True},          # but no DPoP algorithm
    {"dpop_bound_access_tokens_required": "yes", "dpop_signing_alg_values_supported": ["ES256"]},
    {"resource_name": ""},
    {"resource_documentation": "http://docs.example/api"},
    {"max_age": -1},
])
def test_configuration_is_checked_when_made(kwargs):
    kwargs = {"authorization_servers": [BRIDGE], **kwargs}
    with pytest.raises(ValueError):
        ResourceMetadata(RESOURCE, **kwargs)


# --- the document (sections 2, 3.2) ---

def test_default_document():
    document = ResourceMetadata(RESOURCE, authorization_servers=[BRIDGE]).document()
    assert document == {
        "resource": RESOURCE,
        "authorization_servers": [BRIDGE],
        "scopes_supported": list(ALL_SCOPES),
        "bearer_methods_supported": ["header"],
        "dpop_bound_access_tokens_required": False,
    }
    assert_rfc9728(document, RESOURCE)


def test_full_document():
    metadata = ResourceMetadata(
        f"{RESOURCE}/konfipay", authorization_servers=[BRIDGE, "https://other.example"],
        scopes_supported=["payments:read", "evaluation:write"],
        dpop_bound_access_tokens_required=True,
        dpop_signing_alg_values_supported=["ES256", "PS256"],
        resource_signing_alg_values_supported=["ES256"], resource_name="konfipay API",
        resource_documentation="https://docs.konfipay.example/api")
    document = metadata.document()
    assert document == {
        "resource": f"{RESOURCE}/konfipay",
        "authorization_servers": [BRIDGE, "https://other.example"],
        "scopes_supported": ["payments:read", "evaluation:write"],
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": ["ES256"],
        "resource_name": "konfipay API",
        "resource_documentation": "https://docs.konfipay.example/api",
        "dpop_signing_alg_values_supported": ["ES256", "PS256"],
        "dpop_bound_access_tokens_required": True,
    }
    assert_rfc9728(document, f"{RESOURCE}/konfipay")


def test_no_bearer_methods_are_omitted_not_empty():
    """Section 3.2: "Parameters with zero values MUST be omitted"."""
    document = ResourceMetadata(RESOURCE, authorization_servers=[BRIDGE],
                                bearer_methods_supported=(), scopes_supported=()).document()
    assert "bearer_methods_supported" not in document and "scopes_supported" not in document
    assert_rfc9728(document, RESOURCE)


def test_urls_under_the_resource():
    metadata = ResourceMetadata(f"{RESOURCE}/konfipay", authorization_servers=[BRIDGE])
    url = metadata.resource_for("/tenants/10042/payments")
    assert url == f"{RESOURCE}/konfipay/tenants/10042/payments"
    assert metadata.url(url) == (f"{RESOURCE}{WELL_KNOWN_PATH}/konfipay/tenants/10042/"
                                 "payments")
    assert metadata.resource_at(f"{WELL_KNOWN_PATH}/konfipay/tenants/10042/payments") == url
    assert metadata.resource_at(f"{WELL_KNOWN_PATH}/konfipay") == metadata.resource
    assert metadata.resource_at(f"{WELL_KNOWN_PATH}/konfipayx") is None
    assert metadata.resource_at(WELL_KNOWN_PATH) is None
    assert metadata.resource_for("/tenants/a b/ü") == \
        f"{RESOURCE}/konfipay/tenants/a%20b/%C3%BC"
    for outside in (RESOURCE, f"{RESOURCE}/konfipayx", "https://evil.example/konfipay/x"):
        with pytest.raises(ValueError):
            metadata.document(outside)
        with pytest.raises(ValueError):
            metadata.url(outside)


# --- published and named in every challenge (sections 3, 5.1, 3.3) ---

@pytest.fixture
def fake(loopback):  # noqa: F811
    holder, url = loopback
    issuer = FakeIssuer()
    issuer.issuer = url
    issuer.add_key("k1")
    holder["app"] = issuer.app
    return issuer


def resource_server(fake, resource=RESOURCE):
    guard = TokenGuard(fake.issuer, AUDIENCE, resource_metadata=ResourceMetadata(
        resource, authorization_servers=[fake.issuer]))
    app = Flask("metadata-rs")

    @app.get("/tenants/<tenant>/payments")
    @guard.require("payments:read")
    def payments(tenant):
        return {"ok": True}

    @app.post("/tenants/<tenant>/evaluation/reports")
    @guard.require("evaluation:write", acr_values=["mfa"], max_age=600)
    def report(tenant):
        return {}, 201

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    publish_resource_metadata(app, guard)
    return app.test_client()


def test_the_resource_document_is_published(fake):
    client = resource_server(fake)
    response = fetch(client, f"{RESOURCE}{WELL_KNOWN_PATH}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert_rfc9728(response.json, RESOURCE)
    assert response.json["authorization_servers"] == [fake.issuer]


def test_a_resource_with_a_path_is_published_path_suffixed(fake):
    client = resource_server(fake, f"{RESOURCE}/konfipay")
    response = fetch(client, f"{RESOURCE}{WELL_KNOWN_PATH}/konfipay")
    assert response.status_code == 200
    assert_rfc9728(response.json, f"{RESOURCE}/konfipay")
    # The host's own well-known URL is another resource's (https://api...): not ours.
    assert fetch(client, f"{RESOURCE}{WELL_KNOWN_PATH}").status_code == 404
    url = f"{RESOURCE}/konfipay/tenants/{TENANT}/payments"
    response = fetch(client, metadata_url(url))
    assert response.status_code == 200
    assert_rfc9728(response.json, url)


@pytest.mark.parametrize("path, status", [
    (f"/tenants/{TENANT}/payments", 200),
    (f"/tenants/{TENANT}/evaluation/reports", 200),   # POST only, still a guarded URL
    ("/healthz", 404),                                # not guarded: no protected resource
    ("/tenants", 404),
    (f"/tenants/{TENANT}/payments/", 404),
    ("/nothing/here", 404),
])
def test_documents_exist_only_for_guarded_urls(fake, path, status):
    client = resource_server(fake)
    response = fetch(client, metadata_url(RESOURCE + path))
    assert response.status_code == status
    if status == 200:
        assert_rfc9728(response.json, RESOURCE + path)
    else:
        assert response.json == {"error": "not_found"}


def mint_weak(fake):
    return fake.mint(acr="pwd", auth_time=int(time.time()))


@pytest.mark.parametrize("method, path, headers, status, error", [
    ("get", f"/tenants/{TENANT}/payments", {}, 401, None),
    ("get", f"/tenants/{TENANT}/payments", {"Authorization": "Bearer"}, 400, "invalid_request"),
    ("get", f"/tenants/{TENANT}/payments", {"Authorization": "Bearer x.y.z"}, 401,
     "invalid_token"),
    ("get", "/tenants/20077/payments", "valid", 401, "invalid_token"),        # other tenant
    ("post", f"/tenants/{TENANT}/evaluation/reports", "narrow", 403, "insufficient_scope"),
    ("post", f"/tenants/{TENANT}/evaluation/reports", "weak", 401,
     "insufficient_user_authentication"),
    ("get", "/tenants/a%20b/payments", {}, 401, None),
])
def test_every_challenge_names_the_metadata_of_the_url_used(fake, method, path, headers,
                                                            status, error):
    client = resource_server(fake)
    headers = {"valid": lambda: {"Authorization": f"Bearer {fake.mint()}"},
               "narrow": lambda: {"Authorization":
                                  f"Bearer {fake.mint(scope='evaluation:read')}"},
               "weak": lambda: {"Authorization": f"Bearer {mint_weak(fake)}"},
               }.get(headers, lambda: headers)() if isinstance(headers, str) else headers
    used = RESOURCE + path  # the URL the client requested
    # A Host header of the attacker's choosing changes nothing (the resource is configured).
    response = getattr(client, method)(path, headers={**headers, "Host": "evil.example"})
    assert response.status_code == status
    assert response.json.get("error") == error
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params.get("error") == error
    assert params["resource_metadata"] == metadata_url(used)
    document = fetch(client, params["resource_metadata"])
    assert document.status_code == 200
    assert_rfc9728(document.json, used)  # section 3.3: resource == the URL used


def test_the_step_up_challenge_in_full(fake):
    client = resource_server(fake)
    response = client.post(f"/tenants/{TENANT}/evaluation/reports", base_url=RESOURCE,
                           headers={"Authorization": f"Bearer {mint_weak(fake)}"})
    assert response.status_code == 401
    assert response.json["error"] == "insufficient_user_authentication"
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", error="insufficient_user_authentication", '
        'error_description="a different authentication level is required", '
        'acr_values="mfa", max_age="600", resource_metadata="https://api.konfipay.example/'
        f'.well-known/oauth-protected-resource/tenants/{TENANT}/evaluation/reports"')


def test_the_bare_challenge_in_full(fake):
    response = resource_server(fake).get(f"/tenants/{TENANT}/payments")
    assert response.status_code == 401 and "error" not in response.json
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", resource_metadata="https://api.konfipay.example/'
        f'.well-known/oauth-protected-resource/tenants/{TENANT}/payments"')


def test_without_metadata_challenges_are_unchanged(fake):
    guard = TokenGuard(fake.issuer, AUDIENCE)
    app = Flask("plain-rs")

    @app.get("/tenants/<tenant>/payments")
    @guard.require("payments:read")
    def payments(tenant):
        return {}

    response = app.test_client().get(f"/tenants/{TENANT}/payments")
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}"'
    with pytest.raises(ValueError):
        publish_resource_metadata(app, guard)


# --- consistent with the guard ---

def test_for_guard_takes_the_issuer_and_the_dpop_settings(fake):
    plain = ResourceMetadata.for_guard(TokenGuard(fake.issuer, AUDIENCE), RESOURCE)
    assert plain.document()["authorization_servers"] == [fake.issuer]
    assert "dpop_signing_alg_values_supported" not in plain.document()  # no DPoP accepted
    assert plain.document()["dpop_bound_access_tokens_required"] is False
    dpop = TokenGuard(fake.issuer, AUDIENCE, dpop_url=RESOURCE, dpop_algorithms=("ES256",),
                      dpop_required=True)
    document = ResourceMetadata.for_guard(dpop, RESOURCE).document()
    assert document["dpop_signing_alg_values_supported"] == ["ES256"]
    assert document["dpop_bound_access_tokens_required"] is True
    assert_rfc9728(document, RESOURCE)
    accepted = TokenGuard(fake.issuer, AUDIENCE, dpop_url=RESOURCE, dpop_algorithms=("ES256",
                                                                                     "PS256"))
    document = ResourceMetadata.for_guard(accepted, RESOURCE).document()
    assert (document["dpop_signing_alg_values_supported"],
            document["dpop_bound_access_tokens_required"]) == (["ES256", "PS256"], False)


@pytest.mark.parametrize("guard_kwargs, metadata_kwargs", [
    ({}, {"authorization_servers": ["https://other.example"]}),
    ({}, {"dpop_signing_alg_values_supported": ["ES256"]}),        # the guard takes no DPoP
    ({"dpop_url": RESOURCE, "dpop_algorithms": ("ES256",)},
     {"dpop_signing_alg_values_supported": ["ES256", "PS256"]}),   # PS256 is not accepted
    ({"dpop_url": RESOURCE, "dpop_required": True}, {}),           # says DPoP is optional
    ({"dpop_url": RESOURCE}, {"dpop_signing_alg_values_supported": ["ES256"],
                              "dpop_bound_access_tokens_required": True}),
])
def test_publishing_refuses_metadata_the_guard_contradicts(fake, guard_kwargs,
                                                          metadata_kwargs):
    guard = TokenGuard(fake.issuer, AUDIENCE, **guard_kwargs)
    guard.resource_metadata = ResourceMetadata(
        RESOURCE, **{"authorization_servers": [fake.issuer], **metadata_kwargs})
    app = Flask("contradicted-rs")
    with pytest.raises(ValueError, match="resource_metadata"):
        publish_resource_metadata(app, guard)
    assert not any(rule.rule.startswith(WELL_KNOWN_PATH) for rule in app.url_map.iter_rules())


# --- the example resource server and the bridge ---

def test_example_resource_server_publishes_its_metadata(fake, monkeypatch):
    for name in ("RS_WRITE_ACR_VALUES", "RS_WRITE_MAX_AGE"):
        monkeypatch.delenv(name, raising=False)
    example = load_example()
    resource = "http://127.0.0.1:8002"
    guard = TokenGuard(fake.issuer, AUDIENCE)
    guard.resource_metadata = example.resource_metadata(guard, resource)
    rs = example.create_app(guard).test_client()
    response = fetch(rs, f"{resource}{WELL_KNOWN_PATH}")
    assert response.status_code == 200
    assert response.json == {
        "resource": resource, "authorization_servers": [fake.issuer],
        "scopes_supported": list(ALL_SCOPES), "bearer_methods_supported": ["header"],
        "resource_name": "konfipay API (example)", "dpop_bound_access_tokens_required": False}
    assert_rfc9728(response.json, resource)

    url = f"{resource}/tenants/{TENANT}/evaluation/reports"
    weak = rs.post(urlsplit(url).path, base_url=resource, json={"title": "t"},
                   headers={"Authorization": f"Bearer {mint_weak(fake)}"})
    assert weak.status_code == 401
    assert weak.json["error"] == "insufficient_user_authentication"
    params = challenge_params(weak.headers["WWW-Authenticate"])
    assert params == {"realm": AUDIENCE, "error": "insufficient_user_authentication",
                      "error_description": "a different authentication level is required",
                      "acr_values": "2 mfa urn:konfipay:acr:mfa", "max_age": "900",
                      "resource_metadata": metadata_url(url)}
    assert_rfc9728(fetch(rs, params["resource_metadata"]).json, url)
    # The Open page is a form post, not a bearer-protected resource.
    assert fetch(rs, metadata_url(f"{resource}/tenants/{TENANT}/open")).status_code == 404


def test_a_client_finds_the_bridge_from_a_challenge(bridge, fake):
    """Challenge -> resource metadata -> authorization_servers[0] -> the bridge's RFC 8414
    metadata, whose issuer is that identifier (RFC 8414 section 3.3)."""
    issuer = "http://127.0.0.1:8000"  # the test bridge's issuer
    example = load_example()
    guard = TokenGuard(issuer, AUDIENCE)
    guard.resource_metadata = example.resource_metadata(guard, "http://127.0.0.1:8002")
    rs = example.create_app(guard).test_client()
    challenged = rs.get(f"/tenants/{TENANT}/payments", base_url="http://127.0.0.1:8002")
    assert challenged.status_code == 401
    document = fetch(rs, challenge_params(challenged.headers["WWW-Authenticate"])
                     ["resource_metadata"]).json
    assert_rfc9728(document, f"http://127.0.0.1:8002/tenants/{TENANT}/payments")
    server = document["authorization_servers"][0]
    metadata = bridge.client.get("/.well-known/oauth-authorization-server")
    assert metadata.status_code == 200
    assert metadata.json["issuer"] == server
    assert set(document["scopes_supported"]) <= set(metadata.json["scopes_supported"])
