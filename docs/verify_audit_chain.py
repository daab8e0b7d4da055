#!/usr/bin/env python3
"""Verify an audit chain exported by the bridge, offline, without the bridge.

    python3 verify_audit_chain.py FILE [--jwks KEYS.json|URL] [--compare OTHER]...

FILE is the JSON export (events and signed checkpoints) or the CSV export (events) of a
tenant's audit chain. Exit 0 when the chain is intact; 1 with a line "BROKEN at seq N: KIND:
..." naming the first problem (KIND: changed, removed, reordered, forked,
checkpoint_signature, checkpoint_mismatch); 2 when a file cannot be read.

Written from docs/audit-chain.md alone; needs Python 3.9+ and the ``cryptography`` package
(for the ES256 signatures of the checkpoints). It does what ``idp-bridge audit verify``
does; the bridge's tests check that both give the same verdict.
"""

import argparse
import base64
import csv
import hashlib
import io
import json
import sys
import urllib.request
from datetime import datetime, timezone

FORMAT = "idp-bridge-audit-chain/1"
GENESIS = "0" * 64
COLUMNS = ["seq", "prev", "hash", "at", "event", "tenant", "actor", "actor_role",
           "membership_id", "client_id", "detail", "id"]
HASHED = ["at", "event", "tenant", "actor", "actor_role", "membership_id", "client_id",
          "detail"]


class Broken(Exception):
    def __init__(self, seq, kind, text):
        super().__init__(f"BROKEN{'' if seq is None else f' at seq {seq}'}: {kind}: {text}")


class Unreadable(Exception):
    pass


# --- the serialization (docs/audit-chain.md, "The hash of an event") ----------------------
def jcs(value):
    """RFC 8785 for the values of audit events (no fractional numbers)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > 2 ** 53 - 1:
            raise ValueError("integer out of range")
        return str(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            code = ord(ch)
            if ch == '"':
                out.append('\\"')
            elif ch == "\\":
                out.append("\\\\")
            elif ch in "\b\t\n\f\r":
                out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
            elif code < 0x20 or 0xD800 <= code <= 0xDFFF:
                out.append(f"\\u{code:04x}")
            else:
                out.append(ch)
        return "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(jcs(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} in an event")


def event_hash(chain, event, seq, prev):
    """hash = SHA-256("<prev>:<seq>:<digest>"), digest = SHA-256(JCS(the event's content))."""
    obj = {"v": 1, "chain": chain}
    obj.update({name: event.get(name) for name in HASHED})
    try:
        digest = hashlib.sha256(jcs(obj).encode("utf-8")).hexdigest()
    except ValueError:
        return None
    return hashlib.sha256(f"{prev}:{seq}:{digest}".encode("ascii")).hexdigest()


# --- reading ----------------------------------------------------------------------------
def no_constants(name):
    raise ValueError(name)


def load(path):
    try:
        text = open(path, encoding="utf-8").read().lstrip("\ufeff")
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{path}: {exc}")
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text, parse_constant=no_constants)
        except ValueError as exc:
            raise Unreadable(f"{path} is not JSON ({exc})")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT \
                or not isinstance(doc.get("events"), list):
            raise Unreadable(f"{path} is not an audit-chain export")
        return doc
    if not text.startswith("seq") or text[3:4] not in (",", ";"):
        raise Unreadable(f"{path} is neither the JSON nor the CSV export")
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=text[3])
    if next(rows) != COLUMNS:
        raise Unreadable(f"{path}: the CSV's columns are not {', '.join(COLUMNS)}")
    events = []
    for row in rows:
        if not row:
            continue
        if len(row) != len(COLUMNS):
            raise Unreadable(f"{path}: a row has {len(row)} cells")
        event = {}
        for name, cell in zip(COLUMNS, row):
            event[name] = None if cell == "" else (cell[1:] if cell.startswith("'") else cell)
        try:
            for name in ("seq", "id"):
                if event[name] is not None:
                    if not event[name].isdigit():
                        raise ValueError(name)
                    event[name] = int(event[name])
            if event["detail"] is not None:
                event["detail"] = json.loads(event["detail"], parse_constant=no_constants)
        except ValueError:
            raise Unreadable(f"{path}: a row is not an event")
        events.append(event)
    tenant = events[0]["tenant"] if events else None
    return {"chain": "system" if tenant is None else f"tenant:{tenant}", "events": events,
            "checkpoints": [], "csv": True}


def fetch_keys(source):
    if source.startswith(("https://", "http://")):
        with urllib.request.urlopen(source, timeout=10) as answer:
            keys = json.load(answer)
    else:
        with open(source, encoding="utf-8") as handle:
            keys = json.load(handle)
    return {k["kid"]: k for k in keys.get("keys", []) if isinstance(k, dict) and "kid" in k}


# --- checking ----------------------------------------------------------------------------
def is_hash(value):
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                               for c in value)


