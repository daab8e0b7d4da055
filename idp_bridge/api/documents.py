"""Documents of the API, public: its OpenAPI description and the fixed advisor profile."""

from __future__ import annotations

from flask import jsonify

from scopes.catalog import AREAS, ProfileChangeRefused, advisor_scopes

from .common import bp, error, settings
from .openapi import openapi_document


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(settings().issuer))


@bp.get("/advisor-profile")
def advisor_profile():
    return jsonify(
        scopes=list(advisor_scopes()),
        areas=[{"area": a.key, "name_de": a.name_de, "name_en": a.name_en, "group": a.group,
                "scopes": [s for s in a.scopes if s in advisor_scopes()],
                "read_excludes": list(a.read_excludes)} for a in AREAS],
        mutable=False,
    )


@bp.route("/advisor-profile", methods=["PUT", "PATCH", "POST", "DELETE"])
def advisor_profile_change():
    return error(403, "profile_immutable", ProfileChangeRefused.message, code="profile_immutable")
