"""The evidence pack of one membership (issue 15 item 5; docs/evidence-pack.md): download it
signed (a compact JWS, ``typ`` ``evidence-pack+jwt``, with a key of ``/audit/jwks``) or as a
printable page (the same content).

Who may: the admins of the membership's tenant, support admins (they assign and remove
permanent advisors of every tenant, and answer for them), and the advisor of the membership
itself (its own pack only: what was recorded about it); the operator on the bridge's host
with ``idp-bridge audit evidence``. Anyone else is refused with 403
before anything is read; an advisor asking for another's membership gets the same 403,
whether or not it exists. A refusal writes nothing.

Each download is an audit event of the tenant's chain (``evidence.downloaded``: who, as
which role, which format, the pack's ``jti``), committed before the pack is read: so the
pack holds its own download (the newest event, not yet under a checkpoint), and every later
pack lists the earlier downloads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from joserfc import jwt

from ..domain import audit
from ..domain.audit_chain import format_time
from ..domain.errors import Forbidden, InvalidInput, NotFound
from ..domain.evidence import FORMAT, MEDIA_TYPE, PACK_TYPE, build
from ..domain.evidence_verify import Report, verify
from ..storage.db import utcnow
from ..storage.models import Membership
from .receipts import Receipts

__all__ = ["EvidencePack", "EvidencePacks", "FORMAT", "FORMATS", "MEDIA_TYPE", "PACK_TYPE"]

#: ``format`` in the download's audit event: the signed file, the printable page.
FORMATS = ("jws", "html")
#: Actor and role of the operator's download (the command line on the bridge's host).
OPERATOR = "operator"


@dataclass(frozen=True)
class EvidencePack:
    #: The signed content (plain JSON values).
    claims: dict
    #: The compact JWS of ``claims``.
    jws: str
    kid: str

    @property
    def id(self) -> str:
        return self.claims["jti"]

    @property
    def membership_id(self) -> str:
        return self.claims["membership"]["id"]


def is_uuid(value) -> bool:
    """Membership ids are UUIDs in their canonical text form."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class EvidencePacks:
    def __init__(self, *, db, authorize, memberships, people, checkpoints):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.people = people
        self.checkpoints = checkpoints
        self.receipts = Receipts()

    @property
    def issuer(self) -> str:
        return self.checkpoints.issuer

    def role(self, caller, tenant_id: str) -> str:
        """The caller's role for packs of ``tenant_id``: ``tenant_admin``, ``support_admin``
        or ``advisor`` (its own memberships only), else :class:`Forbidden`."""
        roles = self.authorize.roles
        if caller is not None and isinstance(tenant_id, str) \
                and roles.check_tenant_admin(caller, tenant_id):
            return "tenant_admin"
        if self.authorize.is_support_admin(caller):
            return "support_admin"
        if self.authorize.is_advisor(caller):
            return "advisor"
        raise Forbidden("only the tenant's admins, support admins and the advisor of the "
                        "membership may download its evidence pack", code="evidence_forbidden")

    def download(self, caller, tenant_id: str, membership_id: str, *, form: str) -> EvidencePack:
        """Audit the download, then build and sign the pack (``form``: :data:`FORMATS`)."""
        assert form in FORMATS
        role = self.role(caller, tenant_id)
        return self._download(caller.subject, role, tenant_id, membership_id, form)

    def download_as_operator(self, tenant_id: str, membership_id: str) -> EvidencePack:
        """The operator's download (``idp-bridge audit evidence``, on the bridge's own host:
        no upstream identity), audited with the actor and role ``operator``."""
        return self._download(OPERATOR, OPERATOR, tenant_id, membership_id, "jws")

    def _download(self, subject: str, role: str, tenant_id: str, membership_id: str,
                  form: str) -> EvidencePack:
        if not is_uuid(membership_id):
            raise InvalidInput("the membership id is not a membership id (a UUID)",
                               code="membership_id_malformed")
        pack_id = str(uuid.uuid4())
        now = utcnow()
        with self.db.transaction() as session:
            self.memberships.tenant(session, tenant_id)
            membership = session.get(Membership, membership_id)
            own = membership is not None and membership.advisor_subject == subject
            if role == "advisor" and not (own and membership.tenant_id == tenant_id):
                raise Forbidden("an advisor may download the evidence pack of its own "
                                "membership only", code="evidence_forbidden")
            if membership is None or membership.tenant_id != tenant_id:
                raise NotFound("no such membership in this tenant", code="unknown_membership")
            audit.record(session, "evidence.downloaded", now, tenant_id=tenant_id,
                         actor=subject, actor_role=role, membership_id=membership.id,
                         pack=pack_id, format=form)
        with self.db.read() as session:
            membership = session.get(Membership, membership_id)
            content = build(session, membership, labels=self.people.labels, now=now,
                            receipts=self.receipts)
            name = None if subject == OPERATOR else \
                self.people.labels(session, [subject]).get(subject)
        claims = {"iss": self.issuer, "iat": int(now.timestamp()), "jti": pack_id,
                  "generated_at": format_time(now), "jwks_uri": f"{self.issuer}/audit/jwks",
                  "generated_by": {"subject": subject, "name": name, "role": role},
                  **content}
        kid, alg, key = self.checkpoints.keys.signing_key()
        token = jwt.encode({"alg": alg, "kid": kid, "typ": PACK_TYPE}, claims, key)
        return EvidencePack(claims=claims, jws=token, kid=kid)

    def check(self, pack: EvidencePack) -> Report:
        """The offline verifier's verdict on ``pack`` with the bridge's published keys (the
        printable page shows it)."""
        return verify(pack.jws, jwks=self.checkpoints.keys.jwks())

    @staticmethod
    def now() -> datetime:
        return utcnow()
