"""Cost of verifying an upstream subject token (issue 16 item 4), in process, single thread.

``SubjectTokenValidator.verify`` (signature and algorithm: the strict shared verifier of
:mod:`scopes.guard.jws`) and ``validate`` (verify plus every claim check) against two
references measured in the same run: the raw RS256 verify of ``cryptography`` (the floor) and
joserfc's generic path as ``verify`` used it before (``jws.extract_compact`` for the header,
the allow-list and kid checks, then ``jwt.decode`` against a ``KeySet`` with a registry of the
allowed algorithms). Each is timed in short alternating slices (raw, joserfc, verify,
validate, raw, ...) so that a noisy neighbour hurts all alike; reported are the median
microseconds per call over the slices and the ratios of the medians, in
``bench/results/upstream_verify.json`` with the load average.

The token is a realistic Keycloak access token (RS256, 2048-bit key, realm and client roles,
groups; about 1,300 characters). Discovery and JWKS are served from memory.

    python -m bench.bench_upstream_verify [--slices 15] [--number 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path

if __package__ in (None, ""):  # python bench/bench_upstream_verify.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from joserfc import jws, jwt  # noqa: E402
from joserfc.jwk import KeySet, RSAKey  # noqa: E402

from bench.common import write_result  # noqa: E402
from idp_bridge.upstream.oidc import ACCESS_TOKEN, SubjectTokenValidator  # noqa: E402
from scopes.guard.jws import b64url_decode  # noqa: E402

ISSUER = "https://keycloak.example/realms/konfipay"
DISCOVERY = f"{ISSUER}/.well-known/openid-configuration"
JWKS_URI = f"{ISSUER}/protocol/openid-connect/certs"
ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]  # the settings' default


class _Response:
    def __init__(self, document):
        self._document = document

    def raise_for_status(self):
        pass

    def json(self):
        return self._document


class MemoryHTTP:
    def __init__(self, jwks):
        self._documents = {DISCOVERY: {"issuer": ISSUER, "jwks_uri": JWKS_URI}, JWKS_URI: jwks}

    def get(self, url, timeout=None):
        return _Response(self._documents[url])


def keycloak_token(key: RSAKey) -> str:
    now = int(time.time())
    claims = {
        "exp": now + 86400, "iat": now, "auth_time": now, "jti": "onrtac:5b0c1b9e-2d7f-4c1e",
        "iss": ISSUER, "aud": ["idp-bridge", "account"],
        "sub": "0b5c7a4e-62f4-4b3c-9d0e-1f2a3b4c5d6e", "typ": "Bearer",
        "azp": "advisor-console", "sid": "8f1d2c3b-4a5e-6f70-8192-a3b4c5d6e7f8", "acr": "1",
        "allowed-origins": ["https://advisor.example"],
        "realm_access": {"roles": ["offline_access", "uma_authorization", "advisor",
                                   "default-roles-konfipay"]},
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "scope": "openid email profile", "email_verified": True, "name": "Bob Berater",
        "preferred_username": "bob", "given_name": "Bob", "family_name": "Berater",
        "email": "bob@advisors.example", "groups": ["/advisors", "/advisors/tax"],
    }
    return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": key.kid}, claims, key)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="calls per slice")
    args = parser.parse_args(argv)

    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    jwks = {"keys": [{**key.as_dict(private=False), "use": "sig", "alg": "RS256"}]}
    token = keycloak_token(key)
    validator = SubjectTokenValidator(issuer=ISSUER, discovery_url=DISCOVERY,
                                      audiences=["idp-bridge"], algorithms=ALGORITHMS,
                                      http=MemoryHTTP(jwks))
    validator.validate(token, ACCESS_TOKEN)  # warm: discovery, keys, header cache

    signing_input, _, signature_segment = token.rpartition(".")
    data = signing_input.encode()
    signature = b64url_decode(signature_segment)
    public = key.public_key
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    key_set = KeySet.import_key_set(jwks)
    registry = jws.JWSRegistry(algorithms=ALGORITHMS)

    def raw():
        public.verify(signature, data, pkcs1, sha256)

    def joserfc_path():  # SubjectTokenValidator.verify before issue 16 item 4
        header = jws.extract_compact(token.encode()).protected
        if header.get("alg") not in ALGORITHMS:
            raise AssertionError
        kid = header.get("kid")
        if kid is not None and not any(k.kid == kid for k in key_set.keys):
            raise AssertionError
        claims = jwt.decode(token, key_set, algorithms=ALGORITHMS, registry=registry).claims
        return header, claims

    def verify():
        return validator.verify(token, what="subject_token")

    def validate():
        return validator.validate(token, ACCESS_TOKEN)

    assert joserfc_path()[1] == verify()[1] == validate().claims
    cases = {"raw_rs256": raw, "joserfc_verify": joserfc_path, "verify": verify,
             "validate": validate}
    slices: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.slices):
        for name, fn in cases.items():
            seconds = timeit.timeit(fn, number=args.number)
            slices[name].append(seconds / args.number * 1e6)
    us = {name: round(statistics.median(values), 2) for name, values in slices.items()}
    result = {
        "token_characters": len(token),
        "slices": args.slices, "calls_per_slice": args.number,
        "us_per_call": us,
        "us_per_call_min": {n: round(min(v), 2) for n, v in slices.items()},
        # The headline: the new verify's cost as a share of the joserfc path measured alongside.
        "ratio_verify_to_joserfc": round(us["verify"] / us["joserfc_verify"], 3),
        "ratio_validate_to_joserfc": round(us["validate"] / us["joserfc_verify"], 3),
        "ratio_verify_to_raw": round(us["verify"] / us["raw_rs256"], 3),
        "overhead_us": {"joserfc_verify": round(us["joserfc_verify"] - us["raw_rs256"], 2),
                        "verify": round(us["verify"] - us["raw_rs256"], 2),
                        "validate": round(us["validate"] - us["raw_rs256"], 2)},
    }
    path = write_result("upstream_verify", result)
    print(path.read_text())
    return result


if __name__ == "__main__":
    main()
