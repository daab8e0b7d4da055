"""The tenant's access log (Zugriffsprotokoll), in two parts:

- what advisors did at the resource servers (issue 14): the access records the applications
  reported, grouped per advisor, functional area and action ("Bob Advisor read EBICS — 3
  requests, 10:42–10:44") with the single requests behind each group;
- access and changes: its advisor-related audit events (DESIGN.md sections 7 and 8: joins,
  failed code attempts, token issuance, removals, who did what), read by
  :meth:`idp_bridge.services.tenant_admin.TenantAdmin.access_log`.

This module parses the filters and presents both in the reader's language and as CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from flask_babel import ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from scopes.catalog import AREAS, CATALOG

from ..services.values import AuditEntry
from .access_requests import MODE_LABELS, PERMANENT_MODE_LABELS, hours_label
from .i18n import current_language

#: Filter categories and their audit events (``idp_bridge.domain.audit.EVENTS``).
CATEGORIES = {
    "joins": ("membership.created",),
    "removals": ("membership.ended",),
    "failed": ("access_code.failed", "access_code.rate_limited", "token.rejected"),
    "tokens": ("token.issued", "token.refreshed", "token.family_revoked"),
    "codes": ("access_code.rotated",),
    "guests": ("invitation.changed", "group.changed"),
    "records": ("access_record.refused",),
    "requests": ("access_request.created", "access_request.approved", "access_request.denied",
                 "access_request.withdrawn", "access_request.expired"),
    "approvals": ("approval.requested", "approval.completed", "approval.rejected",
                  "approval.closed", "approval.expired", "tenant.settings_changed"),
    "permanent": ("permanent_advisor.proposed", "permanent_advisor.accepted",
                  "permanent_advisor.declined", "permanent_advisor.withdrawn",
                  "permanent_advisor.expired", "permanent_advisor.reconfirmed", "permanent_advisor.reconfirmation_due",
                  "permanent_advisor.lapsed"),
    "evidence": ("evidence.downloaded",),
}
CATEGORY_LABELS = {
    "joins": _l("Joins and assignments"),
    "removals": _l("Removals and ends"),
    "failed": _l("Failed code attempts"),
    "tokens": _l("Token issuance"),
    "codes": _l("New access codes"),
    "guests": _l("Guest invitations and user groups"),
    "records": _l("Refused reports of applications"),
    "requests": _l("Access requests"),
    "approvals": _l("Four eyes and settings"),
    "permanent": _l("Permanent advisors: proposals and re-confirmation"),
    "evidence": _l("Evidence packs"),
}
PAGE_SIZE = 50
#: Dates a filter may name (the day after the latest still exists as a datetime).
EARLIEST, LATEST = date(1970, 1, 1), date(9999, 12, 30)
CSV_LIMIT = 10_000
ROLE_LABELS = {
    "advisor": _l("advisor"), "tenant_admin": _l("tenant admin"),
    "support_admin": _l("support admin"), "system": _l("system"), "client": _l("application"),
    "upstream": _l("identity provider"),
    "receiver": _l("application"),
}


@dataclass(frozen=True)
class Filters:
    category: str | None = None
    advisor: str | None = None
    since: date | None = None
    until: date | None = None
    #: A functional area of ``scopes.catalog`` (the requests part only).
    area: str | None = None

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
        area = args.get("area") or None
        if area is not None and area not in CATALOG:
            problems.append(_("Unknown functional area."))
            area = None
        return cls(category, advisor, dates["since"], dates["until"], area), problems

    def query_args(self) -> dict:
        return {key: value for key, value in (
            ("category", self.category), ("advisor", self.advisor), ("area", self.area),
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
    if event.actor_role in ("client", "receiver"):
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
        elif d.get("access_request"):
            approvers = ", ".join(names.get(s) or s for s in d.get("approved_by") or ()
                                  if isinstance(s, str))
            text = _("%(advisor)s got temporary access: the access request was approved by "
                     "%(names)s.", advisor=advisor, names=approvers or "?")
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
            "reconfirmation_lapsed": _("The permanent access of %(advisor)s ended: it was not "
                                       "re-confirmed in time.", advisor=advisor),
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
    if event.event == "access_record.refused":
        return {
            "unknown_grant": _("The application %(client)s reported a request with an access "
                               "that does not exist; it was not recorded.",
                               client=event.client_id or event.actor or "?"),
            "grant_tenant_mismatch": _("The application %(client)s reported a request for "
                                       "this tenant with another tenant's access; it was not "
                                       "recorded.", client=event.client_id or event.actor or "?"),
            "subject_mismatch": _("The application %(client)s reported a request of another "
                                  "person than the access's advisor; it was not recorded.",
                                  client=event.client_id or event.actor or "?"),
        }.get(d.get("error"), _("The application %(client)s reported a request that was not "
                                "valid; it was not recorded.",
                                client=event.client_id or event.actor or "?"))
    if event.event == "token.rejected":
        return _("A token request was rejected.")
    if event.event == "invitation.changed":
        if d.get("change") == "created":
            invitee = d.get("invitee") or "?"
            return _("%(invitee)s was invited as a guest user.",
                     invitee=names.get(invitee) or invitee)
        return _("A guest invitation was withdrawn.")
    if event.event.startswith("access_request."):
        return _describe_request(event, d, advisor, names)
    if event.event.startswith("permanent_advisor."):
        return _describe_permanent(event, d, advisor, names)
    if event.event.startswith("approval.") or event.event == "tenant.settings_changed":
        return _describe_approval(event, d, names)
    if event.event == "evidence.downloaded":
        if event.actor_role == "operator":
            return _("The operator downloaded the evidence pack of an access (command line).")
        who = names.get(event.actor) or event.actor or "?"
        if d.get("format") == "html":
            return _("%(name)s opened the evidence pack of an access (printable page).",
                     name=who)
        return _("%(name)s downloaded the evidence pack of an access (signed file).", name=who)
    if event.event == "group.changed":
        name = d.get("name") or "?"
        return {"created": _("User group %(name)s was created.", name=name),
                "deleted": _("User group %(name)s was deleted.", name=name)}.get(
            d.get("change"), _("User group %(name)s was changed.", name=name))
    return event.event


def _describe_permanent(event: AuditEntry, d: dict, advisor: str, names: dict[str, str]) -> str:
    if event.event == "permanent_advisor.proposed":
        return _("Support proposed %(advisor)s as a permanent advisor.", advisor=advisor)
    if event.event == "permanent_advisor.accepted":
        accepted = ", ".join(names.get(s) or s for s in d.get("accepted_by") or ()
                             if isinstance(s, str))
        return _("%(advisor)s was accepted as a permanent advisor by %(names)s.",
                 advisor=advisor, names=accepted or "?")
    if event.event == "permanent_advisor.declined":
        return _("The proposal of %(advisor)s as a permanent advisor was declined. Note: "
                 "%(note)s", advisor=advisor, note=d.get("note") or "–")
    if event.event == "permanent_advisor.withdrawn":
        return _("Support withdrew the proposal of %(advisor)s.", advisor=advisor)
    if event.event == "permanent_advisor.expired":
        return _("The proposal of %(advisor)s as a permanent advisor expired unanswered.",
                 advisor=advisor)
    if event.event == "permanent_advisor.reconfirmed":
        return _("%(advisor)s was re-confirmed as a permanent advisor.", advisor=advisor)
    if event.event == "permanent_advisor.reconfirmation_due":
        return _("The administrators were asked to re-confirm %(advisor)s.", advisor=advisor)
    return _("The permanent access of %(advisor)s lapsed: it was not re-confirmed in time.",
             advisor=advisor)


def _hours(value) -> str:
    return hours_label(value) if isinstance(value, int) else "?"


def _describe_request(event: AuditEntry, d: dict, advisor: str, names: dict[str, str]) -> str:
    if event.event == "access_request.created":
        return _("%(advisor)s asked for %(duration)s of temporary access. Reason: %(reason)s",
                 advisor=advisor, duration=_hours(d.get("duration_hours")),
                 reason=d.get("reason") or "–")
    if event.event == "access_request.approved":
        approvers = ", ".join(names.get(s) or s for s in d.get("approved_by") or ()
                              if isinstance(s, str))
        return _("The access request of %(advisor)s was approved for %(duration)s by "
                 "%(names)s.", advisor=advisor, duration=_hours(d.get("duration_hours")),
                 names=approvers or "?")
    if event.event == "access_request.denied":
        return _("The access request of %(advisor)s was denied. Note: %(note)s",
                 advisor=advisor, note=d.get("note") or "–")
    if event.event == "access_request.withdrawn":
        return _("%(advisor)s withdrew the access request.", advisor=advisor)
    return _("The access request of %(advisor)s expired unanswered.", advisor=advisor)


def _setting_text(d: dict) -> str:
    setting, new = d.get("setting"), d.get("new")
    if setting == "temporary_max_age_days":
        return _("maximum duration of temporary access %(old)s → %(new)s days",
                 old=d.get("old", "?"), new=new)
    if setting == "four_eyes":
        return _("four eyes on") if new else _("four eyes off")
    if setting == "access_modes":
        return _("ways in: %(modes)s", modes=MODE_LABELS.get(new, new))
    if setting == "permanent_mode":
        return _("permanent advisors: %(mode)s", mode=PERMANENT_MODE_LABELS.get(new, new))
    return str(setting)


def _describe_approval(event: AuditEntry, d: dict, names: dict[str, str]) -> str:
    if event.event == "tenant.settings_changed":
        approvers = ", ".join(names.get(s) or s for s in d.get("approved_by") or ()
                              if isinstance(s, str))
        return _("Setting changed: %(what)s (approved by %(names)s).", what=_setting_text(d),
                 names=approvers or "?")
    action = d.get("action")
    what = {"access_request.approve": _("approving an access request"),
            "tenant.max_age": _("lengthening the maximum duration to %(days)s days",
                                days=(d.get("terms") or {}).get("days", "?")),
            "tenant.four_eyes_off": _("turning four eyes off"),
            "permanent_advisor.accept": _("accepting a permanent advisor"),
            "tenant.permanent_direct": _("letting support assign permanent advisors directly")
            }.get(action, str(action))
    first = d.get("first_approver")
    first_name = names.get(first) or first or "?"
    if event.event == "approval.requested":
        return _("Four eyes: first approval of %(what)s; a second administrator must approve "
                 "it.", what=what)
    if event.event == "approval.completed":
        second = d.get("second_approver")
        return _("Four eyes: %(what)s approved by %(first)s and %(second)s.", what=what,
                 first=first_name, second=names.get(second) or second or "?")
    if event.event == "approval.rejected":
        return _("Four eyes: the first approval of %(what)s by %(first)s was rejected.",
                 what=what, first=first_name)
    if event.event == "approval.closed":
        return _("Four eyes: the first approval of %(what)s by %(first)s is no longer needed.",
                 what=what, first=first_name)
    return _("Four eyes: the first approval of %(what)s by %(first)s lapsed.", what=what,
             first=first_name)


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


# --- what advisors did at the resource servers (access records) ---
#: Groups on the page (the newest activity first) and single requests per page.
GROUP_LIMIT = 200
REQUEST_PAGE_SIZE = 100


def area_name(key: str) -> str:
    area = CATALOG.get(key)
    if area is None:
        return key
    return area.name_de if current_language() == "de" else area.name_en


def area_choices() -> list[tuple[str, str]]:
    """(key, name) of every functional area, in catalog order, in the reader's language."""
    return [(area.key, area_name(area.key)) for area in AREAS]


