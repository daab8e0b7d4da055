"""The tenant's access log (Zugriffsprotokoll): its advisor-related audit events, filtered,
described in the reader's language, and as CSV (DESIGN.md sections 7 and 8: joins, failed
code attempts, token issuance, removals, who did what). The events are read by
:meth:`idp_bridge.services.tenant_admin.TenantAdmin.access_log`; this module parses the
filters and presents the :class:`~idp_bridge.services.values.AuditEntry` values."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..services.values import AuditEntry

#: Filter categories and their audit events (``idp_bridge.domain.audit.EVENTS``).
CATEGORIES = {
    "joins": ("membership.created",),
    "removals": ("membership.ended",),
    "failed": ("access_code.failed", "access_code.rate_limited", "token.rejected"),
    "tokens": ("token.issued", "token.refreshed", "token.family_revoked"),
    "codes": ("access_code.rotated",),
    "guests": ("invitation.changed", "group.changed"),
}
CATEGORY_LABELS = {
    "joins": _l("Joins and assignments"),
    "removals": _l("Removals and ends"),
    "failed": _l("Failed code attempts"),
    "tokens": _l("Token issuance"),
    "codes": _l("New access codes"),
    "guests": _l("Guest invitations and user groups"),
}
PAGE_SIZE = 50
#: Dates a filter may name (the day after the latest still exists as a datetime).
EARLIEST, LATEST = date(1970, 1, 1), date(9999, 12, 30)
CSV_LIMIT = 10_000
ROLE_LABELS = {
    "advisor": _l("advisor"), "tenant_admin": _l("tenant admin"),
    "support_admin": _l("support admin"), "system": _l("system"), "client": _l("application"),
    "upstream": _l("identity provider"),
}


@dataclass(frozen=True)
class Filters:
    category: str | None = None
    advisor: str | None = None
    since: date | None = None
    until: date | None = None

    @classmethod
    def from_args(cls, args) -> tuple["Filters", list[str]]:
        """Filters from query arguments, and what was wrong with them (ignored then)."""
        problems = []
        category = args.get("category") or None
        if category is not None and category not in CATEGORIES:
            problems.append(_("Unknown event type."))
            category = None
        advisor = (args.get("advisor") or "").strip()[:100] or None
        dates = {}
        for key in ("since", "until"):
            value = args.get(key) or None
            try:
                dates[key] = _day(value) if value else None
            except ValueError:
                problems.append(_("Please enter dates as YYYY-MM-DD."))
                dates[key] = None
        return cls(category, advisor, dates["since"], dates["until"]), problems

    def query_args(self) -> dict:
        return {key: value for key, value in (
            ("category", self.category), ("advisor", self.advisor),
            ("since", self.since.isoformat() if self.since else None),
            ("until", self.until.isoformat() if self.until else None)) if value}


def _day(value: str) -> date:
    """A YYYY-MM-DD date from :data:`EARLIEST` to :data:`LATEST`, else ValueError (the day
    after ``until`` must exist: 9999-12-31 would overflow)."""
    day = date.fromisoformat(value) if len(value) == 10 else None
    if day is None or not EARLIEST <= day <= LATEST:
        raise ValueError(value)
    return day


def actor_label(event: AuditEntry, names: dict[str, str], me) -> str:
    if event.actor in (None, "system"):
        return str(ROLE_LABELS["system"])
    if me is not None and event.actor == me.subject:
        return _("you (%(name)s)", name=me.username)
    name = names.get(event.actor)
    if not name and event.actor_role == "advisor" and (event.detail or {}).get("kind") != "permanent":
        name = (event.detail or {}).get("advisor_name")
    role = ROLE_LABELS.get(event.actor_role or "", event.actor_role or "")
    if name:
        return f"{name} ({role})"
    if event.actor_role == "client":
        return _("application %(client)s", client=event.actor)
    return f"{role} {event.actor[:8]}…" if len(event.actor) > 12 else f"{role} {event.actor}"


def describe(event: AuditEntry, names: dict[str, str]) -> str:
    """What happened, in one sentence of the reader's language."""
    d = event.detail or {}
    kind = d.get("kind")
    subject = d.get("advisor") or event.actor or ""
    # The directory's name first. A name recorded in the event is used only where it came
    # from the advisor's own sign-in: a permanent assignment's was typed by support.
    recorded = d.get("advisor_name") if kind != "permanent" else None
    advisor = names.get(subject) or recorded or subject or "?"
    if event.event == "membership.created":
        if kind == "permanent":
            text = _("%(advisor)s was assigned as a permanent advisor.", advisor=advisor)
        elif kind == "guest":
            text = _("%(advisor)s joined as a guest user.", advisor=advisor)
            inviter = d.get("invited_by")
            if isinstance(inviter, str) and inviter:
                text += " " + _("Invited by %(name)s.", name=names.get(inviter) or inviter)
        else:
            text = _("%(advisor)s joined with the access code (temporary access).", advisor=advisor)
        reason = d.get("reason")
        # Guests joined before names came from the directory recorded "invitation <id>".
        if reason and not (kind == "guest" and str(reason).startswith("invitation ")):
            text += " " + _("Reason: %(reason)s", reason=reason)
        return text
    if event.event == "membership.ended":
        reason = d.get("reason")
        return {
            "left": _("%(advisor)s left the tenant.", advisor=advisor),
            "removed_by_tenant": _("%(advisor)s was removed from the tenant.", advisor=advisor),
            "removed_by_support": _("%(advisor)s was removed by support.", advisor=advisor),
            "expired": _("The temporary access of %(advisor)s expired.", advisor=advisor),
            "superseded": _("The temporary access of %(advisor)s was replaced by permanent "
                            "access.", advisor=advisor),
            "upstream_account_ended": _("The access of %(advisor)s ended because the account "
                                        "was disabled or deleted.", advisor=advisor),
        }.get(reason, _("The access of %(advisor)s ended.", advisor=advisor))
    if event.event == "access_code.failed":
        return _("Wrong access code entered (attempt %(count)s for this code).",
                 count=d.get("failures", "?"))
    if event.event == "access_code.rate_limited":
        return _("Code entry blocked: too many wrong attempts.")
    if event.event == "access_code.rotated":
        return {"redeemed": _("New access code: the previous one was redeemed."),
                "too_many_failures": _("New access code after too many wrong attempts.")}.get(
            d.get("cause"), _("New access code."))
    if event.event == "token.issued":
        return _("Tokens issued for the application %(client)s.", client=event.client_id or "?")
    if event.event == "token.refreshed":
        return _("Tokens renewed for the application %(client)s.", client=event.client_id or "?")
    if event.event == "token.family_revoked":
        return {"upstream_logout": _("Tokens revoked: the advisor signed out at the identity "
                                     "provider."),
                "refresh_token_reuse": _("Tokens revoked: a refresh token was used twice."),
                "revoked_by_client": _("Tokens revoked by the application.")}.get(
            d.get("reason"), _("Tokens revoked."))
    if event.event == "token.rejected":
        return _("A token request was rejected.")
    if event.event == "invitation.changed":
        if d.get("change") == "created":
            invitee = d.get("invitee") or "?"
            return _("%(invitee)s was invited as a guest user.",
                     invitee=names.get(invitee) or invitee)
        return _("A guest invitation was withdrawn.")
    if event.event == "group.changed":
        name = d.get("name") or "?"
        return {"created": _("User group %(name)s was created.", name=name),
                "deleted": _("User group %(name)s was deleted.", name=name)}.get(
            d.get("change"), _("User group %(name)s was changed.", name=name))
    return event.event


