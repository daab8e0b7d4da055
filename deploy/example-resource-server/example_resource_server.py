"""Example resource server: the konfipay APIs per functional area, guarded by ``scopes.guard``.

Every functional area of the catalog has a read endpoint returning generated sample data
for the tenant in the URL. Fields that ``read`` excludes (secrets: EBICS keys, API client
secrets, PayPal credentials, ...) exist in the data but are never returned. ``evaluation``
(the advisor's full-access area) also has a write endpoint.

``POST /tenants/<tenant>/open`` is the page standing for the konfipay application: the
bridge's "Open" button on the advisor page (its ``app_url`` setting) posts the tenant-scoped
tokens there, like an OAuth 2.0 Form Post response. The page checks the access token with the
same guard (signature, audience, revocation, and bound to the tenant in the URL) and shows
the areas the token may read, with their data. It never shows the tokens themselves. It is
what an advisor sees first, so it looks like the bridge's pages: the bridge's stylesheet, the
tenant's and the advisor's names, times in local time (``RS_TIMEZONE``), the bridge's
language, and a way back to the advisor page.

Writing an evaluation report (``evaluation:write``) needs a strong and recent sign-in (RFC
9470 step-up): the token's ``acr`` one of ``RS_WRITE_ACR_VALUES`` (default ``2 mfa
urn:konfipay:acr:mfa``, the bridge's ``mfa_acr_values``; empty: any) and its ``auth_time`` at
most ``RS_WRITE_MAX_AGE`` seconds ago (default 900; empty: any age). Otherwise 401
``insufficient_user_authentication`` with ``acr_values`` and ``max_age`` in the challenge.

It publishes its RFC 9728 metadata at ``/.well-known/oauth-protected-resource`` (with the
resource identifier's path appended when it has one) and for every guarded URL, and every
challenge names it (``resource_metadata``). ``RS_RESOURCE`` is the resource identifier, the URL
clients use (default ``http://127.0.0.1:<RS_PORT>``).

DPoP (RFC 9449): tokens bound to a key are accepted with ``Authorization: DPoP`` and a proof
whose ``htu`` is ``RS_EXTERNAL_URL`` (the server's external base URL, default
``RS_RESOURCE``; never the ``Host`` header) plus the request path; ``RS_DPOP_REQUIRED=true``
refuses unbound (Bearer) tokens.

It installs only the resource-server part with its Flask adapter (``pip install
'./guard[flask]'``: the distribution idp-bridge-guard), and imports nothing from the bridge.
Run: ``python example_resource_server.py`` with ``RS_ISSUER`` (the bridge), ``RS_CLIENT_ID``
/ ``RS_CLIENT_SECRET`` (a receiver client of the revocation feed) and optionally
``RS_AUDIENCE`` (default ``konfipay-api``), ``RS_PORT``, ``RS_TIMEZONE`` (default
``Europe/Berlin``), ``RS_RESOURCE``, ``RS_WRITE_ACR_VALUES``, ``RS_WRITE_MAX_AGE``,
``RS_EXTERNAL_URL``, ``RS_DPOP_REQUIRED``, ``RS_FEED_STALENESS``.

Revocation feed and outages: the server listens to the bridge's revocation feed and fails
closed (401 ``invalid_token``) once its last successful poll is ``RS_FEED_STALENESS`` seconds
old (default 30, the guard's default): during a longer outage of the bridge it refuses
advisor tokens rather than accept ones that may have been revoked meanwhile. A larger value
keeps it serving longer through an outage, at the price of revocations reaching it that much
later in the worst case.

Access records (what advisors read, for the tenant's access log): with ``RS_ACCESS_SPOOL_DIR``
set, every request authorised with an advisor or guest token is recorded and shipped to the
bridge's ``/access-records`` with the same receiver client; ``RS_ACCESS_SPOOL_MAX_BYTES``
(default 64 MiB) bounds the unshipped spool (when full: writes refused, oldest reads dropped).
``idp-bridge demo`` turns it on.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Flask, abort, g, jsonify, render_template_string, request

from scopes.catalog import AREAS, CATALOG
from scopes.guard import (AuthenticationRequirement, InsufficientScope, InvalidToken,
                          ResourceMetadata, TokenGuard)
from scopes.guard.flask_adapter import publish_resource_metadata
from scopes.guard.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from scopes.guard.metrics import access_recording_metrics

#: ``evaluation:write`` by default: multi-factor (the bridge's ``mfa_acr_values``), 15 minutes.
DEFAULT_WRITE_ACR_VALUES = "2 mfa urn:konfipay:acr:mfa"
DEFAULT_WRITE_MAX_AGE = "900"

#: Secret fields per area in the sample data; ``read`` never returns them.
SECRET_FIELDS = {
    "bank-accounts": ("online_banking_pin",),
    "ebics": ("ebics_private_key", "key_password"),
    "payments": ("signing_credential",),
    "foreign-trade-payments": ("signing_credential",),
    "paypal-accounts": ("paypal_client_secret",),
    "tenant": ("licence_key",),
    "users": ("password_hash", "totp_secret"),
    "api": ("client_secret",),
    "notifications": ("webhook_secret", "smtp_password"),
}


def sample_records(tenant: str, area: str, count: int = 3) -> list[dict]:
    """Stable generated data per tenant and area, secrets included (to be filtered)."""
    rng = random.Random(hashlib.sha256(f"{tenant}/{area}".encode()).digest())
    records = []
    for i in range(count):
        record = {"id": f"{area}-{i + 1}", "tenant": tenant,
                  "label": f"{CATALOG[area].name_de} {i + 1}",
                  "amount_cents": rng.randrange(100, 10_000_000)}
        for secret in SECRET_FIELDS.get(area, ()):
            record[secret] = hashlib.sha256(f"{tenant}{area}{i}{secret}".encode()).hexdigest()
        records.append(record)
    return records


def public_view(area: str, record: dict) -> dict:
    hidden = SECRET_FIELDS.get(area, ())
    return {key: value for key, value in record.items() if key not in hidden}


#: The page's texts in the bridge's two languages (the language the bridge's page had).
TEXTS = {
    "en": {
        "title": "Tenant %(tenant)s",
        "back": "Back to my tenants",
        "signed_in": "Signed in as advisor %(name)s (%(kind)s) until %(until)s.",
        "kinds": {"temporary": "temporary access", "permanent": "permanent access",
                  "guest": "guest access"},
        "opened": "Opened at %(time)s.",
        "scope": "Scope",
        "areas": "Areas this access may read",
        "nothing": "This token may read no area of the tenant.",
        "never": "Never shown: %(items)s.",
        "id": "ID", "label": "Label", "amount": "Amount (cents)",
        "rejected": "The access token was rejected: %(reason)s",
        "rejected_hint": "Please open the tenant again from your page at the advisor access.",
        "brand": "konfipay application (example)",
        "footer": "Example application standing for konfipay, served by the example resource "
                  "server. Times are shown in %(zone)s.",
        "time": "%H:%M",
    },
    "de": {
        "title": "Mandant %(tenant)s",
        "back": "Zurück zu meinen Mandanten",
        "signed_in": "Angemeldet als Kundenberater %(name)s (%(kind)s) bis %(until)s.",
        "kinds": {"temporary": "temporärer Zugriff", "permanent": "permanenter Zugriff",
                  "guest": "Gastzugriff"},
        "opened": "Geöffnet um %(time)s.",
        "scope": "Scope",
        "areas": "Bereiche, die dieser Zugriff lesen darf",
        "nothing": "Dieses Token darf keinen Bereich des Mandanten lesen.",
        "never": "Nie angezeigt: %(items)s.",
        "id": "ID", "label": "Bezeichnung", "amount": "Betrag (Cent)",
        "rejected": "Das Zugriffstoken wurde abgelehnt: %(reason)s",
        "rejected_hint": "Bitte öffnen Sie den Mandanten erneut von Ihrer Seite im "
                         "Kundenberater-Zugriff.",
        "brand": "konfipay-Anwendung (Beispiel)",
        "footer": "Beispielanwendung für konfipay, bereitgestellt vom Beispiel-Ressourcenserver. "
                  "Zeiten in der Zeitzone %(zone)s.",
        "time": "%H:%M Uhr",
    },
}
#: What ``read`` excludes, in German (the catalog names them in English).
EXCLUDES_DE = {
    "online banking PINs": "Online-Banking-PINs",
    "access credentials of the bank connection": "Zugangsdaten der Bankverbindung",
    "EBICS private keys": "private EBICS-Schlüssel",
    "key passwords": "Schlüsselpasswörter",
    "INI/HIA letters": "INI/HIA-Briefe",
    "signing credentials": "Signaturzugangsdaten",
    "release (signature) actions": "Freigaben (Unterschriften)",
    "PayPal API credentials": "PayPal-API-Zugangsdaten",
    "client secrets": "Client-Geheimnisse",
    "licence keys": "Lizenzschlüssel",
    "passwords": "Passwörter",
    "password reset links": "Links zum Zurücksetzen von Passwörtern",
    "second-factor secrets": "Geheimnisse des zweiten Faktors",
    "API client secrets": "Geheimnisse der API-Clients",
    "API keys": "API-Schlüssel",
    "webhook signing secrets": "Signaturgeheimnisse der Webhooks",
    "SMTP passwords": "SMTP-Passwörter",
}
DISPLAY_MAX = 255

#: The application page after "Open": what the handed-over token may read, with the data.
#: It looks like the bridge's pages because it uses the bridge's own stylesheet (a
#: stylesheet from the bridge's origin, allowed by the page's CSP; no inline style or
#: script). (Flask autoescapes templates rendered from strings.)
OPEN_PAGE = """<!doctype html>
<html lang="{{ lang }}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ t.title|format(tenant=tenant) }}{% if tenant_name %} ({{ tenant_name }}){% endif %} · konfipay</title>
  <link rel="stylesheet" href="{{ stylesheet }}">
