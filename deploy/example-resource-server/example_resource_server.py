"""Example resource server: the konfipay APIs per functional area, guarded by ``scopes.guard``.

Every functional area of the catalog has a read endpoint returning generated sample data
for the tenant in the URL. Fields that ``read`` excludes (secrets: EBICS keys, API client
secrets, PayPal credentials, ...) exist in the data but are never returned. ``evaluation``
(the advisor's full-access area) also has a write endpoint.

It installs only the resource-server part (``pip install '.[guard]'``) plus Flask, and
imports nothing from the bridge. Run: ``python example_resource_server.py`` with
``RS_ISSUER`` (the bridge), ``RS_CLIENT_ID`` / ``RS_CLIENT_SECRET`` (a receiver client of the
revocation feed) and optionally ``RS_AUDIENCE`` (default ``konfipay-api``), ``RS_PORT``.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading

from flask import Flask, abort, g, jsonify, request

from scopes.catalog import AREAS, CATALOG
from scopes.guard import TokenGuard

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
