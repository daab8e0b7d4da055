"""Raw ES256 sign and verify rates of ``cryptography`` on this machine (one core)."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec


def es256_rates(seconds: float = 2.0, max_ops: int = 500_000) -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    message = b"x" * 600  # about the size of a JWT signing input
    algorithm = ec.ECDSA(hashes.SHA256())
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline and n < max_ops:
        signature = key.sign(message, algorithm)
        n += 1
    sign_rate = n / (time.perf_counter() - start)
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline and n < max_ops:
        public.verify(signature, message, algorithm)
        n += 1
    verify_rate = n / (time.perf_counter() - start)
    return {"es256_sign_per_second": round(sign_rate), "es256_verify_per_second": round(verify_rate)}


if __name__ == "__main__":
    print(es256_rates())
