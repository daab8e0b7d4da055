"""What the pages say about access requests and four eyes: durations, the choices of the
request and approval forms, a request's state and what a pending approval would do, in the
reader's language. The routes are the role blueprints' (``web/advisor.py`` asks and
withdraws, ``web/tenant.py`` approves, denies and completes approvals)."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from ..services.access_requests import APPROVE

#: Durations the forms offer (hours); each form shows those up to its maximum.
DURATIONS = (1, 2, 4, 8, 24, 48, 72, 120, 168, 336, 720)
#: The request form's preselected duration.
DEFAULT_DURATION = 8

STATUS_LABELS = {
    "pending": _l("waiting for an answer"), "approved": _l("approved"),
    "denied": _l("denied"), "expired": _l("expired unanswered"),
    "withdrawn": _l("withdrawn"),
}
MODE_LABELS = {
    "both": _l("Access code and access request"),
    "code": _l("Access code only"),
    "request": _l("Access request only"),
}
PERMANENT_MODE_LABELS = {
    "direct": _l("Support assigns them (after agreeing it with you)"),
    "accept": _l("Support proposes them, an administrator of the tenant accepts"),
}


def hours_label(hours: int | None) -> str:
    """"8 hours", "3 days" (whole days in days), in the reader's language."""
    if hours is None:
        return "–"
    if hours >= 24 and hours % 24 == 0:
        return ngettext("%(num)s day", "%(num)s days", hours // 24)
    return ngettext("%(num)s hour", "%(num)s hours", hours)


def duration_choices(limit: int, *, keep: int | None = None) -> list[tuple[int, str]]:
    """(hours, label) of :data:`DURATIONS` up to ``limit`` hours, with ``limit`` itself and
    ``keep`` (the hours asked for) where they are not among them, ascending."""
    hours = {h for h in DURATIONS if h <= limit} | {limit}
    if keep is not None and keep <= limit:
        hours.add(keep)
    return [(h, hours_label(h)) for h in sorted(hours)]


def status_label(status: str) -> str:
    return str(STATUS_LABELS.get(status, status))


def approval_text(approval) -> str:
    """What a pending approval would do once a second admin approves it."""
    terms = approval.terms or {}
    if approval.action == APPROVE:
        return _("Approve the access request (%(duration)s)",
                 duration=hours_label(terms.get("duration_hours")))
    if approval.action == "tenant.max_age":
        return _("Lengthen the maximum duration of temporary access to %(days)s days",
                 days=terms.get("days", "?"))
    if approval.action == "tenant.four_eyes_off":
        return _("Turn four eyes off")
    if approval.action == "permanent_advisor.accept":
        return _("Accept a proposed permanent advisor")
    if approval.action == "tenant.permanent_direct":
        return _("Let support assign permanent advisors directly again")
    return approval.action


def template_helpers() -> dict:
    return {"hours_label": hours_label, "request_status": status_label,
            "approval_text": approval_text, "mode_labels": MODE_LABELS,
            "permanent_mode_labels": PERMANENT_MODE_LABELS}