def span(first, last) -> str:
    """When a group's requests happened: "10:42–10:44" on the day, with the date in front;
    the dates on both ends when they differ."""
    zone = _zone()
    if first.astimezone(zone).date() == last.astimezone(zone).date():
        day = _formatted("date", first)
        start, end = _formatted("time", first), _formatted("time", last)
        return f"{day}, {start}" if start == end else f"{day}, {start}–{end}"
    return f"{_formatted('datetime', first)} – {_formatted('datetime', last)}"


def _formatted(kind: str, value) -> str:
    """Babel's formatting of ``value`` in the reader's language and zone, as flask_babel's
    ``format_date`` (medium), ``format_time`` and ``format_datetime`` (short: to the minute)
    give it, remembered for the rest of the request by its minute: a page of 200 groups spent
    most of its time looking up the request's locale and zone for each of them."""
    from babel import dates
    from flask_babel import get_locale

    memo = _request_memo()
    if "locale" not in memo:
        memo["locale"], memo["zone"] = get_locale(), _zone()
    key = (kind, value.replace(second=0, microsecond=0))
    text = memo.get(key)
    if text is None:
        locale, zone = memo["locale"], memo["zone"]
        if kind == "date":
            text = dates.format_date(value.astimezone(zone).date(), "medium", locale=locale)
        elif kind == "time":
            text = dates.format_time(value, "short", tzinfo=zone, locale=locale)
        else:
            text = dates.format_datetime(value, "short", tzinfo=zone, locale=locale)
        memo[key] = text
    return text


