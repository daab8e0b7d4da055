"""The support page: assign a permanent advisor to a tenant (after agreeing it with the
tenant), list the assignments, remove one. Support admins only, as in the API: the same
:class:`~idp_bridge.services.support.Support` use cases.

The advisor is found in the directory by name or e-mail (``?q=``, and as you type through
``directory.json``) and chosen from the matches; the form sends the chosen subject, which the
service resolves again — nobody types or reads a subject id."""

from __future__ import annotations

from flask import flash, g, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _

from .. import surfaces
from ..domain.errors import DomainError, Forbidden
from .errors import explain, page_blueprint
from .pages import support_admin_required, use_cases
from .people import people_json, search_people

bp = page_blueprint("support", __name__, url_prefix="/support")


def _support():
    return use_cases().support


def _render(status: int = 200, *, error: str | None = None, values: dict | None = None):
    tenant_filter = (request.args.get("tenant") or "").strip()[:64] or None
    values = dict(values or {})
    query = values.get("q") if "q" in values else (request.args.get("q") or "").strip()[:100]
    values["q"] = query
    found, search_error = search_people(
        lambda text: use_cases().directory.advisors_for_support(g.identity, text), query)
    return render_template("web/support.html",
                           assignments=_support().assignments(g.identity, tenant_filter),
                           proposals=use_cases().permanent.pending_everywhere(g.identity,
                                                                              tenant_filter),
                           found=found, search_error=search_error,
                           source=use_cases().directory.source,
                           tenant_filter=tenant_filter, error=error,
                           values=values), status


@bp.get("/directory.json")
@surfaces.answers_json
def directory():
    return people_json(lambda text: use_cases().directory.advisors_for_support(g.identity, text))


@bp.get("")
@support_admin_required
def home():
    return _render()


@bp.post("/assign")
@support_admin_required
def assign():
    tenant_id = request.form.get("tenant", "").strip()
    subject = request.form.get("advisor", "")
    values = {"tenant": tenant_id[:64], "advisor": subject[:255],
              "reason": request.form.get("reason", "")[:200],
              "q": request.form.get("q", "").strip()[:100]}
    if not tenant_id or not subject:
        return _render(400, values=values, error=_(
            "Please enter the tenant number and choose the advisor from the matches."))
    if request.form.get("action") == "propose":
        return _propose(tenant_id, subject, values)
    try:
        membership, created = _support().assign(g.identity, tenant_id, subject)
    except Forbidden:
        raise
    except DomainError as exc:
        status, message = explain(exc)
        return _render(status, values=values, error=message)
    flash(_("%(name)s is now a permanent advisor of tenant %(tenant)s.",
            name=membership.shown_name, tenant=tenant_id) if created else
          _("%(name)s already is a permanent advisor of tenant %(tenant)s.",
            name=membership.shown_name, tenant=tenant_id), "success")
    return redirect(url_for("support.home"), 303)


def _propose(tenant_id: str, subject: str, values: dict):
    """Propose the advisor to a tenant that accepts its permanent advisors itself."""
    try:
        proposal = use_cases().permanent.propose(g.identity, tenant_id, subject,
                                                 reason=request.form.get("reason") or None)
    except Forbidden:
        raise
    except DomainError as exc:
        status, message = explain(exc)
        return _render(status, values=values, error=message)
    flash(_("%(name)s is proposed to tenant %(tenant)s; an administrator of the tenant decides.",
            name=proposal.advisor_name or proposal.advisor_subject, tenant=tenant_id), "success")
    return redirect(url_for("support.home"), 303)


@bp.post("/proposals/<tenant_id>/<proposal_id>/withdraw")
@support_admin_required
def withdraw(tenant_id, proposal_id):
    try:
        withdrawn = use_cases().permanent.withdraw(g.identity, tenant_id, proposal_id)
    except Forbidden:
        raise
    except DomainError as exc:
        status, message = explain(exc)
        return _render(status, error=message)
    flash(_("The proposal of %(name)s is withdrawn.",
            name=withdrawn.advisor_name or withdrawn.advisor_subject), "success")
    return redirect(url_for("support.home"), 303)


@bp.get("/assignments/<membership_id>/remove")
@support_admin_required
def remove_confirm(membership_id):
    membership, tenant = _support().assignment(g.identity, membership_id)
    return render_template(
        "web/confirm.html", tenant=tenant, membership=membership,
        title=_("Remove %(name)s from tenant %(tenant)s?", name=membership.shown_name,
                tenant=tenant.id),
        explanation=_("The permanent assignment ends at once and every token issued under it "
                      "stops working. The tenant is told."),
        action=url_for("support.remove", membership_id=membership_id),
        confirm_label=_("Remove from tenant"), back=url_for("support.home"), hidden={})


@bp.post("/assignments/<membership_id>/remove")
@support_admin_required
def remove(membership_id):
    removed = _support().remove_assignment(g.identity, membership_id)
    flash(_("%(name)s is no longer a permanent advisor of tenant %(tenant)s.",
            name=removed.shown_name, tenant=removed.tenant_id), "success")
    return redirect(url_for("support.home"), 303)
