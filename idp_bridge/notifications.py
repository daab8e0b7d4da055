"""Telling tenant admins about advisors: one joined, left or was removed, a permanent advisor
was assigned (DESIGN.md section 1: the tenant stays in control).

Durable outbox: :meth:`Notifications.membership_changed` is a membership listener, so the
items (``NotificationItem``, one per channel) are written in the transaction that changes the
membership and exist exactly when the change does. :class:`NotificationWorker` delivers them
in the background with retries and exponential backoff; several processes may run workers
(items are claimed for a while before delivery).

The first use of a new access (``advisor.first_access``, only for tenants that asked for
it) is queued by :meth:`Notifications.access_recorded`, an access-record listener called in
the ingest's transaction.

Channels:

- e-mail through the configured SMTP server (STARTTLS or implicit TLS), to the addresses the
  tenant admins entered on the help page; German and English in one message, since the
  bridge does not know the readers' language;
- an optional webhook: a JSON POST signed as in the Standard Webhooks specification
  (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
  "id.timestamp.body">``; a secret ``whsec_<base64>`` is used decoded, any other as its
  UTF-8 bytes). Receivers should reject timestamps older than a few minutes and ids seen.

No Flask here: settings arrive as values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

import requests
from sqlalchemy import or_, select, update

from .background import Loop
from .domain.people import People
from .storage.db import utcnow
from .storage.models import AccessRecord, Membership, NotificationItem, PermanentProposal, Tenant

log = logging.getLogger(__name__)

#: Kinds of membership a tenant is told about (guests are invited by the tenant itself).
NOTIFIED_KINDS = ("temporary", "permanent")
#: Notification events (also the webhook's ``type``).
EVENTS = ("advisor.joined", "advisor.permanent_assigned", "advisor.left", "advisor.removed",
          "advisor.expired", "advisor.first_access", "access_request.created",
          "access_request.withdrawn", "access_request.approved", "access_request.denied",
          "access_request.expired", "approval.pending", "advisor.permanent_lapsed",
          "permanent_advisor.proposed", "permanent_advisor.accepted",
          "permanent_advisor.declined", "permanent_advisor.withdrawn",
          "permanent_advisor.expired", "permanent_advisor.reconfirmation_due")
#: Permanent-advisor events told to the tenant's admins; the others go to the advisor.
TENANT_PERMANENT_EVENTS = ("proposed", "withdrawn", "expired", "reconfirmation_due")
#: Access-request events told to the tenant's admins (e-mail to its addresses); the others
#: go to the advisor (e-mail to the directory's address). Every one goes to the webhook.
TENANT_REQUEST_EVENTS = ("created", "withdrawn")
ADVISOR_REQUEST_EVENTS = ("approved", "denied", "expired")
#: Kinds of membership whose first use is told when the tenant asked for it (its setting
#: ``notify_first_access``): every advisor token, guests included.
FIRST_ACCESS_KINDS = ("temporary", "permanent", "guest")
MAX_RECIPIENTS = 10


class DeliveryFailed(Exception):
    """This attempt failed; the item is tried again later."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # starttls | tls | none
    sender: str
    username: str = ""
    password: str = ""
    timeout: float = 10.0

    def __repr__(self):  # never the password
        return f"<SmtpConfig {self.host}:{self.port} {self.security} from={self.sender}>"


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: str
    timeout: float = 10.0

    def __repr__(self):
        return f"<WebhookConfig {self.url}>"

    @property
    def key(self) -> bytes:
        if self.secret.startswith("whsec_"):
            return base64.b64decode(self.secret[len("whsec_"):])
        return self.secret.encode()


def event_for(change: str, membership) -> str | None:
    """The notification for a membership change, or None when the tenant is not told
    (guests; a temporary access superseded by a permanent assignment, reported as such)."""
    if membership.kind not in NOTIFIED_KINDS:
        return None
    if change == "created":
        return "advisor.joined" if membership.kind == "temporary" else "advisor.permanent_assigned"
    return {"left": "advisor.left", "removed_by_tenant": "advisor.removed",
            "removed_by_support": "advisor.removed", "upstream_account_ended": "advisor.removed",
            "expired": "advisor.expired",
            "reconfirmation_lapsed": "advisor.permanent_lapsed"}.get(membership.end_reason)


def parse_addresses(text: str | None) -> list[str]:
    """Addresses as entered (comma, semicolon, space or line separated); raises ValueError."""
    if not text:
        return []
    items = [a.strip() for a in text.replace(";", ",").replace("\n", ",").replace(" ", ",")
             .split(",") if a.strip()]
    seen: dict[str, None] = {}
    for address in items:
        local, at, domain = address.rpartition("@")
        if not (at and local and "." in domain.strip(".") and len(address) <= 254
                and address.isascii() and address.isprintable() and "<" not in address
                and ">" not in address and '"' not in address):
            raise ValueError(address)
        seen.setdefault(address, None)
    if len(seen) > MAX_RECIPIENTS:
        raise OverflowError(MAX_RECIPIENTS)
    return list(seen)


