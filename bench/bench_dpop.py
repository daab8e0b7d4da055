"""Resource-server validation of a DPoP-bound token against two raw ES256 verifies.

DESIGN.md section 10 / issue 13 item 9: ``TokenGuard.validate_request`` of a DPoP-bound
access token (two signature checks: the token's, the proof's; plus ``ath``, ``htu``, the
thumbprint and the replay cache) must reach >= 80 % of the rate of *two* raw ES256 verifies
with ``cryptography``, single thread, measured in this one run. As in bench/bench_guard.py,
the two sides run in short alternating slices (raw, guard, raw, guard, ...) and the headline
is the median of the per-slice paired ratios; ``bench/results/dpop_validate.json``.

Every request has its own proof (a fresh ``jti``: the replay cache would refuse a second use),
signed before the timed loops with the client's P-256 key; the token is the realistic advisor
token of bench/bench_guard.py with ``cnf.jkt``. Discovery and JWKS are served from memory.

    python -m bench.bench_dpop [--seconds 3] [--slices 12]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # python bench/bench_dpop.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import ECKey  # noqa: E402

from bench.bench_guard import AUDIENCE, ISSUER, TENANT, StaticHTTP  # noqa: E402
from bench.common import write_result  # noqa: E402
from scopes.catalog import advisor_scopes  # noqa: E402
from scopes.guard import TokenGuard  # noqa: E402
from scopes.guard.dpop import access_token_hash, jwk_thumbprint  # noqa: E402

RS_URL = "https://payments.konfipay.example"
PATH = f"/tenants/{TENANT}/payments"
TARGET = 0.8
_ALG = ec.ECDSA(hashes.SHA256())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bound_token(key: ECKey, kid: str, jkt: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER, "sub": str(uuid.uuid4()), "aud": AUDIENCE,
        "client_id": "advisor-console", "tenant": TENANT, "scope": " ".join(advisor_scopes()),
        "grant_id": str(uuid.uuid4()), "sid": str(uuid.uuid4()), "membership": "temporary",
        "jti": "Zq3vX0bq5m1c7bJ9dYH0Cw", "iat": now, "exp": now + 300,
        "auth_time": now - 60, "acr": "1", "amr": ["pwd", "otp"], "cnf": {"jkt": jkt},
    }
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, key)


class ProofMaker:
    """The client's side: proofs of one P-256 key, as oauth4webapi makes them."""

    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP256R1())
        numbers = self.private.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x.to_bytes(32, "big")),
                    "y": b64(numbers.y.to_bytes(32, "big"))}
        self.jkt = jwk_thumbprint(self.jwk)
        self.header = b64(json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk},
                                     separators=(",", ":")).encode())

    def proofs(self, count: int, token: str, url: str) -> list[str]:
        ath = access_token_hash(token)
        now = int(time.time())
        made = []
        for _ in range(count):
            payload = b64(json.dumps({"jti": b64(uuid.uuid4().bytes), "htm": "GET", "htu": url,
                                      "iat": now, "ath": ath}, separators=(",", ":")).encode())
            signing_input = f"{self.header}.{payload}"
            r, s = decode_dss_signature(self.private.sign(signing_input.encode(), _ALG))
            made.append(f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
        return made


def two_verifies_rate(seconds: float, max_ops: int) -> float:
    """Operations per second where one operation is two raw ES256 verifies (a 600-byte
    message, a cached public key: bench.crypto_reference's verify, twice)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public, message = key.public_key(), b"x" * 600
    signature = key.sign(message, _ALG)
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline and n < max_ops:
        public.verify(signature, message, _ALG)
        public.verify(signature, message, _ALG)
        n += 1
    return n / (time.perf_counter() - start)


def guard_rate(guard: TokenGuard, token: str, proofs, seconds: float,
               max_ops: int) -> tuple[int, float]:
    validate = guard.validate_request
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline and n < max_ops:
        validate("DPoP", token, [next(proofs)], method="GET", path=PATH, tenant=TENANT,
                 scope="payments:read")
        n += 1
    return n, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="total per side (>= 2)")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--max-ops", type=int, default=120_000, help="bound per side")
    args = parser.parse_args(argv)
    seconds = max(args.seconds, 2.0)
    slice_seconds = seconds / args.slices
    slice_ops = max(100, args.max_ops // args.slices)

    key = ECKey.generate_key("P-256")
    kid = "ae0fd1c0ae3647c3"
    jwks = {"keys": [{**key.as_dict(private=False), "kid": kid, "alg": "ES256", "use": "sig"}]}
    client = ProofMaker()
    token = bound_token(key, kid, client.jkt)
    started = time.perf_counter()
    proofs = client.proofs(slice_ops * args.slices + 1, token, RS_URL + PATH)
    made_in = time.perf_counter() - started
    guard = TokenGuard(ISSUER, AUDIENCE, http=StaticHTTP(jwks), dpop_url=RS_URL,
                       dpop_replay_capacity=len(proofs) + 10)
    supply = iter(proofs)
    claims = guard.validate_request("DPoP", token, [next(supply)], method="GET", path=PATH,
                                    tenant=TENANT, scope="payments:read")  # warm-up
    assert claims["cnf"]["jkt"] == client.jkt

    raw_rates, guard_calls, guard_seconds = [], [], []
    for _ in range(args.slices):
        raw_rates.append(two_verifies_rate(slice_seconds, slice_ops))
        calls, elapsed = guard_rate(guard, token, supply, slice_seconds, slice_ops)
        guard_calls.append(calls)
        guard_seconds.append(elapsed)
    raw_rate = statistics.fmean(raw_rates)
    guard_per_slice = [c / t for c, t in zip(guard_calls, guard_seconds)]
    guard_total = sum(guard_calls) / sum(guard_seconds)
    paired = [g / r for g, r in zip(guard_per_slice, raw_rates)]
    ratio = statistics.median(paired)
    result = {
        "setup": {"token_bytes": len(token), "proof_bytes": len(proofs[0]),
                  "algorithm": "ES256 (token and proof)", "threads": 1,
                  "seconds_per_side": seconds, "slices": args.slices,
                  "proofs_signed_beforehand": len(proofs),
                  "proof_signing_seconds": round(made_in, 2),
                  "reference": "two raw ES256 verifies (cryptography, 600-byte message, cached "
                               "public key) per operation"},
        "reference": {"two_es256_verifies_per_second": round(raw_rate),
                      "per_slice": [round(r) for r in raw_rates]},
        "guard_validate_request_dpop": {
            "per_second": round(guard_total), "per_slice": [round(r) for r in guard_per_slice],
            "calls": sum(guard_calls), "microseconds_per_call": round(1e6 / guard_total, 2),
            "replay_cache_entries": len(guard._dpop.replay)},
        "ratio": round(ratio, 3),
        "ratio_of_aggregates": round(guard_total / raw_rate, 3),
        "paired_ratios": [round(p, 3) for p in paired],
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }
    path = write_result("dpop_validate", result)
    print(f"two raw ES256 verifies: {raw_rate:,.0f}/s  guard.validate_request (DPoP): "
          f"{guard_total:,.0f}/s  ratio {ratio:.3f} (median of {args.slices} paired slices; "
          f"aggregates {guard_total / raw_rate:.3f}; target {TARGET})  -> {path}")
    return result


if __name__ == "__main__":
    main()
