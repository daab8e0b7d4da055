"""Resource-server validation rate of ``scopes.guard`` against the raw ES256 verify rate.

DESIGN.md section 10: ``TokenGuard.validate`` must reach >= 80 % of what ``cryptography``
verifies per second on the same machine, single thread. Both are measured in this one run,
alternating (raw, guard, raw, guard, ...) so that a noisy neighbour hurts both alike; the
ratio of the medians is reported and written to ``bench/results/guard_validate.json``.

The token is realistic: the full advisor profile, the claims the bridge mints (RFC 9068) and
about the size of a real one. Discovery and JWKS are served from memory: the hot path does
not touch the network, and the benchmark should not depend on a port.

    python -m bench.bench_guard [--seconds 2] [--rounds 3]
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
        "auth_time": now - 60, "acr": "urn:mace:incommon:iap:silver", "amr": ["pwd", "otp"],
    }
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, key)


def guard_rate(guard: TokenGuard, token: str, seconds: float, max_ops: int) -> float:
    validate = guard.validate
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while n < max_ops:
        for _ in range(100):  # check the clock every 100 calls, as es256_rates' loop does
            validate(token, tenant=TENANT, scope="evaluation:read")
        n += 100
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (>= 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-ops", type=int, default=500_000)
    args = parser.parse_args(argv)

    key = ECKey.generate_key("P-256")
    kid = "bench-es256"
    jwks = {"keys": [{**key.as_dict(private=False), "kid": kid, "alg": "ES256", "use": "sig"}]}
    guard = TokenGuard(ISSUER, AUDIENCE, http=StaticHTTP(jwks))
    token = realistic_token(key, kid)
    claims = guard.validate(token, tenant=TENANT, scope="evaluation:read")  # warm-up
    assert claims["tenant"] == TENANT

    raw, ours = [], []
    for _ in range(args.rounds):
        raw.append(es256_rates(seconds=args.seconds, max_ops=args.max_ops)
                   ["es256_verify_per_second"])
        ours.append(guard_rate(guard, token, args.seconds, args.max_ops))
    raw_median, ours_median = statistics.median(raw), statistics.median(ours)
    ratio = ours_median / raw_median
    result = {
        "setup": {"token_bytes": len(token), "algorithm": "ES256", "threads": 1,
                  "seconds_per_measurement": args.seconds, "rounds": args.rounds,
                  "scope_checked": "evaluation:read (granted through evaluation:write)"},
        "reference": {"es256_verify_per_second": round(raw_median),
                      "rounds": [round(r) for r in raw]},
        "guard_validate": {"per_second": round(ours_median),
                           "rounds": [round(r) for r in ours],
                           "microseconds_per_call": round(1e6 / ours_median, 2)},
        "ratio": round(ratio, 3),
        "round_ratios": [round(o / r, 3) for o, r in zip(ours, raw)],
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }
    path = write_result("guard_validate", result)
    print(f"raw ES256 verify: {raw_median:,.0f}/s  guard.validate: {ours_median:,.0f}/s  "
          f"ratio {ratio:.3f} (target {TARGET})  -> {path}")
    return result


if __name__ == "__main__":
    main()
