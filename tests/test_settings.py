"""Settings: defaults, sources and their precedence, and validation naming the key
(STYLE.md: configuration validated once, at start, with a clear error naming the key)."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.fernet import Fernet

from idp_bridge.devidp import DevProvider, DevProviderRefused
from idp_bridge.settings import Settings, SettingsError

KEK = Fernet.generate_key().decode()
SECRET = "x" * 40

# The minimum a production deployment must set.
REQUIRED = {
    "issuer": "https://bridge.konfipay.example",
    "upstream_issuer": "https://sso.konfipay.example/realms/staff",
    "secret_key": SECRET,
    "key_encryption_key": KEK,
}


def load(**changes):
    """Load REQUIRED with ``changes`` applied (None removes a key), ignoring os.environ."""
    values = {k: v for k, v in {**REQUIRED, **changes}.items() if v is not None}
    return Settings.load(values, environ={})


def write_toml(tmp_path, text: str):
    path = tmp_path / "idp-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults ---

def test_defaults():
    s = load()
    assert s.mode == "production"
    assert s.database_url == "sqlite:///instance/idp-bridge.sqlite"
    assert s.signing_alg == "ES256"
    assert s.access_token_lifetime == 300
    assert s.refresh_token_lifetime == 8 * 3600
    assert s.default_audience == "konfipay-api"
    assert s.audiences == ("konfipay-api",)
    assert s.resources == ()
    assert s.upstream_audiences == ("idp-bridge",)
    assert "HS256" not in s.upstream_algorithms and "none" not in s.upstream_algorithms
    assert s.roles_claim == "realm_access.roles"
    assert s.groups_claim == "groups"
    assert s.advisor_role == "advisor"
    assert s.support_admin_role == "support-admin"
    assert s.tenant_admin_group == "/tenants/{tenant}/admins"
    assert s.temporary_max_age_days == 30
    # Permanent advisors are re-confirmed every 180 days, asked 14 days ahead, 14 days' grace.
    assert (s.permanent_reconfirm_days, s.permanent_reconfirm_notice_days,
            s.permanent_grace_days) == (180, 14, 14)
    assert s.code_ttl_seconds == 3600  # DESIGN.md 1: a code is valid for 60 minutes
    assert s.code_max_failures == 5
    assert s.code_guess_window == (10, 900)
    assert s.mfa_required is False
    assert s.discovery_url == (
        "https://sso.konfipay.example/realms/staff/.well-known/openid-configuration")


def test_settings_are_frozen():
    s = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.access_token_lifetime = 3  # type: ignore[misc]


def test_replace_validates_again():
    s = load()
    assert s.replace(access_token_lifetime=600).access_token_lifetime == 600
    with pytest.raises(SettingsError) as exc:
        s.replace(access_token_lifetime=1)
    assert exc.value.key == "access_token_lifetime"


def test_resource_map():
    s = load(resources="https://api.konfipay.example/=konfipay-api")
    assert s.resource_map == {"https://api.konfipay.example/": "konfipay-api"}


# --- sources ---

def test_environment_variables_are_read():
    environ = {
        "IDP_BRIDGE_ISSUER": "https://bridge.example",
        "IDP_BRIDGE_UPSTREAM_ISSUER": "https://sso.example/realms/x",
        "IDP_BRIDGE_SECRET_KEY": SECRET,
        "IDP_BRIDGE_KEY_ENCRYPTION_KEY": KEK,
        "IDP_BRIDGE_ACCESS_TOKEN_LIFETIME": "600",
        "IDP_BRIDGE_AUDIENCES": "konfipay-api, reports-api",
        "IDP_BRIDGE_MFA_REQUIRED": "true",
        "IDP_BRIDGE_UPSTREAM_TIMEOUT_SECONDS": "2.5",
        "IDP_BRIDGE_SIGNING_ALG": "RS256",
        "IDP_BRIDGE_PERMANENT_RECONFIRM_DAYS": "365",
        "IDP_BRIDGE_PERMANENT_GRACE_DAYS": "30",
        "UNRELATED": "ignored",
    }
    s = Settings.load(environ=environ)
    assert (s.permanent_reconfirm_days, s.permanent_grace_days) == (365, 30)
    assert s.issuer == "https://bridge.example"
    assert s.upstream_issuer == "https://sso.example/realms/x"
    assert s.access_token_lifetime == 600
    assert s.audiences == ("konfipay-api", "reports-api")
    assert s.mfa_required is True
    assert s.upstream_timeout_seconds == 2.5
    assert s.signing_alg == "RS256"


def test_config_file_via_override(tmp_path):
    path = write_toml(tmp_path, f'''
issuer = "https://bridge.example"
upstream_issuer = "https://sso.example/realms/x"
secret_key = "{SECRET}"
key_encryption_key = "{KEK}"
access_token_lifetime = 900
audiences = ["konfipay-api", "reports-api"]
mfa_required = true
''')
    s = Settings.load({"config_file": str(path)}, environ={})
    assert s.issuer == "https://bridge.example"
    assert s.access_token_lifetime == 900
    assert s.audiences == ("konfipay-api", "reports-api")
    assert s.mfa_required is True


def test_config_file_via_environment(tmp_path):
    path = write_toml(tmp_path, 'access_token_lifetime = 120\n')
    s = Settings.load(REQUIRED, environ={"IDP_BRIDGE_CONFIG": str(path)})
    assert s.access_token_lifetime == 120


@pytest.mark.parametrize("file_value, env_value, override, expected", [
    (600, None, None, 600),
    (600, "900", None, 900),
    (600, "900", 1200, 1200),
    (None, "900", 1200, 1200),
    (600, None, 1200, 1200),
])
def test_precedence_file_env_overrides(tmp_path, file_value, env_value, override, expected):
    path = write_toml(tmp_path, "" if file_value is None else
                      f"access_token_lifetime = {file_value}\n")
    environ = {"IDP_BRIDGE_CONFIG": str(path)}
    if env_value is not None:
        environ["IDP_BRIDGE_ACCESS_TOKEN_LIFETIME"] = env_value
    overrides = dict(REQUIRED)
    if override is not None:
        overrides["access_token_lifetime"] = override
    assert Settings.load(overrides, environ=environ).access_token_lifetime == expected


def test_config_file_override_beats_environment_config(tmp_path):
    env_file = write_toml(tmp_path, "access_token_lifetime = 120\n")
    other = tmp_path / "other.toml"
    other.write_text("access_token_lifetime = 240\n")
    s = Settings.load({**REQUIRED, "config_file": str(other)},
                      environ={"IDP_BRIDGE_CONFIG": str(env_file)})
    assert s.access_token_lifetime == 240


# --- validation: every error names its key ---

@pytest.mark.parametrize("changes, key", [
    pytest.param({"issuer": None}, "issuer", id="missing-issuer"),
    pytest.param({"issuer": "bridge.example"}, "issuer", id="issuer-not-url"),
    pytest.param({"upstream_issuer": None}, "upstream_issuer", id="missing-upstream"),
    pytest.param({"upstream_issuer": "sso.example/realms/x"}, "upstream_issuer",
                 id="upstream-not-url"),
    pytest.param({"upstream_issuer": "ftp://sso.example"}, "upstream_issuer",
                 id="upstream-ftp"),
    pytest.param({"upstream_discovery_url": "not a url"}, "upstream_discovery_url",
                 id="discovery-not-url"),
    pytest.param({"database_url": "instance/db.sqlite"}, "database_url", id="database-url"),
    pytest.param({"secret_key": None}, "secret_key", id="missing-secret"),
    pytest.param({"secret_key": "x" * 31}, "secret_key", id="short-secret"),
    pytest.param({"key_encryption_key": None}, "key_encryption_key", id="missing-kek"),
    pytest.param({"key_encryption_key": "not-a-key"}, "key_encryption_key", id="bad-kek"),
    pytest.param({"key_encryption_key": "YWJj"}, "key_encryption_key", id="short-kek"),
    pytest.param({"upstream_audiences": ""}, "upstream_audiences", id="no-upstream-audience"),
    pytest.param({"upstream_algorithms": "HS256"}, "upstream_algorithms", id="hs256"),
    pytest.param({"upstream_algorithms": "none"}, "upstream_algorithms", id="alg-none"),
    pytest.param({"upstream_algorithms": "RS256,HS512"}, "upstream_algorithms", id="mixed"),
    pytest.param({"upstream_algorithms": ""}, "upstream_algorithms", id="no-algorithms"),
    pytest.param({"signing_alg": "HS256"}, "signing_alg", id="signing-hs256"),
    pytest.param({"signing_alg": "none"}, "signing_alg", id="signing-none"),
    pytest.param({"access_token_lifetime": 29}, "access_token_lifetime", id="lifetime-low"),
    pytest.param({"access_token_lifetime": 3601}, "access_token_lifetime", id="lifetime-high"),
    pytest.param({"access_token_lifetime": "five"}, "access_token_lifetime",
                 id="lifetime-not-int"),
    pytest.param({"access_token_lifetime": True}, "access_token_lifetime", id="lifetime-bool"),
    pytest.param({"refresh_token_lifetime": 59}, "refresh_token_lifetime", id="refresh-low"),
    pytest.param({"temporary_max_age_days": 0}, "temporary_max_age_days", id="max-age-zero"),
    pytest.param({"permanent_reconfirm_days": 6}, "permanent_reconfirm_days",
                 id="reconfirm-too-short"),
    pytest.param({"permanent_grace_days": 0}, "permanent_grace_days", id="grace-zero"),
    pytest.param({"permanent_reconfirm_notice_days": 0}, "permanent_reconfirm_notice_days",
                 id="notice-zero"),
    pytest.param({"permanent_reconfirm_days": 30, "permanent_reconfirm_notice_days": 30},
                 "permanent_reconfirm_notice_days", id="notice-not-before-due"),
    pytest.param({"code_ttl_seconds": 10}, "code_ttl_seconds", id="code-ttl-low"),
    pytest.param({"code_max_failures": 0}, "code_max_failures", id="max-failures-zero"),
    pytest.param({"mfa_required": "maybe"}, "mfa_required", id="bool-garbage"),
    pytest.param({"tenant_admin_group": "/tenants/admins"}, "tenant_admin_group",
                 id="group-without-placeholder"),
    pytest.param({"default_audience": "reports-api"}, "default_audience",
                 id="default-audience-unknown"),
    pytest.param({"resources": "https://api.example/"}, "resources", id="resource-no-equals"),
    pytest.param({"resources": "api.example=konfipay-api"}, "resources", id="resource-not-url"),
    pytest.param({"resources": "https://api.example/=reports-api"}, "resources",
                 id="resource-unknown-audience"),
    pytest.param({"code_guess_limit_advisor": "lots"}, "code_guess_limit_advisor",
                 id="rate-limit-advisor"),
    pytest.param({"code_guess_limit_advisor": "10 per fortnight"}, "code_guess_limit_advisor",
                 id="rate-limit-unit"),
    pytest.param({"code_guess_limit_advisor": "5000 per 15 minutes"},
                 "code_guess_limit_advisor", id="rate-limit-too-many"),
    pytest.param({"code_max_failures": 21}, "code_max_failures", id="max-failures-high"),
    pytest.param({"code_guess_limit_tenant": "30 per 15 minutes"}, "code_guess_limit_tenant",
                 id="retired-tenant-limit"),
    pytest.param({"ratelimit_storage_uri": "memory://"}, "ratelimit_storage_uri",
                 id="retired-limit-storage"),
    pytest.param({"mode": "staging"}, "mode", id="unknown-mode"),
    pytest.param({"mode": ""}, "mode", id="empty-mode"),
])
def test_validation_error_names_the_key(changes, key):
    with pytest.raises(SettingsError) as exc:
        load(**changes)
    assert exc.value.key == key
    assert key in str(exc.value)
    assert "IDP_BRIDGE_" + key.upper() in str(exc.value)


@pytest.mark.parametrize("name, value", [
    ("ACCESS_TOKEN_LIFETIME", "abc"),
    ("MFA_REQUIRED", "perhaps"),
    ("UPSTREAM_TIMEOUT_SECONDS", "soon"),
    ("UPSTREAM_ALGORITHMS", "HS256"),
])
def test_bad_environment_value_names_the_key(name, value):
    with pytest.raises(SettingsError) as exc:
        Settings.load(REQUIRED, environ={f"IDP_BRIDGE_{name}": value})
    assert exc.value.key == name.lower()


@pytest.mark.parametrize("line, key", [
    ("access_token_lifetime = 300.5", "access_token_lifetime"),
    ("access_token_lifetime = true", "access_token_lifetime"),
    ("access_token_lifetime = 5", "access_token_lifetime"),
    ("upstream_algorithms = [\"HS256\"]", "upstream_algorithms"),
    ("signing_alg = \"none\"", "signing_alg"),
    ("mode = \"staging\"", "mode"),
])
def test_bad_value_in_config_file_names_the_key(tmp_path, line, key):
    path = write_toml(tmp_path, line + "\n")
    with pytest.raises(SettingsError) as exc:
        Settings.load({**REQUIRED, "config_file": str(path)}, environ={})
    assert exc.value.key == key


def test_unknown_key_in_config_file(tmp_path):
    path = write_toml(tmp_path, 'acess_token_lifetime = 600\n')
    with pytest.raises(SettingsError) as exc:
        Settings.load({**REQUIRED, "config_file": str(path)}, environ={})
    assert exc.value.key == "acess_token_lifetime"
    assert "acess_token_lifetime" in str(exc.value)


def test_unknown_override_is_refused():
    with pytest.raises(SettingsError) as exc:
        Settings.load({**REQUIRED, "acess_token_lifetime": 600}, environ={})
    assert exc.value.key == "acess_token_lifetime"


@pytest.mark.parametrize("text", ["issuer = \n", "[[[", "issuer = 'unterminated"])
def test_unreadable_config_file(tmp_path, text):
    path = write_toml(tmp_path, text)
    with pytest.raises(SettingsError) as exc:
        Settings.load({**REQUIRED, "config_file": str(path)}, environ={})
    assert exc.value.key == "config"


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError) as exc:
        Settings.load(REQUIRED, environ={"IDP_BRIDGE_CONFIG": str(tmp_path / "absent.toml")})
    assert exc.value.key == "config"


def test_error_does_not_echo_the_secret():
    secret = "demo-" + "s3cr3t" * 6
    with pytest.raises(SettingsError) as exc:
        load(secret_key=secret)
    assert secret not in str(exc.value)


# --- the advisor profile is not a setting ---

@pytest.mark.parametrize("key", ["advisor_scopes", "advisor_profile", "scopes"])
def test_config_file_cannot_set_the_advisor_profile(tmp_path, key):
    path = write_toml(tmp_path, f'{key} = ["payments:write", "ebics:read"]\n')
    with pytest.raises(SettingsError) as exc:
        Settings.load({**REQUIRED, "config_file": str(path)}, environ={})
    assert exc.value.key == key
    assert "unknown" in str(exc.value)


def test_no_setting_touches_scopes():
    names = {f.name for f in dataclasses.fields(Settings)}
    # ``profile`` is the security profile (fapi2, issue 13 item 13), not the advisor profile.
    assert not {n for n in names if "scope" in n or "profile" in n} - {"profile"}


@pytest.mark.parametrize("variable", ["IDP_BRIDGE_ADVISOR_SCOPES", "IDP_BRIDGE_ADVISOR_PROFILE"])
def test_environment_cannot_set_the_advisor_profile(variable):
    from scopes.catalog import ADVISOR_PROFILE

    before = set(ADVISOR_PROFILE)
    with pytest.raises(SettingsError) as caught:
        Settings.load(REQUIRED, environ={variable: "payments:write"})
    assert variable in str(caught.value)
    assert "fixed" in str(caught.value)
    assert set(ADVISOR_PROFILE) == before


def test_unknown_environment_variable_is_refused():
    with pytest.raises(SettingsError) as caught:
        Settings.load(REQUIRED, environ={"IDP_BRIDGE_ISUER": "https://typo.example"})
    assert "IDP_BRIDGE_ISUER" in str(caught.value)
    # Variables the CLI reads are not settings, and are not refused.
    Settings.load(REQUIRED, environ={"IDP_BRIDGE_DEMO_CLIENT_SECRET": "x", "IDP_BRIDGE_CONFIG": ""})


# --- production mode ---

@pytest.mark.parametrize("changes, key", [
    pytest.param({"secret_key": "demo-" + "x" * 40}, "secret_key", id="demo-secret"),
    pytest.param({"issuer": "http://bridge.konfipay.example"}, "issuer", id="http-issuer"),
    pytest.param({"upstream_issuer": "http://sso.konfipay.example/realms/staff"},
                 "upstream_issuer", id="http-upstream"),
])
def test_production_mode_refuses(changes, key):
    with pytest.raises(SettingsError) as exc:
        load(**changes)
    assert exc.value.key == key


@pytest.mark.parametrize("changes", [
    pytest.param({"secret_key": "demo-" + "x" * 40}, id="demo-secret"),
    pytest.param({"issuer": "http://127.0.0.1:8000"}, id="http-issuer"),
    pytest.param({"database_url": "postgresql+psycopg://bridge@db/bridge"}, id="shared-db"),
])
def test_demo_and_test_mode_allow_what_production_refuses(changes):
    for mode in ("demo", "test"):
        assert load(mode=mode, **changes).mode == mode


def test_production_accepts_a_shared_db_without_a_limit_store():
    # Guess limits live in the database itself: every process sharing it shares them.
    s = load(database_url="postgresql+psycopg://bridge@db/bridge")
    assert s.mode == "production"


def test_a_retired_setting_says_why():
    with pytest.raises(SettingsError) as exc:
        load(ratelimit_storage_uri="redis://redis:6379/0")
    assert "removed" in str(exc.value) and "database" in str(exc.value)


@pytest.mark.parametrize("mode", ["production", "prod", "", "PRODUCTION"])
def test_dev_provider_refuses_outside_demo_and_test(mode):
    with pytest.raises(DevProviderRefused):
        DevProvider("https://sso.example", mode=mode)


# --- the database URL alone (db upgrade, tenants add, clients add) ---

def test_the_database_url_alone_needs_no_other_setting(tmp_path):
    assert Settings.load_database_url({}, environ={}) == Settings.database_url
    assert Settings.load_database_url(
        {}, environ={"IDP_BRIDGE_DATABASE_URL": "postgresql://bridge@db/bridge"}
    ) == "postgresql://bridge@db/bridge"
    config = write_toml(tmp_path, 'database_url = "sqlite:///from-file.sqlite"\n')
    assert Settings.load_database_url({"config_file": str(config)}, environ={}) == \
        "sqlite:///from-file.sqlite"
    # The CLI option wins, as for every setting; other settings may be wrong or missing.
    assert Settings.load_database_url(
        {"config_file": str(config), "database_url": "sqlite:///option.sqlite"},
        environ={"IDP_BRIDGE_ISSUER": "not a url"}) == "sqlite:///option.sqlite"


@pytest.mark.parametrize("environ, key", [
    ({"IDP_BRIDGE_DATABASE_ULR": "sqlite:///x.sqlite"}, "IDP_BRIDGE_DATABASE_ULR"),
    ({"IDP_BRIDGE_RATELIMIT_STORAGE_URI": "redis://r"}, "IDP_BRIDGE_RATELIMIT_STORAGE_URI"),
    ({"IDP_BRIDGE_DATABASE_URL": "bridge.sqlite"}, "IDP_BRIDGE_DATABASE_URL"),
])
def test_the_database_url_alone_still_refuses_typos_and_bad_urls(environ, key):
    with pytest.raises(SettingsError) as caught:
        Settings.load_database_url({}, environ=environ)
    assert key in str(caught.value)
