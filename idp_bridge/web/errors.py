"""Error pages of the web pages, in the reader's language, and what a page says for each
domain error (the domain speaks English for the API and logs)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, make_response, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import default_exceptions

from ..domain.errors import AccessCodeRejected, Conflict, DomainError, Forbidden, InvalidInput, NotFound
from ..domain.text import UnsafeText

#: Blueprints whose errors are shown as HTML pages.
PAGE_BLUEPRINTS = frozenset({"pages", "auth", "tenant", "groups", "advisor", "support"})
#: Page endpoints that answer JSON (polled by the pages' script).
JSON_ENDPOINTS = frozenset({"tenant.status"})


def deny(message: str, status: int = 403):
    """Stop the request with an error page showing ``message`` (already translated)."""
    exc = default_exceptions[status](description=message)
    exc.page_message = True
    raise exc


#: Domain messages (English, for the API) and what a page says instead.
_DOMAIN_MESSAGES = (
    ("the subject is not an advisor", _l("Only advisors can join a tenant.")),
    ("multi-factor authentication is required",
     _l("Please sign in again with a second factor (multi-factor authentication).")),
    ("reason is longer than", _l("The reason is too long.")),
    ("reason contains characters that are not allowed",
     _l("The reason contains characters that are not allowed.")),
    ("the advisor's account is", _l("Your account at the identity provider is not active.")),
    ("access_code is malformed",
     _l("An access code has 8 characters, like ABCD-EFGH. Please check your entry.")),
    ("unknown tenant", _l("There is no tenant with this number.")),
    ("you already have access to this tenant as",
     _l("You already have access to this tenant as an advisor. It must end before you can join "
        "as a guest user.")),
    ("you already have access to this tenant", _l("You already have access to this tenant.")),
    ("access_code is required", _l("You have no access to this tenant (any more).")),
    ("too many wrong access codes",
     _l("Too many wrong access codes. Please wait a few minutes and ask the tenant for the "
        "current code.")),
    ("access_code is wrong or has expired",
     _l("The access code is wrong or no longer valid. Please ask the tenant for the current "
        "code.")),
    ("you are not a member of this tenant", _l("You have no access to this tenant.")),
    ("no such membership in this tenant", _l("This advisor has no access to this tenant.")),
    ("this membership has already ended", _l("This access has already ended.")),
    ("this advisor is a guest of the tenant",
     _l("This advisor is a guest user of the tenant. Remove the guest access first.")),
    # user groups and guest invitations (idp_bridge/domain/guests.py)
    ("a group name has", _l("A user group needs a name of 1 to 100 characters.")),
    ("a user group of this name exists", _l("There already is a user group with this name.")),
    ("unknown scope", _l("These permissions do not exist.")),
    ("permissions must be", _l("These permissions do not exist.")),
    ("no such user group in this tenant", _l("This user group does not exist (any more).")),
    ("guests still use this user group",
     _l("This user group cannot be deleted: guest users still have it, or open invitations "
        "name it. Remove those guests or withdraw the invitations first.")),
    ("invite by exactly one of subject or email",
     _l("Please enter the advisor's user ID or the e-mail address (one of them, not both).")),
    ("subject must be the advisor's subject",
     _l("The user ID has 1 to 255 printable characters.")),
    ("email is not an e-mail address", _l("This is not an e-mail address.")),
    ("no such invitation in this tenant", _l("This invitation does not exist.")),
    ("this invitation is no longer open",
     _l("This invitation is no longer open: it was accepted, withdrawn or has expired.")),
    ("no such invitation for you", _l("This invitation does not exist or is not meant for you.")),
    ("this invitation was withdrawn", _l("This invitation was withdrawn by the tenant.")),
    ("this invitation was already accepted", _l("You have already accepted this invitation.")),
    ("this invitation has expired",
     _l("This invitation has expired. Please ask the tenant for a new one.")),
)
#: Any free-text field refused by :func:`idp_bridge.domain.text.check_text`.
UNSAFE_TEXT = _l("The entry contains characters that are not allowed (control characters or "
                  "characters that change the writing direction).")
_DOMAIN_STATUS = {InvalidInput: 400, AccessCodeRejected: 400, Forbidden: 403, NotFound: 404,
                  Conflict: 409}


def explain(exc: DomainError) -> tuple[int, str]:
    """(status, translated message) for a domain error."""
    if isinstance(exc, UnsafeText) and exc.field != "reason":
        return 400, str(UNSAFE_TEXT)
    for prefix, message in _DOMAIN_MESSAGES:
        if exc.description.startswith(prefix):
            return _DOMAIN_STATUS.get(type(exc), 400), str(message)
    return _DOMAIN_STATUS.get(type(exc), 400), _("The request could not be carried out.")


def wants_page() -> bool:
    """Whether an error of this request is shown as an HTML page (else JSON)."""
    if request.endpoint in JSON_ENDPOINTS:
        return False
    if request.blueprint in PAGE_BLUEPRINTS:
        return True
    if request.blueprint is None:  # no route matched: a browser gets a page, unless the
        # path lies under an API or protocol endpoint's first segment (/api/…, /token, …)
        segment = request.path.lstrip("/").split("/", 1)[0]
        if segment in _json_segments():
            return False
        return request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]
    return False


def _json_segments() -> frozenset:
    extensions = current_app.extensions
    if "idp_bridge.json_segments" not in extensions:
        extensions["idp_bridge.json_segments"] = frozenset(
            rule.rule.lstrip("/").split("/", 1)[0] for rule in current_app.url_map.iter_rules()
            if rule.endpoint.partition(".")[0] not in PAGE_BLUEPRINTS | {"static"})
    return extensions["idp_bridge.json_segments"]


STATUS_MESSAGES = {
    400: _l("The request was not valid."),
    403: _l("You are not allowed to do this."),
    404: _l("This page does not exist."),
    405: _l("This address cannot be used like this."),
    409: _l("This cannot be done in the current state."),
    413: _l("The request is too large."),
    429: _l("Too many requests. Please wait a moment and try again."),
    500: _l("Something went wrong on our side. Please try again later."),
    503: _l("The service is temporarily unavailable. Please try again in a moment."),
}


def problem_page(status: int, exc: Exception | None = None, *, message: str | None = None):
    from flask_wtf.csrf import CSRFError

    if message is None:
        if getattr(exc, "page_message", False):
            message = exc.description
        elif isinstance(exc, CSRFError):
            message = _("The form has expired or did not come from this site. Please go back, "
                        "reload the page and try again.")
        elif isinstance(exc, DomainError):
            status, message = explain(exc)
        else:
            message = str(STATUS_MESSAGES.get(status, STATUS_MESSAGES[400] if status < 500
                                               else STATUS_MESSAGES[500]))
    response = make_response(render_template("web/problem.html", status=status,
                                              message=message), status)
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response


def _domain_error(exc: DomainError):
    if wants_page():
        return problem_page(0, exc)
    status, _message = explain(exc)
    error = {403: "forbidden", 404: "not_found", 409: "conflict"}.get(status, "invalid_request")
    return jsonify(error=error, error_description=exc.description), status


def page_blueprint(name: str, import_name: str, **kwargs) -> Blueprint:
    """A blueprint of pages: domain errors become error pages in the reader's language."""
    blueprint = Blueprint(name, import_name, **kwargs)
    blueprint.register_error_handler(DomainError, _domain_error)
    return blueprint

