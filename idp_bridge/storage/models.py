"""Tables of the bridge. Rows are marked, never deleted (STYLE.md: revoke by marking)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Per-tenant override of the maximum age of temporary memberships.
    temporary_max_age_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    #: Where the tenant admins want to be told about advisors (comma-separated addresses).
    notification_emails: Mapped[str | None] = mapped_column(String(1000))
    #: Tell the tenant admins (e-mail, webhook) when an advisor first uses a new access: the
    #: first access record of a grant (notification ``advisor.first_access``).
    notify_first_access: Mapped[bool] = mapped_column(Boolean, default=False,
                                                      server_default=text("false"))
    #: Which ways in the tenant allows: ``code`` (access codes), ``request`` (access
    #: requests its admins approve) or ``both`` (domain/access_requests.py).
    access_modes: Mapped[str] = mapped_column(String(10), default="both",
                                              server_default=text("'both'"))
    #: Four eyes: certain decisions need a second, different tenant admin
    #: (domain/approvals.py).
    four_eyes: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    #: How a permanent advisor comes in: ``direct`` (support assigns) or ``accept`` (support
    #: proposes, a tenant admin accepts; domain/permanent_consent.py).
    permanent_mode: Mapped[str] = mapped_column(String(10), default="direct",
                                                server_default=text("'direct'"))


class Client(Base):
    """A confidential OAuth client. Secrets are high-entropy: stored as SHA-256, never clear."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    #: client_secret_basic | client_secret_post | private_key_jwt
    auth_method: Mapped[str] = mapped_column(String(40))
    #: Public keys for private_key_jwt (a JWK set).
    jwks: Mapped[dict | None] = mapped_column(JSON)
    #: Space-separated capabilities: exchange, introspect, receiver.
    roles: Mapped[str] = mapped_column(String(200), default="exchange")
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    #: RFC 9449: token requests of this client without a DPoP proof are refused.
    dpop_required: Mapped[bool] = mapped_column(Boolean, default=False,
                                                server_default=text("false"))


class AccessCodeState(Base):
    """Rotation state of a tenant's access code. The code itself is derived, never stored."""

    __tablename__ = "access_code_states"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
    issued_at: Mapped[datetime]
    #: Wrong guesses counted against ``failures_counter`` (the counter they were made for).
    failures: Mapped[int] = mapped_column(Integer, default=0)
    failures_counter: Mapped[int] = mapped_column(BigInteger, default=0)


class CodeGuesser(Base):
    """An advisor who entered a wrong access code recently. The row is locked while that
    advisor's guess is checked, so concurrent guesses (any process) are counted one by one."""

    __tablename__ = "code_guessers"

    advisor_subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_guess_at: Mapped[datetime] = mapped_column(index=True)


class CodeGuess(Base):
    """One wrong access-code guess: by whom, for which tenant and which of its codes
    (``code_counter``), when. Counted in the database, so every process shares the limits."""

    __tablename__ = "code_guesses"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    advisor_subject: Mapped[str] = mapped_column(String(255))
    tenant_id: Mapped[str] = mapped_column(String(64))
    code_counter: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (
        Index("ix_code_guesses_advisor_tenant_counter", "advisor_subject", "tenant_id",
              "code_counter"),
        Index("ix_code_guesses_advisor_at", "advisor_subject", "at"),
    )


class Membership(Base):
    """An advisor's access to a tenant (temporary, permanent or guest) and its grant."""

    __tablename__ = "memberships"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    advisor_subject: Mapped[str] = mapped_column(String(255), index=True)
    advisor_name: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20))
    grant_id: Mapped[str] = mapped_column(String(36), unique=True)
    reason: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None]
    last_token_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(255))
    end_reason: Mapped[str | None] = mapped_column(String(40))
    #: Guests only: the tenant's user group whose permissions apply.
    group_id: Mapped[str | None] = mapped_column(
        ForeignKey("user_groups.id", name="fk_memberships_group_id_user_groups"), index=True)
    #: Permanent only: when the tenant last confirmed it (its creation, a re-confirmation);
    #: re-confirmation is due a configured number of days later (domain/permanent_consent.py).
    confirmed_at: Mapped[datetime | None] = mapped_column(index=True)
    #: Permanent only: when the tenant's admins were asked to re-confirm it (once per due).
    reconfirm_asked_at: Mapped[datetime | None]

    #: One active membership per advisor and tenant: a partial unique index on the two
    #: columns (never a key joined from them: ``"a|b" + "c"`` and ``"a" + "b|c"`` collide).
    __table_args__ = (
        Index("uq_memberships_active_tenant_subject", "tenant_id", "advisor_subject",
              unique=True, sqlite_where=text("ended_at IS NULL"),
              postgresql_where=text("ended_at IS NULL")),
        # An advisor's newest membership in the tenant (the name the access log shows).
        Index("ix_memberships_tenant_subject_created", "tenant_id", "advisor_subject",
              "created_at"),
    )


