"""Resource-server validation rate of ``scopes.guard`` against the raw ES256 verify rate.

DESIGN.md section 10: ``TokenGuard.validate`` must reach >= 80 % of what ``cryptography``
verifies per second on the same machine, single thread. Both are measured in this one run, in
short alternating slices (raw, guard, raw, guard, ...; at least 2 s each in total) so that a
noisy neighbour on a shared machine hurts both alike. Reported: the aggregate rates, the
ratio of the aggregates, and the median of the per-slice paired ratios (the headline: the
least sensitive to a load spike hitting one side), in ``bench/results/guard_validate.json``.

The token is realistic: the full advisor profile and the claims the bridge mints (RFC 9068),
about 1,070 bytes like a token from a real exchange (1,062 in the test suite). Discovery and JWKS are served from memory: the hot path does
not touch the network, and the benchmark should not depend on a port.

    python -m bench.bench_guard [--seconds 3] [--slices 12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # python bench/bench_guard.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import ECKey  # noqa: E402

from bench.common import write_result  # noqa: E402
from bench.crypto_reference import es256_rates  # noqa: E402
from scopes.catalog import advisor_scopes  # noqa: E402
from scopes.guard import TokenGuard  # noqa: E402

ISSUER = "https://idp-bridge.example"
AUDIENCE = "konfipay-api"
TENANT = "10042"
TARGET = 0.8


class _Response:
    def __init__(self, document, cache_control="max-age=3600"):
        self.status_code = 200
        self.headers = {"Cache-Control": cache_control}
        self._document = document

    def json(self):
        return self._document


class StaticHTTP:
    """A ``requests.Session`` stand-in answering discovery and JWKS from memory."""

    def __init__(self, jwks):
        self.documents = {
            f"{ISSUER}/.well-known/oauth-authorization-server": {
                "issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"},
            f"{ISSUER}/jwks": jwks,
        }

    def get(self, url, **kwargs):
        return _Response(self.documents[url])


def realistic_token(key: ECKey, kid: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER, "sub": str(uuid.uuid4()), "aud": AUDIENCE,
        "client_id": "advisor-console", "tenant": TENANT, "scope": " ".join(advisor_scopes()),
        "grant_id": str(uuid.uuid4()), "sid": str(uuid.uuid4()), "membership": "temporary",
        "jti": "Zq3vX0bq5m1c7bJ9dYH0Cw", "iat": now, "exp": now + 300,
        "auth_time": now - 60, "acr": "1", "amr": ["pwd", "otp"],
    }
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, key)


def guard_rate(guard: TokenGuard, token: str, seconds: float, max_ops: int) -> tuple[int, float]:
    """(calls, seconds) of ``guard.validate`` on ``token`` for about ``seconds``; the loop is
    the one ``es256_rates`` uses for the raw rate (a clock check per call), to be fair."""
    validate = guard.validate
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline and n < max_ops:
        validate(token, tenant=TENANT, scope="evaluation:read")
        n += 1
    return n, time.perf_counter() - start


def cpu_rate(call, seconds: float) -> float:
    """Calls per second of this thread's CPU time: insensitive to other processes taking the
    CPU away (a cross-check on a shared machine)."""
    n, deadline = 0, time.thread_time() + seconds
    start = time.thread_time()
    while time.thread_time() < deadline:
        call()
        n += 1
    return n / (time.thread_time() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="total per side (at least 2)")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--max-ops", type=int, default=500_000, help="bound per side")
    args = parser.parse_args(argv)
    seconds = max(args.seconds, 2.0)
    slice_seconds = seconds / args.slices
    slice_ops = max(100, args.max_ops // args.slices)

    key = ECKey.generate_key("P-256")
    kid = "ae0fd1c0ae3647c3"  # 16 hex characters, as the bridge's key ids
    jwks = {"keys": [{**key.as_dict(private=False), "kid": kid, "alg": "ES256", "use": "sig"}]}
    guard = TokenGuard(ISSUER, AUDIENCE, http=StaticHTTP(jwks))
    token = realistic_token(key, kid)
    claims = guard.validate(token, tenant=TENANT, scope="evaluation:read")  # warm-up
    assert claims["tenant"] == TENANT

    raw_rates, guard_calls, guard_seconds = [], [], []
    for _ in range(args.slices):
        raw_rates.append(es256_rates(seconds=slice_seconds, max_ops=slice_ops)
                         ["es256_verify_per_second"])
        calls, elapsed = guard_rate(guard, token, slice_seconds, slice_ops)
        guard_calls.append(calls)
        guard_seconds.append(elapsed)

    # Cross-check in CPU time, same interleaving: the raw verify exactly as es256_rates does
    # it (600-byte message, cached public key) against guard.validate.
    private = ec.generate_private_key(ec.SECP256R1())
    public, message, algorithm = private.public_key(), b"x" * 600, ec.ECDSA(hashes.SHA256())
    signature = private.sign(message, algorithm)
    cpu_raw, cpu_guard = [], []
    for _ in range(args.slices):
        cpu_raw.append(cpu_rate(lambda: public.verify(signature, message, algorithm),
                                slice_seconds))
        cpu_guard.append(cpu_rate(
            lambda: guard.validate(token, tenant=TENANT, scope="evaluation:read"),
            slice_seconds))
    cpu_ratio = statistics.median(g / r for g, r in zip(cpu_guard, cpu_raw))
    # es256_rates gives a rate per slice; its slices are as long as ours, so the mean of the
    # rates is the aggregate rate.
    raw_rate = statistics.fmean(raw_rates)
    guard_per_slice = [c / t for c, t in zip(guard_calls, guard_seconds)]
    guard_rate_total = sum(guard_calls) / sum(guard_seconds)
    paired = [g / r for g, r in zip(guard_per_slice, raw_rates)]
    ratio = statistics.median(paired)
    result = {
        "setup": {"token_bytes": len(token), "algorithm": "ES256", "threads": 1,
                  "seconds_per_side": seconds, "slices": args.slices,
                  "scope_checked": "evaluation:read (granted through evaluation:write)",
                  "reference": "bench.crypto_reference.es256_rates (verify of a 600-byte "
                               "message with a cached public key)"},
        "reference": {"es256_verify_per_second": round(raw_rate),
                      "per_slice": [round(r) for r in raw_rates]},
        "guard_validate": {"per_second": round(guard_rate_total),
                           "per_slice": [round(r) for r in guard_per_slice],
                           "calls": sum(guard_calls),
                           "microseconds_per_call": round(1e6 / guard_rate_total, 2)},
        "ratio": round(ratio, 3),
        "ratio_of_aggregates": round(guard_rate_total / raw_rate, 3),
        "paired_ratios": [round(p, 3) for p in paired],
        "cpu_time_cross_check": {
            "es256_verify_per_cpu_second": round(statistics.median(cpu_raw)),
            "guard_validate_per_cpu_second": round(statistics.median(cpu_guard)),
            "ratio": round(cpu_ratio, 3)},
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }
    path = write_result("guard_validate", result)
    print(f"raw ES256 verify: {raw_rate:,.0f}/s  guard.validate: {guard_rate_total:,.0f}/s  "
          f"ratio {ratio:.3f} (median of {args.slices} paired slices; aggregates "
          f"{guard_rate_total / raw_rate:.3f}; target {TARGET}); in CPU time "
          f"{cpu_ratio:.3f}  -> {path}")
    return result


if __name__ == "__main__":
    main()
