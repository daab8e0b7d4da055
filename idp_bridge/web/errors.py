"""Error pages of the web pages, in the reader's language: the pages' one mapping of
refusals to answers.

A :class:`~idp_bridge.domain.errors.DomainError` is shown by its stable ``code`` (never by
its English description, which is the API's and the logs'): :data:`PAGE_MESSAGES` holds a
translated text per code, :data:`FIELD_MESSAGES` a more precise one where the free-text rule
names the field; a code without an entry gets the generic text of its HTTP status. The
status follows from the error's ``kind`` (:data:`idp_bridge.surfaces.STATUS`), as on the
API. Whether a request gets a page at all is the blueprint's declaration
(:mod:`idp_bridge.surfaces`).
"""

from __future__ import annotations

from flask import Blueprint, current_app, make_response, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import default_exceptions

from .. import surfaces
from ..domain.errors import DomainError
from ..domain.text import unsafe_characters
from ..notifications import MAX_RECIPIENTS
from .access_requests import hours_label


def deny(message: str, status: int = 403):
    """Stop the request with an error page showing ``message`` (already translated)."""
    exc = default_exceptions[status](description=message)
    exc.page_message = True
    raise exc


def _tenant_admins_only(_exc) -> str:
    # The tenant number comes from the address: named only when it looks like one (a link
    # with control or bidirectional characters must not put its text on our page).
    tenant_id = (request.view_args or {}).get("tenant_id")
    if isinstance(tenant_id, str) and 0 < len(tenant_id) <= 64 and tenant_id.isprintable() \
            and not unsafe_characters(tenant_id):
        return _("Only administrators of tenant %(tenant)s may open this page.", tenant=tenant_id)
    return str(STATUS_MESSAGES[403])


def _max_age_limit() -> int:
    return current_app.extensions["idp_bridge"].settings.temporary_max_age_days


