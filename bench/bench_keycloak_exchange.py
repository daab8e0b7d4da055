"""Keycloak's standard token exchange next to the bridge's, in one run on one machine.

Issue 3 and DESIGN.md section 10 (target: bridge >= 4x Keycloak). One run:

1. starts a real Keycloak 26 (``tests/keycloak_server.py``: ``start-dev``, in-memory database,
   the realm template of ``deploy/keycloak/``) on loopback;
2. Keycloak phase: wrk posts standard token exchanges (V2) to Keycloak's token endpoint as
   client ``kc-exchange-bench``, subject tokens from direct grants at ``kc-exchange-initial``;
3. bridge phase: the bridge under gunicorn, its upstream being that same Keycloak, and wrk
   posts token exchanges (no code: the advisors joined once) with Keycloak access tokens of
   advisors as subject tokens;
   then refreshes (single-use refresh tokens of one family, made in bulk beforehand) and
   first redemptions (advisors redeeming the current code of tenants they are not members
   of: one pair per request, seeded beforehand; counted as the memberships the phase
   created, so a body wrk sends twice never counts twice);
4. records what each one's revocation leaves alive, observed live in this run;

and writes ``bench/results/keycloak_vs_bridge.json``. Bounded: a warm-up and a measured phase
of at most 10 s each per server. Usage:
``python -m bench.bench_keycloak_exchange [--seconds 10] [--workers N] [--connections 8]``
(``--workers`` left out: the processes ``idp-bridge serve`` starts by default).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bench.common import free_port, wait_http, write_result
from bench.wrk import require_wrk, run_wrk
from tests.keycloak_server import KEYCLOAK_VERSION, HEAP, KeycloakServer, start_keycloak

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TENANT = "10042"
ADVISORS = ("bob", "carol")
MAX_PHASE_SECONDS = 10.0
TARGET_RATIO = 4.0


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def form(**fields) -> str:
    from urllib.parse import urlencode

    return urlencode(fields)


def keycloak_exchange_body(subject_token: str) -> str:
    return form(grant_type=TOKEN_EXCHANGE, subject_token=subject_token,
                subject_token_type=ACCESS_TOKEN_TYPE, requested_token_type=ACCESS_TOKEN_TYPE)


def keycloak_exchange(kc: KeycloakServer, subject_token: str) -> str:
    response = requests.post(kc.token_endpoint, data=keycloak_exchange_body(subject_token),
                             headers={"Content-Type": "application/x-www-form-urlencoded"},
                             auth=kc.client_auth("kc-exchange-bench"), timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def verifies_offline(kc: KeycloakServer, token: str) -> bool:
    """Would a resource server validating JWTs locally (JWKS, iss, exp) accept it?"""
    keys = KeySet.import_key_set(requests.get(kc.jwks_uri, timeout=30).json())
    try:
        claims = jwt.decode(token, keys, algorithms=["RS256"]).claims
        jwt.JWTClaimsRegistry(iss={"essential": True, "value": kc.issuer},
                              exp={"essential": True}).validate(claims)
    except JoseError:
        return False
    return True


def seconds_left(token: str) -> int:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["exp"] - time.time())


# --- phases -------------------------------------------------------------------------------

def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) so far of every process in the process group ``pgid``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime stime
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measured_phase(url: str, bodies: list[str], authorization: str, *, seconds: float,
                   connections: int, server_pgid: int) -> dict:
    """One wrk phase, with the server's CPU time and the machine's load around it: on a shared
    machine, exchanges per server CPU-second compare fairly even when throughput does not."""
    load_before = os.getloadavg()[0]
    cpu_before = group_cpu_seconds(server_pgid)
    result = run_wrk(url, bodies, authorization, seconds=seconds, connections=connections)
    cpu = group_cpu_seconds(server_pgid) - cpu_before
    return {**result,
            "server_cpu_seconds": round(cpu, 2),
            "per_server_cpu_second": round(result["ok"] / cpu, 1) if cpu else None,
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def measure_keycloak(kc: KeycloakServer, seconds: float, connections: int) -> dict:
    subjects = [kc.password_token(u, client_id="kc-exchange-initial")["access_token"]
                for u in ADVISORS]
    keycloak_exchange(kc, subjects[0])  # fails loudly if the exchange is not set up
    bodies = [keycloak_exchange_body(s) for s in subjects] * 2
    authorization = basic(*kc.client_auth("kc-exchange-bench"))
    warm_up = run_wrk(kc.token_endpoint, bodies, authorization, seconds=seconds,
                      connections=connections)  # the JVM compiles its hot paths meanwhile
    measured = measured_phase(kc.token_endpoint, bodies, authorization, seconds=seconds,
                              connections=connections, server_pgid=kc.process.pid)
    return {**measured, "warm_up_per_second": warm_up["per_second"]}


class BridgeProcess:
    """The bridge under gunicorn on loopback, its upstream being the Keycloak of this run."""

    def __init__(self, kc: KeycloakServer, workers: int | None, *, first_tenants: int = 0):
        from idp_bridge.services.operator import add_client, add_tenant
        from idp_bridge.storage.db import Database

        self.workdir = Path(tempfile.mkdtemp(prefix="idp-bridge-bench-kc-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update({
            "IDP_BRIDGE_MODE": "test",
            "IDP_BRIDGE_ISSUER": self.base,
            "IDP_BRIDGE_DATABASE_URL": f"sqlite:///{self.workdir}/bench.sqlite",
            "IDP_BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
            "IDP_BRIDGE_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "IDP_BRIDGE_UPSTREAM_ISSUER": kc.issuer,
            "IDP_BRIDGE_UPSTREAM_AUDIENCES": "idp-bridge",
        })
        self.env = env
        database = Database(env["IDP_BRIDGE_DATABASE_URL"])
        database.upgrade()
        add_tenant(database, TENANT, "Muster GmbH")
        self.secret = add_client(database, "advisor-console")
        self.rs_secret = add_client(database, "example-resource-server",
                                    roles=("introspect", "receiver"))
        #: Tenants for the first-redemption phase, with their current codes.
        self.first_tenants = seed_tenants(database, env["IDP_BRIDGE_SECRET_KEY"], first_tenants)
        self.database = database
        extra = [] if workers is None else ["--workers", str(workers)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "idp_bridge.cli", "serve", "--port", str(self.port),
             *extra], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        wait_http("127.0.0.1", self.port, "/jwks")

    @property
    def authorization(self) -> str:
        return basic("advisor-console", self.secret)

    def post(self, path: str, data: dict, auth=None) -> requests.Response:
        return requests.post(self.base + path, data=data, timeout=30,
                             auth=auth or ("advisor-console", self.secret))

    def api(self, method: str, path: str, token: str) -> requests.Response:
        return requests.request(method, self.base + path, timeout=30,
                                headers={"Authorization": f"Bearer {token}"})

    def exchange(self, subject_token: str, **extra) -> requests.Response:
        return self.post("/token", {"grant_type": TOKEN_EXCHANGE, "tenant": TENANT,
                                    "subject_token": subject_token,
                                    "subject_token_type": ACCESS_TOKEN_TYPE, **extra})

    def introspect(self, token: str) -> bool:
        response = self.post("/introspect", {"token": token},
                             auth=("example-resource-server", self.rs_secret))
        response.raise_for_status()
        return response.json()["active"]

    def worker_count(self) -> int:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return len(path.read_text().split()) if path.exists() else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.database.dispose()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)


def seed_tenants(database, secret_key: str, count: int) -> list[tuple[str, str]]:
    """``count`` tenants ``fr-00000``... and each one's current access code (made now, in
    this process, before the server starts: what the tenant would read to the advisor)."""
    from idp_bridge.domain.access_codes import AccessCodes
    from idp_bridge.app import derive_secret
    from idp_bridge.storage.db import utcnow
    from idp_bridge.storage.models import Tenant

    if not count:
        return []
    now = utcnow()
    ids = [f"fr-{i:05d}" for i in range(count)]
    with database.transaction() as session:
        session.add_all(Tenant(id=t, name=f"Tenant {t}", created_at=now) for t in ids)
    codes = AccessCodes(derive_secret(secret_key, "access codes"))  # the server's derivation
    with database.transaction() as session:
        return [(t, codes.current(session, t, now).display) for t in ids]


def join(bridge: BridgeProcess, kc: KeycloakServer, user: str) -> dict:
    """anna reads the code with her Keycloak token; ``user`` redeems it."""
    anna = kc.password_token("anna")["access_token"]
    code = bridge.api("GET", f"/api/tenants/{TENANT}/access-code", anna).json()["code"]
    response = bridge.exchange(kc.password_token(user)["access_token"], access_code=code)
    if response.status_code != 200:
        raise SystemExit(f"the bridge refused {user}'s Keycloak token: {response.text}")
    return response.json()


def measure_bridge(bridge: BridgeProcess, kc: KeycloakServer, seconds: float,
                   connections: int) -> dict:
    for user in ADVISORS:
        join(bridge, kc, user)
    bodies = [form(grant_type=TOKEN_EXCHANGE, tenant=TENANT, subject_token=token,
                   subject_token_type=ACCESS_TOKEN_TYPE)
              for token in (kc.password_token(u)["access_token"] for u in ADVISORS)] * 2
    url = bridge.base + "/token"
    warm_up = run_wrk(url, bodies, bridge.authorization, seconds=2, connections=connections)
    measured = measured_phase(url, bodies, bridge.authorization, seconds=seconds,
                              connections=connections, server_pgid=bridge.process.pid)
    return {**measured, "warm_up_per_second": warm_up["per_second"],
            "processes": bridge.worker_count()}


def measure_bridge_refresh(bridge: BridgeProcess, kc: KeycloakServer, seconds: float,
                           connections: int, expected_per_second: float) -> dict:
    """Refreshes/s: single-use refresh tokens of one of bob's families, made in bulk."""
    from bench.bench_token_exchange import _more_refresh_tokens

    first = bridge.exchange(kc.password_token("bob")["access_token"])
    first.raise_for_status()
    wanted = int(max(expected_per_second, 100) * seconds * 3) + 2000
    tokens = _more_refresh_tokens(bridge.database, first.json()["refresh_token"], wanted)
    bodies = [form(grant_type="refresh_token", refresh_token=t) for t in tokens]
    result = measured_phase(bridge.base + "/token", bodies, bridge.authorization,
                            seconds=seconds, connections=connections,
                            server_pgid=bridge.process.pid)
    result["refresh_tokens_prepared"] = len(tokens)
    result["prepared_enough"] = result["requests"] < len(tokens)
    return result


