"""The support page: assign a permanent advisor to a tenant (after agreeing it with the
tenant), list the assignments, remove one. Support admins only, as in the API."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import func, select

from ..domain.errors import DomainError, NotFound
from ..domain.text import check_text
from ..storage.db import utcnow
from ..storage.models import Membership, Tenant
from .errors import explain, page_blueprint
from .pages import services, support_admin_required

bp = page_blueprint("support", __name__, url_prefix="/support")
KNOWN_ADVISORS_SHOWN = 200


def _assignments(session, tenant_filter: str | None):
    statement = (select(Membership, Tenant.name).join(Tenant, Tenant.id == Membership.tenant_id)
                 .where(Membership.kind == "permanent", Membership.ended_at.is_(None))
                 .order_by(Membership.tenant_id, Membership.created_at))
    if tenant_filter:
        statement = statement.where(Membership.tenant_id == tenant_filter)
    return session.execute(statement).all()


def _known_advisors(session):
    """Advisors the bridge has seen (subject and latest name), for the form's suggestions."""
    rows = session.execute(
        select(Membership.advisor_subject, func.max(Membership.advisor_name))
        .where(Membership.kind.in_(("temporary", "permanent")))
        .group_by(Membership.advisor_subject).limit(KNOWN_ADVISORS_SHOWN)).all()
    return sorted(rows, key=lambda row: (row[1] or row[0]).lower())


def _render(status: int = 200, *, error: str | None = None, values: dict | None = None):
    tenant_filter = (request.args.get("tenant") or "").strip()[:64] or None
    with services().db.read() as session:
        assignments = _assignments(session, tenant_filter)
        known = _known_advisors(session)
    return render_template("web/support.html", assignments=assignments, known=known,
                           tenant_filter=tenant_filter, error=error,
                           values=values or {}), status


@bp.get("")
@support_admin_required
def home():
    return _render()


@bp.post("/assign")
@support_admin_required
def assign():
    s = services()
    tenant_id = request.form.get("tenant", "").strip()
    subject = request.form.get("advisor", "").strip()
    name = request.form.get("name", "").strip() or None
    values = {"tenant": tenant_id[:64], "advisor": subject[:255], "name": (name or "")[:255]}
    # The API's rules (PUT /api/tenants/<t>/permanent-advisors/<subject>).
    if not tenant_id or not 0 < len(subject) <= 255 or not subject.isprintable():
        return _render(400, values=values, error=_(
            "Please enter the tenant number and the advisor's user ID (1 to 255 characters)."))
    if name is not None and len(name) > 255:
        return _render(400, values=values, error=_("The name may have at most 255 characters."))
    try:
        name = check_text(name, field="name", max_length=255)  # shown to the tenant
        with s.db.transaction() as session:
            tenant = s.memberships.tenant(session, tenant_id)
            membership, created = s.memberships.assign_permanent(
                session, tenant, subject=subject, name=name, by=g.identity.subject, now=utcnow())
            shown = membership.advisor_name or membership.advisor_subject
    except DomainError as exc:
        status, message = explain(exc)
        return _render(status, values=values, error=message)
    flash(_("%(name)s is now a permanent advisor of tenant %(tenant)s.", name=shown,
            tenant=tenant_id) if created else
          _("%(name)s already is a permanent advisor of tenant %(tenant)s.", name=shown,
            tenant=tenant_id), "success")
    return redirect(url_for("support.home"), 303)


def _permanent(session, membership_id: str) -> Membership:
    membership = session.get(Membership, membership_id) if len(membership_id) <= 64 else None
    if membership is None or membership.kind != "permanent" or membership.ended_at is not None:
        raise NotFound("this advisor is not a permanent advisor of the tenant")
    return membership


@bp.get("/assignments/<membership_id>/remove")
@support_admin_required
def remove_confirm(membership_id):
    s = services()
    with s.db.read() as session:
        membership = _permanent(session, membership_id)
        tenant = s.memberships.tenant(session, membership.tenant_id)
    return render_template(
        "web/confirm.html", tenant=tenant, membership=membership,
        title=_("Remove %(name)s from tenant %(tenant)s?",
                name=membership.advisor_name or membership.advisor_subject, tenant=tenant.id),
        explanation=_("The permanent assignment ends at once and every token issued under it "
                      "stops working. The tenant is told."),
        action=url_for("support.remove", membership_id=membership_id),
        confirm_label=_("Remove from tenant"), back=url_for("support.home"), hidden={})


@bp.post("/assignments/<membership_id>/remove")
@support_admin_required
def remove(membership_id):
    s = services()
    with s.db.transaction() as session:
        membership = _permanent(session, membership_id)
        name, tenant_id = membership.advisor_name or membership.advisor_subject, membership.tenant_id
        s.memberships.end(session, membership, by=g.identity.subject, actor_role="support_admin",
                          reason="removed_by_support", now=utcnow())
    flash(_("%(name)s is no longer a permanent advisor of tenant %(tenant)s.", name=name,
            tenant=tenant_id), "success")
    return redirect(url_for("support.home"), 303)