def check_fields(events):
    for n, e in enumerate(events, 1):
        if not isinstance(e, dict) or type(e.get("seq")) is not int or e["seq"] < 1:
            raise Broken(None, "unreadable", f"event {n} of the file has no seq")
        if not is_hash(e.get("hash")):
            raise Broken(e["seq"], "unreadable", "the event has no hash of 64 hex digits")
        if e.get("prev") is not None and not is_hash(e["prev"]):
            raise Broken(e["seq"], "unreadable", "the event's prev is not 64 hex digits")
        for name in ("at", "event"):
            if not isinstance(e.get(name), str):
                raise Broken(e["seq"], "unreadable", f"the event has no {name}")
        for name in ("tenant", "actor", "actor_role", "membership_id", "client_id"):
            if e.get(name) is not None and not isinstance(e[name], str):
                raise Broken(e["seq"], "unreadable", f"the event's {name} is not text")


def check_positions(events, start):
    by_seq = {}
    for e in events:
        if e["seq"] in by_seq:
            raise Broken(e["seq"], "forked", "two events of the file have this seq")
        by_seq[e["seq"]] = e
    expected = start
    for e in events:
        if e["seq"] == expected:
            expected += 1
            continue
        if e["seq"] < start:
            raise Broken(e["seq"], "reordered" if start > 1 else "unreadable",
                         f"the file starts after seq {start - 1}")
        if expected in by_seq:
            raise Broken(expected, "reordered",
                         f"seq {expected} comes after seq {e['seq']} in the file")
        upto = min([s for s in by_seq if s > expected], default=e["seq"]) - 1
        raise Broken(expected, "removed",
                     f"seq {expected}" + (f"-{upto}" if upto > expected else "") + " missing")
    return by_seq


def moved_to(chain, event, events, by_seq):
    """The seq an event's hash was made for, if another position of the file fits."""
    for other in events:
        seq = other["seq"]
        if seq == event["seq"]:
            continue
        before = GENESIS if seq == 1 else (by_seq.get(seq - 1) or {}).get("hash")
        for prev in {other["hash"], before}:
            if prev and event_hash(chain, event, seq, prev) == event["hash"]:
                return seq
    return None