def measure_bridge_first_redemptions(bridge: BridgeProcess, kc: KeycloakServer, seconds: float,
                                     connections: int) -> dict:
    """First redemptions/s: bob or carol redeem the current code of a tenant they are not a
    member of (one seeded tenant per request). Counted as the memberships created during the
    phase: should wrk run out of bodies and send one again, that request is an ordinary
    exchange of a member and does not count."""
    from sqlalchemy import func, select

    from idp_bridge.storage.models import Membership

    subjects = {u: kc.password_token(u)["access_token"] for u in ADVISORS}
    bodies = [form(grant_type=TOKEN_EXCHANGE, tenant=tenant, access_code=code,
                   subject_token=subjects[ADVISORS[i % len(ADVISORS)]],
                   subject_token_type=ACCESS_TOKEN_TYPE)
              for i, (tenant, code) in enumerate(bridge.first_tenants)]

    def memberships() -> int:
        with bridge.database.read() as session:
            return session.execute(select(func.count()).select_from(Membership).where(
                Membership.tenant_id.like("fr-%"))).scalar_one()

    before = memberships()
    result = measured_phase(bridge.base + "/token", bodies, bridge.authorization,
                            seconds=seconds, connections=connections,
                            server_pgid=bridge.process.pid)
    created = memberships() - before
    result.update({"tenants_prepared": len(bodies), "memberships_created": created,
                   "per_second": round(created / seconds, 1),
                   "prepared_enough": created < len(bodies)})
    return result


