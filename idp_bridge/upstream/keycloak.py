"""Keycloak admin REST adapter (service-account credentials) and the upstream mirror.

The bridge is authoritative: a membership ends at the bridge at once, whatever Keycloak does.
Keycloak's view — the advisor in the group ``/tenants/<tenant>/advisors`` — follows through a
durable outbox (``OutboxItem``) worked by :class:`MirrorWorker` with retries and backoff, and
``idp-bridge keycloak reconcile`` repairs drift in both directions.

Account state: an advisor whose Keycloak account is disabled or deleted loses every
membership, at the next exchange or refresh (checked then; a positive answer is cached for
``cache_seconds``) and otherwise within the maintenance interval (:meth:`sweep_accounts`).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from urllib.parse import quote

import requests
from sqlalchemy import or_, select, update

from ..background import Loop
from ..storage.db import utcnow
from ..storage.models import Membership, OutboxItem, Tenant
from .oidc import UpstreamUnavailable

log = logging.getLogger(__name__)
MIRRORED_KINDS = ("temporary", "permanent")


class KeycloakUnavailable(UpstreamUnavailable):
    """Keycloak's admin API cannot answer; callers refuse rather than grant."""


class UnmirrorableTenant(ValueError):
    """A tenant id that cannot stand as one segment of a Keycloak group path."""


class KeycloakAdmin:
    """The few admin REST calls the bridge needs (``/admin/realms/{realm}``)."""

    def __init__(self, *, base_url: str, realm: str, client_id: str, client_secret: str,
                 timeout: float = 5.0, http: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.realm = realm
        self.client_id = client_id
        self._secret = client_secret
        self.timeout = timeout
        self._http = http or requests.Session()
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_issuer(cls, issuer: str, **kwargs) -> "KeycloakAdmin":
        base, sep, realm = issuer.rstrip("/").rpartition("/realms/")
        if not sep or not realm:
            raise ValueError("the upstream issuer is not a Keycloak realm URL (…/realms/<realm>)")
        return cls(base_url=base, realm=realm, **kwargs)

    def __repr__(self):
        return f"<KeycloakAdmin {self.base_url} realm={self.realm} client={self.client_id}>"

    def _access_token(self) -> str:
        with self._lock:
            if self._token and self._token[1] > time.monotonic() + 10:
                return self._token[0]
            try:
                response = self._http.post(
                    f"{self.base_url}/realms/{self.realm}/protocol/openid-connect/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.client_id, self._secret), timeout=self.timeout)
            except requests.RequestException as exc:
                raise KeycloakUnavailable(f"Keycloak unreachable ({type(exc).__name__})") from None
            if response.status_code != 200:
                raise KeycloakUnavailable(f"Keycloak refused the service account ({response.status_code})")
            body = response.json()
            self._token = (body["access_token"], time.monotonic() + int(body.get("expires_in", 60)))
            return self._token[0]

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        url = f"{self.base_url}/admin/realms/{self.realm}{path}"
        try:
            response = self._http.request(method, url, timeout=self.timeout, headers={
                "Authorization": f"Bearer {self._access_token()}"}, **kwargs)
        except requests.RequestException as exc:
            raise KeycloakUnavailable(f"Keycloak unreachable ({type(exc).__name__})") from None
        if response.status_code >= 500 or response.status_code in (401, 403):
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} to {method} {path}")
        return response

    # --- users ---
    def account_state(self, user_id: str) -> str:
        """``active``, ``disabled`` or ``deleted``."""
        response = self._call("GET", f"/users/{quote(user_id, safe='')}")
        if response.status_code == 404:
            return "deleted"
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} for a user")
        return "active" if response.json().get("enabled", False) else "disabled"

    def user(self, user_id: str) -> dict | None:
        """The user representation (``username``, ``firstName``, ``lastName``, ``email``,
        ``emailVerified``, ``enabled``), or None when Keycloak knows no such user."""
        response = self._call("GET", f"/users/{quote(user_id, safe='')}")
        if response.status_code in (400, 404):
            return None
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} for a user")
        return _json_object(response)

    def search_users(self, text: str, *, limit: int) -> list[dict]:
        """Users whose username, first or last name or e-mail starts with ``text``
        (Keycloak's ``search``; its operators ``*`` and ``"`` are the caller's to remove)."""
        response = self._call("GET", "/users", params={
            "search": text, "max": limit, "first": 0, "briefRepresentation": "true"})
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} to a search")
        body = response.json()
        return [u for u in body if isinstance(u, dict)] if isinstance(body, list) else []

    def realm_roles(self, user_id: str) -> set[str]:
        """The user's effective realm roles (direct, through groups and composites)."""
        response = self._call("GET", f"/users/{quote(user_id, safe='')}/role-mappings/realm/composite",
                              params={"briefRepresentation": "true"})
        if response.status_code == 404:
            return set()
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} for roles")
        return _role_names(response)

    def client_roles(self, user_id: str, client_id: str) -> set[str]:
        """The user's effective roles of the client ``client_id`` (its clientId)."""
        response = self._call("GET", "/clients", params={"clientId": client_id, "max": 2})
        clients = response.json() if response.status_code == 200 else []
        if not isinstance(clients, list) or len(clients) != 1 or not isinstance(clients[0], dict):
            return set()
        internal = str(clients[0].get("id", ""))
        response = self._call(
            "GET", f"/users/{quote(user_id, safe='')}/role-mappings/clients/"
                   f"{quote(internal, safe='')}/composite")
        if response.status_code == 404:
            return set()
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} for roles")
        return _role_names(response)

    # --- groups ---
    def group_id(self, path: str, *, create: bool) -> str | None:
        response = self._call("GET", f"/group-by-path/{quote(path.strip('/'), safe='/')}")
        if response.status_code == 200:
            return response.json()["id"]
        if response.status_code != 404 or not create:
            return None
        parent_path, _, name = path.rstrip("/").rpartition("/")
        parent = self.group_id(parent_path, create=True) if parent_path else None
        if parent:
            created = self._call("POST", f"/groups/{quote(parent, safe='')}/children",
                                 json={"name": name})
        else:
            created = self._call("POST", "/groups", json={"name": name})
        if created.status_code not in (201, 204, 409):
            raise KeycloakUnavailable(f"Keycloak refused to create group {path} ({created.status_code})")
        return self.group_id(path, create=False)

    def group_members(self, group_id: str) -> set[str]:
        members, first = set(), 0
        while True:
            response = self._call("GET", f"/groups/{quote(group_id, safe='')}/members",
                                  params={"first": first, "max": 200, "briefRepresentation": "true"})
            page = response.json() if response.status_code == 200 else []
            members.update(user["id"] for user in page)
            if len(page) < 200:
                return members
            first += 200

    def set_group_membership(self, user_id: str, group_id: str, member: bool) -> None:
        response = self._call("PUT" if member else "DELETE",
                              f"/users/{quote(user_id, safe='')}/groups/{quote(group_id, safe='')}")
        if response.status_code == 404 and not member:
            return  # user or membership already gone: the desired state holds
        if response.status_code not in (204, 200):
            raise KeycloakUnavailable(
                f"Keycloak answered {response.status_code} to a group change")


