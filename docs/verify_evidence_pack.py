#!/usr/bin/env python3
"""Verify an evidence pack of the bridge offline (docs/evidence-pack.md).

    python3 verify_evidence_pack.py evidence.jwt --jwks saved-audit-jwks.json

Needs Python 3.9+ and the `cryptography` package, and verify_audit_chain.py beside this file
(the events' serialization is defined there). Checks the pack's ES256 signature (typ
evidence-pack+jwt) with the bridge's audit keys, every event's hash at its chain position,
and each segment from the pack's events to a signed checkpoint (the other events of the
chain by their digests). Exit 0 intact, 1 broken, 2 a file or the keys could not be read.
"""

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from verify_audit_chain import (GENESIS, HASHED, Broken, checkpoint_claims,  # noqa: E402
                                fetch_keys, is_hash, jcs)

FORMAT = "idp-bridge-evidence/1"
PACK_TYPE = "evidence-pack+jwt"


def digest_of(chain, event):
    obj = {"v": 1, "chain": chain}
    obj.update({name: event.get(name) for name in HASHED})
    try:
        return hashlib.sha256(jcs(obj).encode("utf-8")).hexdigest()
    except ValueError:
        return None


def link(prev, seq, digest):
    return hashlib.sha256(f"{prev}:{seq}:{digest}".encode("ascii")).hexdigest()


def pack_claims(token, keys):
    """The claims of the pack if its ES256 signature verifies with keys (kid -> JWK)."""
    return checkpoint_claims(token, keys, typ=PACK_TYPE)


def read_token(path):
    with open(path, "rb") as handle:
        text = handle.read().decode("utf-8").strip().lstrip("\ufeff")
    if text.startswith("{"):
        text = json.loads(text).get("jws")
    if not isinstance(text, str) or text.count(".") != 2:
        raise ValueError("the file is no evidence pack")
    return text