class TokenFamily(Base):
    """Tokens born from one token exchange; refreshes stay in the family (``sid``)."""

    __tablename__ = "token_families"

    sid: Mapped[str] = mapped_column(String(36), primary_key=True)
    membership_id: Mapped[str] = mapped_column(ForeignKey("memberships.id"), index=True)
    grant_id: Mapped[str] = mapped_column(String(36), index=True)
    client_id: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(255))
    tenant_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(String(255))
    upstream_issuer: Mapped[str] = mapped_column(String(500))
    #: The upstream session (``sid`` of the subject token) for back-channel logout.
    upstream_sid: Mapped[str | None] = mapped_column(String(255), index=True)
    auth_time: Mapped[int | None] = mapped_column(BigInteger)
    acr: Mapped[str | None] = mapped_column(String(255))
    amr: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoke_reason: Mapped[str | None] = mapped_column(String(40))
    #: RFC 9449: the thumbprint (RFC 7638) of the DPoP key the family is bound to; its
    #: refresh tokens work only with proofs of that key.
    dpop_jkt: Mapped[str | None] = mapped_column(String(43))


class RefreshToken(Base):
    """Opaque, rotating refresh tokens, stored as SHA-256 of the token."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sid: Mapped[str] = mapped_column(ForeignKey("token_families.sid"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    #: Set when the token was exchanged for its successor; a second use is replay.
    rotated_at: Mapped[datetime | None]


class Revocation(Base):
    """Revoked grants and token families, in order: the source of the revocation feed."""

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    #: grant | family
    kind: Mapped[str] = mapped_column(String(10))
    value: Mapped[str] = mapped_column(String(36))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_revocations_kind_value", "kind", "value"),
                      # The feed finds the oldest relevant revocation by time (ssf/streams.py).
                      Index("ix_revocations_created_at", "created_at"))


class SigningKey(Base):
    """Our token-signing keys. Private keys are encrypted at rest (Fernet)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime]
    #: Set when a newer key took over; published until its last tokens expired.
    retired_at: Mapped[datetime | None]
    #: ``token`` (access tokens, /jwks) or ``set:<alg>`` (the revocation feed's Security
    #: Event Tokens, /ssf/jwks): each purpose is a key ring of its own.
    purpose: Mapped[str] = mapped_column(String(20), server_default=text("'token'"))


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str | None] = mapped_column(String(255))
    actor_role: Mapped[str | None] = mapped_column(String(30))
    membership_id: Mapped[str | None] = mapped_column(String(36))
    client_id: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict | None] = mapped_column(JSON)
    #: The hash chain (domain/audit_chain.py, docs/audit-chain.md): ``tenant:<id>`` or
    #: ``system``; the position in it (1, 2, … without gaps); the SHA-256 (hex) over the
    #: event's fields and the previous event's hash.
    chain: Mapped[str] = mapped_column(String(80))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_events_tenant_id_id", "tenant_id", "id"),
                      Index("uq_audit_events_chain_seq", "chain", "seq", unique=True))


class AuditChainHead(Base):
    """The last position and hash of each audit chain; its row is locked by the transaction
    appending to the chain (no two writers get one position)."""

    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(String(80), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement of a chain's head at a time (domain/audit_checkpoints.py): the
    compact JWS (``typ`` audit-checkpoint+jwt) with the claims repeated in columns."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(80))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime]
    kid: Mapped[str] = mapped_column(String(64))
    jws: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("uq_audit_checkpoints_chain_seq", "chain", "seq", unique=True),)


