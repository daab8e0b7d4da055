"""Guessing cannot lock a tenant out, and the limits hold across processes (issue 10
items 5 and 6).

Wrong access codes are counted in the database per advisor: ``code_max_failures`` per
advisor for one code of one tenant (then that advisor waits for the tenant's next code) and
``code_guess_limit_advisor`` per advisor across all tenants in a sliding window. Nothing is
tenant-wide any more: other advisors' failures never refuse an advisor holding the code,
and wrong guesses never rotate it. Every process sharing the database shares the counts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from conftest import (ACCESS_TOKEN_TYPE, CLIENT_ID, OTHER_TENANT, TENANT, TOKEN_EXCHANGE,
                      Bridge, _built_apps, active_memberships, audit_events, wrong_code)
from idp_bridge.services.operator import add_tenant
from idp_bridge.app import create_app
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AuditEvent, CodeGuess, CodeGuesser

WRONG = "access_code is wrong or has expired"
PER_CODE = "too many wrong access codes from you for this tenant's current code"
WINDOW = "too many wrong access codes from you in"


@pytest.fixture
def attackers(upstream):
    """Three more advisor accounts at the upstream (``mallory0`` to ``mallory2``)."""
    saved = copy.deepcopy(upstream.users)
    for i in range(3):
        upstream.users[f"mallory{i}"] = {
            "sub": f"mallory-{i}", "name": f"Mallory {i}", "email": f"m{i}@evil.example",
            "realm_roles": ["advisor"], "groups": []}
    yield [f"mallory{i}" for i in range(3)]
    upstream.users.clear()
    upstream.users.update(saved)


def descriptions(responses) -> list[str]:
    out = []
    for r in responses:
        assert r.status_code == 400 and r.json["error"] == "invalid_grant", r.json
        out.append(WRONG if r.json["error_description"] == WRONG else
                   PER_CODE if r.json["error_description"].startswith(PER_CODE) else
                   WINDOW if r.json["error_description"].startswith(WINDOW) else
                   r.json["error_description"])
    return out


def guess_rows(bridge) -> int:
    with bridge.services.db.read() as session:
        return session.scalar(select(func.count()).select_from(CodeGuess))


# --- others' failures never stop an advisor holding the code ---------------------------------

def test_three_accounts_guessing_do_not_lock_out_an_advisor_holding_the_code(bridge, attackers):
    """The reported lockout: 3 accounts x 10 wrong codes refused the right code for 15 min."""
    code = bridge.current_code()
    for user in attackers:
        answers = descriptions([bridge.exchange(user, code=wrong_code(code)) for _ in range(10)])
        assert answers == [WRONG] * 5 + [PER_CODE] * 5
    assert bridge.current_code() == code  # wrong guesses never rotate the code
    assert active_memberships(bridge) == []
    assert len(audit_events(bridge, "access_code.failed")) == 15
    limited = audit_events(bridge, "access_code.rate_limited")
    assert len(limited) == 15 and {e["detail"]["limit"] for e in limited} == {"code"}
    # The tenant-wide count is still in the audit: the 15th wrong guess for this code.
    assert audit_events(bridge, "access_code.failed")[0]["detail"]["failures"] == 15
    joined = bridge.exchange("carol", code=code)
    assert joined.status_code == 200, joined.json
    assert [m.advisor_subject for m in active_memberships(bridge)] == [
        bridge.upstream.users["carol"]["sub"]]


def test_an_advisors_own_typos_do_not_stop_a_colleague(bridge):
    code = bridge.current_code()
    assert descriptions([bridge.exchange("bob", code=wrong_code(code)) for _ in range(6)]) == [
        WRONG] * 5 + [PER_CODE]
    assert descriptions([bridge.exchange("bob", code=code)]) == [PER_CODE]
    assert active_memberships(bridge) == []
    assert bridge.exchange("carol", code=code).status_code == 200


def test_the_per_code_limit_lifts_when_the_code_changes(bridge):
    code = bridge.current_code()
    for _ in range(5):
        bridge.exchange("bob", code=wrong_code(code))
    assert descriptions([bridge.exchange("bob", code=code)]) == [PER_CODE]
    assert bridge.exchange("carol", code=code).status_code == 200  # redeemed: a new code
    new = bridge.current_code()
    assert new != code
    assert descriptions([bridge.exchange("bob", code=wrong_code(new))]) == [WRONG]
    assert bridge.exchange("bob", code=new).status_code == 200


def test_the_per_code_limit_is_per_tenant(bridge):
    code = bridge.current_code()
    for _ in range(5):
        bridge.exchange("bob", code=wrong_code(code))
    other = bridge._code_direct(OTHER_TENANT)
    assert bridge.exchange("bob", tenant=OTHER_TENANT, code=other).status_code == 200


def test_the_window_limit_spans_tenants(bridge_with):
    b = bridge_with(code_guess_limit_advisor="8 per 15 minutes")
    code, other = b.current_code(), b._code_direct(OTHER_TENANT)
    first = [b.exchange("bob", code=wrong_code(code)) for _ in range(5)]
    second = [b.exchange("bob", tenant=OTHER_TENANT, code=wrong_code(other)) for _ in range(4)]
    assert descriptions(first + second) == [WRONG] * 8 + [WINDOW]
    refused = b.exchange("bob", tenant=OTHER_TENANT, code=other)
    assert descriptions([refused]) == [WINDOW]
    assert "15 minutes" in refused.json["error_description"]
    assert active_memberships(b, OTHER_TENANT) == []
    assert b._code_direct(OTHER_TENANT) == other
    assert rate_limited_in(b, OTHER_TENANT)[-1]["limit"] == "advisor"
    # Only bob's window is full.
    assert b.exchange("carol", tenant=OTHER_TENANT, code=other).status_code == 200


def rate_limited_in(bridge, tenant_id) -> list:
    with bridge.services.db.read() as session:
        return [e.detail for e in session.scalars(select(AuditEvent).where(
            AuditEvent.tenant_id == tenant_id, AuditEvent.event == "access_code.rate_limited"))]


@pytest.mark.parametrize("guessed, expected", [
    pytest.param((TENANT,), PER_CODE, id="per-code"),
    pytest.param((TENANT, OTHER_TENANT), WINDOW, id="window"),
])
def test_refusals_change_nothing_but_the_audit(bridge_with, guessed, expected):
    b = bridge_with(code_guess_limit_advisor="10 per 15 minutes", code_max_failures=5)
    add_tenant(b.services.db, "30001", "Dritte KG")
    for tenant_id in guessed:
        right = b._code_direct(tenant_id)
        for _ in range(5):
            b.exchange("bob", tenant=tenant_id, code=wrong_code(right))
    target = TENANT if expected == PER_CODE else "30001"
    code = b._code_direct(target)
    before_rows = guess_rows(b)
    before_failed = len(audit_events(b, "access_code.failed"))
    response = b.exchange("bob", tenant=target, code=code)
    assert descriptions([response]) == [expected]
    assert "access_token" not in response.json
    assert code not in response.json["error_description"]
    assert active_memberships(b, target) == []
    assert b._code_direct(target) == code
    assert guess_rows(b) == before_rows  # a refused attempt is no guess
    assert len(audit_events(b, "access_code.failed")) == before_failed
    assert rate_limited_in(b, target)[-1]["limit"] == ("code" if expected == PER_CODE
                                                      else "advisor")


# --- the bound on an attacker's success ------------------------------------------------------

def test_an_attacker_gets_exactly_the_computed_number_of_guesses(bridge):
    """Simulates six hours of an attacker account guessing as fast as it is let, against
    eight tenants, with explicit clocks, and checks the limiter against the bound computed
    from the settings (GuessLimiter.max_guesses)."""
    s = bridge.services
    limiter, settings = s.exchange.guesses, s.settings
    per_code, (window_count, window_seconds) = settings.code_max_failures, settings.code_guess_window
    ttl = settings.code_ttl_seconds
    period, step = 6 * 3600, 300
    tenants = [f"4{n:04d}" for n in range(8)]
    for tenant_id in tenants:
        add_tenant(s.db, tenant_id, f"Target {tenant_id}")
    attacker = SimpleNamespace(subject="mallory-x", username="mallory")
    t0 = utcnow().replace(microsecond=0) + timedelta(minutes=1)
    counted, refused = {t: 0 for t in tenants}, 0
    for offset in range(0, period, step):
        now = t0 + timedelta(seconds=offset)
        with s.db.transaction() as session:
            limiter.sweep(session, now)  # the maintenance loop's sweep never widens the limits
        window_full = False
        for tenant_id in tenants:
            while True:
                with s.db.transaction() as session:
                    tenant = s.memberships.tenant(session, tenant_id)
                    current = s.codes.current(session, tenant_id, now)
                    failure = s.exchange.redeem_code(session, tenant, attacker, CLIENT_ID,
                                                     wrong_code(current.code), now)
                if failure.description == WRONG:
                    counted[tenant_id] += 1
                    continue
                refused += 1
                window_full = failure.description.startswith(WINDOW)
                break
            if window_full:
                break
    codes_per_tenant = math.ceil(period / ttl)  # no redemption: the code changes with time
    bound = limiter.max_guesses(period, tenants=len(tenants), codes_per_tenant=codes_per_tenant)
    assert bound == min(window_count * math.ceil(period / window_seconds),
                        per_code * len(tenants) * codes_per_tenant) == 240
    assert sum(counted.values()) == bound  # never more; and the bound is reached, so tight
    assert all(n <= per_code * codes_per_tenant for n in counted.values())
    assert refused > 0


def test_the_daily_success_probability_stated_in_the_docs(settings):
    """README / docs/security.md: with the defaults an advisor account gets at most 960
    guesses a day across all tenants (125 at one tenant whose code nobody redeems), so A
    accounts hit a live code with probability at most A * 8.7e-10 per day."""
    from idp_bridge.domain.exchange import GuessLimiter

    limiter = GuessLimiter(per_code=settings.code_max_failures,
                           window_count=settings.code_guess_window[0],
                           window_seconds=settings.code_guess_window[1],
                           code_ttl_seconds=settings.code_ttl_seconds)
    day = 86400
    assert limiter.max_guesses(day) == 960
    # one tenant, codes change only with time: at most ceil(day / ttl) + 1 codes in any day
    assert limiter.max_guesses(day, tenants=1, codes_per_tenant=day // 3600 + 1) == 125
    per_account = limiter.max_guesses(day) / 2 ** 40
    assert per_account == pytest.approx(8.73e-10, rel=1e-3)
    assert 10 * per_account < 1e-8  # ten attacker accounts: below one in a hundred million


# --- across processes -----------------------------------------------------------------------

def twin(bridge: Bridge) -> Bridge:
    """A second process's view: its own app (and connection pool) on the same database."""
    app = create_app(bridge.services.settings)
    app.config.update(TEST_CLIENT_SECRET=bridge.secret, TEST_RS_SECRET=bridge.rs_secret)
    _built_apps.append(app)
    return Bridge(app, app.test_client(), bridge.upstream)