# --- what revocation leaves alive ---------------------------------------------------------

def keycloak_revocation_facts(kc: KeycloakServer) -> dict:
    facts = {}
    subject = kc.password_token("carol", client_id="kc-exchange-initial")
    exchanged = keycloak_exchange(kc, subject["access_token"])
    kc.revoke(subject["access_token"], "access_token", "kc-exchange-initial")
    facts["after_subject_token_revoked"] = {
        "subject_active_at_introspection": kc.introspect(
            subject["access_token"], "kc-exchange-initial")["active"],
        "exchanged_active_at_introspection": kc.introspect(exchanged, "kc-exchange-bench")[
            "active"],
        "exchanged_valid_offline": verifies_offline(kc, exchanged),
    }
    subject = kc.password_token("carol", client_id="kc-exchange-initial")
    exchanged = keycloak_exchange(kc, subject["access_token"])
    kc.logout_user("carol")
    facts["after_user_logout"] = {
        "exchanged_active_at_introspection": kc.introspect(exchanged, "kc-exchange-bench")[
            "active"],
        "exchanged_valid_offline": verifies_offline(kc, exchanged),
        "offline_valid_for_seconds_more": seconds_left(exchanged),
    }
    facts["summary"] = (
        "Revoking the subject token (RFC 7009) leaves the exchanged access token active, even "
        "at Keycloak's introspection. Logout or disabling the user makes introspection say "
        "inactive, but the exchanged JWT still verifies offline (JWKS, iss, exp) until its exp "
        "(access-token lifespan, 300 s here); Keycloak publishes no revocation event that "
        "resource servers validating locally could act on.")
    return facts