</head>
<body>
  <header class="top">
    <div class="wrap top-inner">
      <span class="brand">{{ t.brand }}</span>
      <div class="tools">
        {% if advisor_name %}<span class="user" id="advisor">{{ advisor_name }}</span>{% endif %}
        <a class="button small" id="back" href="{{ back_url }}">{{ t.back }}</a>
      </div>
    </div>
  </header>
  <main id="main" class="wrap">
    <h1 id="tenant-title">{{ t.title|format(tenant=tenant) }}{% if tenant_name %} <span class="hint">({{ tenant_name }})</span>{% endif %}</h1>
  {% if error %}
    <section class="card">
      <p id="status" class="error-box" role="alert">{{ t.rejected|format(reason=error) }}</p>
      <p>{{ t.rejected_hint }}</p>
      <p><a class="button" href="{{ back_url }}">{{ t.back }}</a></p>
    </section>
  {% else %}
    <section class="card code-card">
    {% if claims %}
      <p id="status" class="lead">{{ t.signed_in|format(name=advisor_name or claims.sub,
          kind=t.kinds.get(claims.membership, claims.membership), until=expires) }}</p>
      <p class="hint" id="opened">{{ t.opened|format(time=opened) }}</p>
      <p class="hint">{{ t.scope }}: <code id="scope">{{ claims.scope }}</code></p>
    {% endif %}
      <nav aria-labelledby="areas-heading">
        <h2 id="areas-heading">{{ t.areas }}</h2>
        <ul id="areas" class="subnav">
        {% for area in readable %}<li><a href="#{{ area.key }}">{{ names[area.key] }}</a></li>{% endfor %}
        </ul>
      </nav>
      {% if not readable %}<p id="nothing" class="empty">{{ t.nothing }}</p>{% endif %}
    </section>
    {% for area in readable %}
    <section class="card" id="{{ area.key }}" data-area="{{ area.key }}" aria-labelledby="{{ area.key }}-heading">
      <h2 id="{{ area.key }}-heading">{{ names[area.key] }}</h2>
      {% if excludes[area.key] %}<p class="hint">{{ t.never|format(items=excludes[area.key]|join(", ")) }}</p>{% endif %}
      <table class="stack">
        <thead><tr><th scope="col">{{ t.id }}</th><th scope="col">{{ t.label }}</th><th scope="col">{{ t.amount }}</th></tr></thead>
        <tbody>
        {% for item in data[area.key] %}
          <tr><td data-label="{{ t.id }}">{{ item.id }}</td><td data-label="{{ t.label }}">{{ item.label }}</td><td data-label="{{ t.amount }}">{{ item.amount_cents }}</td></tr>
        {% endfor %}
        </tbody>
      </table>
    </section>
    {% endfor %}
  {% endif %}
  </main>
  <footer class="wrap">{{ t.footer|format(zone=zone) }}</footer>
