"""Example resource server: the konfipay APIs per functional area, guarded by ``scopes.guard``.

Every functional area of the catalog has a read endpoint returning generated sample data
for the tenant in the URL. Fields that ``read`` excludes (secrets: EBICS keys, API client
secrets, PayPal credentials, ...) exist in the data but are never returned. ``evaluation``
(the advisor's full-access area) also has a write endpoint.

``POST /tenants/<tenant>/open`` is the page standing for the konfipay application: the
bridge's "Open" button on the advisor page (its ``app_url`` setting) posts the tenant-scoped
tokens there, like an OAuth 2.0 Form Post response. The page checks the access token with the
same guard (signature, audience, revocation, and bound to the tenant in the URL) and shows
the areas the token may read, with their data. It never shows the tokens themselves.

It installs only the resource-server part with its Flask adapter (``pip install
'./guard[flask]'``: the distribution idp-bridge-guard), and imports nothing from the bridge.
Run: ``python example_resource_server.py`` with ``RS_ISSUER`` (the bridge), ``RS_CLIENT_ID``
/ ``RS_CLIENT_SECRET`` (a receiver client of the revocation feed) and optionally
``RS_AUDIENCE`` (default ``konfipay-api``), ``RS_PORT``.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from datetime import datetime, timezone

from flask import Flask, abort, g, jsonify, render_template_string, request

from scopes.catalog import AREAS, CATALOG
from scopes.guard import InsufficientScope, InvalidToken, TokenGuard

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


#: The application page after "Open": what the handed-over token may read, with the data.
#: (Flask autoescapes templates rendered from strings.)
OPEN_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>konfipay · tenant {{ tenant }}</title>
</head>
<body>
  <header><h1>konfipay · tenant {{ tenant }}</h1></header>
  <main>
  {% if error %}
    <p id="status" role="alert">The access token was rejected: {{ error }}</p>
  {% else %}
    {% if claims %}
    <p id="status">Signed in as advisor {{ claims.sub }} ({{ claims.membership }} access)
      until {{ expires }}.</p>
    <p>Scope: <code id="scope">{{ claims.scope }}</code></p>
    {% endif %}
    <nav aria-label="Areas"><ul id="areas">
      {% for area in readable %}<li><a href="#{{ area.key }}">{{ area.name_en }}</a>
        <span lang="de">({{ area.name_de }})</span></li>{% endfor %}
    </ul></nav>
    {% if not readable %}<p id="nothing">This token may read no area of the tenant.</p>{% endif %}
    {% for area in readable %}
    <section id="{{ area.key }}" data-area="{{ area.key }}">
      <h2>{{ area.name_en }}</h2>
      {% if area.read_excludes %}<p>Never shown: {{ area.read_excludes|join(", ") }}.</p>{% endif %}
      <table>
        <thead><tr><th>ID</th><th>Label</th><th>Amount (cents)</th></tr></thead>
        <tbody>
        {% for item in data[area.key] %}
          <tr><td>{{ item.id }}</td><td>{{ item.label }}</td><td>{{ item.amount_cents }}</td></tr>
        {% endfor %}
        </tbody>
      </table>
    </section>
    {% endfor %}
  {% endif %}
  </main>
</body>
</html>
"""


def open_page_response(guard: TokenGuard, tenant: str):
    """``POST /tenants/<tenant>/open``: validate the posted access token for this tenant and
    show the areas it may read (a tenant in the URL that the token is not for: 401)."""
    token = request.form.get("access_token", "")
    readable, data, claims, error = [], {}, {}, None
    for area in AREAS:
        try:
            claims = guard.validate(token, tenant=tenant, scope=f"{area.key}:read")
        except InsufficientScope:  # a valid token, just not for this area
            continue
        except InvalidToken as exc:  # forged, expired, revoked, or for another tenant
            readable, data, error = [], {}, exc.description
            break
        readable.append(area)
        data[area.key] = [public_view(area.key, r) for r in sample_records(tenant, area.key)]
    expires = ""
    if isinstance(claims.get("exp"), (int, float)):
        expires = datetime.fromtimestamp(claims["exp"], timezone.utc).strftime("%H:%M:%S UTC")
    body = render_template_string(OPEN_PAGE, tenant=tenant, claims=claims, readable=readable,
                                  data=data, error=error, expires=expires)
    return body, 401 if error else 200, {
        "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; "
                                   "base-uri 'none'; form-action 'none'"}


def create_app(guard: TokenGuard) -> Flask:
    app = Flask(__name__)
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
    @guard.require("evaluation:write")
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
        return open_page_response(guard, tenant)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", feed_healthy=guard.feed_healthy)

    return app


def main() -> None:
    guard = TokenGuard(os.environ["RS_ISSUER"], os.environ.get("RS_AUDIENCE", "konfipay-api"))
    guard.start_revocation_listener(os.environ["RS_CLIENT_ID"], os.environ["RS_CLIENT_SECRET"])
    port = int(os.environ.get("RS_PORT", "8002"))
    try:
        create_app(guard).run("127.0.0.1", port, threaded=True)
    finally:
        guard.stop_revocation_listener()


if __name__ == "__main__":
    main()