def bridge_revocation_facts(bridge: BridgeProcess, kc: KeycloakServer) -> dict:
    joined = join(bridge, kc, "bob")  # a fresh family of bob's existing membership
    anna = kc.password_token("anna")["access_token"]
    bob_sub = kc.user_id("bob")
    items = bridge.api("GET", f"/api/tenants/{TENANT}/memberships", anna).json()["memberships"]
    membership = next(m["id"] for m in items if m["advisor"] == bob_sub)
    started = time.perf_counter()
    removed = bridge.api("DELETE", f"/api/tenants/{TENANT}/memberships/{membership}", anna)
    removal_ms = round((time.perf_counter() - started) * 1000, 1)
    refresh = bridge.post("/token", {"grant_type": "refresh_token",
                                     "refresh_token": joined["refresh_token"]})
    again = bridge.exchange(kc.password_token("bob")["access_token"])
    return {
        "after_membership_removed": {
            "removal_status": removed.status_code,
            "removal_request_ms": removal_ms,
            "access_token_active_at_introspection": bridge.introspect(joined["access_token"]),
            "refresh_status": refresh.status_code,
            "refresh_error": refresh.json().get("error"),
            "exchange_without_new_code_error": again.json().get("error"),
        },
        "summary": (
            "Removing the membership ends its grant at once: access tokens inactive at "
            "introspection, refresh refused, a new exchange needs a new code; the grant_id is "
            "published on the revocation feed (SSF/CAEP session-revoked) so that resource "
            "servers validating JWTs locally reject them within a second (measured by the "
            "revocation benchmark, not here)."),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=None,
                        help="bridge processes (default: what `idp-bridge serve` starts)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--first-tenants", type=int, default=6000,
                        help="tenants seeded for the first-redemption phase")
    args = parser.parse_args(argv)
    seconds = min(args.seconds, MAX_PHASE_SECONDS)
    require_wrk()

    kc = start_keycloak()
    bridge = None
    try:
        keycloak_result = measure_keycloak(kc, seconds, args.connections)
        bridge = BridgeProcess(kc, args.workers, first_tenants=args.first_tenants)
        bridge_result = measure_bridge(bridge, kc, seconds, args.connections)
        refresh_result = measure_bridge_refresh(bridge, kc, seconds, args.connections,
                                                bridge_result["per_second"])
        first_result = measure_bridge_first_redemptions(bridge, kc, seconds, args.connections)
        facts = {"keycloak": keycloak_revocation_facts(kc),
                 "bridge": bridge_revocation_facts(bridge, kc)}
    finally:
        if bridge is not None:
            bridge.stop()
        kc.stop()

    for name, phase in (("keycloak", keycloak_result), ("bridge", bridge_result),
                        ("refresh", refresh_result), ("first redemptions", first_result)):
        if phase["non_2xx"] or phase["socket_errors"]:
            print(f"warning: {name} phase had errors: {phase}", file=sys.stderr)
    ratio = round(bridge_result["per_second"] / keycloak_result["per_second"], 2)
    refresh_ratio = round(refresh_result["per_second"] / keycloak_result["per_second"], 2)
    first_ratio = round(first_result["per_second"] / keycloak_result["per_second"], 2)
    cpu_ratio = None
    if bridge_result["per_server_cpu_second"] and keycloak_result["per_server_cpu_second"]:
        cpu_ratio = round(bridge_result["per_server_cpu_second"]
                          / keycloak_result["per_server_cpu_second"], 2)
    result = {
        "setup": {
            "keycloak": f"Keycloak {KEYCLOAK_VERSION} start-dev (dev-mem H2), JVM heap {HEAP}, "
                        "realm konfipay, RS256, standard token exchange V2 by kc-exchange-bench",
            "bridge": f"idp-bridge serve (gunicorn gthread), {bridge_result['processes']} "
                      f"worker processes ({'--workers given' if args.workers else 'its default'}"
                      "), SQLite WAL with group commit (every answer flushed), ES256; subject "
                      "tokens are Keycloak access tokens of the same run",
            "load": f"wrk, 2 threads, {args.connections} connections on loopback; warm-up then "
                    f"{seconds} s measured per server, one after the other",
        },
        "keycloak_token_exchange": keycloak_result,
        "bridge_token_exchange": bridge_result,
        "bridge_refresh": refresh_result,
        "bridge_first_redemption": first_result,
        "ratio_bridge_per_keycloak": ratio,
        "ratio_refresh_per_keycloak_exchange": refresh_ratio,
        "ratio_first_redemption_per_keycloak_exchange": first_ratio,
        "targets": {"exchange": TARGET_RATIO, "refresh": TARGET_RATIO, "first_redemption": 2.0},
        "targets_met": {"exchange": ratio >= TARGET_RATIO,
                        "refresh": refresh_ratio >= TARGET_RATIO,
                        "first_redemption": first_ratio >= 2.0},
        "ratio_per_server_cpu_second": cpu_ratio,
        "cpus": os.cpu_count(),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "revocation_leaves_alive": facts,
    }
    path = write_result("keycloak_vs_bridge", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
