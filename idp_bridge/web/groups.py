"""User groups (Benutzergruppen) and guest invitations, for a tenant's admins (DESIGN.md
sections 1 and 4; issue 7): create, rename and delete groups and set their permissions per
functional area; invite an advisor as a guest user with a group, list the open invitations,
withdraw one; see the guests with their group.

The rules are the API's (``/api/tenants/<t>/groups`` and ``/invitations``): admins of this
tenant only, and the same use cases (:class:`~idp_bridge.services.groups.Groups`), whose
domain validates names, permissions and invitees. The permission table sends ``area:read`` / ``area:write``;
``write`` includes ``read`` (as the resource servers' guard reads it), so a checked ``write``
is stored with its ``read``: the stored permissions then say what the tokens may do.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from scopes.catalog import AREAS

from .. import surfaces
from ..domain.errors import DomainError, Forbidden
from ..domain.guests import INVITATION_DAYS
from .errors import explain, page_blueprint
from .i18n import current_language, when
from .pages import tenant_admin_required, use_cases
from .rights import GROUP_NAMES
from .people import people_json, search_people

bp = page_blueprint("groups", __name__, url_prefix="/tenants/<tenant_id>")
FIELD_MAX = 320


@dataclass(frozen=True)
class PermissionRow:
    key: str
    name: str
    read: str
    write: str


def permission_table() -> list[tuple[str, list[PermissionRow]]]:
    """[(catalog group name, rows)]: one row per functional area, in catalog order and the
    reader's language."""
    german = current_language() == "de"
    groups: dict[str, list[PermissionRow]] = {}
    for area in AREAS:
        read, write = area.scopes
        groups.setdefault(area.group, []).append(PermissionRow(
            key=area.key, name=area.name_de if german else area.name_en, read=read, write=write))
    return [(str(GROUP_NAMES.get(group, group)), rows) for group, rows in groups.items()]


def permissions_from_form(form) -> list[str]:
    """The checked scopes, ``read`` added to every ``write``. Values that are not scopes are
    passed on: the domain refuses them, as the API does."""
    chosen: dict[str, None] = {}
    for value in form.getlist("permissions"):
        area, _sep, action = value.partition(":")
        if action == "write":
            chosen.setdefault(f"{area}:read", None)
        chosen.setdefault(value, None)
    return list(chosen)


_READ, _CHANGE = _l("read"), _l("read and change")


def describe_permissions(permissions) -> list[str]:
    """"Bank accounts: read", "Evaluation: read and change" … in catalog order."""
    granted = set(permissions)
    german = current_language() == "de"
    lines = []
    for area in AREAS:
        read, write = area.scopes
        if write in granted or read in granted:
            lines.append(_("%(area)s: %(access)s", area=area.name_de if german else area.name_en,
                           access=_CHANGE if write in granted else _READ))
    return lines


def _checked(permissions) -> set[str]:
    granted = set(permissions)
    return granted | {f"{s.partition(':')[0]}:read" for s in granted if s.endswith(":write")}


def _groups():
    return use_cases().groups


# --- the overview: groups, guests, invitations ---
def _overview(tenant_id: str) -> dict:
    overview = _groups().overview(g.identity, tenant_id)
    return {"tenant": overview.tenant, "groups": overview.groups, "guests": overview.guests,
            "invitations": overview.invitations,
            "group_names": {group.id: group.name for group in overview.groups},
            "used": {group.id: (group.guests, group.pending_invitations)
                     for group in overview.groups},
            "describe": describe_permissions, "invitation_days": INVITATION_DAYS}


def _render_overview(tenant_id: str, status: int = 200, *, invite_error: str | None = None,
                     group_error: str | None = None, values: dict | None = None):
    values = dict(values or {})
    query = values.get("q") if "q" in values else (request.args.get("q") or "").strip()[:100]
    values["q"] = query
    found, search_error = search_people(lambda text: use_cases().directory.advisors_for_tenant(
        g.identity, tenant_id, text), query)
    return render_template("web/tenant_groups.html", **_overview(tenant_id),
                           invite_error=invite_error, group_error=group_error,
                           found=found, search_error=search_error,
                           source=use_cases().directory.source, values=values), status