def verify(token, keys):
    pack = pack_claims(token, keys)
    if pack is None:
        raise Broken(None, "signature", "the pack's signature does not verify with the "
                                        "bridge's audit keys (or it is no evidence pack)")
    if pack.get("format") != FORMAT:
        raise Broken(None, "unreadable", "the signed document is not an evidence pack")
    tenant = (pack.get("tenant") or {}).get("id")
    proofs = pack.get("chain") or {}
    chain = f"tenant:{tenant}"
    if not isinstance(tenant, str) or proofs.get("name") != chain:
        raise Broken(None, "unreadable", "the pack names no tenant and its chain")
    by_seq = {}
    for event in pack.get("events") or []:
        seq = event.get("seq") if isinstance(event, dict) else None
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > 1 \
                and event.get("prev") is None:
            raise Broken(seq - 1, "removed", "the chain holds no event before this one")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or seq in by_seq \
                or not is_hash(event.get("hash")) or not is_hash(event.get("prev")) \
                or not isinstance(event.get("at"), str) or not isinstance(event.get("event"), str):
            raise Broken(seq if isinstance(seq, int) else None, "unreadable",
                         "an event of the pack lacks its fields")
        if event.get("tenant") != tenant:
            raise Broken(seq, "unreadable", "an event of another tenant is in the pack")
        if seq == 1 and event["prev"] != GENESIS:
            raise Broken(seq, "changed", "the chain's first event does not start from the "
                                         "genesis value")
        digest = digest_of(chain, event)
        if digest is None or link(event["prev"], seq, digest) != event["hash"]:
            raise Broken(seq, "changed", "the event does not match its hash")
        by_seq[seq] = event
    linked, latest, count = set(), None, 0
    for segment in proofs.get("segments") or []:
        start, end, checkpoint = segment["from_seq"], segment["to_seq"], segment["checkpoint"]
        if start not in by_seq:
            raise Broken(start, "unreadable", "a segment starts at an event the pack does "
                                              "not hold")
        others = {d["seq"]: d.get("digest") for d in segment.get("digests") or []}
        prev = by_seq[start]["prev"]
        for seq in range(start, end + 1):
            own = by_seq.get(seq)
            if own is not None:
                digest = digest_of(chain, own)
            elif seq in others:
                digest = others[seq] if is_hash(others[seq]) else None
            else:
                raise Broken(seq, "removed", "the segment to the checkpoint misses this "
                                             "position")
            if digest is None:
                raise Broken(seq, "changed", "an event between the pack's events and the "
                                             "checkpoint holds a value no event can hold")
            prev = link(prev, seq, digest)
            if own is not None:
                if prev != own["hash"]:
                    raise Broken(seq, "changed", "the chain from the pack's previous event "
                                                 "does not lead to this event: an event in "
                                                 "between was changed")
                linked.add(seq)
        claims = checkpoint_claims(checkpoint["jws"], keys)
        if claims is None or not isinstance(claims.get("seq"), int):
            raise Broken(end, "checkpoint_signature", "a checkpoint's signature does not "
                                                      "verify with the bridge's audit keys")
        if claims.get("chain") != chain or claims.get("iss") != pack.get("iss"):
            raise Broken(end, "checkpoint_mismatch", "a checkpoint of another chain or issuer")
        if claims["seq"] != end or claims.get("hash") != checkpoint.get("hash") \
                or checkpoint.get("seq") != end:
            raise Broken(end, "checkpoint_mismatch", "the checkpoint's seq or hash beside its "
                                                     "signature differ from what was signed")
        if prev != claims["hash"]:
            raise Broken(end, "changed", "the chain recomputed from the pack's events does "
                                         "not reach the hash the bridge signed: an event was "
                                         "changed")
        count += 1
        if latest is None or end >= latest:
            latest = end
    uncovered = sorted(proofs.get("uncovered") or [])
    unlinked = sorted(proofs.get("unlinked") or [])
    newest = max((s["to_seq"] for s in proofs.get("segments") or []), default=0)
    for seq in uncovered + unlinked:
        if seq not in by_seq:
            raise Broken(seq, "unreadable", "the pack lists an event it does not hold")
    if uncovered and uncovered[0] <= newest:
        raise Broken(uncovered[0], "checkpoint_mismatch", "an event said not yet covered lies "
                                                          "before a checkpoint of the pack")
    missing = sorted(set(by_seq) - linked - set(uncovered) - set(unlinked))
    if missing:
        raise Broken(missing[0], "unreadable", "the pack holds an event without its link to "
                                               "the chain")
    line = (f"OK: evidence pack of membership {(pack.get('membership') or {}).get('id')} "
            f"(tenant {tenant}): {len(by_seq)} events intact, {len(linked)} linked to "
            f"{count} signed checkpoint{'s' if count != 1 else ''}"
            + (f" (the latest at seq {latest})" if latest else ""))
    notes = []
    if uncovered:
        notes.append(f"{len(uncovered)} events came after the newest signed checkpoint: fixed "
                     "by the pack's signature only")
    if unlinked:
        notes.append(f"{len(unlinked)} events are not linked within this pack: check them with "
                     "the chain export")
    return [line] + [f"note: {n}" for n in notes], pack


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--jwks", required=True,
                        help="the bridge's audit keys: a file or <bridge>/audit/jwks")
    args = parser.parse_args(argv)
    try:
        token = read_token(args.file)
    except (OSError, ValueError, UnicodeDecodeError, AttributeError) as exc:
        print(f"UNREADABLE: {exc}")
        return 2
    try:
        keys = fetch_keys(args.jwks)
    except (OSError, ValueError, AttributeError) as exc:
        print(f"UNREADABLE: the keys from {args.jwks} ({type(exc).__name__})")
        return 2
    try:
        lines, _pack = verify(token, keys)
    except Broken as exc:
        print(exc)
        return 1
    except (KeyError, TypeError, AttributeError):
        print("BROKEN: unreadable: the pack's proofs lack their fields")
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