</body>
</html>
"""


def display_text(value) -> str:
    """A name the bridge's page handed over with the tokens, for display only: printable
    (no control or direction-changing characters) and bounded, else nothing."""
    if not isinstance(value, str) or not value.isprintable():
        return ""
    return value.strip()[:DISPLAY_MAX]


def page_language() -> str:
    chosen = request.form.get("lang")
    if chosen in TEXTS:
        return chosen
    return request.accept_languages.best_match(tuple(TEXTS)) or "en"


def open_page_response(guard: TokenGuard, tenant: str, *, bridge_url: str | None = None,
                       zone: str = "Europe/Berlin"):
    """``POST /tenants/<tenant>/open``: validate the posted access token for this tenant and
    show the areas it may read (a tenant in the URL that the token is not for: 401).

    Around the data: the tenant's and the advisor's names as the bridge's page handed them
    over (display text; nothing here is decided by them, and nothing is shown unless the
    token is valid), the token's end in local time, and the way back to the bridge's
    advisor page."""
    bridge_url = (bridge_url or guard.issuer).rstrip("/")
    token = request.form.get("access_token", "")
    readable, data, claims, error = [], {}, {}, None
    for area in AREAS:
        try:
            claims = guard.validate(token, tenant=tenant, scope=f"{area.key}:read")
        except InsufficientScope:  # a valid token, just not for this area
            continue
        except InvalidToken as exc:  # forged, expired, revoked, or for another tenant
            readable, data, claims, error = [], {}, {}, exc.description
            break
        readable.append(area)
        data[area.key] = [public_view(area.key, r) for r in sample_records(tenant, area.key)]
    lang = page_language()
    texts = TEXTS[lang]
    local = ZoneInfo(zone)
    expires = ""
    if isinstance(claims.get("exp"), (int, float)):
        expires = datetime.fromtimestamp(claims["exp"], local).strftime(texts["time"])
    german = lang == "de"
    names = {a.key: a.name_de if german else a.name_en for a in AREAS}
    excludes = {a.key: [EXCLUDES_DE.get(i, i) if german else i for i in a.read_excludes]
                for a in AREAS}
    valid = error is None and bool(claims)
    body = render_template_string(
        OPEN_PAGE, tenant=tenant, claims=claims, readable=readable, data=data, error=error,
        expires=expires, opened=datetime.now(local).strftime(texts["time"]), zone=zone,
        lang=lang, t=texts, names=names, excludes=excludes,
        tenant_name=display_text(request.form.get("tenant_name")) if valid else "",
        advisor_name=display_text(request.form.get("advisor_name")) if valid else "",
        stylesheet=f"{bridge_url}/static/web/app.css", back_url=f"{bridge_url}/advisor")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(bridge_url))
    return body, 401 if error else 200, {
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": f"default-src 'none'; style-src {origin}; "
                                   "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"}


def write_requirement(environ=os.environ) -> AuthenticationRequirement | None:
    """The step-up requirement of ``evaluation:write`` from ``RS_WRITE_ACR_VALUES`` (space
    separated) and ``RS_WRITE_MAX_AGE`` (seconds); both empty: none. A bad value stops the
    start with a message naming the variable."""
    acr_values = environ.get("RS_WRITE_ACR_VALUES", DEFAULT_WRITE_ACR_VALUES).split()
    max_age = environ.get("RS_WRITE_MAX_AGE", DEFAULT_WRITE_MAX_AGE).strip()
    if max_age and not (max_age.isascii() and max_age.isdigit()):
        raise ValueError("RS_WRITE_MAX_AGE must be a number of seconds (or empty)")
    if not acr_values and not max_age:
        return None
    try:
        return AuthenticationRequirement(acr_values, int(max_age) if max_age else None)
    except ValueError as exc:
        raise ValueError(f"RS_WRITE_ACR_VALUES: {exc}") from None


def feed_staleness(environ=os.environ) -> float:
    """``RS_FEED_STALENESS``: seconds after the last successful poll of the revocation feed
    until validation fails closed (empty: the guard's default, 30). A bad value stops the
    start with a message naming the variable."""
    value = environ.get("RS_FEED_STALENESS", "").strip()
    if not value:
        return 30.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 86400:  # also refuses nan, which would never count as stale
        raise ValueError("RS_FEED_STALENESS must be a number of seconds above 0 and at most "
                         "86400")
    return seconds


def resource_metadata(guard: TokenGuard, resource: str) -> ResourceMetadata:
    """The RFC 9728 metadata of this resource server at ``resource`` (its URL for clients):
    the guard's issuer (the bridge) and DPoP settings; for ``guard.resource_metadata``."""
    return ResourceMetadata.for_guard(guard, resource, resource_name="konfipay API (example)")


def create_app(guard: TokenGuard, *, bridge_url: str | None = None,
               zone: str | None = None,
               write_step_up: AuthenticationRequirement | None | str = "environment") -> Flask:
    """The example resource server; ``bridge_url`` (default: the guard's issuer) is where
    the Open page takes its stylesheet and its way back from, ``zone`` (default
    ``RS_TIMEZONE``, else Europe/Berlin) the time zone it shows times in, ``write_step_up``
    the requirement of ``evaluation:write`` (default: :func:`write_requirement`, from the
    environment; None: none). With the guard's ``resource_metadata`` it publishes it."""
    app = Flask(__name__)
    zone = zone or os.environ.get("RS_TIMEZONE", "Europe/Berlin")
    ZoneInfo(zone)  # an unknown zone fails at start, not on the first page
    if write_step_up == "environment":
        write_step_up = write_requirement()
    step_up = {}
    if write_step_up is not None:
        step_up = {"acr_values": write_step_up.acr_values or None,
                   "max_age": write_step_up.max_age}
    reports: dict[str, list] = {}
    lock = threading.Lock()

    def make_read_view(area: str):
        @guard.require(f"{area}:read")
        def read_area(tenant):
            return jsonify(area=area, tenant=tenant, advisor=g.token_claims["sub"],
                           excluded=list(CATALOG[area].read_excludes),
                           items=[public_view(area, r) for r in sample_records(tenant, area)])

        read_area.__name__ = f"read_{area.replace('-', '_')}"
        return read_area

    for area in AREAS:
        app.add_url_rule(f"/tenants/<tenant>/{area.key}", view_func=make_read_view(area.key))

    @app.post("/tenants/<tenant>/evaluation/reports")
    @guard.require("evaluation:write", **step_up)
    def create_report(tenant):
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("title"), str) or \
                not 0 < len(body["title"]) <= 200:
            abort(400)
        report = {"title": body["title"], "created_by": g.token_claims["sub"], "tenant": tenant}
        with lock:
            reports.setdefault(tenant, []).append(report)
        return jsonify(report), 201

    @app.post("/tenants/<tenant>/open")
    def open_tenant(tenant):
        return open_page_response(guard, tenant, bridge_url=bridge_url, zone=zone)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", feed_healthy=guard.feed_healthy)

    @app.get("/metrics")
    def metrics():
        # Counters only (no token, subject or tenant): like the bridge's /metrics, for the
        # operator's scraper on the internal network.
        return access_recording_metrics(guard.access_recorder), 200, {
            "Content-Type": METRICS_CONTENT_TYPE}

    if guard.resource_metadata is not None:
        publish_resource_metadata(app, guard)
    return app