def test_two_apps_on_one_database_share_the_budget(bridge):
    other = twin(bridge)
    code = bridge.current_code()
    answers = [bridge.exchange("bob", code=wrong_code(code)) for _ in range(3)]
    answers += [other.exchange("bob", code=wrong_code(code)) for _ in range(2)]
    answers.append(bridge.exchange("bob", code=code))
    answers.append(other.exchange("bob", code=code))
    assert descriptions(answers) == [WRONG] * 5 + [PER_CODE] * 2
    assert active_memberships(bridge) == []
    assert other.exchange("carol", code=code).status_code == 200


def test_concurrent_guesses_are_counted_one_by_one(bridge):
    """Eight wrong guesses at the same moment on two apps: exactly code_max_failures are
    checked (the advisor's row lock), the rest refused."""
    apps = [bridge.app, twin(bridge).app]
    code = bridge.current_code()
    tokens = [bridge.upstream_token("bob") for _ in range(8)]
    barrier, results = threading.Barrier(8), [None] * 8

    def guess(i):
        client = apps[i % 2].test_client()
        barrier.wait()
        results[i] = client.post("/token", auth=bridge.auth(), data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": tokens[i],
            "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": TENANT,
            "access_code": wrong_code(code)})

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    answers = descriptions(results)
    assert sorted(answers) == sorted([WRONG] * 5 + [PER_CODE] * 3)
    assert guess_rows(bridge) == 5


