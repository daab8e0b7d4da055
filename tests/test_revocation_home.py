"""Revocation has one home (idp_bridge/domain/revocation.py).

For every cause that ends a grant or a token family, through the entry the product uses for
it: the rows are marked, exactly one feed event of the right kind and value is appended, the
cause's audit event is written, and the feed's wake-up runs after the commit — and when the
transaction rolls back, nothing is marked, published or woken. A source scan checks that no
other module marks these rows or appends to the feed.
"""

from __future__ import annotations

import ast
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import CLIENT_ID, TENANT
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain import revocation as revocation_module
from idp_bridge.domain.errors import DomainError
from idp_bridge.domain.revocation import CAUSES
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AuditEvent, Membership, Revocation, TokenFamily

BOB = DEMO_USERS["bob"]["sub"]


class Setup:
    """Bob with a membership of TENANT, one token family and its current refresh token."""

    def __init__(self, bridge, *, guest: bool = False):
        self.bridge = bridge
        s = bridge.services
        if guest:
            self.group_id = self._guest_membership(s)
            body = bridge.exchange("bob").json
        else:
            body = bridge.join("bob")
        self.refresh_token = body["refresh_token"]
        with s.db.read() as session:
            self.membership = session.scalars(select(Membership).where(
                Membership.advisor_subject == BOB, Membership.ended_at.is_(None))).one()
            self.family = session.scalars(select(TokenFamily).where(
                TokenFamily.membership_id == self.membership.id)).one()
            self.last_revocation = session.scalar(select(Revocation.id).order_by(
                Revocation.id.desc()).limit(1)) or 0
            self.last_audit = session.scalar(select(AuditEvent.id).order_by(
                AuditEvent.id.desc()).limit(1)) or 0

    @staticmethod
    def _guest_membership(s) -> str:
        now = utcnow()
        with s.db.transaction() as session:
            group = s.guests.create_group(session, TENANT, "Zahlungsverkehr",
                                          ["payments:read", "payments:write"], by="anna", now=now)
            s.memberships.create(session, s.memberships.tenant(session, TENANT), subject=BOB,
                                 name="bob", kind="guest", created_by=BOB, actor_role="advisor",
                                 now=now, group_id=group.id)
            return group.id


class Accounts:
    def __init__(self, state):
        self.state = state

    def check_account(self, subject):
        return self.state


def end_membership(reason, by, role):
    def act(s, ctx):
        with s.db.transaction() as session:
            m = session.get(Membership, ctx.membership.id)
            s.memberships.end(session, m, by=by, actor_role=role, reason=reason, now=utcnow())
    return act


def expire(s, ctx):
    with s.db.transaction() as session:
        session.get(Membership, ctx.membership.id).expires_at = utcnow() - timedelta(seconds=1)
    s.maintenance.run_once()


def reconfirmation_lapses(s, ctx):
    """The membership made permanent, last confirmed beyond the period and the grace."""
    settings = s.settings
    with s.db.transaction() as session:
        m = session.get(Membership, ctx.membership.id)
        m.kind, m.expires_at = "permanent", None
        m.confirmed_at = utcnow() - timedelta(days=settings.permanent_reconfirm_days
                                              + settings.permanent_grace_days + 1)
    s.maintenance.run_once()


def supersede(s, ctx):
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, TENANT)
        s.memberships.assign_permanent(session, tenant, subject=BOB, name="bob", by="sam",
                                       now=utcnow())


def account_disabled(s, ctx, monkeypatch):
    monkeypatch.setattr(s.tokens, "accounts", Accounts("disabled"))
    s.tokens.refresh(refresh_token=ctx.refresh_token, client_id=CLIENT_ID, scope=None)


def reuse_refresh_token(s, ctx):
    s.tokens.refresh(refresh_token=ctx.refresh_token, client_id=CLIENT_ID, scope=None)
    s.tokens.refresh(refresh_token=ctx.refresh_token, client_id=CLIENT_ID, scope=None)


def revoke_by_client(s, ctx):
    s.tokens.revoke_family(sid=ctx.family.sid, client_id=CLIENT_ID)


