"""Machine endpoints and pages, declared once per blueprint (``create_app`` registers every
blueprint through :func:`register`, naming its surface). What follows from the declaration:

================  ==================================  ======================================
                  ``MACHINE`` (token, introspection,   ``PAGE`` (the web pages, sign-in)
                  revocation, feed, API, health)
================  ==================================  ======================================
authentication    per request (client credentials,     the session cookie (a server-side
                  bearer tokens)                       web session)
session cookie    never read nor set                   read and set
CSRF tokens       exempt: nothing rides on ambient     every state-changing form
                  credentials
errors            JSON (``error``, ``error_code``)    an HTML page in the reader's language
================  ==================================  ======================================

A page route that answers JSON to the pages' own script (the help page's polling) keeps the
session and says so with :func:`answers_json`. A request that matches no route is judged by
its first path segment: under a machine blueprint's segment (``/api/…``, ``/token…``) it is
a machine request, anywhere else a page request (a browser gets an error page).
"""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

MACHINE, PAGE = "machine", "page"
#: The HTTP status of each kind of refusal (:mod:`idp_bridge.domain.errors`), the same on the
#: API and the pages (the token endpoint answers per RFC 6749 instead: ``oauth/server.py``).
STATUS = {"invalid": 400, "not_found": 404, "forbidden": 403, "conflict": 409, "refused": 400,
          "scope": 403, "target": 400, "unavailable": 503}
_KEY = "idp_bridge.surfaces"


def register(app, blueprint, surface: str, **options) -> None:
    """Register ``blueprint`` on ``app`` as a ``MACHINE`` or ``PAGE`` blueprint."""
    assert surface in (MACHINE, PAGE), surface
    app.register_blueprint(blueprint, **options)
    app.extensions.setdefault(_KEY, {})[blueprint.name] = surface
    app.extensions.pop(_KEY + ".segments", None)


def blueprints(app, surface: str) -> frozenset[str]:
    return frozenset(name for name, kind in app.extensions.get(_KEY, {}).items()
                     if kind == surface)


def of_endpoint(app, endpoint: str | None) -> str | None:
    """The surface of the blueprint of ``endpoint`` (None: no registered blueprint)."""
    if not endpoint or "." not in endpoint:
        return None
    return app.extensions.get(_KEY, {}).get(endpoint.rpartition(".")[0])


def machine_segments(app) -> frozenset[str]:
    """First path segments of the machine blueprints' routes (``api``, ``token``, …)."""
    key = _KEY + ".segments"
    if key not in app.extensions:
        app.extensions[key] = frozenset(
            rule.rule.lstrip("/").split("/", 1)[0] for rule in app.url_map.iter_rules()
            if of_endpoint(app, rule.endpoint) == MACHINE)
    return app.extensions[key]


def of_path(app, path: str) -> str:
    """The surface of a path that matched no route, by its first segment."""
    segment = path.lstrip("/").split("/", 1)[0]
    return MACHINE if segment in machine_segments(app) else PAGE


def of_request(app, request) -> str:
    """The surface of ``request``, also before routing (sessions are opened before the URL
    is matched): the matched endpoint's blueprint, else the path's first segment."""
    endpoint = request.url_rule.endpoint if request.url_rule is not None else None
    if endpoint is None:
        try:
            endpoint, _args = app.create_url_adapter(request).match()
        except HTTPException:
            endpoint = None
    return of_endpoint(app, endpoint) or of_path(app, request.path)


def answers_json(view):
    """Mark a page view that answers JSON (its errors too), e.g. polled by a page's script."""
    view.answers_json = True
    return view


def view_answers_json(app, endpoint: str | None) -> bool:
    view = app.view_functions.get(endpoint) if endpoint else None
    return bool(getattr(view, "answers_json", False))