def to_csv(events, names: dict[str, str], me, *, delimiter: str, zone: str) -> str:
    """CSV with a BOM (spreadsheets then read UTF-8); cells that a spreadsheet would run as a
    formula are prefixed with an apostrophe (CSV injection: reasons and names are user input)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([_("Time"), _("Time (UTC)"), _("Event"), _("What happened"), _("Who"),
                     _("Advisor"), _("Access"), _("Application"), _("Details")])
    tz = ZoneInfo(zone)
    for e in events:
        d = e.detail or {}
        writer.writerow([_cell(v) for v in (
            e.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
            e.at.strftime("%Y-%m-%dT%H:%M:%SZ"), e.event, describe(e, names),
            actor_label(e, names, me), d.get("advisor_name") or d.get("advisor") or "",
            e.membership_id or "", e.client_id or "",
            json.dumps(d, ensure_ascii=False, sort_keys=True) if d else "")])
    return out.getvalue()


#: First characters that make a spreadsheet read a cell as a formula or command (OWASP CSV
#: injection), also in their full-width forms (spreadsheets fold them for East Asian input),
#: and ``|`` (DDE), ``"`` (a quote opening a cell the parser re-reads).
FORMULA_STARTS = frozenset("=+-@|\"\uff1d\uff0b\uff0d\uff20\uff5c")


def _cell(value) -> str:
    """The cell as text; prefixed with an apostrophe when it could start a formula, also
    after leading whitespace (tab, CR, LF, spaces: spreadsheets skip them before a ``=``)."""
    text = str(value)
    if text and (text[0] in FORMULA_STARTS or text[0].isspace()):
        return "'" + text
    return text
