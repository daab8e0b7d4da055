"""deploy/compose.yaml and deploy/nginx/bridge.conf agree with the topology that runs for real
in tests/test_topology_nginx.py, and bridge.conf is sound for this product (issue 12, item 13).

Fast: files are read and parsed, nothing is started. The topology test defines its bridges'
settings, ``serve`` arguments and nginx file once (``bridge_environment``, ``serve_arguments``,
``NGINX_CONFIG``); the tests below compare compose.yaml with those, so that the two cannot
drift apart, and read bridge.conf's numbers against the bridge's own limits.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from idp_bridge.cli import gunicorn_options
from idp_bridge.settings import Settings, SettingsError
from test_topology_nginx import (NGINX_CONFIG, NGINX_LISTEN, NGINX_UPSTREAMS, bridge_environment,
                                 render_bridge_conf, serve_arguments)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
BRIDGE_SERVICES = ("bridge-1", "bridge-2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the << merge keys


# --- a small reader of nginx's configuration syntax -------------------------------------

def nginx_directives(text: str) -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """(enclosing blocks, name, arguments) of every simple directive, in order. Quoted
    arguments keep their quotes stripped; ``#`` starts a comment outside quotes."""
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|#[^\n]*|[{};]|[^\s{};"\'#]+', text)
    blocks: list[str] = []
    words: list[str] = []
    found = []
    for token in tokens:
        if token.startswith("#"):
            continue
        if token == ";":
            found.append((tuple(blocks), words[0], tuple(words[1:])))
            words = []
        elif token == "{":
            blocks.append(" ".join(words))
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            blocks.pop()
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert not blocks and not words, "unbalanced nginx configuration"
    return found


def directive(config, name: str, block: str | None = None) -> list[tuple[str, ...]]:
    """Arguments of each ``name`` directive (inside blocks starting with ``block``)."""
    return [args for blocks, found, args in config if found == name
            and (block is None or any(b.split()[0] == block for b in blocks))]


def server_level(config, name: str) -> tuple[str, ...]:
    """The one ``name`` directive of the server block itself (what every location of it
    inherits unless it sets its own)."""
    values = [args for blocks, found, args in config if found == name and blocks == ("server",)]
    assert len(values) == 1, f"{NGINX_CONFIG.name}: expected one {name} in server, found {values}"
    # No location overrides it (a location setting its own would not inherit the rest).
    assert not [args for blocks, found, args in config if found == name
                and any(b.split()[0] == "location" for b in blocks)], name
    return values[0]


def one(config, name: str, block: str | None = None) -> tuple[str, ...]:
    values = directive(config, name, block)
    assert len(values) == 1, f"{NGINX_CONFIG.name}: expected one {name}, found {values}"
    return values[0]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, f"not an nginx time: {value}"
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match[2]]