#: What a page says for each code (a lazy text, or a function of the error for texts with
#: values). ``tests/test_error_codes.py`` fails for a code raised anywhere without an entry.
PAGE_MESSAGES = {
    # who may do what (idp_bridge/services/authorization.py)
    "not_tenant_admin": _tenant_admins_only,
    "not_advisor": _l("This page is for advisors. Your account has no advisor role."),
    "not_support_admin": _l("This page is for support administrators."),
    # joining with an access code, opening a tenant (domain/exchange.py, services/tokens.py)
    "mfa_required": _l("Please sign in again with a second factor (multi-factor "
                       "authentication)."),
    "account_inactive": _l("Your account at the identity provider is not active."),
    "upstream_session_ended": _l("Your sign-in at the identity provider has ended. Please sign "
                                 "in again."),
    "upstream_unavailable": _l("The identity provider cannot be reached. Please try again in "
                               "a moment."),
    "code_malformed": _l("An access code has 8 characters, like ABCD-EFGH. Please check your "
                         "entry."),
    "unknown_tenant": _l("There is no tenant with this number."),
    "already_member": _l("You already have access to this tenant."),
    "already_member_as_advisor": _l("You already have access to this tenant as an advisor. It "
                                    "must end before you can join as a guest user."),
    "not_member": _l("You have no access to this tenant (any more)."),
    "code_rejected": _l("The access code is wrong or no longer valid. Please ask the tenant for "
                        "the current code."),
    "code_rate_limited": _l("Too many wrong access codes. Please wait a few minutes and ask the "
                            "tenant for the current code."),
    "concurrent_change": _l("Another request changed this access at the same moment. Please "
                            "try again."),
    "no_permissions": _l("Your user group in this tenant has no permissions, so there is "
                         "nothing to open. Please ask the tenant's administrators."),
    "dpop_required": _l("This application only accepts tokens bound to its own key (DPoP), "
                        "which this page cannot hand over. Please open the tenant from the "
                        "application itself."),
    "scope_refused": _l("These rights are not available to you in this tenant."),
    "unknown_scope": _l("These permissions do not exist."),
    # refresh tokens and logout tokens (the token endpoint; a page never sends them)
    "refresh_invalid": _l("This sign-in to the application is not valid. Please open the "
                          "tenant again."),
    "refresh_wrong_client": _l("This sign-in to the application is not valid. Please open the "
                               "tenant again."),
    "refresh_reused": _l("This sign-in to the application was used twice and has been ended "
                         "for safety. Please open the tenant again."),
    "refresh_expired": _l("This sign-in to the application has expired. Please open the "
                          "tenant again."),
    "family_revoked": _l("This sign-in to the application has been ended. Please open the "
                         "tenant again."),
    "membership_expired": _l("Your temporary access has expired. You need a new access code "
                             "from the tenant."),
    "logout_token_replayed": _l("This sign-out message was already received."),
    # memberships (domain/memberships.py, services/)
    "no_membership": _l("You have no access to this tenant."),
    "unknown_membership": _l("This advisor has no access to this tenant."),
    "membership_ended": _l("This access has already ended."),
    "advisor_is_guest": _l("This advisor is a guest user of the tenant. Remove the guest "
                           "access first."),
    "not_permanent_advisor": _l("This advisor is not a permanent advisor of the tenant."),
    # evidence packs (services/evidence.py)
    "evidence_forbidden": _l("Only the tenant's administrators, support administrators and "
                             "the advisor of this access may open its evidence pack."),
    "membership_id_malformed": _l("The page address is not valid."),
    "advisor_subject_invalid": _l("Please choose the advisor from the matches of the search."),
    # the directory (services/directory.py)
    "person_unknown": _l("The directory knows no such person. Please search again and choose "
                         "from the matches."),
    "person_disabled": _l("This person's account is disabled at the identity provider."),
    "person_not_advisor": _l("This person does not hold the advisor role."),
    "directory_unavailable": _l("The directory cannot be reached right now. Please try again."),
    "search_text_invalid": _l("Type at least two characters of the name or e-mail address."),
    "name_from_directory": _l("The name is taken from the directory; it cannot be set here."),
    "max_age_out_of_range": lambda _exc: _(
        "Please enter a whole number of days from 1 to %(limit)s.", limit=_max_age_limit()),
    "notification_address_invalid": lambda exc: _(
        "This is not an e-mail address: %(address)s", address=getattr(exc, "address", "")),
    "too_many_recipients": lambda _exc: _("Please enter at most %(count)s addresses.",
                                          count=MAX_RECIPIENTS),
    "unknown_event": _l("Unknown event type."),
    # access requests and four eyes (domain/access_requests.py, domain/approvals.py,
    # domain/tenant_settings.py)
    "requests_not_allowed": _l("This tenant does not accept access requests. Please ask it "
                               "for its access code."),
    "codes_not_allowed": _l("This tenant does not accept access codes. Please ask for access "
                            "instead: its administrators approve or deny your request."),
    "duration_out_of_range": lambda exc: _(
        "Please choose a duration from 1 hour to %(limit)s.",
        limit=hours_label(getattr(exc, "limit_hours", None) or _max_age_limit() * 24)),
    "request_pending": _l("You already have a pending request for this tenant. Please wait "
                          "for the answer or withdraw it."),
    "too_many_requests": _l("You have too many pending access requests. Please wait for "
                            "their answers or withdraw one."),
    "own_request": _l("You cannot approve your own access request. Another administrator "
                      "of the tenant decides on it."),
    "request_already_approved": _l("This access request has already been approved."),
    "request_denied": _l("This access request has already been denied."),
    "request_withdrawn": _l("The advisor has withdrawn this access request."),
    "request_expired": _l("This access request has expired unanswered. The advisor may ask "
                          "again."),
    "unknown_access_request": _l("This access request does not exist."),
    "access_modes_invalid": _l("Please choose how advisors get access: access code, access "
                               "request or both."),
    "four_eyes_invalid": _l("The entry is not valid."),
    "same_approver": _l("Four eyes: you have already approved this. A second, different "
                        "administrator of the tenant must approve it."),
    "approval_terms_differ": _l("Another administrator has proposed a different value. "
                                "Approve that one or reject it first."),
    "unknown_approval": _l("This approval does not exist."),
    "approval_completed": _l("This has already been approved by two administrators."),
    "approval_rejected": _l("This approval was rejected."),
    "approval_closed": _l("This approval is no longer needed: its request was answered or "
                          "withdrawn."),
    "approval_expired": _l("This first approval has lapsed. Please approve again."),
    # permanent advisors with the tenant's consent (domain/permanent_consent.py)
    "tenant_consent_required": _l("This tenant accepts its permanent advisors itself. Please "
                                  "propose the advisor; an administrator of the tenant "
                                  "decides."),
    "permanent_mode_invalid": _l("Please choose how permanent advisors are added: assigned by "
                                 "support or accepted by the tenant."),
    "already_permanent": _l("This advisor is already a permanent advisor of the tenant."),
    "proposal_pending": _l("This advisor has already been proposed to the tenant. Please wait "
                           "for its answer or withdraw the proposal."),
    "unknown_proposal": _l("This proposal does not exist."),
    "proposal_closed": _l("This proposal has already been answered or withdrawn."),
    "proposal_expired": _l("This proposal expired unanswered. Support may propose the advisor "
                           "again."),
    "own_permanent_access": _l("You cannot accept or re-confirm your own permanent access. "
                               "Another administrator of the tenant must."),
    "not_permanent": _l("Only permanent advisors are re-confirmed."),
    # the management API's request parsing (idp_bridge/api/; a page never sends these)
    "body_not_object": _l("The request was not valid."),
    "unknown_fields": _l("The request was not valid."),
    "field_not_string": _l("The entry is not valid."),
    "profile_immutable": _l("The advisor rights are fixed and cannot be changed."),
    "limit_out_of_range": _l("The page address is not valid."),
    "before_out_of_range": _l("The page address is not valid."),
    "after_out_of_range": _l("The page address is not valid."),  # the audit chain's pages
    # the access log's API filters (api/tenant_admin.py)
    "unknown_area": _l("Unknown functional area."),
    "unknown_action": _l("The page address is not valid."),
    "unknown_membership_filter": _l("The page address is not valid."),
    "advisor_filter_invalid": _l("The entry is not valid."),
    "time_filter_invalid": _l("Please enter dates as YYYY-MM-DD."),
    # user groups and guest invitations (domain/guests.py)
    "group_name_invalid": _l("A user group needs a name of 1 to 100 characters."),
    "group_name_taken": _l("There already is a user group with this name."),
    "permissions_invalid": _l("These permissions do not exist."),
    "unknown_group": _l("This user group does not exist (any more)."),
    "group_in_use": _l("This user group cannot be deleted: guest users still have it, or open "
                       "invitations name it. Remove those guests or withdraw the invitations "
                       "first."),
    "invitee_ambiguous": _l("Please choose the advisor from the matches or enter an e-mail "
                            "address (one of them, not both)."),
    "invitee_subject_invalid": _l("Please choose the advisor from the matches of the search."),
    "invitee_email_invalid": _l("This is not an e-mail address."),
    "unknown_invitation": _l("This invitation does not exist."),
    "invitation_not_open": _l("This invitation is no longer open: it was accepted, withdrawn or "
                              "has expired."),
    "invitation_not_for_you": _l("This invitation does not exist or is not meant for you."),
    "invitation_withdrawn": _l("This invitation was withdrawn by the tenant."),
    "invitation_accepted": _l("You have already accepted this invitation."),
    "invitation_expired": _l("This invitation has expired. Please ask the tenant for a new one."),
    # free text (domain/text.py): see FIELD_MESSAGES for the reason
    "unsafe_text": _l("The entry contains characters that are not allowed (control characters "
                      "or characters that change the writing direction)."),
    "text_too_long": _l("The entry is too long."),
    "text_required": _l("Please fill in the required fields."),
    "text_not_string": _l("The entry is not valid."),
}
#: More precise texts for a code about one free-text field (the error's ``field``).
FIELD_MESSAGES = {
    ("unsafe_text", "reason"): _l("The reason contains characters that are not allowed."),
    ("text_too_long", "reason"): _l("The reason is too long."),
    ("text_required", "reason"): _l("Please give a reason or ticket: the administrators "
                                    "decide on it."),
    ("text_required", "note"): _l("Please write a note why: the advisor is told it."),
    ("unsafe_text", "note"): _l("The note contains characters that are not allowed."),
    ("text_too_long", "note"): _l("The note is too long."),
}

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