class SeenJti(Base):
    """One-time JWT identifiers (client assertions, logout tokens) until they expire."""

    __tablename__ = "seen_jtis"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of issuer + jti
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SsfStream(Base):
    """A receiver's event stream (Shared Signals Framework).

    Each receiver process opens its own stream (a restarted process has an empty revocation
    set and must get every event still relevant); idle streams are removed."""

    __tablename__ = "ssf_streams"

    stream_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    #: urn:ietf:rfc:8936 (poll) or urn:ietf:rfc:8935 (push)
    delivery_method: Mapped[str] = mapped_column(String(40))
    endpoint_url: Mapped[str | None] = mapped_column(String(2000))
    #: Push only: the Authorization header to send, encrypted (Fernet) like signing keys.
    authorization_header: Mapped[bytes | None] = mapped_column(LargeBinary)
    events_requested: Mapped[list] = mapped_column(JSON)
    #: Events up to this revocation id happened before the stream and are not delivered.
    start_after_id: Mapped[int] = mapped_column(BigInteger)
    verification_state: Mapped[str | None] = mapped_column(String(500))
    verification_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The highest revocation id delivered on this stream (None: none yet); acknowledgements
    #: of higher ids are ignored.
    delivered_through_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    #: Receiver-supplied (SSF 1.0 section 8.1.1).
    description: Mapped[str | None] = mapped_column(String(500))
    #: The algorithm its SETs are signed with (RS256: CAEP interoperability profile; ES256).
    set_signing_alg: Mapped[str] = mapped_column(String(10), server_default=text("'ES256'"))
    #: enabled | paused (events held) | disabled (events dropped), SSF 1.0 section 8.1.2.
    status: Mapped[str] = mapped_column(String(10), server_default=text("'enabled'"))
    status_reason: Mapped[str | None] = mapped_column(String(500))
    #: When the receiver last asked for a verification event (min_verification_interval).
    verification_requested_at: Mapped[datetime | None]
    #: A Stream Updated event (SSF 1.0 section 8.1.5) not yet acknowledged: its id and status.
    update_id: Mapped[int | None] = mapped_column(BigInteger)
    update_status: Mapped[str | None] = mapped_column(String(10))
    #: Subjects the receiver removed (default_subjects ALL): their events are not sent.
    removed_subjects: Mapped[list | None] = mapped_column(JSON)


class SsfAck(Base):
    """An event a stream acknowledged (or a push receiver accepted); never delivered again."""

    __tablename__ = "ssf_acks"

    stream_id: Mapped[str] = mapped_column(ForeignKey("ssf_streams.stream_id", ondelete="CASCADE"),
                                           primary_key=True)
    revocation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    acked_at: Mapped[datetime] = mapped_column(index=True)


class RevocationReceipt(Base):
    """A receiver stream that was due to receive a revocation's event, and what it did with
    it: written in the revocation's own transaction, acknowledged once, and kept as long as
    the revocation (the feed's acknowledgements and idle streams are pruned, receipts not)."""

    __tablename__ = "revocation_receipts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    revocation_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("revocations.id", ondelete="CASCADE"))
    stream_id: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[str] = mapped_column(String(100))
    #: push | poll
    delivery: Mapped[str] = mapped_column(String(10))
    #: The stream's description when the revocation happened.
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    #: None (open) | acknowledged | subject_removed | stream_deleted | receiver_error
    outcome: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (UniqueConstraint("revocation_id", "stream_id",
                                       name="uq_revocation_receipts_revocation_stream"),
                      Index("ix_revocation_receipts_stream_id", "stream_id"))


class OutboxItem(Base):
    """Work for the upstream IdP, written in the same transaction as the change it mirrors.

    Items name *what to bring in line* (an advisor's group membership in a tenant), not an
    operation: the worker reads the desired state from the database when it runs, so items
    are idempotent and their order does not matter.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    #: A worker holds the item until then (several processes may run workers).
    claimed_until: Mapped[datetime | None]
    done_at: Mapped[datetime | None] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(String(500))


class NotificationItem(Base):
    """A message to the tenant admins (e-mail or webhook), written in the same transaction as
    the membership change it reports and delivered by a background worker with retries."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    #: email | webhook
    channel: Mapped[str] = mapped_column(String(10))
    event: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str] = mapped_column(String(64))
    #: What to say (event facts, e-mail recipients): rendered when delivered.
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    claimed_until: Mapped[datetime | None]
    done_at: Mapped[datetime | None] = mapped_column(index=True)
    #: Set when delivery was given up after the last attempt.
    failed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))


class UserGroup(Base):
    """A tenant's user group (Benutzergruppe): permissions from the catalog for guests."""

    __tablename__ = "user_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    permissions: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    #: The name as compared (NFKC, case-folded): unique per tenant among existing groups.
    name_key: Mapped[str] = mapped_column(String(300))

    __table_args__ = (
        Index("uq_user_groups_live_tenant_name", "tenant_id", "name_key", unique=True,
              sqlite_where=text("deleted_at IS NULL"),
              postgresql_where=text("deleted_at IS NULL")),
    )


