"""The evidence pack of a membership as pages (issue 15 item 5; docs/evidence-pack.md): the
printable page (no script, print CSS) and the signed file, both from the membership's page
(routes of the ``tenant`` blueprint). Rights as in the API
(:class:`~idp_bridge.services.evidence.EvidencePacks`): the tenant's admins, support admins
and the advisor of the membership; each view and download is audited."""

from __future__ import annotations

from datetime import datetime

from flask import Response, g, render_template
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..services.evidence import MEDIA_TYPE
from .auth import login_required
from .i18n import when
from .pages import use_cases
from .receipts import REASON_LABELS, REVOCATION_LABELS, duration
from .tenant import bp

#: How access began (``began.way``).
WAY_LABELS = {
    "access_code": _l("The advisor redeemed the tenant's access code."),
    "access_request": _l("The advisor asked for access; the tenant's admins approved the "
                         "request."),
    "support_assignment": _l("Support assigned the advisor permanently."),
    "tenant_acceptance": _l("Support proposed the advisor as a permanent advisor; the tenant's "
                            "admins accepted."),
    "guest_invitation": _l("The advisor accepted the tenant's guest invitation."),
    "unknown": _l("How this access began was not recorded."),
}

#: The audit events a pack holds, in a sentence each.
EVENT_LABELS = {
    "membership.created": _l("Access created"),
    "membership.ended": _l("Access ended"),
    "token.issued": _l("Tokens issued"),
    "token.refreshed": _l("Tokens renewed"),
    "token.family_revoked": _l("Token family revoked"),
    "access_request.created": _l("Access requested"),
    "access_request.approved": _l("Access request approved"),
    "approval.requested": _l("First approval (four eyes)"),
    "approval.completed": _l("Second approval (four eyes)"),
    "approval.rejected": _l("Approval rejected"),
    "approval.expired": _l("Approval expired"),
    "approval.closed": _l("Approval closed"),
    "permanent_advisor.proposed": _l("Proposed by support"),
    "permanent_advisor.accepted": _l("Accepted by the tenant"),
    "permanent_advisor.reconfirmed": _l("Re-confirmed by the tenant"),
    "permanent_advisor.reconfirmation_due": _l("Re-confirmation requested"),
    "permanent_advisor.lapsed": _l("Not re-confirmed in time"),
    "evidence.downloaded": _l("Evidence pack downloaded"),
    "invitation.changed": _l("Invited as a guest user"),
}

ROLE_LABELS = {
    "tenant_admin": _l("tenant admin"),
    "support_admin": _l("support admin"),
    "advisor": _l("advisor"),
    "system": _l("the system"),
    "operator": _l("the operator"),
}


def _at(text: str | None, fmt: str = "medium") -> str:
    if not text:
        return "–"
    return when(datetime.fromisoformat(text.replace("Z", "+00:00")), fmt)


def _who(person) -> str:
    if not person:
        return "–"
    if person.get("subject") in ("system", "operator"):
        return str(ROLE_LABELS[person["subject"]])
    return person.get("name") or person.get("subject") or "–"


def _event(name: str) -> str:
    return str(EVENT_LABELS.get(name, name))


def _role(name: str | None) -> str:
    return str(ROLE_LABELS.get(name, name or "–"))


def _revocation(reason: str) -> str:
    return str(REVOCATION_LABELS.get(reason, _("Tokens revoked.")))


def _receipt(receipt: dict) -> str:
    if receipt.get("confirmed"):
        return _("Confirmed %(when)s, after %(after)s", when=_at(receipt["acknowledged_at"]),
                 after=duration(receipt["latency_ms"] or 0))
    label = REASON_LABELS.get(receipt.get("reason"))
    if receipt.get("reason") == "offline" or label is None:
        return _("Not yet confirmed.")
    return _("Not yet: %(why)s", why=str(label))


@bp.get("/memberships/<membership_id>/evidence", endpoint="evidence")
@login_required
def evidence_page(tenant_id, membership_id):
    packs = use_cases().evidence
    pack = packs.download(g.identity, tenant_id, membership_id, form="html")
    report = packs.check(pack)
    return render_template("web/evidence.html", pack=pack.claims, kid=pack.kid, report=report,
                           way=str(WAY_LABELS.get(pack.claims["began"]["way"], "")),
                           at=_at, who=_who, event_label=_event, role_label=_role,
                           revocation_label=_revocation, receipt_text=_receipt,
                           tenant_id=tenant_id, membership_id=membership_id)


@bp.get("/memberships/<membership_id>/evidence.jwt", endpoint="evidence_file")
@login_required
def evidence_file(tenant_id, membership_id):
    pack = use_cases().evidence.download(g.identity, tenant_id, membership_id, form="jws")
    return Response(pack.jws + "\n", mimetype=MEDIA_TYPE, headers={
        "Content-Disposition": f'attachment; filename="evidence-{pack.membership_id}.jwt"',
        "Cache-Control": "no-store"})
