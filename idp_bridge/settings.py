"""One settings object, validated once at start (STYLE.md: configuration validated once).

Sources, later wins: defaults, an optional TOML file (``IDP_BRIDGE_CONFIG``), environment
variables ``IDP_BRIDGE_<NAME>``, then explicit overrides (CLI options, test mappings).
A missing or wrong value raises :class:`SettingsError` naming the key.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from urllib.parse import urlparse

MODES = ("production", "demo", "test")
SIGNING_ALGS = ("ES256", "RS256")
#: ``profile``: none (empty) or ``fapi2`` (FAPI 2.0 Security Profile, see _validate_profile).
PROFILES = ("", "fapi2")
#: RFC 9449 proof algorithms the bridge accepts (asymmetric only); fapi2 allows ES256, PS256.
DPOP_ALGS = ("ES256", "ES384", "PS256", "RS256", "EdDSA")
FAPI2_ALGS = ("ES256", "PS256")
# Symmetric and "none" algorithms are never acceptable for upstream tokens: a public key
# must never double as an HMAC secret (DESIGN.md section 9).
ASYMMETRIC_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                   "ES256", "ES384", "ES512", "EdDSA")
DEMO_SECRET_PREFIX = "demo-"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the key."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"setting {env_name(key)} ({key}): {problem}")


def env_name(key: str) -> str:
    return "IDP_BRIDGE_" + key.upper()


@dataclass(frozen=True)
class Settings:
    #: production | demo | test. Production refuses demo secrets and the development provider.
    mode: str = "production"
    #: Our issuer identifier (RFC 8414): the public base URL of this bridge.
    issuer: str = ""
    database_url: str = "sqlite:///instance/idp-bridge.sqlite"
    #: Signs sessions and derives the access-code secret (HKDF); high entropy, >= 32 chars.
    secret_key: str = ""
    #: Fernet key (urlsafe base64 of 32 bytes) encrypting signing keys at rest.
    key_encryption_key: str = ""

    # --- upstream identity provider (Keycloak realm or any OIDC provider) ---
    upstream_issuer: str = ""
    upstream_discovery_url: str = ""
    #: Accepted ``aud`` values of subject tokens (the bridge's client at the upstream IdP).
    upstream_audiences: tuple[str, ...] = ("idp-bridge",)
    upstream_algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    upstream_cache_seconds: int = 300
    upstream_timeout_seconds: float = 5.0
    upstream_leeway_seconds: int = 30
    #: Where roles and groups sit in upstream tokens (dotted path); Keycloak-style defaults.
    roles_claim: str = "realm_access.roles"
    groups_claim: str = "groups"
    advisor_role: str = "advisor"
    support_admin_role: str = "support-admin"
    #: Group naming a tenant's admins; ``{tenant}`` is replaced by the tenant id.
    tenant_admin_group: str = "/tenants/{tenant}/admins"
    #: When true, subject tokens must show multi-factor authentication (acr or amr).
    mfa_required: bool = False
    mfa_acr_values: tuple[str, ...] = ("2", "mfa", "urn:konfipay:acr:mfa")
    mfa_amr_values: tuple[str, ...] = ("otp", "mfa", "hwk", "swk", "webauthn")

    # --- tokens ---
    signing_alg: str = "ES256"
    access_token_lifetime: int = 300
    refresh_token_lifetime: int = 8 * 3600
    default_audience: str = "konfipay-api"
    #: Audiences a client may ask for with ``audience``.
    audiences: tuple[str, ...] = ("konfipay-api",)
    #: RFC 8707 resource indicators: ``uri=audience`` pairs.
    resources: tuple[str, ...] = ()
    #: ``fapi2``: the FAPI 2.0 Security Profile (DPoP for every client, private_key_jwt only,
    #: ES256/PS256 only, refresh tokens bound to the DPoP key without rotation, a 10 s
    #: iat/nbf allowance). Empty: none.
    profile: str = ""
    #: RFC 9449 proof algorithms accepted at the token endpoint (empty: the profile's
    #: default, all of DPOP_ALGS, or ES256 and PS256 under fapi2).
    dpop_algorithms: tuple[str, ...] = ()
    #: RFC 9449 section 8: token requests' proofs must carry a server nonce (rotating,
    #: checked statelessly by every process).
    dpop_nonce_required: bool = False

    # --- memberships and access codes ---
    temporary_max_age_days: int = 30
    code_ttl_seconds: int = 3600
    #: Wrong guesses one advisor may make for one code of one tenant; then that advisor is
    #: refused for that tenant until the code changes (others are not affected).
    code_max_failures: int = 5
    #: Wrong guesses one advisor may make across all tenants in any sliding window of
    #: this length. Both limits are counted in the database, shared by every process.
    code_guess_limit_advisor: str = "10 per 15 minutes"
    reason_max_length: int = 200
    #: An access request unanswered this long expires (the advisor may ask again).
    access_request_expiry_hours: int = 12
    #: Four eyes: a first approval that no second tenant admin completes within this many
    #: hours lapses (one of an access request lapses with the request at the latest).
    four_eyes_expiry_hours: int = 24
    #: A permanent advisor must be re-confirmed by a tenant admin this many days after its
    #: assignment or last re-confirmation (domain/permanent_consent.py) ...
    permanent_reconfirm_days: int = 180
    #: ... its admins are asked this many days before that date (once) ...
    permanent_reconfirm_notice_days: int = 14
    #: ... and unconfirmed this many days after it, the access ends (revoked at once).
    permanent_grace_days: int = 14
    #: Support's proposal of a permanent advisor that no tenant admin answers within this
    #: many days expires (support may propose again).
    permanent_proposal_expiry_days: int = 30
    #: Redis for instant revocation wake-ups across processes.
    redis_url: str = ""
    log_format: str = "json"
    max_request_bytes: int = 64 * 1024
    # --- SSO sign-in of the web pages (OpenID Connect code flow + PKCE) ---
    web_client_id: str = "idp-bridge"
    #: Empty: a public client (PKCE only).
    web_client_secret: str = ""
    web_session_hours: int = 8
    #: Times on the web pages are shown in this zone (IANA name).
    web_timezone: str = "Europe/Berlin"
    #: "Open tenant" on the advisor page hands tenant-scoped tokens to this application
    #: (an auto-submitted form POST; ``{tenant}`` is replaced). Empty: no such button.
    app_url: str = ""
    #: The registered client that the handed-over tokens are issued to (it refreshes them).
    app_client_id: str = "advisor-console"

    # --- notifications of tenant admins (advisor joined, left, permanent advisor assigned) ---
    #: SMTP server for e-mail; empty: no e-mail.
    smtp_host: str = ""
    smtp_port: int = 587
    #: starttls | tls (implicit TLS) | none (loopback relays only in production)
    smtp_security: str = "starttls"
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_from: str = ""
    #: Optional webhook receiving each notification as JSON, signed with ``webhook_secret``
    #: (HMAC-SHA256 in the Standard Webhooks headers).
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)

    # --- Keycloak admin (optional): mirror memberships into groups, watch account state ---
    keycloak_admin: bool = False
    keycloak_client_id: str = "idp-bridge"
    keycloak_client_secret: str = ""
    keycloak_advisor_group: str = "/tenants/{tenant}/advisors"
    #: An "account active" answer is reused this long at exchanges and refreshes (0: ask
    #: Keycloak every time; a disabled account is then refused at its very next request).
    keycloak_account_cache_seconds: int = 15
    #: Seconds between sweeps for disabled/deleted accounts and expired memberships.
    maintenance_interval: float = 30.0
    #: Access records (what resource servers report advisors did) are kept this many days,
    #: then swept by the maintenance loop.
    access_record_retention_days: int = 400
    #: The maintenance loop signs a checkpoint of every audit chain that moved since its
    #: last one once that is this many seconds old (a chain's first one at once):
    #: docs/audit-chain.md.
    audit_checkpoint_seconds: int = 600
    #: How long a revocation-feed poll waits for events (stays below receivers' 30 s bound).
    ssf_long_poll_seconds: float = 15.0
    #: Push delivery (RFC 8935) only to these receiver hosts: names such as
    #: ``events.example.com``, ``*.example.com`` for the subdomains of a domain. Empty: any
    #: host whose addresses are all public. (Addresses are checked either way.)
    ssf_push_allowed_hosts: tuple[str, ...] = ()
    #: Tests and the demo only (refused in production mode): push endpoints on loopback.
    ssf_push_allow_loopback: bool = False

    def __post_init__(self):
        _validate(self)

    # --- derived values ---
    @property
    def resource_map(self) -> dict[str, str]:
        return dict(pair.split("=", 1) for pair in self.resources)

    @property
    def fapi2(self) -> bool:
        return self.profile == "fapi2"

    @property
    def accepted_dpop_algorithms(self) -> tuple[str, ...]:
        """``dpop_algorithms``, or the profile's default when it is empty."""
        return self.dpop_algorithms or (FAPI2_ALGS if self.fapi2 else DPOP_ALGS)

    @property
    def code_guess_window(self) -> tuple[int, int]:
        """``code_guess_limit_advisor`` as (wrong guesses, window in seconds)."""
        return parse_rate(self.code_guess_limit_advisor)

    @property
    def discovery_url(self) -> str:
        return self.upstream_discovery_url or (
            self.upstream_issuer.rstrip("/") + "/.well-known/openid-configuration"
        )

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, overrides: dict | None = None, environ=None) -> "Settings":
        """Build settings from defaults, config file, environment and ``overrides``."""
        known = {f.name: f for f in fields(cls)}
        values = cls._sources(overrides, environ)
        return cls(**{name: _coerce(known[name], value) for name, value in values.items()})

    @classmethod
    def load_database_url(cls, overrides: dict | None = None, environ=None) -> str:
        """Only ``database_url``, from the same sources as :meth:`load`, for the commands that
        need nothing else (``db upgrade``): the other settings are neither required nor
        validated, but unknown or retired names are refused as always."""
        values = cls._sources(overrides, environ)
        url = str(values.get("database_url", cls.database_url))
        if "://" not in url:
            raise SettingsError("database_url", "must be a SQLAlchemy database URL")
        return url

    @classmethod
    def _sources(cls, overrides: dict | None, environ) -> dict:
        """The raw values given by the config file, the environment and ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        path = (overrides or {}).get("config_file") or environ.get("IDP_BRIDGE_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    values.update(tomllib.load(fh))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SettingsError("config", f"cannot read config file {path}: {exc}") from None
        known = {f.name: f for f in fields(cls)}
        for name in values:
            if name not in known:
                raise SettingsError(name, _unknown(name, "unknown setting in config file"))
        for variable in environ:
            # A typo in a variable name would silently keep a default: refuse it instead.
            if variable.startswith("IDP_BRIDGE_") and variable not in NON_SETTING_VARIABLES:
                name = variable[len("IDP_BRIDGE_"):].lower()
                if name not in known:
                    raise SettingsError(name, _unknown(name, "unknown environment variable"))
        for name in known:
            raw = environ.get(env_name(name))
            if raw is not None:
                values[name] = raw
        for name, value in (overrides or {}).items():
            if name == "config_file":
                continue
            if name not in known:
                raise SettingsError(name, _unknown(name, "unknown setting"))
            if value is not None:
                values[name] = value
        return values


#: IDP_BRIDGE_* variables that are not settings (read by the CLI and the demo).
NON_SETTING_VARIABLES = frozenset({
    "IDP_BRIDGE_CONFIG", "IDP_BRIDGE_DEMO_CLIENT_SECRET", "IDP_BRIDGE_DEMO_RS_SECRET",
    "IDP_BRIDGE_BIND", "IDP_BRIDGE_WORKERS",
})


#: Settings that no longer exist, and why (a deployment still setting one hears so).
RETIRED_SETTINGS = {
    "code_guess_limit_tenant": "a tenant-wide guess limit let other advisors' wrong codes lock "
    "out advisors holding the right one; guesses are limited per advisor (code_max_failures, "
    "code_guess_limit_advisor)",
    "ratelimit_storage_uri": "access-code guesses are counted in the database, shared by every "
    "process; there is no separate rate-limit store any more",
}

_RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(text: str) -> tuple[int, int]:
    """``"10 per 15 minutes"`` (or ``"10/hour"``) as (10, 900); ValueError otherwise."""
    import re

    match = re.fullmatch(r"\s*(\d{1,6})\s*(?:per|/)\s*(\d{1,6})?\s*(second|minute|hour|day)s?\s*",
                         text or "", re.IGNORECASE)
    if not match:
        raise ValueError(f"not a rate such as '10 per 15 minutes': {text!r}")
    count, length, unit = int(match[1]), int(match[2] or 1), match[3].lower()
    if count < 1 or length < 1:
        raise ValueError("a rate needs a positive count and window")
    return count, length * _RATE_UNITS[unit]


def _unknown(name: str, problem: str) -> str:
    if name in RETIRED_SETTINGS:
        return f"{problem}: this setting was removed: {RETIRED_SETTINGS[name]}"
    if "scope" in name or "profile" in name:
        return (f"{problem}: the advisor rights are fixed by the product and no setting can "
                "change them")
    return problem


def _coerce(f: dataclasses.Field, value):
    kind = f.type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")  # int() would truncate
            return int(value)
        if kind == "float":
            return float(value)
        if kind.startswith("tuple"):
            if isinstance(value, str):
                return tuple(item.strip() for item in value.split(",") if item.strip())
            return tuple(str(item) for item in value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f.name, f"invalid value: {exc}") from None


def _is_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _is_loopback_url(value: str) -> bool:
    return urlparse(value).hostname in ("127.0.0.1", "localhost", "::1")


def _validate(s: Settings) -> None:
    if s.mode not in MODES:
        raise SettingsError("mode", f"must be one of {', '.join(MODES)}")
    for key in ("issuer", "upstream_issuer"):
        value = getattr(s, key)
        if not value:
            raise SettingsError(key, "is required")
        if not _is_url(value):
            raise SettingsError(key, "must be an http(s) URL")
    if s.upstream_discovery_url and not _is_url(s.upstream_discovery_url):
        raise SettingsError("upstream_discovery_url", "must be an http(s) URL")
    if not s.database_url or "://" not in s.database_url:
        raise SettingsError("database_url", "must be a SQLAlchemy database URL")
    if len(s.secret_key) < 32:
        raise SettingsError("secret_key", "is required and must be at least 32 characters")
    try:
        if len(base64.urlsafe_b64decode(s.key_encryption_key.encode())) != 32:
            raise ValueError
    except (ValueError, TypeError):
        raise SettingsError(
            "key_encryption_key",
            "must be a Fernet key (urlsafe base64 of 32 bytes); "
            "generate one with: idp-bridge keys new-kek",
        ) from None
    if not s.upstream_audiences:
        raise SettingsError("upstream_audiences", "at least one audience is required")
    bad = [a for a in s.upstream_algorithms if a not in ASYMMETRIC_ALGS]
    if bad or not s.upstream_algorithms:
        raise SettingsError(
            "upstream_algorithms",
            f"only asymmetric algorithms are allowed ({', '.join(ASYMMETRIC_ALGS)}); got {bad}",
        )
    if s.signing_alg not in SIGNING_ALGS:
        raise SettingsError("signing_alg", f"must be one of {', '.join(SIGNING_ALGS)}")
    for key, low, high in (
        ("access_token_lifetime", 30, 3600),
        ("refresh_token_lifetime", 60, 30 * 86400),
        ("temporary_max_age_days", 1, 365),
        ("code_ttl_seconds", 60, 24 * 3600),
        ("code_max_failures", 1, 20),
        ("reason_max_length", 10, 2000),
        ("access_request_expiry_hours", 1, 168),
        ("four_eyes_expiry_hours", 1, 168),
        ("permanent_reconfirm_days", 7, 3650),
        ("permanent_reconfirm_notice_days", 1, 365),
        ("permanent_grace_days", 1, 365),
        ("permanent_proposal_expiry_days", 1, 365),
        ("upstream_cache_seconds", 0, 86400),
        ("upstream_leeway_seconds", 0, 300),
        ("max_request_bytes", 1024, 10 * 1024 * 1024),
    ):
        value = getattr(s, key)
        if not low <= value <= high:
            raise SettingsError(key, f"must be between {low} and {high}, got {value}")
    if s.keycloak_admin:
        if "/realms/" not in s.upstream_issuer:
            raise SettingsError("keycloak_admin", "needs a Keycloak realm URL as upstream_issuer")
        if not s.keycloak_client_secret:
            raise SettingsError("keycloak_client_secret", "is required when keycloak_admin is on")
        if "{tenant}" not in s.keycloak_advisor_group:
            raise SettingsError("keycloak_advisor_group", "must contain the placeholder {tenant}")
        if not re.fullmatch(r"realm_access\.roles|resource_access\.[^.]+\.roles", s.roles_claim):
            raise SettingsError("roles_claim", "must be realm_access.roles or "
                                "resource_access.<client>.roles when keycloak_admin is on (the "
                                "directory asks Keycloak for those roles)")
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("redis_url", "must be a redis:// or rediss:// URL")
    if s.log_format not in ("json", "text"):
        raise SettingsError("log_format", "must be json or text")
    if not 0 <= s.keycloak_account_cache_seconds <= 300:
        raise SettingsError("keycloak_account_cache_seconds", "must be from 0 to 300")
    if not 1 <= s.maintenance_interval <= 60:
        raise SettingsError("maintenance_interval", "must be from 1 to 60 seconds")
    if s.permanent_reconfirm_notice_days >= s.permanent_reconfirm_days:
        raise SettingsError("permanent_reconfirm_notice_days",
                            "must be fewer days than permanent_reconfirm_days")
    if not 1 <= s.access_record_retention_days <= 3650:
        raise SettingsError("access_record_retention_days", "must be from 1 to 3650 days")
    if not 1 <= s.audit_checkpoint_seconds <= 86400:
        raise SettingsError("audit_checkpoint_seconds", "must be from 1 to 86400 seconds")
    if not 0 < s.ssf_long_poll_seconds <= 25:
        raise SettingsError("ssf_long_poll_seconds", "must be more than 0 and at most 25")
    _validate_push(s)
    if "{tenant}" not in s.tenant_admin_group:
        raise SettingsError("tenant_admin_group", "must contain the placeholder {tenant}")
    if s.default_audience not in s.audiences:
        raise SettingsError("default_audience", "must be one of the configured audiences")
    for pair in s.resources:
        uri, sep, audience = pair.partition("=")
        if not sep or not _is_url(uri) or audience not in s.audiences:
            raise SettingsError(
                "resources", f"entries are uri=audience with a known audience, got {pair!r}"
            )
    try:
        guesses, window = parse_rate(s.code_guess_limit_advisor)
    except ValueError:
        raise SettingsError("code_guess_limit_advisor",
                            "must be a rate limit such as '10 per 15 minutes'") from None
    if not 1 <= guesses <= 1000 or not 60 <= window <= 7 * 86400:
        raise SettingsError("code_guess_limit_advisor", "must allow 1 to 1000 wrong guesses "
                            "in a window of 1 minute to 7 days")
    _validate_web_and_notifications(s)
    _validate_profile(s)
    if s.mode == "production":
        if s.secret_key.startswith(DEMO_SECRET_PREFIX):
            raise SettingsError("secret_key", "a demo secret cannot be used in production mode")
        for key in ("issuer", "upstream_issuer"):
            if urlparse(getattr(s, key)).scheme != "https":
                raise SettingsError(key, "must be an https URL in production mode")


def _validate_profile(s: Settings) -> None:
    """``profile`` and the settings it constrains: the start refuses a contradiction, naming
    the key that contradicts (FAPI 2.0 Security Profile sections 5.3, 5.4)."""
    if s.profile not in PROFILES:
        raise SettingsError("profile", "must be empty (none) or fapi2")
    bad = [a for a in s.dpop_algorithms if a not in DPOP_ALGS]
    if bad:
        raise SettingsError("dpop_algorithms", f"must be among {', '.join(DPOP_ALGS)}")
    if not s.fapi2:
        return
    if s.signing_alg not in FAPI2_ALGS:
        raise SettingsError("signing_alg", "must be ES256 under profile fapi2 (FAPI 2.0 allows "
                            "PS256, ES256 and EdDSA; the bridge signs ES256 or RS256)")
    if any(a not in FAPI2_ALGS for a in s.dpop_algorithms):
        raise SettingsError("dpop_algorithms", "may only name ES256 and PS256 under profile fapi2")
    if s.app_url:
        raise SettingsError("app_url", "must be empty under profile fapi2: the Open hand-off "
                            "gives the application Bearer tokens, and fapi2 requires "
                            "sender-constrained (DPoP) tokens")


def _validate_push(s: Settings) -> None:
    from .ssf.egress import host_pattern_is_valid

    for pattern in s.ssf_push_allowed_hosts:
        if not host_pattern_is_valid(pattern):
            raise SettingsError("ssf_push_allowed_hosts",
                                "entries are host names, *.domain or IP addresses")
    if s.ssf_push_allow_loopback and s.mode == "production":
        raise SettingsError("ssf_push_allow_loopback", "cannot be used in production mode")


SMTP_SECURITY = ("starttls", "tls", "none")


def _validate_web_and_notifications(s: Settings) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(s.web_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError("web_timezone", "must be an IANA time zone such as Europe/Berlin") from None
    production = s.mode == "production"
    if s.app_url:
        if not _is_url(s.app_url.replace("{tenant}", "t")):
            raise SettingsError("app_url", "must be an http(s) URL")
        if production and urlparse(s.app_url).scheme != "https":
            raise SettingsError("app_url", "must be an https URL in production mode")
    if not s.app_client_id or len(s.app_client_id) > 100:
        raise SettingsError("app_client_id", "is required (1 to 100 characters)")
    if s.smtp_host:
        if not 1 <= s.smtp_port <= 65535:
            raise SettingsError("smtp_port", f"must be between 1 and 65535, got {s.smtp_port}")
        if s.smtp_security not in SMTP_SECURITY:
            raise SettingsError("smtp_security", f"must be one of {', '.join(SMTP_SECURITY)}")
        if production and s.smtp_security == "none" and s.smtp_host not in (
                "127.0.0.1", "localhost", "::1"):
            raise SettingsError("smtp_security", "must be starttls or tls for a remote SMTP "
                                "server in production mode")
        if not _is_mail_address(s.smtp_from):
            raise SettingsError("smtp_from", "is required with smtp_host: a sender address")
        if s.smtp_username and not s.smtp_password:
            raise SettingsError("smtp_password", "is required with smtp_username")
    if s.webhook_url:
        if not _is_url(s.webhook_url):
            raise SettingsError("webhook_url", "must be an http(s) URL")
        if production and urlparse(s.webhook_url).scheme != "https":
            raise SettingsError("webhook_url", "must be an https URL in production mode")
        if len(s.webhook_secret) < 32:
            raise SettingsError("webhook_secret", "is required with webhook_url, at least 32 characters")


def _is_mail_address(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain and value.isprintable() and " " not in value
                and len(value) <= 254)
