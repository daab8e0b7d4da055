"""SSO sign-in of the web pages against a second, independent, certified OpenID provider:
panva's ``oidc-provider`` (npm, pinned in ``tests/oidc_provider/package.json``), run by Node on
127.0.0.1 with its own login and consent pages, ES256 ID tokens and RP-initiated logout.

The same generic path as ``test_web_login.py`` (the in-repo development provider): nothing in
the bridge is configured for this provider but its issuer. Its access tokens are opaque, so the
bridge's attempt to read roles from them fails and the ID token speaks: roles and groups stay
empty. Node and ``tests/oidc_provider/node_modules`` (``.ci/install-oidc-provider``) are needed;
with ``CI`` set their absence fails, otherwise it skips with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit, urlunsplit

import pytest
import requests

from conftest import build_app
from idp_bridge.app import services
from test_web_login import id_token_of, web_session_of

pytestmark = pytest.mark.slow

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
CLIENT_ID = "idp-bridge"
#: What the Flask test client's ``url_for(..., _external=True)`` produces.
CALLBACK = "http://localhost/auth/callback"
POST_LOGOUT = "http://localhost/"
START_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0


# --- the provider process ---

@dataclass
class OidcProvider:
    issuer: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"oidc-provider is required when CI is set, and it is unavailable: {reason} "
                    "(.ci/install-oidc-provider installs it)", pytrace=False)
    pytest.skip(f"oidc-provider unavailable (set CI=1 to make this a failure): {reason}")


def _ensure_installed() -> str:
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not on PATH")
    if (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return node
    if os.environ.get("CI"):
        _unavailable(f"{PROVIDER_DIR / 'node_modules'} is missing")
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("node_modules is missing and npm is not on PATH")
    try:  # once, outside CI: the lockfile pins every package
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR,
                              capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        _unavailable("npm ci timed out")
    if done.returncode != 0:
        _unavailable(f"npm ci failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return node


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory):
    node = _ensure_installed()
    log_path = tmp_path_factory.mktemp("oidc-provider") / "server.log"
    env = {**os.environ, "OIDC_REDIRECT_URIS": CALLBACK,
           "OIDC_POST_LOGOUT_REDIRECT_URIS": POST_LOGOUT, "OIDC_CLIENT_ID": CLIENT_ID}
    env.pop("OIDC_PROVIDER_PORT", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([node, "server.mjs", "0"], cwd=PROVIDER_DIR, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=log, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    provider = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while provider is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:  # exited, or no ready line in time
                pytest.fail(f"oidc-provider did not start (exit code {process.poll()}):\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            match = re.fullmatch(r"READY (\d+)", line)
            if match:
                provider = OidcProvider(f"http://127.0.0.1:{match.group(1)}", process, log_path)
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def op_app(settings, oidc_provider):
    """A bridge whose upstream is oidc-provider: only the issuer (and client id) change."""
    # The bridge's public URL is where the provider sends the browser back (redirect_uri).
    app = build_app(settings.replace(upstream_issuer=oidc_provider.issuer,
                                     web_client_id=CLIENT_ID, issuer="http://localhost"))
    yield app
    services(app).db.dispose()


@pytest.fixture
def client(op_app):
    return op_app.test_client()


@pytest.fixture
def browser():
    """The user agent's side at the provider (its cookies: the provider session)."""
    with requests.Session() as http:
        yield http


# --- driving the provider's pages like a browser ---