def test_concurrent_guesses_at_many_tenants_meet_one_window(bridge_with):
    """Guesses at different tenants take different tenant locks; the advisor's own row lock
    still counts them one by one against the window."""
    b = bridge_with(code_guess_limit_advisor="4 per 15 minutes")
    tenants = [f"5{n:04d}" for n in range(8)]
    for tenant_id in tenants:
        add_tenant(b.services.db, tenant_id, f"Target {tenant_id}")
    codes = {t: b._code_direct(t) for t in tenants}
    apps = [b.app, twin(b).app]
    tokens = [b.upstream_token("bob") for _ in tenants]
    barrier, results = threading.Barrier(len(tenants)), [None] * len(tenants)

    def guess(i):
        client = apps[i % 2].test_client()
        barrier.wait()
        results[i] = client.post("/token", auth=b.auth(), data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": tokens[i],
            "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": tenants[i],
            "access_code": wrong_code(codes[tenants[i]])})

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(len(tenants))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(descriptions(results)) == sorted([WRONG] * 4 + [WINDOW] * 4)
    assert guess_rows(b) == 4


_GUESSER = r"""
import json, sys
from idp_bridge.app import create_app
job = json.load(sys.stdin)
app = create_app(overrides=job["settings"])
client = app.test_client()
out = []
for token in job["tokens"]:
    r = client.post("/token", auth=tuple(job["auth"]), data={
        "grant_type": job["grant"], "subject_token": token,
        "subject_token_type": job["type"], "tenant": job["tenant"], "access_code": job["code"]})
    out.append(r.get_json()["error_description"])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_real_processes_share_the_budget(bridge):
    """Two operating-system processes guessing at once on one database (as gunicorn workers
    would): together they get code_max_failures checked guesses, not one budget each."""
    settings = {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(bridge.services.settings).items()}
    code = bridge.current_code()
    jobs = [{"settings": settings, "auth": list(bridge.auth()), "grant": TOKEN_EXCHANGE,
             "type": ACCESS_TOKEN_TYPE, "tenant": TENANT, "code": wrong_code(code),
             "tokens": [bridge.upstream_token("bob") for _ in range(4)]} for _ in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _GUESSER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": sys.path[0]})
             for _ in jobs]
    outputs = [p.communicate(json.dumps(job), timeout=120) for p, job in zip(procs, jobs)]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    answers = [a for out, _ in outputs for a in json.loads(out.strip().splitlines()[-1])]
    assert sum(a == WRONG for a in answers) == 5
    assert sum(a.startswith(PER_CODE) for a in answers) == 3
    assert guess_rows(bridge) == 5
    assert active_memberships(bridge) == []


# --- housekeeping ----------------------------------------------------------------------------

def test_the_maintenance_loop_sweeps_old_guesses(bridge):
    s = bridge.services
    now = utcnow()
    retention = max(s.settings.code_guess_window[1], s.settings.code_ttl_seconds)
    old, recent = now - timedelta(seconds=retention + 60), now - timedelta(seconds=60)
    with s.db.transaction() as session:
        session.add_all([CodeGuesser(advisor_subject="gone", last_guess_at=old),
                         CodeGuesser(advisor_subject="kept", last_guess_at=recent)])
        session.add_all([CodeGuess(advisor_subject="gone", tenant_id=TENANT, code_counter=0,
                                   at=old),
                         CodeGuess(advisor_subject="kept", tenant_id=TENANT, code_counter=0,
                                   at=recent)])
    s.maintenance.run_once()
    with s.db.read() as session:
        assert session.scalars(select(CodeGuess.advisor_subject)).all() == ["kept"]
        assert session.scalars(select(CodeGuesser.advisor_subject)).all() == ["kept"]