class Invitation(Base):
    """A tenant admin's invitation of an advisor as a guest with a user group."""

    __tablename__ = "invitations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("user_groups.id"))
    invitee_subject: Mapped[str | None] = mapped_column(String(255), index=True)
    invitee_email: Mapped[str | None] = mapped_column(String(320), index=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    membership_id: Mapped[str | None] = mapped_column(String(36))


class EndedUpstreamSession(Base):
    """Upstream sessions (or all sessions of a subject) that ended by back-channel logout:
    subject tokens from them must not start new token families (their JWTs stay valid
    until they expire, so the bridge remembers the ending longer than they live)."""

    __tablename__ = "ended_upstream_sessions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of kind, iss, id
    ended_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class WebSession(Base):
    """A signed-in browser of the web pages (server-side: the cookie holds only a random
    handle). Ended by sign-out, by the upstream's back-channel logout (by ``upstream_sid``
    or for the whole subject) or by expiry; every page request reads the row."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the handle
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255), index=True)
    upstream_sid: Mapped[str | None] = mapped_column(String(255), index=True)
    #: The kept claims of the sign-in (profile, acr/amr, roles and groups): what the pages use.
    claims: Mapped[dict] = mapped_column(JSON)
    #: The upstream ID token (for RP-initiated logout's ``id_token_hint``), Fernet-encrypted
    #: with a key derived from the handle: neither the database nor the cookie alone opens it.
    id_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(40))


class Person(Base):
    """Someone of the upstream identity provider as the bridge last learnt of them: at a
    sign-in (their token's claims) or from the directory (Keycloak's admin API). Pages, the
    access log, e-mails and webhooks name people from here, never from text a client sent."""

    __tablename__ = "people"

    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    #: False once the directory said the account is disabled (a sign-in proves it enabled).
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Roles as last seen (sign-in token or directory): who the fallback directory offers.
    advisor: Mapped[bool] = mapped_column(Boolean, default=False)
    support_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    #: ``sign_in`` or ``directory``: where the current values came from.
    source: Mapped[str] = mapped_column(String(20))
    #: The name as compared (NFKC, case-folded): two people sharing it are told apart.
    name_key: Mapped[str | None] = mapped_column(String(300), index=True)
    #: Name, username and e-mail as compared, for the fallback directory's search.
    search_key: Mapped[str] = mapped_column(String(1000))
    last_sign_in_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class AccessRecord(Base):
    """One request a resource server authorised with an advisor or guest token, as its
    receiver client reported it (``POST /access-records``). ``record_id`` is the resource
    server's idempotency key: unique per receiver client, so a batch sent twice is stored
    once. Removed by the retention sweep only (``IDP_BRIDGE_ACCESS_RECORD_RETENTION_DAYS``)."""

    __tablename__ = "access_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(100))
    record_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64))
    membership_id: Mapped[str] = mapped_column(String(36))
    grant_id: Mapped[str] = mapped_column(String(36))
    sid: Mapped[str | None] = mapped_column(String(36))
    subject: Mapped[str] = mapped_column(String(255))
    #: A functional area of ``scopes.catalog`` and ``read`` or ``write``.
    area: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(10))
    method: Mapped[str] = mapped_column(String(10))
    #: The route template (``/tenants/<tenant>/ebics``), never a raw path, query or body.
    route: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    received_at: Mapped[datetime]

    __table_args__ = (
        Index("uq_access_records_client_record", "client_id", "record_id", unique=True),
        # Every tenant question in one index, read without the table: the summary (groups
        # per advisor, area, action and status over a time range), "active now", and the
        # drill-down newest first (the table is read only for the page's 50 rows). With
        # 10 million records the summary read rows scattered over the whole table before.
        Index("ix_access_records_tenant_at_cover", "tenant_id", "at", "membership_id",
              "subject", "area", "action", "status"),
        # A group's drill-down (an advisor's access, an area and an action), newest first.
        Index("ix_access_records_tenant_membership_group", "tenant_id", "membership_id",
              "area", "action", "at"),
        # The retention sweep deletes by time across tenants.
        Index("ix_access_records_at", "at"),
    )


class AccessRecordGroup(Base):
    """The access log's group of one advisor's access (membership) in one area with one
    action ("bob read EBICS — 3 requests, 10:42–10:44"): how many of the tenant's stored
    records it has, the first and the last. Kept with the records (issue 14 item 6, issue 16
    item 5): the ingest adds the records it stored in the same transaction (a duplicate is
    not stored, so not counted), the retention sweep takes away those it deletes; so the
    figures always equal a count of the stored records, and the access log reads the newest
    groups without counting the tenant's history."""

    __tablename__ = "access_record_groups"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    membership_id: Mapped[str] = mapped_column(String(36))
    area: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(10))
    #: The membership's advisor (the records' subject).
    subject: Mapped[str] = mapped_column(String(255))
    count: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]

    __table_args__ = (
        Index("uq_access_record_groups_key", "tenant_id", "membership_id", "area", "action",
              unique=True),
        # The newest groups of a tenant first.
        Index("ix_access_record_groups_tenant_last", "tenant_id", "last_at"),
    )


