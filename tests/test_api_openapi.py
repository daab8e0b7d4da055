"""The management API's OpenAPI document and the fixed advisor profile endpoint."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from scopes.catalog import ADVISOR_PROFILE, AREAS, advisor_scopes

pytestmark = pytest.mark.db_independent  # the document and the fixed profile

_CONVERTER = re.compile(r"<(?:[a-z_]+(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """Flask rule syntax to OpenAPI path templating: ``<x>`` and ``<path:x>`` → ``{x}``."""
    return _CONVERTER.sub(r"{\1}", rule)


@pytest.fixture
def document(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.is_json
    return response.json


def api_routes(app):
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            methods = {m.lower() for m in rule.methods} - {"head", "options"}
            routes.setdefault(openapi_path(rule.rule), set()).update(methods)
    return routes


@pytest.mark.parametrize("rule, expected", [
    ("/api/x/<tenant>", "/api/x/{tenant}"),
    ("/api/x/<path:advisor_subject>", "/api/x/{advisor_subject}"),
    ("/api/x/<int:n>/<string(length=2):c>", "/api/x/{n}/{c}"),
])
def test_openapi_path_mapping(rule, expected):
    assert openapi_path(rule) == expected


def test_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_document_names_our_issuer(document, settings):
    assert document["servers"] == [{"url": settings.issuer.rstrip("/")}]


def test_every_api_route_is_documented(app, document):
    routes = api_routes(app)
    assert "/api/tenants/{tenant_id}/memberships/{membership_id}" in routes
    assert "/api/tenants/{tenant_id}/permanent-advisors/{advisor_subject}" in routes
    documented = {path: set(ops) for path, ops in document["paths"].items()}
    missing = []
    for path, methods in sorted(routes.items()):
        if path == "/api/openapi.json":
            continue  # the document does not need to describe itself
        if path == "/api/advisor-profile":
            methods = {"get"}  # the write methods exist only to refuse them (403)
        for method in sorted(methods):
            if method not in documented.get(path, set()):
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_document_has_no_phantom_operations(app, document):
    routes = api_routes(app)
    phantom = [f"{method.upper()} {path}" for path, ops in document["paths"].items()
               for method in ops if method not in routes.get(path, set())]
    assert phantom == []


def test_path_parameters_are_declared(document):
    params = document["components"]["parameters"]
    for path, ops in document["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in ops.items():
            declared = {params[ref["$ref"].rsplit("/", 1)[1]]["name"]
                        for ref in op.get("parameters", []) if "$ref" in ref}
            assert names <= declared, (method, path)


def test_protected_operations_declare_bearer_security(document):
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            if path == "/api/advisor-profile":
                continue
            assert op["security"] == [{"upstreamBearer": []}], (method, path)
            assert "401" in op["responses"] and "403" in op["responses"], (method, path)


def test_access_code_pattern_matches_the_alphabet(document, bridge):
    pattern = document["components"]["schemas"]["AccessCode"]["properties"]["code"]["pattern"]
    assert re.match(pattern, bridge.current_code())
    for bad in ("ABCD-EFGI", "ABCD-EFGL", "ABCD-EFGO", "ABCD-EFGU", "abcd-efgh", "ABCDEFGH"):
        assert not re.match(pattern, bad)


# --- the fixed advisor profile ---

def test_advisor_profile_is_the_fixed_profile(client):
    response = client.get("/api/advisor-profile")
    assert response.status_code == 200
    body = response.json
    assert body["mutable"] is False
    assert body["scopes"] == list(advisor_scopes())
    assert set(body["scopes"]) == ADVISOR_PROFILE
    assert [a["area"] for a in body["areas"]] == [a.key for a in AREAS]
    evaluation = next(a for a in body["areas"] if a["area"] == "evaluation")
    assert evaluation["scopes"] == ["evaluation:read", "evaluation:write"]
    ebics = next(a for a in body["areas"] if a["area"] == "ebics")
    assert ebics["scopes"] == ["ebics:read"] and ebics["read_excludes"]
    assert ebics["name_de"] == "EBICS" and ebics["group"] == "Zahlungsverkehr"


@pytest.mark.parametrize("method", ["put", "patch", "post", "delete"])
@pytest.mark.parametrize("who", ["anonymous", "anna", "bob", "sam"])
def test_advisor_profile_cannot_be_changed(bridge, method, who):
    before = bridge.client.get("/api/advisor-profile").json
    kwargs = {"json": {"scopes": ["payments:write", "ebics:write"]}}
    if who == "anonymous":
        response = getattr(bridge.client, method)("/api/advisor-profile", **kwargs)
    else:
        response = bridge.api(method, "/api/advisor-profile", user=who, **kwargs)
    assert response.status_code == 403
    assert response.json["error"] == "profile_immutable"
    assert response.json["error_description"]
    assert bridge.client.get("/api/advisor-profile").json == before
    assert set(before["scopes"]) == ADVISOR_PROFILE