def _request_memo() -> dict:
    """What this request's page formats more than once (its locale, zone, translations)."""
    from flask import g

    memo = g.get("_access_log_formats")
    if memo is None:
        memo = g._access_log_formats = {}
    return memo


def _zone():
    from flask_babel import get_timezone

    return get_timezone()


def advisor_of(item, names: dict[str, str]) -> str:
    """What to call the advisor of a group or request: the directory's (or their sign-in's)
    name, else the subject."""
    subject = getattr(item, "advisor", None) or getattr(item, "subject", None) or "?"
    return getattr(item, "advisor_name", None) or names.get(subject) or subject


def describe_group(group, names: dict[str, str]) -> str:
    """"Bob Advisor read EBICS — 3 requests, 10:42–10:44" in the reader's language (the
    translated templates and area names looked up once per request)."""
    memo = _request_memo()
    advisor = advisor_of(group, names)
    area = memo.get(("area", group.area))
    if area is None:
        area = memo[("area", group.area)] = area_name(group.area)
    count = memo.get(("count", group.count))
    if count is None:
        count = memo[("count", group.count)] = ngettext(
            "%(num)s request", "%(num)s requests", group.count)
    key = ("what", group.action == "write")
    what = memo.get(key)
    if what is None:
        # flask_babel's gettext with variables: the translation, then "%" of them.
        what = memo[key] = (_("%(advisor)s changed %(area)s") if group.action == "write"
                            else _("%(advisor)s read %(area)s"))
    return f"{what % {'advisor': advisor, 'area': area}} — {count}, " \
           f"{span(group.first_at, group.last_at)}"


