"""Plain values the application services return: frozen dataclasses, read before the unit
of work closes, so that no view touches an ORM object (or lazy-loads through one)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class TenantInfo:
    id: str
    name: str | None
    #: The maximum age of temporary access in days that applies to this tenant.
    temporary_max_age_days: int
    #: The configured maximum (a tenant may only shorten it).
    temporary_max_age_days_limit: int
    notification_emails: str | None = None
    #: Tell the admins when an advisor first uses a new access (``advisor.first_access``).
    notify_first_access: bool = False
    #: The ways in: ``code``, ``request`` or ``both``.
    access_modes: str = "both"
    #: Four eyes: certain decisions need a second, different admin.
    four_eyes: bool = False
    #: Permanent advisors: ``direct`` (support assigns) or ``accept`` (the tenant accepts).
    permanent_mode: str = "direct"

    @classmethod
    def of(cls, tenant, limit: int) -> "TenantInfo":
        return cls(id=tenant.id, name=tenant.name,
                   temporary_max_age_days=tenant.temporary_max_age_days or limit,
                   temporary_max_age_days_limit=limit,
                   notification_emails=tenant.notification_emails,
                   notify_first_access=bool(tenant.notify_first_access),
                   access_modes=tenant.access_modes or "both",
                   four_eyes=bool(tenant.four_eyes),
                   permanent_mode=tenant.permanent_mode or "direct")

    @property
    def allows_codes(self) -> bool:
        return self.access_modes in ("code", "both")

    @property
    def allows_requests(self) -> bool:
        return self.access_modes in ("request", "both")


@dataclass(frozen=True)
class MembershipInfo:
    id: str
    tenant_id: str
    advisor_subject: str
    advisor_name: str | None
    kind: str
    created_at: datetime
    created_by: str | None
    reason: str | None
    expires_at: datetime | None
    last_token_at: datetime | None
    group_id: str | None
    #: Filled where the caller needs them (the advisor's list, the support page).
    tenant_name: str | None = None
    group_name: str | None = None
    #: The advisor's e-mail address (else username) as the directory knows it: what tells
    #: a person apart where a name is not enough (the user list).
    advisor_contact: str | None = None
    #: Permanent only: the last confirmation, when the next re-confirmation is due and when
    #: the access lapses unconfirmed (filled by the use cases that know the periods).
    confirmed_at: datetime | None = None
    reconfirm_due_at: datetime | None = None
    lapses_at: datetime | None = None

    @property
    def shown_name(self) -> str:
        return self.advisor_name or self.advisor_subject

    @classmethod
    def of(cls, m, *, tenant_name: str | None = None,
           group_name: str | None = None) -> "MembershipInfo":
        return cls(id=m.id, tenant_id=m.tenant_id, advisor_subject=m.advisor_subject,
                   advisor_name=m.advisor_name, kind=m.kind, created_at=m.created_at,
                   created_by=m.created_by, reason=m.reason, expires_at=m.expires_at,
                   last_token_at=m.last_token_at, group_id=m.group_id,
                   tenant_name=tenant_name, group_name=group_name,
                   confirmed_at=getattr(m, "confirmed_at", None))


@dataclass(frozen=True)
class ApprovalInfo:
    """Four eyes: a first approval awaiting a second admin (or how it ended)."""

    id: str
    tenant_id: str
    action: str
    target: str
    terms: dict
    status: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    #: The directory's names of the first approver and of who decided.
    requested_by_name: str | None = None
    decided_by_name: str | None = None

    @classmethod
    def of(cls, a, names: dict | None = None) -> "ApprovalInfo":
        names = names or {}
        return cls(id=a.id, tenant_id=a.tenant_id, action=a.action, target=a.target,
                   terms=dict(a.terms or {}), status=a.status, requested_by=a.requested_by,
                   requested_at=a.requested_at, expires_at=a.expires_at,
                   decided_by=a.decided_by, decided_at=a.decided_at, note=a.note,
                   requested_by_name=names.get(a.requested_by),
                   decided_by_name=names.get(a.decided_by) if a.decided_by else None)


@dataclass(frozen=True)
class AccessRequestInfo:
    id: str
    tenant_id: str
    advisor_subject: str
    advisor_name: str | None
    reason: str
    duration_hours: int
    status: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    approved_by: tuple[str, ...]
    approved_hours: int | None
    decision_note: str | None
    membership_id: str | None
    tenant_name: str | None = None
    #: Under four eyes: the first approval awaiting a second admin.
    first_approval: ApprovalInfo | None = None
    #: The directory's names of the people who decided (subject -> name).
    names: dict | None = None
    #: The membership's expiry (an approved request).
    access_expires_at: datetime | None = None

    @property
    def shown_name(self) -> str:
        return self.advisor_name or self.advisor_subject

    @property
    def approver_names(self) -> tuple[str, ...]:
        return tuple(self.name_of(s) for s in self.approved_by)

    def name_of(self, subject: str | None) -> str | None:
        if subject is None:
            return None
        return (self.names or {}).get(subject) or subject

    @classmethod
    def of(cls, r, *, tenant_name: str | None = None, first_approval=None,
           names: dict | None = None, access_expires_at=None) -> "AccessRequestInfo":
        names = names or {}
        return cls(id=r.id, tenant_id=r.tenant_id, advisor_subject=r.advisor_subject,
                   advisor_name=names.get(r.advisor_subject) or r.advisor_name,
                   reason=r.reason, duration_hours=r.duration_hours, status=r.status,
                   created_at=r.created_at, expires_at=r.expires_at, decided_at=r.decided_at,
                   decided_by=r.decided_by, approved_by=tuple(r.approved_by or ()),
                   approved_hours=r.approved_hours, decision_note=r.decision_note,
                   membership_id=r.membership_id, tenant_name=tenant_name,
                   first_approval=first_approval, names=dict(names),
                   access_expires_at=access_expires_at)


@dataclass(frozen=True)
class GroupInfo:
    id: str
    tenant_id: str
    name: str
    permissions: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    #: Guests that have the group, open invitations that name it (where counted).
    guests: int = 0
    pending_invitations: int = 0

    @classmethod
    def of(cls, group, *, guests: int = 0, pending_invitations: int = 0) -> "GroupInfo":
        return cls(id=group.id, tenant_id=group.tenant_id, name=group.name,
                   permissions=tuple(group.permissions), created_at=group.created_at,
                   updated_at=group.updated_at, guests=guests,
                   pending_invitations=pending_invitations)


@dataclass(frozen=True)
class InvitationInfo:
    id: str
    tenant_id: str
    group_id: str
    invitee_subject: str | None
    invitee_email: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    tenant_name: str | None = None
    group_name: str | None = None

    #: What the directory calls the invited subject (None: unknown, or invited by e-mail).
    invitee_name: str | None = None

    @property
    def invitee(self) -> str | None:
        return self.invitee_name or self.invitee_subject or self.invitee_email

    @classmethod
    def of(cls, i, *, tenant_name: str | None = None,
           group_name: str | None = None) -> "InvitationInfo":
        return cls(id=i.id, tenant_id=i.tenant_id, group_id=i.group_id,
                   invitee_subject=i.invitee_subject, invitee_email=i.invitee_email,
                   created_by=i.created_by, created_at=i.created_at, expires_at=i.expires_at,
                   tenant_name=tenant_name, group_name=group_name)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    event: str
    actor: str | None
    actor_role: str | None
    membership_id: str | None
    client_id: str | None
    detail: dict

    @classmethod
    def of(cls, row) -> "AuditEntry":
        return cls(id=row.id, at=row.at, event=row.event, actor=row.actor,
                   actor_role=row.actor_role, membership_id=row.membership_id,
                   client_id=row.client_id, detail=dict(row.detail or {}))


def named(session, people, infos) -> list:
    """``infos`` (memberships) with ``advisor_name`` set to what the directory calls each
    advisor (:meth:`~idp_bridge.domain.people.People.labels`) and ``advisor_contact`` to
    their e-mail address or username; where it cannot tell, the name stays what the
    advisor's own sign-in said (or None: pages then show the subject)."""
    subjects = [i.advisor_subject for i in infos]
    known = people.get_many(session, subjects)
    labels = people.labels(session, subjects, known=known)
    named_infos = []
    for i in infos:
        person = known.get(i.advisor_subject)
        if person is not None:
            i = replace(i, advisor_name=labels[i.advisor_subject],
                        advisor_contact=person.email or person.username)
        named_infos.append(i)
    return named_infos


