"""Choosing a person of the directory on a page (the support page's assignment, the
invitation form): the matches of a typed search, and the type-ahead's JSON. The services
decide who may search and what is found (:class:`~idp_bridge.services.directory.
PeopleDirectory`); pages show names and send the chosen subject back."""

from __future__ import annotations

from flask import g, jsonify, request
from flask_babel import gettext as _

from ..domain.errors import DomainError, Forbidden
from ..domain.people import check_search
from .auth import current_identity
from .errors import explain


def search_people(search, query: str):
    """(people found, error text) of a search typed on a page: nothing for an empty
    search, a hint for one the directory cannot take, the reason when it cannot answer."""
    if not query:
        return None, None
    if check_search(query) is None:
        return None, _("Type at least two characters of the name or e-mail address.")
    try:
        return list(search(query).people), None
    except Forbidden:
        raise
    except DomainError as exc:
        return None, explain(exc)[1]


def people_json(search):
    """The type-ahead's answer (JSON; errors as JSON too): the matches for ``q``."""
    g.identity = current_identity()
    if g.identity is None:
        return jsonify(error="login_required"), 401
    query = (request.args.get("q") or "").strip()
    if check_search(query) is None:
        return jsonify(people=[])
    try:
        found = search(query)
    except Forbidden:
        return jsonify(error="forbidden"), 403
    except DomainError as exc:
        status, message = explain(exc)
        return jsonify(error=exc.code or "invalid_request", error_description=message), status
    return jsonify(source=found.source, people=[
        {"subject": p.subject, "name": p.display,
         "detail": p.email or (p.username if p.username != p.display else None)}
        for p in found.people])