class Notifications:
    def __init__(self, *, db, issuer: str, timezone: str = "Europe/Berlin",
                 smtp: SmtpConfig | None = None, webhook: WebhookConfig | None = None,
                 max_attempts: int = 12, backoff_seconds: float = 5.0,
                 http: requests.Session | None = None, reconfirm_after=None):
        self.db = db
        self.issuer = issuer.rstrip("/")
        self.zone = ZoneInfo(timezone)
        self.smtp = smtp
        self.webhook = webhook
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._http = http or requests.Session()
        #: How long after its confirmation a permanent advisor is due for re-confirmation
        #: (for the date in the message; set by the app).
        self.reconfirm_after = reconfirm_after

    @property
    def enabled(self) -> bool:
        return self.smtp is not None or self.webhook is not None

    # --- outbox (called inside the domain's transactions) ---
    def membership_changed(self, session, change: str, membership, now: datetime) -> None:
        """A membership listener: queue the notification of this change."""
        if not self.enabled:
            return
        if not isinstance(membership, Membership):
            # The exchange ends expired memberships it read as Core rows: load the record.
            membership = session.get(Membership, membership.id)
        event = event_for(change, membership)
        if event is None:
            return
        tenant = session.get(Tenant, membership.tenant_id)
        actor = membership.ended_by if change == "ended" else membership.created_by
        # Names from the directory's rows (never text a client typed); else the name the
        # advisor's own sign-in gave, else the subject (what the e-mail then shows).
        labels = People.labels(session, [membership.advisor_subject, actor])
        advisor_name = labels.get(membership.advisor_subject) or (
            membership.advisor_name if membership.kind != "permanent" else None)
        facts = {
            "event_id": str(uuid.uuid4()), "type": event, "at": _iso(now),
            "tenant": membership.tenant_id, "tenant_name": tenant.name if tenant else None,
            "advisor": membership.advisor_subject, "advisor_name": advisor_name,
            "actor": actor, "actor_name": labels.get(actor) if actor else None,
            "kind": membership.kind, "reason": membership.reason,
            "since": _iso(membership.created_at), "expires_at": _iso(membership.expires_at),
            "end_reason": membership.end_reason if change == "ended" else None,
            "help_page": f"{self.issuer}/tenants/{membership.tenant_id}/help",
        }
        if event == "advisor.joined" and membership.created_by != membership.advisor_subject:
            # A temporary access someone else created: a tenant admin approving a request.
            facts["via"] = "access_request"
        if event == "advisor.permanent_assigned":
            proposal = session.scalars(select(PermanentProposal).where(
                PermanentProposal.tenant_id == membership.tenant_id,
                PermanentProposal.advisor_subject == membership.advisor_subject,
                PermanentProposal.status == "pending")).first()
            if proposal is not None and proposal.proposed_by != membership.created_by:
                facts["via"] = "proposal"  # the tenant's admins accepted support's proposal
        self._queue(session, tenant, event, facts, now, tenant_id=membership.tenant_id)
        if event == "advisor.permanent_lapsed":  # both sides are told
            self._queue(session, tenant, event, facts, now, tenant_id=membership.tenant_id,
                        recipients=self._advisor_address(session, membership.advisor_subject),
                        webhook=False)

    @staticmethod
    def _advisor_address(session, subject: str) -> list[str]:
        """The advisor's e-mail address as the directory knows it (none if unknown)."""
        person = People.get(session, subject)
        try:
            return parse_addresses(person.email) if person is not None and person.email else []
        except (ValueError, OverflowError):
            return []  # the directory's value; never fail the change

    def permanent_changed(self, session, change: str, subject, now: datetime) -> None:
        """A permanent-consent listener: a proposal made or withdrawn and a re-confirmation
        due (told to the tenant's admins), a proposal accepted or declined (told to the
        advisor), in the transaction of the change."""
        if not self.enabled or change not in (*TENANT_PERMANENT_EVENTS, "accepted", "declined"):
            return
        event = f"permanent_advisor.{change}"
        tenant = session.get(Tenant, subject.tenant_id)
        proposal = subject if isinstance(subject, PermanentProposal) else None
        actor = proposal.decided_by or proposal.proposed_by if proposal else "system"
        labels = People.labels(session, [subject.advisor_subject, actor])
        facts = {
            "event_id": str(uuid.uuid4()), "type": event, "at": _iso(now),
            "tenant": subject.tenant_id, "tenant_name": tenant.name if tenant else None,
            "advisor": subject.advisor_subject,
            "advisor_name": labels.get(subject.advisor_subject) or subject.advisor_name,
            "actor": actor, "actor_name": labels.get(actor),
            "help_page": f"{self.issuer}/tenants/{subject.tenant_id}/help",
            "advisor_page": f"{self.issuer}/advisor",
        }
        if proposal is not None:
            facts.update(proposal=proposal.id, reason=proposal.reason,
                         note=proposal.decision_note,
                         accepted_by=[labels.get(s) or s for s in (proposal.accepted_by or ())])
        else:
            facts.update(membership=subject.id, confirmed_at=_iso(subject.confirmed_at),
                         due_at=_iso(subject.confirmed_at + self.reconfirm_after)
                         if subject.confirmed_at and self.reconfirm_after else None)
        if change in TENANT_PERMANENT_EVENTS:
            self._queue(session, tenant, event, facts, now, tenant_id=subject.tenant_id)
        else:
            self._queue(session, tenant, event, facts, now, tenant_id=subject.tenant_id,
                        recipients=self._advisor_address(session, subject.advisor_subject))

    def access_recorded(self, session, client_id: str, record_ids: list[str],
                        now: datetime) -> None:
        """An access-record listener, called in the ingest's transaction with the ids of the
        records of ``client_id`` stored now: for each grant whose first records these are
        (no earlier record of its membership), :meth:`first_access` with the earliest.
        Costs nothing unless notifications are set up and a tenant of the batch asked.
        Two batches of one new grant stored at the same moment by two processes may both
        count as first: the tenant is then told twice, never not at all."""
        if not self.enabled or not record_ids:
            return
        rows = session.execute(select(
            AccessRecord.id, AccessRecord.tenant_id, AccessRecord.membership_id,
            AccessRecord.area, AccessRecord.action, AccessRecord.method, AccessRecord.route,
            AccessRecord.at, AccessRecord.client_id).where(
            AccessRecord.client_id == client_id,
            AccessRecord.record_id.in_(record_ids))).all()
        tenants = {row.tenant_id for row in rows}
        asking = set(session.scalars(select(Tenant.id).where(
            Tenant.id.in_(sorted(tenants)), Tenant.notify_first_access.is_(True)))) \
            if tenants else set()
        firsts: dict[str, object] = {}
        for row in sorted(rows, key=lambda r: (r.at, r.id)):
            if row.tenant_id in asking:
                firsts.setdefault(row.membership_id, row)
        if not firsts:
            return
        batch = [row.id for row in rows]
        for membership_id, row in firsts.items():
            earlier = session.scalar(select(AccessRecord.id).where(
                AccessRecord.tenant_id == row.tenant_id,
                AccessRecord.membership_id == membership_id,
                AccessRecord.id.not_in(batch)).limit(1))
            membership = session.get(Membership, membership_id)
            if earlier is None and membership is not None:
                self.first_access(session, membership, row._asdict(), now)

    def first_access(self, session, membership, record, now: datetime) -> None:
        """An access-record listener: the first access record of ``membership``'s grant
        was stored in this transaction (``record``: its values, with ``area``, ``action``,
        ``method``, ``route``, ``at`` and ``client_id``). Queue ``advisor.first_access``
        when the tenant asked to be told (``tenants.notify_first_access``); the caller
        calls this once per grant, for the earliest record of the first batch that had any."""
        if not self.enabled or membership.kind not in FIRST_ACCESS_KINDS:
            return
        tenant = session.get(Tenant, membership.tenant_id)
        if tenant is None or not tenant.notify_first_access:
            return
        labels = People.labels(session, [membership.advisor_subject])
        advisor_name = labels.get(membership.advisor_subject) or (
            membership.advisor_name if membership.kind != "permanent" else None)
        at = _get(record, "at")
        facts = {
            "event_id": str(uuid.uuid4()), "type": "advisor.first_access", "at": _iso(now),
            "tenant": membership.tenant_id, "tenant_name": tenant.name,
            "advisor": membership.advisor_subject, "advisor_name": advisor_name,
            "actor": membership.advisor_subject, "actor_name": advisor_name,
            "kind": membership.kind, "reason": membership.reason,
            "since": _iso(membership.created_at), "expires_at": _iso(membership.expires_at),
            "end_reason": None, "grant_id": membership.grant_id,
            "first_access": {"at": _iso(at) if isinstance(at, datetime) else at,
                             "area": _get(record, "area"), "action": _get(record, "action"),
                             "method": _get(record, "method"), "route": _get(record, "route"),
                             "resource_server": _get(record, "client_id")},
            "help_page": f"{self.issuer}/tenants/{membership.tenant_id}/help",
        }
        self._queue(session, tenant, "advisor.first_access", facts, now)

    def access_request_changed(self, session, change: str, request, now: datetime) -> None:
        """An access-request listener: a request was made or withdrawn (told to the tenant's
        admins), approved, denied or expired (told to the advisor, at the address the
        directory knows), in the transaction of the change."""
        if not self.enabled:
            return
        tenant = session.get(Tenant, request.tenant_id)
        event = f"access_request.{change}"
        if event not in EVENTS:
            return
        deciders = [s for s in (request.approved_by or [request.decided_by])
                    if s and s != "system"]
        labels = People.labels(session, [request.advisor_subject, *deciders])
        expires = None
        if request.membership_id:
            membership = session.get(Membership, request.membership_id)
            expires = membership.expires_at if membership is not None else None
        facts = {
            "event_id": str(uuid.uuid4()), "type": event, "at": _iso(now),
            "tenant": request.tenant_id, "tenant_name": tenant.name if tenant else None,
            "advisor": request.advisor_subject,
            "advisor_name": labels.get(request.advisor_subject) or request.advisor_name,
            "access_request": request.id, "reason": request.reason,
            "duration_hours": request.duration_hours, "answer_by": _iso(request.expires_at),
            "approved_hours": request.approved_hours, "expires_at": _iso(expires),
            "approved_by": [labels.get(s) or s for s in (request.approved_by or ())],
            "actor": request.decided_by, "actor_name": labels.get(request.decided_by)
            if request.decided_by else None,
            "note": request.decision_note,
            "help_page": f"{self.issuer}/tenants/{request.tenant_id}/help",
            "advisor_page": f"{self.issuer}/advisor",
        }
        if change in TENANT_REQUEST_EVENTS:
            self._queue(session, tenant, event, facts, now, tenant_id=request.tenant_id)
            return
        person = People.get(session, request.advisor_subject)
        address = person.email if person is not None else None
        try:
            recipients = parse_addresses(address) if address else []
        except (ValueError, OverflowError):
            recipients = []  # the directory's value; never fail the change
        self._queue(session, tenant, event, facts, now, tenant_id=request.tenant_id,
                    recipients=recipients)

    def approval_changed(self, session, change: str, approval, now: datetime) -> None:
        """A four-eyes listener: a first approval awaits a second admin (told to the
        tenant's admins); its completion is told by what it applied."""
        if not self.enabled or change != "requested":
            return
        tenant = session.get(Tenant, approval.tenant_id)
        labels = People.labels(session, [approval.requested_by])
        facts = {
            "event_id": str(uuid.uuid4()), "type": "approval.pending", "at": _iso(now),
            "tenant": approval.tenant_id, "tenant_name": tenant.name if tenant else None,
            "approval": approval.id, "action": approval.action, "target": approval.target,
            "terms": dict(approval.terms or {}), "actor": approval.requested_by,
            "actor_name": labels.get(approval.requested_by), "answer_by": _iso(approval.expires_at),
            "help_page": f"{self.issuer}/tenants/{approval.tenant_id}/help",
        }
        self._queue(session, tenant, "approval.pending", facts, now, tenant_id=approval.tenant_id)

    def _queue(self, session, tenant, event: str, facts: dict, now: datetime, *,
               tenant_id: str | None = None, recipients: list[str] | None = None,
               webhook: bool = True) -> None:
        """Outbox rows for ``event``: the webhook, and e-mail to ``recipients``, by default
        the tenant's addresses (none when the tenant row is gone)."""
        items = []
        if self.webhook is not None and webhook:
            items.append(("webhook", facts))
        if self.smtp is not None and (tenant is not None or recipients):
            if recipients is None:
                try:
                    recipients = parse_addresses(tenant.notification_emails)
                except (ValueError, OverflowError):
                    recipients = []  # stored values were validated; never fail the change
            if recipients:
                items.append(("email", {**facts, "recipients": recipients}))
        for channel, payload in items:
            session.add(NotificationItem(channel=channel, event=event,
                                         tenant_id=tenant_id or tenant.id, payload=payload,
                                         created_at=now, attempts=0, next_attempt_at=now))

    # --- delivery ---
    def work_once(self, limit: int = 50) -> int:
        """Deliver due items; returns how many were delivered."""
        now = utcnow()
        with self.db.read() as session:
            due = session.scalars(select(NotificationItem).where(
                NotificationItem.done_at.is_(None), NotificationItem.failed_at.is_(None),
                NotificationItem.next_attempt_at <= now,
                or_(NotificationItem.claimed_until.is_(None),
                    NotificationItem.claimed_until < now))
                .order_by(NotificationItem.id).limit(limit)).all()
        delivered = 0
        for item in due:
            with self.db.transaction() as session:
                claimed = session.execute(update(NotificationItem).where(
                    NotificationItem.id == item.id, NotificationItem.done_at.is_(None),
                    or_(NotificationItem.claimed_until.is_(None),
                        NotificationItem.claimed_until < now))
                    .values(claimed_until=now + timedelta(seconds=120))).rowcount == 1
            if not claimed:
                continue
            try:
                self.deliver(item)
            except DeliveryFailed as exc:
                self._failed(item, str(exc))
                continue
            with self.db.transaction() as session:
                session.execute(update(NotificationItem).where(NotificationItem.id == item.id)
                                .values(done_at=utcnow(), claimed_until=None,
                                        attempts=item.attempts + 1, last_error=None))
            delivered += 1
        return delivered

    def _failed(self, item: NotificationItem, error: str) -> None:
        attempts = item.attempts + 1
        values = {"attempts": attempts, "claimed_until": None, "last_error": error[:500]}
        if attempts >= self.max_attempts:
            values["failed_at"] = utcnow()
            log.warning("notification %s (%s, tenant %s) given up after %d attempts: %s",
                        item.id, item.channel, item.tenant_id, attempts, error)
        else:
            delay = min(3600.0, self.backoff_seconds * 2 ** (attempts - 1))
            values["next_attempt_at"] = utcnow() + timedelta(seconds=delay)
            log.info("notification %s (%s) failed, next try in %.0f s: %s", item.id,
                     item.channel, delay, error)
        with self.db.transaction() as session:
            session.execute(update(NotificationItem).where(NotificationItem.id == item.id)
                            .values(**values))

    def deliver(self, item: NotificationItem) -> None:
        if item.channel == "email":
            if self.smtp is None:
                raise DeliveryFailed("e-mail is not configured")
            self.send_email(item.payload)
        elif item.channel == "webhook":
            if self.webhook is None:
                raise DeliveryFailed("the webhook is not configured")
            self.post_webhook(item.payload)
        else:
            raise DeliveryFailed(f"unknown channel {item.channel}")

    def send_email(self, payload: dict) -> None:
        smtp = self.smtp
        message = self.email_message(payload)
        try:
            if smtp.security == "tls":
                server = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                          context=ssl.create_default_context())
            else:
                server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
            with server:
                if smtp.security == "starttls":
                    server.starttls(context=ssl.create_default_context())
                if smtp.username:
                    server.login(smtp.username, smtp.password)
                refused = server.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            # The exception text may quote the server's answer, never our password.
            raise DeliveryFailed(f"SMTP: {type(exc).__name__}: {exc}"[:300]) from None
        if refused:
            log.warning("notification e-mail refused for %d recipients", len(refused))

    def email_message(self, payload: dict) -> EmailMessage:
        de_subject, de_body = self._text("de", payload)
        en_subject, en_body = self._text("en", payload)
        message = EmailMessage()
        message["Subject"] = _header(f"{de_subject} / {en_subject}")
        message["From"] = self.smtp.sender
        message["To"] = ", ".join(payload["recipients"])
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = make_msgid(domain=self.smtp.sender.rpartition("@")[2])
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
        message.set_content(f"{de_body}\n\n-- English --\n\n{en_body}\n")
        return message

    def post_webhook(self, payload: dict) -> None:
        data = {key: value for key, value in payload.items() if key != "recipients"}
        body = json.dumps({"type": payload["type"], "timestamp": payload["at"], "data": data},
                          separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "idp-bridge",
                   **sign_webhook(self.webhook.key, payload["event_id"], int(time.time()), body)}
        try:
            response = self._http.post(self.webhook.url, data=body, headers=headers,
                                       timeout=self.webhook.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise DeliveryFailed(f"webhook unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"webhook answered {response.status_code}")

    # --- texts ---
    def _when(self, value: str | None, lang: str) -> str:
        if not value:
            return ""
        local = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(self.zone)
        zone = local.tzname()
        return (local.strftime("%d.%m.%Y %H:%M") if lang == "de"
                else local.strftime("%Y-%m-%d %H:%M")) + f" ({zone})"

    def _text(self, lang: str, p: dict) -> tuple[str, str]:
        name = _one_line(p.get("advisor_name") or p.get("advisor") or p.get("actor_name")
                         or p.get("actor") or "?")
        tenant = p["tenant"] + (f" ({_one_line(p['tenant_name'])})" if p.get("tenant_name") else "")
        when = self._when(p["at"], lang)
        t = TEXTS[lang]
        kind = p["type"]
        if kind == "advisor.joined" and p.get("via") == "access_request":
            kind = "advisor.joined_by_request"
        if kind == "advisor.permanent_assigned" and p.get("via") == "proposal":
            kind = "advisor.permanent_accepted"
        subject = t[kind].format(name=name, tenant=p["tenant"])
        lines = [t["hello"], "", t[kind + ".body"].format(name=name, tenant=tenant, when=when)]
        if p["type"].startswith(("access_request.", "approval.")):
            return subject, "\n".join(lines + self._request_lines(t, lang, p))
        if p["type"].startswith("permanent_advisor."):
            return subject, "\n".join(lines + self._permanent_lines(t, lang, p))
        if kind == "advisor.joined_by_request" and p.get("actor_name"):
            lines.append(t["approved_by"].format(names=_one_line(p["actor_name"])))
        if p["type"] == "advisor.joined":
            lines.append(t["expires"].format(when=self._when(p.get("expires_at"), lang)))
            if p.get("reason"):
                lines.append(t["reason"].format(reason=_one_line(p["reason"])))
        if p["type"] == "advisor.first_access" and isinstance(p.get("first_access"), dict):
            first = p["first_access"]
            area = _one_line(first.get("area") or "?")
            lines.append(t["first_access.what"].format(
                action=t.get("action." + str(first.get("action")), first.get("action") or "?"),
                area=area, method=_one_line(first.get("method") or ""),
                route=_one_line(first.get("route") or ""),
                server=_one_line(first.get("resource_server") or "?")))
        if p["type"] == "advisor.removed" and p.get("end_reason") in t:
            lines.append(t[p["end_reason"]])
        if p.get("actor_name") and p["type"] in ("advisor.permanent_assigned", "advisor.removed") \
                and p.get("actor") != p.get("advisor"):
            lines.append(t["by"].format(name=_one_line(p["actor_name"])))
        lines += ["", t["footer"], p["help_page"], "", t["auto"]]
        return subject, "\n".join(lines)

    def _permanent_lines(self, t: dict, lang: str, p: dict) -> list[str]:
        """The rest of a message about a proposed permanent advisor or a re-confirmation."""
        kind, lines = p["type"], []
        if p.get("reason") and kind == "permanent_advisor.proposed":
            lines.append(t["reason"].format(reason=_one_line(p["reason"])))
        if kind == "permanent_advisor.declined" and p.get("note"):
            lines.append(t["request.note"].format(note=_one_line(p["note"])))
        if kind == "permanent_advisor.accepted" and p.get("accepted_by"):
            names = ", ".join(_one_line(n) for n in p["accepted_by"])
            lines.append(t["accepted_by"].format(names=names))
        if kind == "permanent_advisor.reconfirmation_due":
            lines.append(t["reconfirm.due"].format(when=self._when(p.get("due_at"), lang)))
        if kind in ("permanent_advisor.accepted", "permanent_advisor.declined"):
            return lines + ["", t["request.advisor_footer"], p["advisor_page"], "", t["auto"]]
        footer = "reconfirm.footer" if kind.endswith("reconfirmation_due") else "permanent.footer"
        return lines + ["", t[footer], p["help_page"], "", t["auto"]]

    def _request_lines(self, t: dict, lang: str, p: dict) -> list[str]:
        """The rest of a message about an access request or a pending approval."""
        kind, lines = p["type"], []
        if kind == "approval.pending":
            lines.append(t["approval.what"].format(what=_approval_text(t, p)))
            lines.append(t["approval.answer_by"].format(when=self._when(p.get("answer_by"), lang)))
            return lines + ["", t["approval.footer"], p["help_page"], "", t["auto"]]
        if p.get("reason"):
            lines.append(t["reason"].format(reason=_one_line(p["reason"])))
        if kind == "access_request.created":
            lines.append(t["request.duration"].format(hours=p.get("duration_hours")))
            lines.append(t["request.answer_by"].format(when=self._when(p.get("answer_by"), lang)))
            return lines + ["", t["request.footer"], p["help_page"], "", t["auto"]]
        if kind == "access_request.approved":
            names = ", ".join(_one_line(n) for n in p.get("approved_by") or ())
            if names:
                lines.append(t["approved_by"].format(names=names))
            lines.append(t["expires"].format(when=self._when(p.get("expires_at"), lang)))
        if kind == "access_request.denied" and p.get("note"):
            lines.append(t["request.note"].format(note=_one_line(p["note"])))
        if kind == "access_request.withdrawn":
            return lines + ["", t["footer"], p["help_page"], "", t["auto"]]
        return lines + ["", t["request.advisor_footer"], p["advisor_page"], "", t["auto"]]


TEXTS = {
    "de": {
        "hello": "Guten Tag,",
        "advisor.permanent_accepted": "Permanenter Kundenberater {name} für Mandant {tenant}",
        "advisor.permanent_accepted.body": "{name} ist seit {when} permanenter Kundenberater "
                                           "des Mandanten {tenant}: der Vorschlag des Supports "
                                           "wurde angenommen.",
        "advisor.permanent_lapsed": "Permanenter Zugriff von {name} auf Mandant {tenant} beendet",
        "advisor.permanent_lapsed.body": "der permanente Zugriff von {name} auf den Mandanten "
                                         "{tenant} wurde nicht rechtzeitig bestätigt und ist am "
                                         "{when} beendet worden.",
        "permanent_advisor.proposed": "Vorschlag: {name} als permanenter Kundenberater für "
                                      "Mandant {tenant}",
        "permanent_advisor.proposed.body": "der Support schlägt am {when} {name} als "
                                           "permanenten Kundenberater des Mandanten {tenant} "
                                           "vor. Ohne Ihre Annahme erhält er keinen Zugriff.",
        "permanent_advisor.withdrawn": "Vorschlag für {name} (Mandant {tenant}) zurückgezogen",
        "permanent_advisor.withdrawn.body": "der Support hat am {when} seinen Vorschlag, {name} "
                                            "als permanenten Kundenberater des Mandanten "
                                            "{tenant} einzusetzen, zurückgezogen.",
        "permanent_advisor.expired": "Vorschlag für {name} (Mandant {tenant}) abgelaufen",
        "permanent_advisor.expired.body": "der Vorschlag des Supports, {name} als permanenten "
                                          "Kundenberater des Mandanten {tenant} einzusetzen, "
                                          "blieb unbeantwortet und ist am {when} abgelaufen. "
                                          "Er erhält keinen Zugriff.",
        "permanent_advisor.accepted": "Sie sind permanenter Kundenberater für Mandant {tenant}",
        "permanent_advisor.accepted.body": "der Mandant {tenant} hat am {when} angenommen, dass "
                                           "Sie sein permanenter Kundenberater sind.",
        "permanent_advisor.declined": "Mandant {tenant} lehnt Sie als permanenten "
                                      "Kundenberater ab",
        "permanent_advisor.declined.body": "der Mandant {tenant} hat am {when} abgelehnt, Sie "
                                           "als permanenten Kundenberater einzusetzen.",
        "permanent_advisor.reconfirmation_due": "Bitte bestätigen: permanenter Kundenberater "
                                                "{name} für Mandant {tenant}",
        "permanent_advisor.reconfirmation_due.body": "der permanente Zugriff von {name} auf den "
                                                     "Mandanten {tenant} muss von einem "
                                                     "Mandanten-Administrator erneut bestätigt "
                                                     "werden.",
        "reconfirm.due": "Bestätigen Sie bis {when}; danach endet der Zugriff nach einer "
                         "Nachfrist.",
        "reconfirm.footer": "Bestätigen oder entfernen können Sie den Kundenberater auf der "
                            "Hilfeseite:",
        "permanent.footer": "Annehmen oder ablehnen können Sie den Vorschlag auf der Hilfeseite:",
        "accepted_by": "Angenommen von: {names}",
        "approval.permanent_accept": "einen permanenten Kundenberater annehmen",
        "approval.permanent_direct": "permanente Kundenberater wieder direkt durch den Support "
                                     "zuweisen lassen",
        "advisor.joined_by_request": "Kundenberater {name} hat Zugriff auf Mandant {tenant}",
        "advisor.joined_by_request.body": "der Kundenberater {name} hat am {when} temporären "
                                          "Zugriff auf den Mandanten {tenant} erhalten: seine "
                                          "Zugriffsanfrage wurde genehmigt.",
        "approved_by": "Genehmigt von: {names}",
        "access_request.created": "Zugriffsanfrage von Kundenberater {name} für Mandant {tenant}",
        "access_request.created.body": "der Kundenberater {name} bittet am {when} um "
                                       "temporären Zugriff auf den Mandanten {tenant}.",
        "access_request.withdrawn": "Zugriffsanfrage von Kundenberater {name} zurückgezogen",
        "access_request.withdrawn.body": "der Kundenberater {name} hat seine Zugriffsanfrage "
                                         "für den Mandanten {tenant} am {when} zurückgezogen.",
        "access_request.approved": "Ihre Zugriffsanfrage für Mandant {tenant} ist genehmigt",
        "access_request.approved.body": "Ihre Zugriffsanfrage für den Mandanten {tenant} wurde "
                                        "am {when} genehmigt. Sie können den Mandanten jetzt "
                                        "ohne Zugangscode öffnen.",
        "access_request.denied": "Ihre Zugriffsanfrage für Mandant {tenant} ist abgelehnt",
        "access_request.denied.body": "Ihre Zugriffsanfrage für den Mandanten {tenant} wurde am "
                                      "{when} abgelehnt.",
        "access_request.expired": "Ihre Zugriffsanfrage für Mandant {tenant} ist abgelaufen",
        "access_request.expired.body": "Ihre Zugriffsanfrage für den Mandanten {tenant} wurde "
                                       "nicht rechtzeitig beantwortet und ist am {when} "
                                       "abgelaufen. Sie können erneut anfragen.",
        "approval.pending": "Zweite Genehmigung nötig: Mandant {tenant}",
        "approval.pending.body": "{name} hat am {when} im Mandanten {tenant} etwas genehmigt, "
                                 "das eine zweite Genehmigung durch einen anderen "
                                 "Mandanten-Administrator braucht (Vier-Augen-Prinzip).",
        "approval.what": "Was: {what}",
        "approval.answer_by": "Die erste Genehmigung verfällt am {when}.",
        "approval.access_request": "Zugriffsanfrage genehmigen ({hours} Stunden)",
        "approval.max_age": "Höchstdauer temporärer Zugriffe auf {days} Tage verlängern",
        "approval.four_eyes_off": "Vier-Augen-Prinzip ausschalten",
        "approval.footer": "Genehmigen oder ablehnen können Sie auf der Hilfeseite:",
        "request.duration": "Gewünschte Dauer: {hours} Stunden",
        "request.answer_by": "Unbeantwortet verfällt die Anfrage am {when}.",
        "request.footer": "Genehmigen oder ablehnen können Sie die Anfrage auf der Hilfeseite:",
        "request.note": "Begründung: {note}",
        "request.advisor_footer": "Ihre Mandanten und Anfragen sehen Sie auf Ihrer Seite:",
        "advisor.joined": "Kundenberater {name} ist Mandant {tenant} beigetreten",
        "advisor.joined.body": "der Kundenberater {name} ist am {when} mit dem Zugangscode "
                               "dem Mandanten {tenant} beigetreten (temporärer Zugriff).",
        "advisor.permanent_assigned": "Permanenter Kundenberater {name} für Mandant {tenant}",
        "advisor.permanent_assigned.body": "der Support hat am {when} {name} als permanenten "
                                           "Kundenberater des Mandanten {tenant} zugewiesen.",
        "advisor.left": "Kundenberater {name} hat Mandant {tenant} verlassen",
        "advisor.left.body": "der Kundenberater {name} hat den Mandanten {tenant} am {when} "
                             "verlassen. Sein Zugriff ist beendet.",
        "advisor.removed": "Kundenberater {name} aus Mandant {tenant} entfernt",
        "advisor.removed.body": "der Kundenberater {name} wurde am {when} aus dem Mandanten "
                                "{tenant} entfernt. Sein Zugriff ist beendet.",
        "advisor.expired": "Zugriff von Kundenberater {name} auf Mandant {tenant} abgelaufen",
        "advisor.expired.body": "der temporäre Zugriff des Kundenberaters {name} auf den "
                                "Mandanten {tenant} ist am {when} abgelaufen.",
        "advisor.first_access": "Kundenberater {name} nutzt seinen Zugriff auf Mandant {tenant}",
        "advisor.first_access.body": "der Kundenberater {name} hat am {when} zum ersten Mal "
                                     "mit seinem neuen Zugriff auf den Mandanten {tenant} "
                                     "zugegriffen.",
        "first_access.what": "Erster Zugriff: {action} {area} ({method} {route}) bei {server}.",
        "action.read": "Lesen",
        "action.write": "Ändern",
        "expires": "Der Zugriff endet spätestens am {when}.",
        "reason": "Angegebener Grund: {reason}",
        "by": "Durchgeführt von: {name}",
        "removed_by_tenant": "Entfernt von einem Mandanten-Administrator.",
        "removed_by_support": "Entfernt vom Support.",
        "upstream_account_ended": "Das Benutzerkonto des Kundenberaters wurde deaktiviert.",
        "footer": "Alle Kundenberater mit Zugriff sehen Sie auf der Hilfeseite; dort können "
                  "Sie jeden jederzeit aus dem Mandanten entfernen:",
        "auto": "Diese Nachricht wurde automatisch versandt.",
    },
    "en": {
        "hello": "Hello,",
        "advisor.permanent_accepted": "Permanent advisor {name} for tenant {tenant}",
        "advisor.permanent_accepted.body": "{name} has been a permanent advisor of tenant "
                                           "{tenant} since {when}: support's proposal was "
                                           "accepted.",
        "advisor.permanent_lapsed": "Permanent access of {name} to tenant {tenant} ended",
        "advisor.permanent_lapsed.body": "the permanent access of {name} to tenant {tenant} "
                                         "was not re-confirmed in time and ended on {when}.",
        "permanent_advisor.proposed": "Proposal: {name} as a permanent advisor of tenant "
                                      "{tenant}",
        "permanent_advisor.proposed.body": "on {when}, support proposes {name} as a permanent "
                                           "advisor of tenant {tenant}. Without your "
                                           "acceptance they get no access.",
        "permanent_advisor.withdrawn": "Proposal of {name} for tenant {tenant} withdrawn",
        "permanent_advisor.withdrawn.body": "on {when}, support withdrew its proposal of {name} "
                                            "as a permanent advisor of tenant {tenant}.",
        "permanent_advisor.expired": "Proposal of {name} for tenant {tenant} expired",
        "permanent_advisor.expired.body": "support's proposal of {name} as a permanent advisor "
                                          "of tenant {tenant} was not answered and expired on "
                                          "{when}. They get no access.",
        "permanent_advisor.accepted": "You are a permanent advisor of tenant {tenant}",
        "permanent_advisor.accepted.body": "on {when}, tenant {tenant} accepted you as its "
                                           "permanent advisor.",
        "permanent_advisor.declined": "Tenant {tenant} declined you as a permanent advisor",
        "permanent_advisor.declined.body": "on {when}, tenant {tenant} declined to have you as "
                                           "a permanent advisor.",
        "permanent_advisor.reconfirmation_due": "Please re-confirm: permanent advisor {name} "
                                                "of tenant {tenant}",
        "permanent_advisor.reconfirmation_due.body": "the permanent access of {name} to tenant "
                                                     "{tenant} must be re-confirmed by a "
                                                     "tenant admin.",
        "reconfirm.due": "Please re-confirm by {when}; after a grace period the access ends.",
        "reconfirm.footer": "You can re-confirm or remove the advisor on the help page:",
        "permanent.footer": "You can accept or decline the proposal on the help page:",
        "accepted_by": "Accepted by: {names}",
        "approval.permanent_accept": "accept a permanent advisor",
        "approval.permanent_direct": "let support assign permanent advisors directly again",
        "advisor.joined_by_request": "Advisor {name} has access to tenant {tenant}",
        "advisor.joined_by_request.body": "advisor {name} got temporary access to tenant "
                                          "{tenant} on {when}: their access request was "
                                          "approved.",
        "approved_by": "Approved by: {names}",
        "access_request.created": "Access request of advisor {name} for tenant {tenant}",
        "access_request.created.body": "on {when}, advisor {name} asks for temporary access "
                                       "to tenant {tenant}.",
        "access_request.withdrawn": "Access request of advisor {name} withdrawn",
        "access_request.withdrawn.body": "advisor {name} withdrew their access request for "
                                         "tenant {tenant} on {when}.",
        "access_request.approved": "Your access request for tenant {tenant} is approved",
        "access_request.approved.body": "your access request for tenant {tenant} was approved "
                                        "on {when}. You can now open the tenant without an "
                                        "access code.",
        "access_request.denied": "Your access request for tenant {tenant} is denied",
        "access_request.denied.body": "your access request for tenant {tenant} was denied on "
                                      "{when}.",
        "access_request.expired": "Your access request for tenant {tenant} has expired",
        "access_request.expired.body": "your access request for tenant {tenant} was not "
                                       "answered in time and expired on {when}. You may ask "
                                       "again.",
        "approval.pending": "Second approval needed: tenant {tenant}",
        "approval.pending.body": "on {when}, {name} approved something in tenant {tenant} that "
                                 "needs a second approval by another tenant admin (four "
                                 "eyes).",
        "approval.what": "What: {what}",
        "approval.answer_by": "The first approval lapses on {when}.",
        "approval.access_request": "approve an access request ({hours} hours)",
        "approval.max_age": "lengthen the maximum duration of temporary access to {days} days",
        "approval.four_eyes_off": "turn four eyes off",
        "approval.footer": "You can approve or reject it on the help page:",
        "request.duration": "Requested duration: {hours} hours",
        "request.answer_by": "Unanswered, the request expires on {when}.",
        "request.footer": "You can approve or deny the request on the help page:",
        "request.note": "Reason given: {note}",
        "request.advisor_footer": "Your tenants and requests are on your page:",
        "advisor.joined": "Advisor {name} joined tenant {tenant}",
        "advisor.joined.body": "advisor {name} joined tenant {tenant} with the access code on "
                               "{when} (temporary access).",
        "advisor.permanent_assigned": "Permanent advisor {name} for tenant {tenant}",
        "advisor.permanent_assigned.body": "on {when}, support assigned {name} as a permanent "
                                           "advisor of tenant {tenant}.",
        "advisor.left": "Advisor {name} left tenant {tenant}",
        "advisor.left.body": "advisor {name} left tenant {tenant} on {when}. Their access has "
                             "ended.",
        "advisor.removed": "Advisor {name} removed from tenant {tenant}",
        "advisor.removed.body": "advisor {name} was removed from tenant {tenant} on {when}. "
                                "Their access has ended.",
        "advisor.expired": "Access of advisor {name} to tenant {tenant} expired",
        "advisor.expired.body": "the temporary access of advisor {name} to tenant {tenant} "
                                "expired on {when}.",
        "advisor.first_access": "Advisor {name} is using their access to tenant {tenant}",
        "advisor.first_access.body": "advisor {name} used their new access to tenant {tenant} "
                                     "for the first time on {when}.",
        "first_access.what": "First access: {action} {area} ({method} {route}) at {server}.",
        "action.read": "read",
        "action.write": "change",
        "expires": "The access ends on {when} at the latest.",
        "reason": "Reason given: {reason}",
        "by": "Done by: {name}",
        "removed_by_tenant": "Removed by a tenant admin.",
        "removed_by_support": "Removed by support.",
        "upstream_account_ended": "The advisor's user account was disabled.",
        "footer": "The help page lists every advisor with access; you can remove any of them "
                  "from the tenant at any time:",
        "auto": "This message was sent automatically.",
    },
}


def _approval_text(t: dict, p: dict) -> str:
    """What a pending approval would do, in the message's language."""
    terms = p.get("terms") or {}
    action = p.get("action")
    if action == "access_request.approve":
        return t["approval.access_request"].format(hours=terms.get("duration_hours", "?"))
    if action == "tenant.max_age":
        return t["approval.max_age"].format(days=terms.get("days", "?"))
    if action == "tenant.four_eyes_off":
        return t["approval.four_eyes_off"]
    if action == "permanent_advisor.accept":
        return t["approval.permanent_accept"]
    if action == "tenant.permanent_direct":
        return t["approval.permanent_direct"]
    return _one_line(str(action))


def sign_webhook(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict:
    """Standard Webhooks signature headers for ``body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{signature}"}


def _get(record, key: str):
    """A field of an access record given as a mapping or an object (ORM row, value)."""
    return record.get(key) if isinstance(record, dict) else getattr(record, key, None)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _one_line(text: str) -> str:
    """Names and reasons come from users: no line breaks or control characters in mail."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text)).strip()[:200]


def _header(text: str) -> str:
    return _one_line(text)[:200]


class NotificationWorker(Loop):
    """Background loop delivering the outbox."""

    name = "notifications"

    def __init__(self, notifications: Notifications, interval: float = 1.0):
        super().__init__()
        self.notifications = notifications
        self.interval = interval

    def step(self) -> None:
        self.notifications.work_once()