class _Forms(HTMLParser):
    """Forms of a page: action, method and named fields (hidden inputs included)."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._open = {"id": attrs.get("id"), "action": attrs.get("action") or "",
                          "method": (attrs.get("method") or "get").lower(), "fields": {}}
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and attrs.get("name"):
            self._open["fields"][attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._open = None


def page_form(response: requests.Response) -> dict:
    assert response.status_code == 200, (response.status_code, response.text[:2000])
    parser = _Forms()
    parser.feed(response.text)
    assert len(parser.forms) == 1, response.text[:2000]
    form = parser.forms[0]
    assert form["method"] == "post"
    form["action"] = urljoin(response.url, form["action"])
    return form


def walk(http: requests.Session, response: requests.Response, origin: str):
    """Follow redirects while they stay at the provider: the first page there (a response),
    or the URL of the first redirect that leaves it (a string, never requested)."""
    for _ in range(10):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = urljoin(response.url, response.headers["Location"])
        if not location.startswith(origin + "/"):
            return location
        response = http.get(location, allow_redirects=False, timeout=HTTP_TIMEOUT)
    raise AssertionError("too many redirects at the provider")


def submit(http, form: dict, origin: str, **fields):
    assert form["action"].startswith(origin + "/"), form["action"]
    response = http.post(form["action"], data={**form["fields"], **fields},
                         allow_redirects=False, timeout=HTTP_TIMEOUT)
    return walk(http, response, origin)


def start_login(client, next_path="/") -> str:
    response = client.get("/login", query_string={"next": next_path})
    assert response.status_code == 302
    return response.headers["Location"]


def provider_sign_in(http, provider: OidcProvider, authorize_url: str, user="bob") -> str:
    """The user signs in on the provider's login page and consents; returns the redirect back
    to the bridge's callback (not followed)."""
    assert authorize_url.startswith(provider.issuer + "/"), authorize_url
    step = walk(http, http.get(authorize_url, allow_redirects=False, timeout=HTTP_TIMEOUT),
                provider.issuer)
    assert not isinstance(step, str), f"no login page, redirected to {step}"
    login = page_form(step)
    assert login["fields"].get("prompt") == "login", login
    step = submit(http, login, provider.issuer, login=user, password="any password")
    if not isinstance(step, str):  # consent, unless already given in this provider session
        consent = page_form(step)
        assert consent["fields"].get("prompt") == "consent", consent
        step = submit(http, consent, provider.issuer)
    assert isinstance(step, str), f"no redirect back: {step.status_code} {step.text[:2000]}"
    assert step.startswith(CALLBACK + "?"), step
    return step


def sign_in(client, http, provider, user="bob", next_path="/"):
    callback = provider_sign_in(http, provider, start_login(client, next_path), user)
    parts = urlsplit(callback)
    return client.get(f"{parts.path}?{parts.query}")


def _b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jose_header(token: str) -> dict:
    return _b64json(token.split(".")[0])


def unverified_claims(token: str) -> dict:
    return _b64json(token.split(".")[1])


# --- the tests ---

def test_provider_is_a_plain_oidc_provider(oidc_provider):
    metadata = requests.get(oidc_provider.issuer + "/.well-known/openid-configuration",
                            timeout=HTTP_TIMEOUT).json()
    assert metadata["issuer"] == oidc_provider.issuer
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["end_session_endpoint"].startswith(oidc_provider.issuer + "/")
    keys = requests.get(metadata["jwks_uri"], timeout=HTTP_TIMEOUT).json()["keys"]
    assert [(k["kty"], k["crv"], k["alg"]) for k in keys] == [("EC", "P-256", "ES256")]
    assert all("d" not in k for k in keys)


def test_authorization_request_uses_pkce_state_and_nonce(client, oidc_provider):
    url = start_login(client)
    assert url.startswith(oidc_provider.issuer + "/auth?")
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [CALLBACK]
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"][0] and query["nonce"][0]
    assert set(query["scope"][0].split()) >= {"openid", "profile", "email"}


def test_sign_in(client, browser, oidc_provider):
    response = sign_in(client, browser, oidc_provider, "bob", "/somewhere?x=1")
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == "/somewhere?x=1"
    page = client.get("/")
    assert "Signed in as bob" in page.text
    assert '<p id="subject">bob</p>' in page.text
    user = web_session_of(client).claims
    id_token = id_token_of(client)
    with client.session_transaction() as session:
        assert set(session) <= {"web_session", "_permanent", "csrf_token"}, set(session)
    assert user["iss"] == oidc_provider.issuer
    assert user["sub"] == "bob"
    # a conformant provider keeps profile and email claims out of the code flow's ID token
    # (OpenID Connect Core 5.4): the bridge reads them from the UserInfo endpoint
    assert "name" not in unverified_claims(id_token)
    assert (user["preferred_username"], user["name"], user["email"]) == (
        "bob", "Bob Example", "bob@example.test")
    # the access token is opaque (not a bridge subject token): the ID token speaks, and it
    # carries no roles or groups
    assert user["roles"] == [] and user["groups"] == []
    assert jose_header(id_token)["alg"] == "ES256"