class AccessRecordGroupStatus(Base):
    """How many of a group's stored records a resource server answered with ``status``;
    keyed by the group's own key (not its id), so the ingest writes both tables without
    reading anything back."""

    __tablename__ = "access_record_group_statuses"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    membership_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    area: Mapped[str] = mapped_column(String(40), primary_key=True)
    action: Mapped[str] = mapped_column(String(10), primary_key=True)
    status: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(BigInteger)


class AccessRequest(Base):
    """An advisor's request for temporary access to a tenant, answered by a tenant admin
    (approved: a temporary membership; denied with a note) or expiring unanswered. One
    pending request per advisor and tenant (a partial unique index)."""

    __tablename__ = "access_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    advisor_subject: Mapped[str] = mapped_column(String(255), index=True)
    #: What the advisor's own sign-in called it (pages name people from the directory).
    advisor_name: Mapped[str | None] = mapped_column(String(255))
    #: The reason or ticket (required for a request).
    reason: Mapped[str] = mapped_column(String(2000))
    duration_hours: Mapped[int] = mapped_column(Integer)
    #: pending | approved | denied | expired | withdrawn
    status: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime]
    #: Unanswered until then, the request expires.
    expires_at: Mapped[datetime] = mapped_column(index=True)
    decided_at: Mapped[datetime | None]
    #: The admin who denied it, or the one whose approval made it take effect.
    decided_by: Mapped[str | None] = mapped_column(String(255))
    #: Every admin who approved it (two under four eyes), in order.
    approved_by: Mapped[list | None] = mapped_column(JSON)
    approved_hours: Mapped[int | None] = mapped_column(Integer)
    decision_note: Mapped[str | None] = mapped_column(String(2000))
    #: The temporary membership the approval created.
    membership_id: Mapped[str | None] = mapped_column(String(36), index=True)

    __table_args__ = (
        Index("uq_access_requests_pending_tenant_subject", "tenant_id", "advisor_subject",
              unique=True, sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
    )


class Approval(Base):
    """Four eyes: the first tenant admin's approval of a decision that needs a second,
    different one (``action`` on ``target`` with ``terms``), pending until a second admin
    approves it (completed), an admin rejects it, its subject ends (closed) or it expires.
    One pending approval per tenant, action and target (a partial unique index)."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(100))
    terms: Mapped[dict] = mapped_column(JSON)
    #: pending | completed | rejected | closed | expired
    status: Mapped[str] = mapped_column(String(12))
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decided_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(String(2000))

    __table_args__ = (
        Index("uq_approvals_pending_tenant_action_target", "tenant_id", "action", "target",
              unique=True, sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
    )


class PermanentProposal(Base):
    """Support proposes a permanent advisor to a tenant whose admins accept them (setting
    ``permanent_mode = accept``): pending until accepted (under four eyes by two admins),
    declined with a note, or withdrawn by support. One pending per tenant and advisor."""

    __tablename__ = "permanent_proposals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    advisor_subject: Mapped[str] = mapped_column(String(255), index=True)
    #: The directory's name of the advisor when proposed.
    advisor_name: Mapped[str | None] = mapped_column(String(255))
    #: Why support proposes them (shown to the tenant's admins).
    reason: Mapped[str | None] = mapped_column(String(2000))
    #: pending | accepted | declined | withdrawn
    status: Mapped[str] = mapped_column(String(12))
    proposed_by: Mapped[str] = mapped_column(String(255))
    proposed_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(255))
    #: The admins whose acceptance made it take effect (two under four eyes), in order.
    accepted_by: Mapped[list | None] = mapped_column(JSON)
    decision_note: Mapped[str | None] = mapped_column(String(2000))
    #: The permanent membership the acceptance created.
    membership_id: Mapped[str | None] = mapped_column(String(36), index=True)

    __table_args__ = (
        Index("uq_permanent_proposals_pending_tenant_subject", "tenant_id", "advisor_subject",
              unique=True, sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
    )
