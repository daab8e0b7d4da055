"""Verify an evidence pack offline (``idp-bridge audit verify-evidence``; docs/evidence-pack.md).

A pack is a compact JWS (ES256, ``typ`` ``evidence-pack+jwt``) signed with a key of the
bridge's audit key set (``/audit/jwks``). The check, in this order, stopping at the first
problem:

1. the signature with the given keys (``signature``), and the format (``unreadable``);
2. every event: its fields, its chain and tenant, and its ``hash`` recomputed from its
   content, position and ``prev`` (``changed``);
3. every segment of the proofs: from a pack event, the chain recomputed position by
   position (the pack's own events from their content, the others from their digests) up to
   a signed checkpoint, whose signature (``checkpoint_signature``) and claims
   (``checkpoint_mismatch``) must fit, and whose signed hash the recomputed chain must reach
   (``changed``: an event in between is not what the bridge signed);
4. every event is linked by a segment or listed as not yet covered by a checkpoint (or
   beyond the pack's proof limit), and every story entry names an event of the pack
   (``unreadable`` otherwise).

No database, no network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .audit_chain import GENESIS, chain_of, content_digest, link
# The chain's own checks, shared with the export's verifier.
from .audit_verify import (Problem, _fail, _Found, _is_hash, _key_map, _refuse_constant,
                           _time, _values, checkpoint_claims)
from .evidence import FORMAT, PACK_TYPE

KINDS = ("unreadable", "signature", "changed", "removed", "checkpoint_signature",
         "checkpoint_mismatch")
#: The largest pack (its JWS payload) the verifier reads.
MAX_PACK_BYTES = 2 * 1024 ** 3


@dataclass
class Report:
    pack: dict | None = None
    kid: str | None = None
    events: int = 0
    linked: int = 0
    checkpoints: int = 0
    latest_checkpoint: tuple[int, str] | None = None
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def lines(self) -> list[str]:
        if self.problem is not None:
            return [self.problem.line(), *(f"note: {n}" for n in self.notes)]
        pack = self.pack or {}
        membership = (pack.get("membership") or {}).get("id")
        tenant = (pack.get("tenant") or {}).get("id")
        head = (f"OK: evidence pack of membership {membership} (tenant {tenant}), signed by "
                f"{pack.get('iss')} with key {self.kid}; {self.events} event"
                f"{'s' if self.events != 1 else ''} intact at their chain positions")
        if self.checkpoints:
            seq, at = self.latest_checkpoint
            head += (f", {self.linked} linked to {self.checkpoints} signed checkpoint"
                     f"{'s' if self.checkpoints != 1 else ''} (the latest at seq {seq}, "
                     f"signed {at})")
        return [head, *(f"note: {n}" for n in self.notes)]


def verify(token: str | bytes, *, jwks: dict) -> Report:
    """Check the pack ``token`` (its compact JWS) against ``jwks`` (the bridge's
    ``/audit/jwks``)."""
    report = Report()
    try:
        _verify(token, jwks, report)
    except _Found as found:
        report.problem = found.problem
    return report


def pack_claims(token: str | bytes, keys: dict) -> tuple[dict, str] | None:
    """(claims, kid) of a pack whose ES256 signature verifies with ``keys`` (kid -> JWK),
    with ``typ`` :data:`PACK_TYPE`; None otherwise."""
    from joserfc import jws
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey

    # joserfc refuses payloads above 128 kB by default; a pack is often larger.
    registry = jws.JWSRegistry(algorithms=["ES256"])
    registry.max_payload_length = MAX_PACK_BYTES
    try:
        if isinstance(token, bytes):
            token = token.decode("ascii")
        token = token.strip()
        header = jws.extract_compact(token.encode("ascii"), registry=registry).protected
        jwk = keys.get(header.get("kid"))
        if jwk is None or header.get("alg") != "ES256" or header.get("typ") != PACK_TYPE:
            return None
        key = ECKey.import_key(dict(jwk))
        if key.is_private or key.as_dict().get("crv") != "P-256":
            return None
        payload = jws.deserialize_compact(token, key, algorithms=["ES256"],
                                          registry=registry).payload
        claims = json.loads(payload, parse_constant=_refuse_constant)
    except (JoseError, ValueError, TypeError, KeyError, AttributeError, UnicodeError):
        return None
    return (claims, header["kid"]) if isinstance(claims, dict) else None


def _verify(token, jwks, report: Report) -> None:
    keys = _key_map(jwks)
    found = pack_claims(token, keys)
    if found is None:
        _fail(None, "signature", "the pack's signature does not verify with the bridge's audit "
                                 "keys (or it is no evidence pack)")
    pack, report.kid = found
    report.pack = pack
    if pack.get("format") != FORMAT:
        _fail(None, "unreadable", f"the signed document is not an evidence pack ({FORMAT})")
    tenant = (pack.get("tenant") or {}).get("id") if isinstance(pack.get("tenant"), dict) else None
    proofs = pack.get("chain")
    if not isinstance(tenant, str) or not isinstance(proofs, dict) \
            or proofs.get("name") != chain_of(tenant):
        _fail(None, "unreadable", "the pack names no tenant and its chain")
    chain = proofs["name"]
    membership = (pack.get("membership") or {}).get("id")
    events = pack.get("events")
    if not isinstance(events, list):
        _fail(None, "unreadable", "the pack has no list of events")
    by_seq: dict[int, dict] = {}
    for index, event in enumerate(events):
        _check_event(event, index, tenant)
        if event["seq"] in by_seq:
            _fail(event["seq"], "unreadable", "two events of the pack have this seq")
        by_seq[event["seq"]] = event
        if _hash(chain, event, event["seq"], event["prev"]) != event["hash"]:
            _fail(event["seq"], "changed", "the event does not match its hash")
    report.events = len(by_seq)
    linked = _check_segments(pack, chain, proofs, by_seq, keys, report)
    uncovered = _seq_list(proofs.get("uncovered"), "uncovered")
    unlinked = _seq_list(proofs.get("unlinked"), "unlinked")
    newest = max((s["to_seq"] for s in proofs.get("segments") or ()), default=0)
    for seq in uncovered:
        if seq not in by_seq:
            _fail(seq, "unreadable", "the pack lists an event it does not hold")
        if seq <= newest:
            _fail(seq, "checkpoint_mismatch", "an event said not yet covered lies before a "
                                              "checkpoint of the pack")
    for seq in unlinked:
        if seq not in by_seq:
            _fail(seq, "unreadable", "the pack lists an event it does not hold")
    missing = sorted(set(by_seq) - linked - set(uncovered) - set(unlinked))
    if missing:
        _fail(missing[0], "unreadable", "the pack holds an event without its link to the chain")
    report.linked = len(linked)
    _check_references(pack, by_seq, membership)
    if uncovered:
        span = str(uncovered[0]) + (f"-{uncovered[-1]}" if len(uncovered) > 1 else "")
        report.notes.append(f"{len(uncovered)} event{'s' if len(uncovered) != 1 else ''} "
                            f"(seq {span}) came after the newest signed checkpoint: fixed by "
                            "the pack's signature only, not yet by the chain's")
    if unlinked:
        report.notes.append(f"{len(unlinked)} events are not linked within this pack (its "
                            "proof limit): check them with the chain export")
    for section in ("tokens", "access_records"):
        part = pack.get(section)
        if isinstance(part, dict) and part.get("truncated"):
            report.notes.append(f"{section}: {part.get('listed')} of {part.get('count')} "
                                "listed (the first and the last half)")


def _check_event(event, index: int, tenant: str) -> None:
    where = f"event {index + 1} of the pack"
    if not isinstance(event, dict):
        _fail(None, "unreadable", f"{where} is not an object")
    seq = event.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        _fail(None, "unreadable", f"{where} has no seq")
    if event.get("prev") is None and seq > 1:
        _fail(seq - 1, "removed", "the chain holds no event before this one")
    for name in ("hash", "prev"):
        if not _is_hash(event.get(name)):
            _fail(seq, "unreadable", f"the event's {name} is not 64 hex digits")
    for name in ("at", "event"):
        if not isinstance(event.get(name), str):
            _fail(seq, "unreadable", f"the event has no {name}")
    for name in ("actor", "actor_role", "membership_id", "client_id"):
        if event.get(name) is not None and not isinstance(event[name], str):
            _fail(seq, "unreadable", f"the event's {name} is not text")
    if event.get("tenant") != tenant:
        _fail(seq, "unreadable", "an event of another tenant is in the pack")
    if seq == 1 and event["prev"] != GENESIS:
        _fail(seq, "changed", "the chain's first event does not start from the genesis value")


def _digest(chain: str, event: dict) -> str | None:
    try:
        return content_digest(chain=chain, values=_values(event))
    except (TypeError, ValueError):
        return None  # a value no event can hold: changed


def _hash(chain: str, event: dict, seq: int, prev: str) -> str | None:
    digest = _digest(chain, event)
    return None if digest is None else link(prev, seq, digest)


def _seq_list(value, name: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                              for s in value):
        _fail(None, "unreadable", f"the pack's {name} is not a list of positions")
    return sorted(value)


def _check_segments(pack, chain, proofs, by_seq, keys, report) -> set[int]:
    linked: set[int] = set()
    segments = proofs.get("segments") or []
    if not isinstance(segments, list):
        _fail(None, "unreadable", "the pack's segments are not a list")
    for segment in segments:
        if not isinstance(segment, dict):
            _fail(None, "unreadable", "a segment is not an object")
        start, end = segment.get("from_seq"), segment.get("to_seq")
        checkpoint = segment.get("checkpoint")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)) \
                or start > end or not isinstance(checkpoint, dict) \
                or not isinstance(checkpoint.get("jws"), str):
            _fail(None, "unreadable", "a segment has no positions or checkpoint")
        if start not in by_seq:
            _fail(start, "unreadable", "a segment starts at an event the pack does not hold")
        others = {}
        for entry in segment.get("digests") or ():
            if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
                _fail(None, "unreadable", "a segment's digest has no seq")
            others[entry["seq"]] = entry.get("digest")
        prev = by_seq[start]["prev"]
        for seq in range(start, end + 1):
            own = by_seq.get(seq)
            if own is not None:
                digest = _digest(chain, own)
            elif seq in others:
                digest = others[seq] if _is_hash(others[seq]) else None
            else:
                _fail(seq, "removed", "the segment to the checkpoint misses this position")
            if digest is None:
                _fail(seq, "changed", "an event between the pack's events and the checkpoint "
                                      "holds a value no event can hold")
            prev = link(prev, seq, digest)
            if own is not None:
                if prev != own["hash"]:
                    _fail(seq, "changed", "the chain from the pack's previous event does not "
                                          "lead to this event: an event in between was changed")
                linked.add(seq)
        claims = checkpoint_claims(checkpoint["jws"], keys)
        if claims is None or not isinstance(claims.get("seq"), int):
            _fail(end, "checkpoint_signature", "a checkpoint's signature does not verify with "
                                               "the bridge's audit keys")
        if claims.get("chain") != chain or claims.get("iss") != pack.get("iss"):
            _fail(end, "checkpoint_mismatch", "a checkpoint of another chain or issuer")
        if claims["seq"] != end or claims.get("hash") != checkpoint.get("hash") \
                or checkpoint.get("seq") != end:
            _fail(end, "checkpoint_mismatch", "the checkpoint's seq or hash beside its "
                                              "signature differ from what was signed")
        if prev != claims.get("hash"):
            _fail(end, "changed", "the chain recomputed from the pack's events does not reach "
                                  "the hash the bridge signed: an event was changed")
        report.checkpoints += 1
        signed = _time(claims.get("iat"))
        if report.latest_checkpoint is None or end >= report.latest_checkpoint[0]:
            report.latest_checkpoint = (end, signed)
    return linked


def _check_references(pack: dict, by_seq: dict, membership) -> None:
    """Every story entry with a ``seq`` names an event of the pack, of the same name where
    it says one; the membership's own events name it."""
    def entries():
        began = pack.get("began") or {}
        yield from began.get("steps") or ()
        yield from began.get("approvers") or ()
        for name in ("reconfirmations", "families_revoked", "downloads"):
            yield from pack.get(name) or ()
        yield from (pack.get("tokens") or {}).get("items") or ()
        if pack.get("ended"):
            yield pack["ended"]

    for entry in entries():
        if not isinstance(entry, dict):
            _fail(None, "unreadable", "a story entry is not an object")
        seq = entry.get("seq")
        if seq is None:
            continue
        event = by_seq.get(seq) if isinstance(seq, int) else None
        if event is None:
            _fail(seq if isinstance(seq, int) else None, "unreadable",
                  "the story names an event the pack does not hold")
        if entry.get("event") is not None and entry["event"] != event["event"]:
            _fail(seq, "unreadable", "the story names another event than the one at this seq")
    for event in by_seq.values():
        if event.get("membership_id") not in (None, membership):
            _fail(event["seq"], "unreadable", "an event of another membership is in the pack")