def _json_object(response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        raise KeycloakUnavailable("Keycloak answered something that is not JSON") from None
    return body if isinstance(body, dict) else None


def _role_names(response) -> set[str]:
    try:
        body = response.json()
    except ValueError:
        raise KeycloakUnavailable("Keycloak answered something that is not JSON") from None
    if not isinstance(body, list):
        return set()
    return {r["name"] for r in body if isinstance(r, dict) and isinstance(r.get("name"), str)}


class KeycloakMirror:
    """Brings Keycloak groups in line with the bridge's memberships."""

    def __init__(self, *, db, admin: KeycloakAdmin, advisor_group: str = "/tenants/{tenant}/advisors",
                 cache_seconds: float = 15.0, stale_ok_seconds: float = 300.0):
        self.db = db
        self.admin = admin
        self.advisor_group = advisor_group
        self.cache_seconds = cache_seconds
        self.stale_ok_seconds = stale_ok_seconds
        self._active_seen: dict[str, float] = {}

    # --- outbox (called inside the domain's transactions) ---
    @staticmethod
    def membership_changed(session, event: str, membership, now) -> None:
        """A membership listener: queue bringing this advisor's group membership in line."""
        if membership.kind in MIRRORED_KINDS:
            session.add(OutboxItem(kind="advisor_group", tenant_id=membership.tenant_id,
                                   subject=membership.advisor_subject, created_at=now,
                                   attempts=0, next_attempt_at=now))

    def desired(self, tenant_id: str, subject: str) -> bool:
        """Whether ``subject`` should be in the tenant's group: it has an active mirrored
        membership of that tenant (looked up by the two columns, in a tenant that exists)."""
        with self.db.read() as session:
            return session.scalars(select(Membership.id).join(
                Tenant, Tenant.id == Membership.tenant_id).where(
                Membership.tenant_id == tenant_id, Membership.advisor_subject == subject,
                Membership.ended_at.is_(None),
                Membership.kind.in_(MIRRORED_KINDS))).first() is not None

    def group_path(self, tenant_id: str) -> str:
        """The tenant's group path. A tenant id is one path segment: one containing ``/``
        would name another group (tenant ids are letters, digits and dashes; this holds
        even for a row written around that rule)."""
        if not tenant_id or "/" in tenant_id or "~" in tenant_id:
            raise UnmirrorableTenant("this tenant id cannot be a Keycloak group name")
        return self.advisor_group.format(tenant=tenant_id)

    def sync(self, tenant_id: str, subject: str) -> None:
        want = self.desired(tenant_id, subject)
        group = self.admin.group_id(self.group_path(tenant_id), create=want)
        if group is not None:
            self.admin.set_group_membership(subject, group, want)

    def work_once(self, limit: int = 50) -> int:
        """Process due outbox items; returns how many were completed."""
        now = utcnow()
        with self.db.read() as session:
            due = session.scalars(select(OutboxItem).where(
                OutboxItem.done_at.is_(None), OutboxItem.next_attempt_at <= now,
                or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until < now))
                .order_by(OutboxItem.id).limit(limit)).all()
        done = 0
        for item in due:
            with self.db.transaction() as session:
                claimed = session.execute(update(OutboxItem).where(
                    OutboxItem.id == item.id, OutboxItem.done_at.is_(None),
                    or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until < now))
                    .values(claimed_until=now + timedelta(seconds=60))).rowcount == 1
            if not claimed:
                continue
            try:
                self.sync(item.tenant_id, item.subject)
            except (KeycloakUnavailable, UnmirrorableTenant) as exc:
                delay = min(300, 2 ** min(item.attempts, 8))
                with self.db.transaction() as session:
                    session.execute(update(OutboxItem).where(OutboxItem.id == item.id).values(
                        attempts=item.attempts + 1, claimed_until=None, last_error=str(exc)[:500],
                        next_attempt_at=utcnow() + timedelta(seconds=delay)))
                continue
            with self.db.transaction() as session:
                session.execute(update(OutboxItem).where(OutboxItem.id == item.id).values(
                    done_at=utcnow(), claimed_until=None, attempts=item.attempts + 1))
            done += 1
        return done

    def reconcile(self) -> list[str]:
        """Repair drift in both directions for every tenant; returns what changed."""
        changes = []
        with self.db.read() as session:
            tenants = [t.id for t in session.scalars(select(Tenant)).all()]
            active = {}
            for m in session.scalars(select(Membership).where(
                    Membership.ended_at.is_(None), Membership.kind.in_(MIRRORED_KINDS))):
                active.setdefault(m.tenant_id, set()).add(m.advisor_subject)
        for tenant_id in tenants:
            want = active.get(tenant_id, set())
            try:
                path = self.group_path(tenant_id)
            except UnmirrorableTenant:
                log.warning("a tenant id cannot be a Keycloak group name; not mirrored")
                continue
            group = self.admin.group_id(path, create=bool(want))
            have = self.admin.group_members(group) if group else set()
            for subject in sorted(want - have):
                self.admin.set_group_membership(subject, group, True)
                changes.append(f"added {subject} to {path}")
            for subject in sorted(have - want):
                self.admin.set_group_membership(subject, group, False)
                changes.append(f"removed {subject} from {path}")
        return changes

    # --- account state ---
    def check_account(self, subject: str) -> str:
        """``active``/``disabled``/``deleted``; fails closed when Keycloak cannot answer and
        no recent positive answer exists."""
        seen = self._active_seen.get(subject)
        now = time.monotonic()
        if seen is not None and now - seen < self.cache_seconds:
            return "active"
        try:
            state = self.admin.account_state(subject)
        except KeycloakUnavailable:
            if seen is not None and now - seen < self.stale_ok_seconds:
                return "active"
            raise
        if state == "active":
            self._active_seen[subject] = now
        else:
            self._active_seen.pop(subject, None)
        return state

    def ended_accounts(self) -> list[str]:
        """Subjects with live memberships whose Keycloak account is disabled or deleted."""
        with self.db.read() as session:
            subjects = session.scalars(select(Membership.advisor_subject).where(
                Membership.ended_at.is_(None)).distinct()).all()
        gone = []
        for subject in subjects:
            self._active_seen.pop(subject, None)  # a sweep always asks
            try:
                if self.check_account(subject) != "active":
                    gone.append(subject)
            except KeycloakUnavailable:
                log.warning("Keycloak unreachable during the account sweep")
                break
        return gone


class MirrorWorker(Loop):
    """Background loop draining the outbox."""

    name = "keycloak-mirror"

    def __init__(self, mirror: KeycloakMirror, interval: float = 1.0):
        super().__init__()
        self.mirror = mirror
        self.interval = interval

    def step(self) -> None:
        self.mirror.work_once()