def explain(exc: DomainError) -> tuple[int, str]:
    """(status, translated message) of a refusal: the status from its kind, the text from
    its code (and field), else the generic text of the status."""
    status = surfaces.STATUS.get(exc.kind, 400)
    message = FIELD_MESSAGES.get((exc.code, getattr(exc, "field", None))) \
        or PAGE_MESSAGES.get(exc.code)
    if message is None:
        return status, str(STATUS_MESSAGES.get(status, STATUS_MESSAGES[400]))
    return status, message(exc) if callable(message) else str(message)


def wants_page() -> bool:
    """Whether an error of this request is shown as an HTML page (else JSON): the
    declaration of its blueprint; a request that matched no route gets a page when it lies
    outside the machine endpoints' paths and the client prefers HTML."""
    app = current_app._get_current_object()
    if surfaces.view_answers_json(app, request.endpoint):
        return False
    surface = surfaces.of_endpoint(app, request.endpoint)
    if surface is not None:
        return surface == surfaces.PAGE
    if surfaces.of_path(app, request.path) == surfaces.MACHINE:
        return False
    return request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]


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


def page_blueprint(name: str, import_name: str, **kwargs) -> Blueprint:
    """A blueprint of pages (``create_app`` registers it as ``surfaces.PAGE``)."""
    return Blueprint(name, import_name, **kwargs)