def check_links(chain, events, after, by_seq):
    prev = GENESIS
    if after:
        prev = events[0].get("prev") if events else None
        if events and not is_hash(prev):
            raise Broken(events[0]["seq"], "unreadable",
                         "a file starting after seq 1 needs the first event's prev")
    for e in events:
        seq, stated = e["seq"], e.get("prev")
        if stated is not None and stated != prev:
            if event_hash(chain, e, seq, stated) == e["hash"]:
                raise Broken(seq - 1, "changed", "the event was changed and its hash "
                                                 "recomputed: the next event still commits "
                                                 "to the original")
            raise Broken(seq, "changed", "the event's prev is not the hash of the event "
                                         "before it")
        if event_hash(chain, e, seq, prev) != e["hash"]:
            belongs = moved_to(chain, e, events, by_seq)
            if belongs is not None:
                raise Broken(seq, "reordered", f"the event at seq {seq} was written as seq "
                                               f"{belongs}")
            raise Broken(seq, "changed", "the event does not match its hash")
        prev = e["hash"]


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def checkpoint_claims(token, keys, typ="audit-checkpoint+jwt"):
    """The claims of an ES256 JWS of type ``typ`` (a checkpoint by default) whose signature
    verifies with keys (kid -> JWK), or None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        head, payload, signature = token.split(".")
        header = json.loads(b64url(head))
        jwk = keys.get(header.get("kid"))
        if jwk is None or header.get("alg") != "ES256" or header.get("typ") != typ \
                or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "d" in jwk:
            return None
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64url(jwk["x"]), "big"), int.from_bytes(b64url(jwk["y"]), "big"),
            ec.SECP256R1()).public_key()
        raw = b64url(signature)
        if len(raw) != 64:
            return None
        public.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                           int.from_bytes(raw[32:], "big")),
                      f"{head}.{payload}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        claims = json.loads(b64url(payload))
    except (InvalidSignature, ValueError, KeyError, TypeError, AttributeError):
        return None
    return claims if isinstance(claims, dict) else None


def check_checkpoints(doc, chain, by_seq, after, complete, keys, seen):
    last = max(by_seq) if by_seq else after
    for entry in doc.get("checkpoints") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("jws"), str):
            raise Broken(None, "unreadable", "a checkpoint has no jws")
        if not keys:
            continue
        claims = checkpoint_claims(entry["jws"], keys)
        seq = claims.get("seq") if claims else None
        if claims is None or type(seq) is not int or not is_hash(claims.get("hash")):
            raise Broken(entry.get("seq") if type(entry.get("seq")) is int else None,
                         "checkpoint_signature", "a checkpoint's signature does not verify "
                                                 "with the bridge's checkpoint keys")
        if claims.get("chain") != chain:
            raise Broken(seq, "checkpoint_mismatch",
                         f"a checkpoint of chain {claims.get('chain')} is in the export of "
                         f"{chain}")
        if doc.get("issuer") and claims.get("iss") != doc["issuer"]:
            raise Broken(seq, "checkpoint_mismatch", "a checkpoint of another issuer")
        if entry.get("seq") != seq or entry.get("hash") != claims["hash"]:
            raise Broken(seq, "checkpoint_mismatch", "the checkpoint's seq or hash beside its "
                                                     "signature differ from what was signed")
        if seq in by_seq:
            if by_seq[seq]["hash"] != claims["hash"]:
                raise Broken(seq, "checkpoint_mismatch",
                             "the chain at this seq is not the one the bridge signed")
        elif seq > last and complete:
            raise Broken(last + 1, "removed", f"the bridge signed the chain up to seq {seq}; "
                                              f"the events end at seq {last}")
        elif seq > after and seq <= last:
            raise Broken(seq, "removed", "a checkpoint names an event the file does not hold")
        else:
            continue
        iat = claims.get("iat")
        seen.append((seq, datetime.fromtimestamp(iat, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ") if type(iat) is int else "?"))


def verify(doc, keys, others):
    """The report's lines; raises Broken."""
    chain, events = doc.get("chain"), doc["events"]
    if not isinstance(chain, str) or not chain:
        raise Broken(None, "unreadable", "the file names no chain")
    check_fields(events)
    after = doc.get("after") or 0
    if type(after) is not int or after < 0:
        raise Broken(None, "unreadable", "after is not a position")
    by_seq = check_positions(events, after + 1)
    check_links(chain, events, after, by_seq)
    complete = doc.get("next_after") is None
    head = doc.get("head")
    last = events[-1]["seq"] if events else after
    if complete and isinstance(head, dict) and type(head.get("seq")) is int:
        if head["seq"] > last:
            raise Broken(last + 1, "removed", f"the export names the head seq {head['seq']}; "
                                              f"its events end at seq {last}")
        if events and head["seq"] == last and head.get("hash") != events[-1]["hash"]:
            raise Broken(last, "changed", "the head the export names has another hash")
    notes = []
    if keys is None:
        keys = {}
        if isinstance(doc.get("jwks"), dict):
            keys = {k["kid"]: k for k in doc["jwks"].get("keys", [])
                    if isinstance(k, dict) and "kid" in k}
            notes.append("checkpoint signatures were checked with the keys in the file "
                         "itself; check them against the published keys: --jwks "
                         + str(doc.get("jwks_uri") or "<the bridge>/audit/jwks"))
    seen = []
    check_checkpoints(doc, chain, by_seq, after, complete, keys, seen)
    for other in others:
        if other.get("chain") != chain:
            raise Broken(None, "checkpoint_mismatch",
                         f"a compared file is of chain {other.get('chain')}, not {chain}")
        check_fields(other["events"])
        for e in other["events"]:
            mine = by_seq.get(e["seq"])
            if mine is None and e["seq"] > last and complete:
                raise Broken(e["seq"], "removed", f"a compared export holds seq {e['seq']}; "
                                                  f"this chain ends at seq {last}")
            if mine is not None and mine["hash"] != e["hash"]:
                raise Broken(e["seq"], "changed",
                             "the event differs from the one in a compared export")
        check_checkpoints(other, chain, by_seq, after, complete, keys, seen)
    line = (f"OK: chain {chain}, events {events[0]['seq']}-{last} intact" if events
            else f"OK: chain {chain} has no events")
    if seen:
        newest = max(seen)
        line += (f"; {len(seen)} checkpoint{'s' if len(seen) != 1 else ''} verified, the "
                 f"latest at seq {newest[0]} (signed {newest[1]})")
        if events and newest[0] < last:
            notes.append(f"events after seq {newest[0]} are not covered by a checkpoint yet")
    else:
        offered = len(doc.get("checkpoints") or []) + sum(len(o.get("checkpoints") or [])
                                                          for o in others)
        if offered and not keys:
            notes.append(f"{offered} checkpoint{'s were' if offered != 1 else ' was'} not "
                         "checked: give the published keys with --jwks "
                         + str(doc.get("jwks_uri") or "<the bridge>/audit/jwks"))
        else:
            notes.append("no checkpoint was verified: the chain's newest events are not fixed "
                         "by a signature" + (" (a CSV holds none: give the JSON export with "
                                             "--compare)" if doc.get("csv") else ""))
    if after:
        notes.append(f"this file starts after seq {after}: the events before it were not "
                     "checked")
    return [line] + [f"note: {n}" for n in notes]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--jwks", help="the checkpoint keys: a file or <bridge>/audit/jwks")
    parser.add_argument("--compare", action="append", default=[],
                        help="another export of the same chain (repeatable)")
    args = parser.parse_args(argv)
    try:
        doc = load(args.file)
        others = [load(path) for path in args.compare]
        keys = fetch_keys(args.jwks) if args.jwks else None
    except Unreadable as exc:
        print(f"UNREADABLE: {exc}")
        return 2
    except (OSError, ValueError) as exc:
        print(f"UNREADABLE: the keys from {args.jwks} ({type(exc).__name__})")
        return 2
    try:
        lines = verify(doc, keys, others)
    except Broken as exc:
        print(exc)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
