"""``create_app``: the one place that wires settings, storage, domain and blueprints."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

from . import surfaces
from .api.common import problem as api_problem
from .domain.access_codes import AccessCodes
from .domain.audit_checkpoints import CheckpointKeys, Checkpoints
from .domain.access_requests import AccessRequests
from .domain.approvals import FourEyes
from .domain.permanent_consent import PermanentConsent
from .domain.errors import DomainError
from .domain.exchange import AdvisorExchange, GuessLimiter
from .domain.guests import Guests
from .domain.keys import KeyDecryptionFailed, KeyRing
from .domain.memberships import Memberships
from .domain.people import People
from .domain.revocation import Revocations
from .domain.tenant_settings import TenantSettings
from .domain.tokens import TokenIssuer
from .domain.upstream_sessions import session_has_ended
from .domain.web_sessions import WebSessions
from .events import DatabaseWakeups, RedisFanout, RevocationNotifier
from . import ops
from .request_guard import check_request
from .http_errors import json_error, log_error, status_of
from .maintenance import Maintenance
from .notifications import Notifications, NotificationWorker, SmtpConfig, WebhookConfig
from .oauth.rfc7009 import BridgeRevocationEndpoint
from .oauth.rfc7662 import BridgeIntrospectionEndpoint
from .oauth.rfc8414 import server_metadata
from .oauth.rfc8693 import TokenExchangeGrant
from .oauth.refresh_token import RefreshTokenGrant
from .oauth.rfc9449 import TokenEndpointDPoP
from .oauth.client_credentials import ClientCredentialsGrant
from .oauth.server import FAPI2_LEEWAY, BridgeAuthorizationServer
from .services import SignIns, UseCases, build_use_cases
from .services.tokens import TokenService
from .settings import Settings
from .ssf.authorization import ManagementTokens
from .ssf.egress import PushPolicy
from .ssf.rfc8935 import Pusher
from .ssf.set_keys import SetKeys
from .ssf.streams import Transmitter
from .storage.db import Database, StorageUnavailable, utcnow
from .upstream import RoleMapper, SubjectTokenValidator, UpstreamUnavailable
from .upstream.directory import KeycloakDirectory, SignInDirectory
from .upstream.keycloak import KeycloakAdmin, KeycloakMirror, MirrorWorker
from .web import auth as web_auth
from .web import pages as web_pages

log = logging.getLogger("idp_bridge")


@dataclass
class Services:
    """Everything a request handler needs, built once per app."""

    settings: Settings
    db: Database
    keys: KeyRing
    codes: AccessCodes
    memberships: Memberships
    issuer: TokenIssuer
    validator: SubjectTokenValidator
    roles: RoleMapper
    exchange: AdvisorExchange
    server: BridgeAuthorizationServer
    metadata: dict
    notifier: RevocationNotifier
    transmitter: Transmitter
    pusher: Pusher
    maintenance: Maintenance
    guests: Guests
    mirror: KeycloakMirror | None
    mirror_worker: MirrorWorker | None
    fanout: RedisFanout | None
    notifications: Notifications
    notification_worker: NotificationWorker
    #: Server-side sessions of the web pages (the cookie holds only their handle).
    web_sessions: WebSessions | None = None
    #: The token use cases: exchange, refresh, redeem, open a tenant, RFC 7009, logout.
    tokens: TokenService | None = None
    #: The one home of revocation (grants and token families, feed, audit, wake-ups).
    revocations: Revocations | None = None
    #: The management use cases (tenant admins, advisors, support, groups), for the API,
    #: the pages and the CLI.
    use_cases: UseCases | None = None
    #: The revocation feed's SET keys (/ssf/jwks) and its management API's access tokens.
    set_keys: SetKeys | None = None
    management_tokens: ManagementTokens | None = None
    #: The audit chains' signed checkpoints and their keys (/audit/jwks).
    checkpoints: Checkpoints | None = None
    #: Permanent advisors with the tenant's consent, re-confirmation.
    permanent_consent: PermanentConsent | None = None
    #: Revocations committed by other processes wake this one's waiters (events.py).
    database_wakeups: DatabaseWakeups | None = None

    def start_background(self) -> None:
        """Threads of a serving process (not of tests): push delivery, maintenance, the
        tenant admins' notifications and, with Keycloak, the group mirror."""
        self.pusher.start()
        self.maintenance.start()
        if self.notifications.enabled:
            self.notification_worker.start()
        if self.mirror_worker is not None:
            self.mirror_worker.start()
        if self.fanout is not None:
            self.fanout.start()
        if self.database_wakeups is not None:
            self.database_wakeups.start()

    def stop_background(self) -> None:
        self.pusher.stop()
        self.maintenance.stop()
        self.notification_worker.stop()
        if self.mirror_worker is not None:
            self.mirror_worker.stop()
        if self.fanout is not None:
            self.fanout.stop()
        if self.database_wakeups is not None:
            self.database_wakeups.stop()