@bp.get("/groups/directory.json")
@surfaces.answers_json
def directory(tenant_id):
    """The invitation form's type-ahead: advisors matching ``q``."""
    return people_json(lambda text: use_cases().directory.advisors_for_tenant(
        g.identity, tenant_id, text))


@bp.get("/groups", endpoint="home")
@tenant_admin_required
def home(tenant_id):
    return _render_overview(tenant_id)


# --- create, edit ---
def _render_form(tenant_id: str, *, group=None, status: int = 200, error: str | None = None,
                 name: str | None = None, permissions=None):
    tenant = use_cases().tenant_admin.tenant(g.identity, tenant_id)
    if group is not None:
        name = group.name if name is None else name
        permissions = group.permissions if permissions is None else permissions
    return render_template("web/tenant_group_form.html", tenant=tenant, group=group,
                           error=error, name=name or "", checked=_checked(permissions or ()),
                           table=permission_table()), status


@bp.get("/groups/new")
@tenant_admin_required
def new(tenant_id):
    return _render_form(tenant_id)


@bp.post("/groups")
@tenant_admin_required
def create(tenant_id):
    name = request.form.get("name", "")
    permissions = permissions_from_form(request.form)
    try:
        group = _groups().create(g.identity, tenant_id, name, permissions)
    except Forbidden:
        raise
    except DomainError as exc:
        status, message = explain(exc)
        return _render_form(tenant_id, status=status, error=message, name=name[:FIELD_MAX],
                            permissions=permissions)
    flash(_("User group %(name)s was created.", name=group.name), "success")
    return redirect(url_for("groups.home", tenant_id=tenant_id), 303)


@bp.get("/groups/<group_id>")
@tenant_admin_required
def edit(tenant_id, group_id):
    return _render_form(tenant_id, group=_groups().group(g.identity, tenant_id, group_id))


@bp.post("/groups/<group_id>")
@tenant_admin_required
def update(tenant_id, group_id):
    current = _groups().group(g.identity, tenant_id, group_id)  # 404: not of this tenant
    name = request.form.get("name", "")
    permissions = permissions_from_form(request.form)
    try:
        group, narrowed = _groups().update(g.identity, tenant_id, group_id, name=name,
                                           permissions=permissions)
    except Forbidden:
        raise
    except DomainError as exc:
        status, message = explain(exc)
        return _render_form(tenant_id, group=current, status=status, error=message,
                            name=name[:FIELD_MAX], permissions=permissions)
    message = _("User group %(name)s was saved.", name=group.name)
    if narrowed:
        message += " " + ngettext(
            "%(num)s token family of its guests had wider rights and was narrowed: those "
            "tokens stop working at once, the next refresh gets the new rights.",
            "%(num)s token families of its guests had wider rights and were narrowed: those "
            "tokens stop working at once, the next refresh gets the new rights.", narrowed)
    flash(message, "success")
    return redirect(url_for("groups.home", tenant_id=tenant_id), 303)


# --- delete ---
@bp.get("/groups/<group_id>/delete")
@tenant_admin_required
def delete_confirm(tenant_id, group_id):
    group = _groups().group(g.identity, tenant_id, group_id)
    tenant = use_cases().tenant_admin.tenant(g.identity, tenant_id)
    details = [(_("User group"), group.name),
               (_("Permissions"), ", ".join(describe_permissions(group.permissions))
                or _("none"))]
    back = url_for("groups.home", tenant_id=tenant_id)
    if group.guests or group.pending_invitations:
        # Deleting would only be refused (group_in_use): no button, the reason and the way
        # to what blocks it.
        details += [(_("Guest users"), str(group.guests)),
                     (_("Open invitations"), str(group.pending_invitations))]
        return render_template(
            "web/confirm.html", tenant=tenant, membership=None, details=details, blocked=True,
            title=_("User group %(name)s cannot be deleted yet", name=group.name),
            explanation=_("Guest users still have this user group or open invitations name "
                          "it. Remove those guest users and withdraw the invitations first; "
                          "then it can be deleted."),
            back=back + ("#guests" if group.guests else "#invitations"),
            back_label=_("Back to user groups and guests"))
    return render_template(
        "web/confirm.html", tenant=tenant, membership=None, details=details,
        title=_("Delete user group %(name)s?", name=group.name),
        explanation=_("The user group is deleted for good. No guest user has it."),
        action=url_for("groups.delete", tenant_id=tenant_id, group_id=group_id),
        confirm_label=_("Delete user group"), back=back, hidden={})