def named_invitations(infos, labels: dict[str, str]) -> list:
    return [replace(i, invitee_name=labels.get(i.invitee_subject)) if i.invitee_subject else i
            for i in infos]


@dataclass(frozen=True)
class ProposalInfo:
    """Support's proposal of a permanent advisor to a tenant, and its answer."""

    id: str
    tenant_id: str
    advisor_subject: str
    advisor_name: str | None
    reason: str | None
    status: str
    proposed_by: str
    proposed_by_name: str | None
    proposed_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decided_by_name: str | None
    accepted_by: tuple[str, ...]
    note: str | None
    membership_id: str | None
    tenant_name: str | None = None
    #: Under four eyes: the first acceptance awaiting a second admin.
    first_approval: "ApprovalInfo | None" = None
    #: A pending proposal's expiry when unanswered.
    expires_at: datetime | None = None

    @classmethod
    def of(cls, p, names: dict | None = None, *, tenant_name: str | None = None,
           first_approval=None, expires_at: datetime | None = None) -> "ProposalInfo":
        names = names or {}
        return cls(id=p.id, tenant_id=p.tenant_id, advisor_subject=p.advisor_subject,
                   advisor_name=names.get(p.advisor_subject) or p.advisor_name,
                   reason=p.reason, status=p.status, proposed_by=p.proposed_by,
                   proposed_by_name=names.get(p.proposed_by), proposed_at=p.proposed_at,
                   decided_at=p.decided_at, decided_by=p.decided_by,
                   decided_by_name=names.get(p.decided_by) if p.decided_by else None,
                   accepted_by=tuple(p.accepted_by or ()), note=p.decision_note,
                   membership_id=p.membership_id, tenant_name=tenant_name,
                   first_approval=first_approval,
                   expires_at=expires_at if p.status == "pending" else None)