def test_callback_carries_the_issuer_and_cannot_be_replayed(client, browser, oidc_provider):
    callback = provider_sign_in(browser, oidc_provider, start_login(client))
    query = parse_qs(urlsplit(callback).query)
    assert query["iss"] == [oidc_provider.issuer]  # RFC 9207
    assert client.get(f"/auth/callback?{urlsplit(callback).query}").status_code == 302
    assert "Signed in as bob" in client.get("/").text
    # a replayed callback (same state and code) is refused: the state is gone from the session
    replay = client.get(f"/auth/callback?{urlsplit(callback).query}")
    assert replay.status_code == 400


def test_wrong_state_is_refused(client, browser, oidc_provider):
    callback = provider_sign_in(browser, oidc_provider, start_login(client))
    query = parse_qs(urlsplit(callback).query)
    response = client.get("/auth/callback", query_string={
        "code": query["code"][0], "state": "forged", "iss": query["iss"][0]})
    assert response.status_code == 400
    assert "not valid" in response.text
    assert "Signed in as" not in client.get("/").text


def test_callback_in_another_browser_is_refused(op_app, client, browser, oidc_provider):
    callback = provider_sign_in(browser, oidc_provider, start_login(client))
    parts = urlsplit(callback)
    response = op_app.test_client().get(f"{parts.path}?{parts.query}")
    assert response.status_code == 400


def test_user_aborting_at_the_provider_is_shown(client, browser, oidc_provider):
    step = walk(browser, browser.get(start_login(client), allow_redirects=False,
                                     timeout=HTTP_TIMEOUT), oidc_provider.issuer)
    abort = step.url.rstrip("/") + "/abort"  # the login page's "Cancel" link
    back = walk(browser, browser.get(abort, allow_redirects=False, timeout=HTTP_TIMEOUT),
                oidc_provider.issuer)
    assert isinstance(back, str) and back.startswith(CALLBACK + "?"), back
    query = parse_qs(urlsplit(back).query)
    assert query["error"] == ["access_denied"]
    response = client.get(f"/auth/callback?{urlsplit(back).query}")
    assert response.status_code == 400
    assert "cancelled or refused" in response.text


def test_logout_ends_the_provider_session(client, browser, oidc_provider):
    sign_in(client, browser, oidc_provider, "bob")
    id_token = id_token_of(client)
    page = client.get("/")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    out = client.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 302
    location = out.headers["Location"]
    target = urlsplit(location)
    metadata = requests.get(oidc_provider.issuer + "/.well-known/openid-configuration",
                            timeout=HTTP_TIMEOUT).json()
    assert urlunsplit(target._replace(query="")) == metadata["end_session_endpoint"]
    query = parse_qs(target.query)
    assert query["id_token_hint"] == [id_token]
    assert query["post_logout_redirect_uri"] == [POST_LOGOUT]
    assert query["client_id"] == [CLIENT_ID]
    assert "Signed in as" not in client.get("/").text

    # The provider accepts the request (hint, client and redirect URI) and, once the user
    # confirms, ends its session and sends the browser back to the bridge.
    confirm = walk(browser, browser.get(location, allow_redirects=False, timeout=HTTP_TIMEOUT),
                   oidc_provider.issuer)
    assert not isinstance(confirm, str), confirm
    form = page_form(confirm)
    back = submit(browser, form, oidc_provider.issuer, logout="yes")
    assert isinstance(back, str), f"{back.status_code} {back.text[:2000]}"
    assert back.split("?")[0] == POST_LOGOUT

    # A new sign-in in the same browser needs the login page again: the session is gone.
    step = walk(browser, browser.get(start_login(client), allow_redirects=False,
                                     timeout=HTTP_TIMEOUT), oidc_provider.issuer)
    assert not isinstance(step, str), step
    assert page_form(step)["fields"].get("prompt") == "login"


def test_logout_needs_csrf_token(client, browser, oidc_provider):
    sign_in(client, browser, oidc_provider, "bob")
    assert client.post("/logout").status_code == 400
    assert "Signed in as bob" in client.get("/").text


def test_provider_pages_are_allowed_as_form_targets(client, oidc_provider):
    policy = client.get("/").headers["Content-Security-Policy"]
    assert f"form-action 'self' {oidc_provider.issuer}" in policy