def main() -> None:
    issuer = os.environ["RS_ISSUER"]
    port = int(os.environ.get("RS_PORT", "8002"))
    resource = os.environ.get("RS_RESOURCE") or f"http://127.0.0.1:{port}"
    guard = TokenGuard(issuer, os.environ.get("RS_AUDIENCE", "konfipay-api"),
                       dpop_url=os.environ.get("RS_EXTERNAL_URL") or resource,
                       dpop_required=os.environ.get("RS_DPOP_REQUIRED", "").lower() in (
                           "1", "true", "yes"),
                       feed_staleness=feed_staleness())
    guard.resource_metadata = resource_metadata(guard, resource)
    app = create_app(guard)  # a bad setting stops here, before the listener starts
    spool_dir = os.environ.get("RS_ACCESS_SPOOL_DIR")
    spool_bytes = int(os.environ.get("RS_ACCESS_SPOOL_MAX_BYTES") or 64 * 1024 * 1024)
    guard.start_revocation_listener(os.environ["RS_CLIENT_ID"], os.environ["RS_CLIENT_SECRET"])
    try:
        if spool_dir:
            guard.start_access_recording(os.environ["RS_CLIENT_ID"],
                                         os.environ["RS_CLIENT_SECRET"], spool_dir,
                                         max_spool_bytes=spool_bytes)
        app.run("127.0.0.1", port, threaded=True)
    finally:
        guard.stop_access_recording()
        guard.stop_revocation_listener()


if __name__ == "__main__":
    main()