def statuses_text(statuses) -> str:
    """A group's answers: "200 ×3, 404 ×1" (``statuses`` maps a status to its count, or is a
    sequence of statuses)."""
    if isinstance(statuses, dict):
        pairs = sorted(statuses.items())
    else:
        counted: dict[int, int] = {}
        for status in statuses or ():
            counted[status] = counted.get(status, 0) + 1
        pairs = sorted(counted.items())
    return ", ".join(f"{status} ×{count}" for status, count in pairs)


def action_label(action: str) -> str:
    return _("change") if action == "write" else _("read")


def requests_to_csv(records, names: dict[str, str], *, delimiter: str, zone: str) -> str:
    """The single requests as CSV (BOM, formula-neutralised cells as :func:`to_csv`)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([_("Time"), _("Time (UTC)"), _("Advisor"), _("Functional area"),
                     _("Action"), _("Method"), _("Route"), _("Status"), _("Application"),
                     _("Access"), _("Token family")])
    tz = ZoneInfo(zone)
    for r in records:
        writer.writerow([_cell(v) for v in (
            r.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
            r.at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{r.at.microsecond // 1000:03d}Z",
            advisor_of(r, names), area_name(r.area), action_label(r.action), r.method, r.route,
            r.status, r.client_label, r.membership_id or "", r.sid or "")])
    return out.getvalue()