def derive_secret(secret_key: str, purpose: str) -> bytes:
    """A separate 256-bit key per purpose from the one configured secret (HKDF, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"idp-bridge {purpose}".encode()).derive(secret_key.encode())


def create_app(settings: Settings | None = None, *, overrides: dict | None = None,
               database: Database | None = None) -> Flask:
    settings = settings or Settings.load(overrides)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=derive_secret(settings.secret_key, "flask session"),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.issuer.startswith("https://"),
        # __Host- cookies are only accepted over https, host-only, path /.
        SESSION_COOKIE_NAME="__Host-idp-bridge" if settings.issuer.startswith("https://")
        else "idp-bridge",
        PERMANENT_SESSION_LIFETIME=settings.web_session_hours * 3600,
        WTF_CSRF_TIME_LIMIT=None,  # bound to the session, which expires itself
        TESTING=settings.mode == "test",
    )
    app.json.sort_keys = False
    app.session_interface = PagesOnlySessions()
    db = database or Database(settings.database_url)
    keys = KeyRing(db, settings.key_encryption_key, settings.signing_alg,
                   settings.access_token_lifetime)
    with db.transaction() as session:
        keys.ensure(session, utcnow())

    # No per-request rate limiter: the one limit that matters, wrong access-code guesses, is
    # counted in the database by the domain (GuessLimiter), shared by every process.
    codes = AccessCodes(derive_secret(settings.secret_key, "access codes"),
                        settings.code_ttl_seconds)
    guesses = GuessLimiter(per_code=settings.code_max_failures,
                           window_count=settings.code_guess_window[0],
                           window_seconds=settings.code_guess_window[1],
                           code_ttl_seconds=settings.code_ttl_seconds)
    mirror = None
    people = People()
    directory = SignInDirectory(db=db, people=people)
    if settings.keycloak_admin:
        keycloak = KeycloakAdmin.from_issuer(
            settings.upstream_issuer, client_id=settings.keycloak_client_id,
            client_secret=settings.keycloak_client_secret,
            timeout=settings.upstream_timeout_seconds)
        mirror = KeycloakMirror(db=db, advisor_group=settings.keycloak_advisor_group,
                                cache_seconds=settings.keycloak_account_cache_seconds,
                                admin=keycloak)
        directory = KeycloakDirectory(keycloak, roles_claim=settings.roles_claim,
                                      advisor_role=settings.advisor_role,
                                      support_admin_role=settings.support_admin_role)
    notifications = Notifications(
        db=db, issuer=settings.issuer, timezone=settings.web_timezone,
        reconfirm_after=timedelta(days=settings.permanent_reconfirm_days),
        smtp=SmtpConfig(host=settings.smtp_host, port=settings.smtp_port,
                        security=settings.smtp_security, sender=settings.smtp_from,
                        username=settings.smtp_username, password=settings.smtp_password)
        if settings.smtp_host else None,
        webhook=WebhookConfig(settings.webhook_url, settings.webhook_secret)
        if settings.webhook_url else None)
    # Revocations wake the feed's waiters after commit: here, and through Redis elsewhere.
    notifier = RevocationNotifier()
    fanout = RedisFanout(settings.redis_url, notifier) if settings.redis_url else None
    database_wakeups = DatabaseWakeups(db, notifier)
    revocations = Revocations(wake_ups=[notifier.notify, database_wakeups.publish,
                                        *([fanout.publish] if fanout else [])])
    memberships = Memberships(default_max_age_days=settings.temporary_max_age_days,
                              reason_max_length=settings.reason_max_length,
                              listeners=[*([mirror.membership_changed] if mirror else []),
                                         notifications.membership_changed],
                              revocations=revocations)
    # Four eyes and the decisions it may hold back: approving access requests, lengthening
    # the maximum age, turning four eyes off (domain/approvals.py).
    four_eyes = FourEyes(expiry_hours=settings.four_eyes_expiry_hours,
                         listeners=[notifications.approval_changed])
    access_requests = AccessRequests(memberships=memberships, four_eyes=four_eyes,
                                     expiry_hours=settings.access_request_expiry_hours,
                                     listeners=[notifications.access_request_changed])
    tenant_settings = TenantSettings(memberships=memberships, four_eyes=four_eyes)
    # Permanent advisors with the tenant's consent and their re-confirmation (four eyes'
    # action permanent_advisor.accept).
    permanent_consent = PermanentConsent(
        memberships=memberships, four_eyes=four_eyes,
        reconfirm_days=settings.permanent_reconfirm_days,
        notice_days=settings.permanent_reconfirm_notice_days,
        grace_days=settings.permanent_grace_days,
        proposal_expiry_days=settings.permanent_proposal_expiry_days,
        reason_max_length=settings.reason_max_length,
        listeners=[notifications.permanent_changed])
    issuer = TokenIssuer(keys, issuer=settings.issuer,
                         access_lifetime=settings.access_token_lifetime,
                         refresh_lifetime=settings.refresh_token_lifetime)
    guests = Guests(memberships=memberships)
    validator = SubjectTokenValidator(
        issuer=settings.upstream_issuer, discovery_url=settings.discovery_url,
        audiences=settings.upstream_audiences, algorithms=settings.upstream_algorithms,
        cache_seconds=settings.upstream_cache_seconds, timeout=settings.upstream_timeout_seconds,
        leeway=settings.upstream_leeway_seconds, own_client_id=settings.web_client_id)
    roles = RoleMapper(
        roles_claim=settings.roles_claim, groups_claim=settings.groups_claim,
        advisor_role=settings.advisor_role, support_admin_role=settings.support_admin_role,
        tenant_admin_group=settings.tenant_admin_group,
        mfa_acr_values=settings.mfa_acr_values, mfa_amr_values=settings.mfa_amr_values)
    exchange = AdvisorExchange(
        codes=codes, memberships=memberships, issuer=issuer, roles=roles, guesses=guesses,
        mfa_required=settings.mfa_required, upstream_sessions=True,
        rotate_refresh_tokens=not settings.fapi2)
    sign_ins = SignIns(people=people, roles=roles)
    tokens = TokenService(db=db, policy=exchange, issuer=issuer, memberships=memberships,
                          accounts=mirror, app_client_id=settings.app_client_id,
                          default_audience=settings.default_audience, sign_ins=sign_ins)
    server = BridgeAuthorizationServer(
        tokens=tokens, validator=validator, issuer=settings.issuer,
        audiences=settings.audiences, default_audience=settings.default_audience,
        resources=settings.resource_map, fapi2=settings.fapi2,
        dpop=TokenEndpointDPoP(
            issuer=settings.issuer, tokens=tokens, algorithms=settings.accepted_dpop_algorithms,
            nonce_secret=derive_secret(settings.secret_key, "dpop nonces")
            if settings.dpop_nonce_required else None,
            nonce_required=settings.dpop_nonce_required, required_for_all=settings.fapi2,
            leeway=FAPI2_LEEWAY if settings.fapi2 else 30))
    server.register_grant(TokenExchangeGrant)
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.management_tokens = ManagementTokens(keys, issuer=settings.issuer,
                                                lifetime=settings.access_token_lifetime)
    server.register_endpoint(BridgeIntrospectionEndpoint(server, tokens))
    server.register_endpoint(BridgeRevocationEndpoint(server, tokens))

    relevance_seconds = settings.access_token_lifetime + settings.upstream_leeway_seconds + 30
    checkpoints = Checkpoints(db=db, keys=CheckpointKeys(db, settings.key_encryption_key),
                              issuer=settings.issuer,
                              interval_seconds=settings.audit_checkpoint_seconds)
    with db.transaction() as session:  # like the token keys: /audit/jwks only reads
        checkpoints.keys.ensure(session, utcnow())
    set_keys = SetKeys(db, settings.key_encryption_key, lifetime_seconds=relevance_seconds)
    transmitter = Transmitter(
        db=db, set_keys=set_keys, issuer=settings.issuer, user_issuer=settings.upstream_issuer,
        key_encryption_key=settings.key_encryption_key,
        relevance_seconds=relevance_seconds,
        event_id_key=derive_secret(settings.secret_key, "ssf event ids"),
        push_policy=PushPolicy(https_only=settings.mode == "production",
                               allow_loopback=settings.ssf_push_allow_loopback,
                               allowed_hosts=settings.ssf_push_allowed_hosts,
                               own_url=settings.issuer))
    app.extensions["idp_bridge"] = Services(
        settings=settings, db=db, keys=keys, codes=codes, memberships=memberships,
        issuer=issuer, validator=validator, roles=roles, exchange=exchange, server=server,
        metadata=server_metadata(settings.issuer, settings.signing_alg,
                                 dpop_algorithms=settings.accepted_dpop_algorithms,
                                 fapi2=settings.fapi2),
        notifier=notifier, transmitter=transmitter, pusher=Pusher(transmitter, notifier),
        guests=guests,
        maintenance=Maintenance(db=db, memberships=memberships, transmitter=transmitter,
                                interval=settings.maintenance_interval, accounts=mirror,
                                guesses=guesses,
                                access_record_retention_days=settings.access_record_retention_days,
                                access_requests=access_requests, four_eyes=four_eyes,
                                checkpoints=checkpoints, permanent_consent=permanent_consent),
        mirror=mirror, mirror_worker=MirrorWorker(mirror) if mirror else None, fanout=fanout,
        database_wakeups=database_wakeups,
        notifications=notifications, notification_worker=NotificationWorker(notifications),
        web_sessions=WebSessions(lifetime=timedelta(hours=settings.web_session_hours)),
        tokens=tokens, revocations=revocations, set_keys=set_keys,
        management_tokens=server.management_tokens, checkpoints=checkpoints,
        permanent_consent=permanent_consent)
    app.extensions["idp_bridge"].use_cases = build_use_cases(
        db=db, roles=roles, validator=validator, session_has_ended=session_has_ended,
        memberships=memberships, codes=codes, guests=guests,
        web_sessions=app.extensions["idp_bridge"].web_sessions, people=people,
        directory=directory, sign_ins=sign_ins,
        tenant_admin_group=settings.tenant_admin_group, timezone=settings.web_timezone,
        access_requests=access_requests, four_eyes=four_eyes, tenant_settings=tenant_settings,
        access_listeners=[notifications.access_recorded], checkpoints=checkpoints,
        permanent_consent=permanent_consent)

    from .access_records.views import bp as access_records_bp
    from .api import bp as api_bp
    from .oauth.views import bp as oauth_bp
    from .ssf.views import bp as ssf_bp
    from .upstream.views import bp as upstream_bp

    # Each blueprint is declared a machine endpoint or a page, once: sessions, CSRF and
    # error rendering follow from it (idp_bridge/surfaces.py).
    csrf = CSRFProtect(app)
    for blueprint in (oauth_bp, api_bp, ssf_bp, upstream_bp, access_records_bp, ops.bp):
        surfaces.register(app, blueprint, surfaces.MACHINE)
        csrf.exempt(blueprint)  # authenticated per request: nothing rides on a cookie
    for blueprint in web_pages.blueprints():
        surfaces.register(app, blueprint, surfaces.PAGE)
    app.before_request(ops.assign_request_id)
    app.before_request(check_request)  # NUL, surrogates, broken JSON: 400 at the door
    app.after_request(ops.echo_request_id)
    web_auth.init_app(app, settings)  # the upstream OpenID Connect client of the sign-in
    web_pages.init_app(app, settings)  # Flask-Babel, the pages' context and HTML headers
    _register_error_handlers(app)
    app.after_request(_security_headers)
    # POST /token leaves Flask: the same server, grants and services (oauth/lean.py).
    from .oauth.lean import LeanTokenEndpoint

    app.wsgi_app = LeanTokenEndpoint(app.wsgi_app, server,
                                     max_request_bytes=settings.max_request_bytes)
    return app


class PagesOnlySessions(SecureCookieSessionInterface):
    """Cookie sessions for the pages only: machine endpoints (token, introspection, feed,
    API, health: the blueprints declared ``surfaces.MACHINE``) are authenticated per request
    and never read or set a session cookie, which also spares them the cookie's signature
    work."""

    def open_session(self, app, request):
        if surfaces.of_request(app, request) == surfaces.MACHINE:
            return self.make_null_session(app)
        return super().open_session(app, request)


def services(app: Flask) -> Services:
    return app.extensions["idp_bridge"]


def _register_error_handlers(app: Flask) -> None:
    # JSON for the API and protocol endpoints, an HTML page in the reader's language for the
    # web pages; never a stack trace (DESIGN.md section 6).
    @app.errorhandler(HTTPException)
    @app.errorhandler(StorageUnavailable)
    @app.errorhandler(KeyDecryptionFailed)
    @app.errorhandler(UpstreamUnavailable)
    @app.errorhandler(Exception)
    def machine_or_page_error(exc):
        log_error(exc)
        if web_pages.wants_page():
            return web_pages.problem_page(status_of(exc), exc)
        return json_error(exc)

    @app.errorhandler(DomainError)
    def refused(exc: DomainError):
        # Blueprints with their own mapping (the API's JSON problems, the feed's) answer
        # first; this is the pages' mapping, by code, and the API's for the rest.
        if web_pages.wants_page():
            return web_pages.problem_page(0, exc)
        return api_problem(exc)


def _security_headers(response):
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    headers.setdefault("X-Frame-Options", "DENY")
    return response