@bp.post("/groups/<group_id>/delete")
@tenant_admin_required
def delete(tenant_id, group_id):
    try:
        deleted = _groups().delete(g.identity, tenant_id, group_id)
    except Forbidden:
        raise
    except DomainError as exc:  # still in use: say so on the overview, change nothing
        if exc.kind == "not_found":
            raise  # 404: not a group of this tenant
        status, message = explain(exc)
        return _render_overview(tenant_id, status, group_error=message)
    flash(_("User group %(name)s was deleted.", name=deleted.name), "success")
    return redirect(url_for("groups.home", tenant_id=tenant_id), 303)


# --- invitations ---
@bp.post("/invitations")
@tenant_admin_required
def invite(tenant_id):
    group_id = request.form.get("group", "")
    subject = request.form.get("subject", "") or None
    email = request.form.get("email", "").strip() or None
    values = {"group": group_id[:64], "subject": (subject or "")[:FIELD_MAX],
              "email": (email or "")[:FIELD_MAX], "q": request.form.get("q", "").strip()[:100]}
    try:
        invitation = _groups().invite(g.identity, tenant_id, group_id=group_id,
                                      subject=subject, email=email)
    except Forbidden:
        raise
    except DomainError as exc:
        status, message = explain(exc)
        return _render_overview(tenant_id, status, invite_error=message, values=values)
    flash(_("%(invitee)s is invited as a guest user with the user group %(group)s until "
            "%(until)s. The advisor accepts the invitation on the page “My tenants” after "
            "signing in.", invitee=invitation.invitee, group=invitation.group_name,
            until=when(invitation.expires_at)), "success")
    return redirect(url_for("groups.home", tenant_id=tenant_id) + "#invitations", 303)


@bp.get("/invitations/<invitation_id>/withdraw")
@tenant_admin_required
def withdraw_confirm(tenant_id, invitation_id):
    tenant = use_cases().tenant_admin.tenant(g.identity, tenant_id)
    try:
        invitation = _groups().invitation(g.identity, tenant_id, invitation_id)
    except DomainError as exc:
        if exc.code != "unknown_invitation":
            raise
        # Accepted, withdrawn or expired meanwhile (or never ours): withdrawing can only
        # fail, so no button, the reason and the way back (404, as before).
        return render_template(
            "web/confirm.html", tenant=tenant, membership=None, blocked=True,
            title=_("This invitation is no longer open"),
            explanation=_("There is nothing to withdraw: the invitation was accepted, "
                          "withdrawn or has expired, or it does not exist."),
            back=url_for("groups.home", tenant_id=tenant_id) + "#invitations",
            back_label=_("Back to user groups and guests")), 404
    return render_template(
        "web/confirm.html", tenant=tenant, membership=None,
        details=[(_("Invited"), invitation.invitee), (_("User group"), invitation.group_name),
                 (_("Valid until"), when(invitation.expires_at))],
        title=_("Withdraw the invitation for %(invitee)s?", invitee=invitation.invitee),
        explanation=_("The invitation can no longer be accepted. You can invite the advisor "
                      "again at any time."),
        action=url_for("groups.withdraw", tenant_id=tenant_id, invitation_id=invitation_id),
        confirm_label=_("Withdraw invitation"),
        back=url_for("groups.home", tenant_id=tenant_id) + "#invitations", hidden={})


@bp.post("/invitations/<invitation_id>/withdraw")
@tenant_admin_required
def withdraw(tenant_id, invitation_id):
    _groups().withdraw(g.identity, tenant_id, invitation_id)
    flash(_("The invitation was withdrawn."), "success")
    return redirect(url_for("groups.home", tenant_id=tenant_id) + "#invitations", 303)