def upstream_logout(s, ctx):
    s.tokens.upstream_logout({"iss": s.settings.upstream_issuer, "sub": BOB,
                              "jti": uuid.uuid4().hex})


def narrow_group(s, ctx):
    with s.db.transaction() as session:
        s.guests.update_group(session, TENANT, ctx.group_id, permissions=["payments:read"],
                              by="anna", now=utcnow())


def signing_fails(s, ctx, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("signing failed")
    monkeypatch.setattr(s.issuer, "mint_access_token", broken)
    ctx.bridge.exchange("bob")  # the app answers 500; the family was committed, then closed


#: cause -> (action, guest setup?, audit event checked). ``family`` causes revoke the
#: family of the setup; ``grant`` causes end its membership.
CASES = {
    "removed_by_tenant": (end_membership("removed_by_tenant", "anna", "tenant_admin"), False),
    "left": (end_membership("left", BOB, "advisor"), False),
    "removed_by_support": (end_membership("removed_by_support", "sam", "support_admin"), False),
    "expired": (expire, False),
    "superseded": (supersede, False),
    "upstream_account_ended": (account_disabled, False),
    "reconfirmation_lapsed": (reconfirmation_lapses, False),
    "refresh_token_reuse": (reuse_refresh_token, False),
    "revoked_by_client": (revoke_by_client, False),
    "upstream_logout": (upstream_logout, False),
    "permissions_narrowed": (narrow_group, True),
    "issuance_failed": (signing_fails, False),
}


def test_the_table_covers_every_cause():
    assert set(CASES) == set(CAUSES)


def run(action, s, ctx, monkeypatch):
    try:
        if action in (account_disabled, signing_fails):
            action(s, ctx, monkeypatch)
        else:
            action(s, ctx)
    except (DomainError, RuntimeError):
        pass  # the refusal (or the injected failure) that the cause answers with


def new_rows(s, ctx):
    with s.db.read() as session:
        revocations = session.scalars(select(Revocation).where(
            Revocation.id > ctx.last_revocation)).all()
        audits = session.scalars(select(AuditEvent).where(
            AuditEvent.id > ctx.last_audit)).all()
        family = session.get(TokenFamily, ctx.family.sid)
        membership = session.get(Membership, ctx.membership.id)
        return revocations, audits, family, membership


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_cause_marks_publishes_audits_and_wakes_after_commit(bridge, monkeypatch, reason):
    action, guest = CASES[reason]
    s = bridge.services
    ctx = Setup(bridge, guest=guest)
    woken = []

    def wake_up():
        # Runs after the commit: the feed event is visible to another session by now.
        with s.db.read() as session:
            woken.append(session.scalar(select(Revocation.id).order_by(
                Revocation.id.desc()).limit(1)))
    s.revocations.wake_ups.append(wake_up)

    run(action, s, ctx, monkeypatch)
    if reason == "issuance_failed":  # the family of the failed exchange, not the setup's
        with s.db.read() as session:
            ctx.family = session.scalars(select(TokenFamily).where(
                TokenFamily.membership_id == ctx.membership.id)
                .order_by(TokenFamily.created_at.desc())).first()

    cause = CAUSES[reason]
    revocations, audits, family, membership = new_rows(s, ctx)
    assert [(r.kind, r.reason) for r in revocations] == [(cause.ends, reason)]
    published = revocations[0]
    assert published.subject == BOB and published.tenant_id == TENANT
    if cause.ends == "grant":
        assert published.value == ctx.membership.grant_id
        assert membership.ended_at is not None and membership.end_reason == reason
        assert family.revoked_at is not None and family.revoke_reason == "grant_revoked"
        audit = [a for a in audits if a.event == "membership.ended"]
        assert len(audit) == 1 and audit[0].detail["grant_id"] == ctx.membership.grant_id
    else:
        assert published.value == ctx.family.sid
        assert family.revoked_at is not None and family.revoke_reason == reason
        assert membership.ended_at is None  # a family ends, the membership stays
        if cause.audit_event is None:  # the narrowed group: one group.changed names it
            audit = [a for a in audits if a.event == "group.changed"]
            assert len(audit) == 1 and audit[0].detail["token_families_narrowed"] == 1
        else:
            audit = [a for a in audits if a.event == cause.audit_event]
            assert len(audit) == 1 and audit[0].detail["sid"] == ctx.family.sid
    assert audit[0].detail.get("reason", reason) == reason
    # One wake-up per committing transaction, after the commit.
    assert woken and woken[-1] >= published.id
    # The refresh token of the revoked grant or family gives nothing any more (a narrowed
    # family's unused refresh token moved to its successor: it keeps working, narrower; the
    # failed exchange's refresh token was never handed out, the setup's family lives on).
    monkeypatch.undo()  # signing works again
    refreshed = bridge.token({"grant_type": "refresh_token", "refresh_token": ctx.refresh_token})
    if reason == "permissions_narrowed":
        assert refreshed.status_code == 200 and refreshed.json["scope"] == "payments:read"
    elif reason == "issuance_failed":
        assert refreshed.status_code == 200
    else:
        assert refreshed.status_code == 400 and refreshed.json["error"] == "invalid_grant"


@pytest.mark.parametrize("reason", sorted(CASES))
def test_a_rolled_back_revocation_marks_nothing_and_wakes_nobody(bridge, monkeypatch, reason):
    action, guest = CASES[reason]
    s = bridge.services
    ctx = Setup(bridge, guest=guest)
    woken = []
    s.revocations.wake_ups.append(lambda: woken.append(True))
    publish = revocation_module.Revocations._publish

    def publish_then_fail(self, *args, **kwargs):
        publish(self, *args, **kwargs)
        raise RuntimeError("injected failure after the feed event")
    monkeypatch.setattr(revocation_module.Revocations, "_publish", publish_then_fail)

    run(action, s, ctx, monkeypatch)

    revocations, audits, family, membership = new_rows(s, ctx)
    assert revocations == []
    assert family.revoked_at is None and membership.ended_at is None
    assert not [a for a in audits if a.event in ("membership.ended", "token.family_revoked")]
    assert woken == []


# --- no other module marks these rows or appends to the feed ---

ROOT = Path(__file__).resolve().parent.parent / "idp_bridge"
HOME = ROOT / "domain" / "revocation.py"
#: Columns only a revocation sets (Membership.ended_by/end_reason come with ended_at).
MARKS = {"revoked_at", "revoke_reason", "ended_by", "end_reason"}


def revocation_writes(path: Path) -> list[str]:
    """Places in ``path`` that mark a grant or family revoked or append a feed event."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "Revocation":
                found.append(f"{node.lineno}: Revocation(...)")
            if name == "insert" and node.args and "Revocation" in ast.unparse(node.args[0]):
                found.append(f"{node.lineno}: insert(Revocation)")
            if name == "values" and ast.unparse(node).startswith(
                    ("update(Membership", "update(TokenFamily")) and any(
                    k.arg in ("ended_at", "revoked_at") for k in node.keywords):
                found.append(f"{node.lineno}: update(...) of ended_at/revoked_at")
            # Keywords that write rows: model constructors and update/insert values (a plain
            # value object that reports an end, e.g. a receipt, marks nothing).
            writes_rows = name in ("values", "Membership", "TokenFamily", "update", "insert")
            for keyword in node.keywords if writes_rows else ():
                if keyword.arg in MARKS and not (isinstance(keyword.value, ast.Constant)
                                                 and keyword.value.value is None):
                    found.append(f"{node.lineno}: {keyword.arg}=")
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for element in (target.elts if isinstance(target, ast.Tuple) else [target]):
                    if isinstance(element, ast.Attribute) and element.attr in MARKS:
                        found.append(f"{node.lineno}: .{element.attr} =")
    return found


def test_only_the_revocation_home_marks_revocations():
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        if path == HOME or "migrations" in path.parts:
            continue
        found = revocation_writes(path)
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_the_scan_finds_the_writes_of_the_home():
    found = "\n".join(revocation_writes(HOME))
    for expected in ("insert(Revocation)", "update(...) of ended_at/revoked_at", "end_reason=",
                     "revoke_reason="):
        assert expected in found