def size(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    assert match, f"not an nginx size: {value}"
    return int(match[1]) * {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, None: 1}[
        match[2].lower() if match[2] else None]


@pytest.fixture(scope="module")
def nginx() -> list:
    return nginx_directives(NGINX_CONFIG.read_text())


def setting_default(name: str):
    return next(f.default for f in fields(Settings) if f.name == name)


def compose_setting(compose, name: str, default):
    """A setting's value in compose.yaml's bridges, else the bridge's default."""
    value = compose["x-bridge"]["environment"].get(f"IDP_BRIDGE_{name.upper()}")
    return type(default)(value) if value is not None else default


# --- compose.yaml against the topology test ---------------------------------------------

def test_compose_bridges_name_the_settings_of_the_topology_test(compose):
    placeholders = {name: "x" for name in inspect.signature(bridge_environment).parameters}
    tested = set(bridge_environment(**placeholders))
    assert set(compose["x-bridge"]["environment"]) == tested
    for service in (*BRIDGE_SERVICES, "migrate"):
        assert compose["services"][service]["environment"] == compose["x-bridge"]["environment"]
    known = {f"IDP_BRIDGE_{f.name.upper()}" for f in fields(Settings)}
    assert tested <= known, "every name is a setting of the bridge"


def test_compose_starts_each_bridge_as_the_topology_test_does(compose):
    for service in BRIDGE_SERVICES:
        assert compose["services"][service]["command"] == \
            ["idp-bridge", *serve_arguments("0.0.0.0", 8000)]
    assert compose["services"]["migrate"]["command"] == ["idp-bridge", "db", "upgrade"]


def test_compose_mounts_the_nginx_file_under_test(compose):
    proxy = compose["services"]["proxy"]
    mounts = [volume.split(":") for volume in proxy["volumes"]]
    assert [(COMPOSE.parent / source).resolve() for source, target, *_ in mounts
            if target == "/etc/nginx/conf.d/default.conf"] == [NGINX_CONFIG.resolve()]
    published = [port.rsplit(":", 1)[1] for port in proxy["ports"]]
    assert published == [NGINX_LISTEN.split()[1].rstrip(";")]  # the container port nginx uses
    assert all(port.startswith("127.0.0.1:") for port in proxy["ports"])


def test_nginx_upstreams_are_the_compose_bridges(compose, nginx):
    servers = [args[0] for args in directive(nginx, "server", "upstream")]
    assert tuple(servers) == NGINX_UPSTREAMS
    listen_port = serve_arguments("0.0.0.0", 8000)
    assert servers == [f"{service}:{listen_port[listen_port.index('--port') + 1]}"
                       for service in BRIDGE_SERVICES]
    assert set(BRIDGE_SERVICES) <= set(compose["services"]["proxy"]["depends_on"])
    passes = directive(nginx, "proxy_pass", "location")
    assert passes and set(passes) == {("http://bridge",)}  # every location: the two bridges


def test_the_topology_test_changes_only_addresses_and_ports():
    shipped = NGINX_CONFIG.read_text()
    rendered = render_bridge_conf(shipped, (18001, 18002), 18000)
    changed = [(a, b) for a, b in zip(shipped.splitlines(), rendered.splitlines()) if a != b]
    assert len(shipped.splitlines()) == len(rendered.splitlines())
    assert [b.strip() for _, b in changed] == [
        "server 127.0.0.1:18001 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:18002 max_fails=1 fail_timeout=5s;",
        "listen 127.0.0.1:18000;"]
    with pytest.raises(ValueError, match="exactly once"):
        render_bridge_conf(shipped + f"\n# {NGINX_LISTEN}\n", (1, 2), 3)


# --- bridge.conf against the bridge's own limits ----------------------------------------

def _settings(**changes) -> Settings:
    return Settings.load({"mode": "test", "issuer": "https://bridge.example",
                          "secret_key": "s" * 40, "key_encryption_key": Fernet.generate_key().decode(),
                          "upstream_issuer": "https://sso.example/realms/konfipay", **changes},
                         environ={})


def test_every_long_poll_the_settings_allow_ends_before_nginx_gives_up(compose, nginx):
    read_timeout = seconds(server_level(nginx, "proxy_read_timeout")[0])
    with pytest.raises(SettingsError) as refused:
        _settings(ssf_long_poll_seconds=read_timeout)
    assert refused.value.key == "ssf_long_poll_seconds"
    assert compose_setting(compose, "ssf_long_poll_seconds",
                           setting_default("ssf_long_poll_seconds")) < read_timeout
    from test_topology_nginx import LONG_POLL_SECONDS

    assert LONG_POLL_SECONDS < read_timeout


def test_body_limit_leaves_the_answer_to_the_bridge(compose, nginx):
    limits = {blocks[-1]: size(args[0]) for blocks, found, args in nginx
              if found == "client_max_body_size"}
    bridge = compose_setting(compose, "max_request_bytes", setting_default("max_request_bytes"))
    # Over the bridge's limit, under nginx's: the bridge answers (JSON or a translated page).
    assert bridge < limits["server"] <= 2 * bridge
    # The access-record ingest takes bigger batches (a limit of its own in the bridge).
    from idp_bridge.domain.access_records import MAX_BATCH_BYTES

    assert MAX_BATCH_BYTES < limits["location = /access-records"] <= 2 * MAX_BATCH_BYTES
    assert set(limits) == {"server", "location = /access-records"}


def test_a_request_that_may_have_been_processed_is_never_resent(nginx):
    conditions = set(server_level(nginx, "proxy_next_upstream"))
    assert "non_idempotent" not in conditions  # a POST /token must never be replayed
    assert conditions <= {"error", "timeout"}, "a 5xx of the bridge is shared by both instances"
    assert server_level(nginx, "proxy_next_upstream_tries") == (str(len(NGINX_UPSTREAMS)),)


def test_nginx_drops_idle_upstream_connections_before_the_bridge(nginx):
    nginx_idle = seconds(one(nginx, "keepalive_timeout", "upstream")[0])
    assert nginx_idle < gunicorn_options("127.0.0.1:8000", 1)["keepalive"]
    assert server_level(nginx, "proxy_http_version") == ("1.1",)
    assert one(nginx, "keepalive", "upstream")


def test_forwarded_headers_cannot_reach_the_bridge_from_a_client(nginx):
    headers = dict(args for blocks, found, args in nginx
                   if found == "proxy_set_header" and blocks == ("server",))
    # No location sets headers of its own (it would then inherit none of these).
    assert not directive(nginx, "proxy_set_header", "location")
    for name in ("X-Forwarded-Host", "X-Forwarded-Port", "X-Forwarded-Prefix", "Forwarded"):
        assert headers[name] == "", f"{name} is removed"
    assert headers["X-Forwarded-For"] == "$remote_addr"  # set, never appended to a client's
    assert headers["X-Request-ID"] == "$request_id"
    # What makes that safe: the bridge trusts no forwarded header (no ProxyFix), every
    # absolute URL comes from the issuer setting.
    sources = [p for p in (ROOT / "idp_bridge").rglob("*.py") if "ProxyFix" in p.read_text()]
    assert sources == []
