"""Verify an exported audit chain offline (``idp-bridge audit verify``; docs/audit-chain.md).

Reads the JSON or CSV export, recomputes every hash with the one serialization
(:mod:`idp_bridge.domain.audit_chain`), and checks, in this order, stopping at the first
problem:

1. the file: every event has its fields with the right types (``unreadable`` otherwise);
2. the positions: no seq twice (``forked``), none missing (``removed``), in order
   (``reordered``); a complete export starts at seq 1;
3. the chain: each event's ``prev`` is the hash before it and its ``hash`` recomputes
   (``changed``; ``reordered`` when the event's hash fits another position of the file);
4. the head the export names (``removed`` when the events stop before it);
5. the checkpoints: each signature with the published keys (``checkpoint_signature``), its
   claims against the file's chain (``checkpoint_mismatch``; ``removed`` when it covers
   events the file no longer has);
6. other exports of the same chain given with ``compare`` (an earlier download; the JSON
   beside a CSV): their checkpoints as in 5, and each of their events must be this chain's.

No database, no network (the key set is given or taken from the file).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from .audit_chain import CSV_COLUMNS, FORMAT, GENESIS, chain_of, event_hash

KINDS = ("unreadable", "forked", "removed", "reordered", "changed", "checkpoint_signature",
         "checkpoint_mismatch")
CHECKPOINT_TYPE = "audit-checkpoint+jwt"
#: How far (in positions) the search for an event's true position looks.
RELOCATION_WINDOW = 10_000
_HEX = frozenset("0123456789abcdef")


class Unreadable(ValueError):
    """The file is no export of an audit chain."""


@dataclass(frozen=True)
class Problem:
    seq: int | None
    kind: str
    text: str

    def line(self) -> str:
        where = f" at seq {self.seq}" if self.seq is not None else ""
        return f"BROKEN{where}: {self.kind}: {self.text}"


@dataclass
class Report:
    chain: str | None = None
    first: int | None = None
    last: int | None = None
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
        if self.first is None:
            head = f"OK: chain {self.chain} has no events"
        else:
            head = f"OK: chain {self.chain}, events {self.first}-{self.last} intact"
        if self.checkpoints:
            seq, at = self.latest_checkpoint
            head += (f"; {self.checkpoints} checkpoint{'s' if self.checkpoints != 1 else ''} "
                     f"verified, the latest at seq {seq} (signed {at})")
        return [head, *(f"note: {n}" for n in self.notes)]


# --- reading --------------------------------------------------------------------------------
def load(data: bytes | str) -> dict:
    """The export in ``data`` (JSON or CSV) as a document: ``chain``, ``events`` and what
    else the export holds. Raises :class:`Unreadable`."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Unreadable("the file is not UTF-8") from None
    text = data.lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise Unreadable(f"the file is not JSON ({exc})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise Unreadable(f"the JSON is not an audit-chain export ({FORMAT})")
        if not isinstance(document.get("events"), list):
            raise Unreadable("the JSON has no list of events")
        return document
    if text.startswith("seq"):
        return _load_csv(text)
    raise Unreadable("the file is neither an audit-chain JSON nor its CSV")


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _load_csv(text: str) -> dict:
    delimiter = text[3:4]
    if delimiter not in (",", ";"):
        raise Unreadable("the CSV's first row is not the audit chain's header")
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(rows)
    if tuple(header) != CSV_COLUMNS:
        raise Unreadable(f"the CSV's columns are not {', '.join(CSV_COLUMNS)}")
    events = []
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(CSV_COLUMNS):
            raise Unreadable(f"row {number} of the CSV has {len(row)} cells")
        event = {column: _uncell(cell) for column, cell in zip(CSV_COLUMNS, row)}
        for column in ("seq", "id"):
            value = event[column]
            if value is not None:
                if not value.isdigit():
                    raise Unreadable(f"row {number}: {column} is not a number")
                event[column] = int(value)
        if event["detail"] is not None:
            try:
                event["detail"] = json.loads(event["detail"], parse_constant=_refuse_constant)
            except ValueError:
                raise Unreadable(f"row {number}: detail is not JSON") from None
        events.append(event)
    tenant = events[0]["tenant"] if events else None
    return {"format": FORMAT, "chain": chain_of(tenant), "tenant": tenant, "events": events,
            "checkpoints": [], "csv": True}


def _uncell(cell: str):
    if cell == "":
        return None
    return cell[1:] if cell.startswith("'") else cell


# --- checking -------------------------------------------------------------------------------
def verify(document: dict, *, jwks: dict | None = None, compare=()) -> Report:
    """Check ``document`` (from :func:`load`); ``jwks`` the published checkpoint keys (else
    those in the file, with a note); ``compare`` other documents of the same chain."""
    report = Report(chain=document.get("chain"))
    try:
        _verify(document, jwks, list(compare), report)
    except _Found as found:
        report.problem = found.problem
    return report


class _Found(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def _fail(seq, kind, text):
    raise _Found(Problem(seq, kind, text))


def _verify(document, jwks, compare, report: Report) -> None:
    chain = document.get("chain")
    if not isinstance(chain, str) or not chain:
        _fail(None, "unreadable", "the file names no chain")
    events = document["events"]
    for index, event in enumerate(events):
        _check_fields(event, index)
    after = document.get("after") or 0
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        _fail(None, "unreadable", "after is not a position")
    start = after + 1
    by_seq = _check_positions(events, start)
    if events:
        report.first, report.last = events[0]["seq"], events[-1]["seq"]
    _check_links(chain, events, after, by_seq)
    complete = document.get("next_after") is None
    _check_head(document, events, after, complete)
    keys, source = _keys(document, jwks)
    if source == "file":
        report.notes.append("checkpoint signatures were checked with the keys in the file "
                            "itself; check them against the published keys: --jwks "
                            + str(document.get("jwks_uri") or "<the bridge>/audit/jwks"))
    _check_checkpoints(document, chain, by_seq, after, complete, keys, report)
    for other in compare:
        if other.get("chain") != chain:
            _fail(None, "checkpoint_mismatch",
                  f"a compared file is of chain {other.get('chain')}, not {chain}")
        for index, event in enumerate(other.get("events") or ()):
            _check_fields(event, index)
            mine = by_seq.get(event["seq"])
            if mine is None and event["seq"] > (report.last or after) and complete:
                _fail(event["seq"], "removed",
                      f"a compared export holds seq {event['seq']}; this chain ends at seq "
                      f"{report.last or after}")
            if mine is not None and mine["hash"] != event["hash"]:
                _fail(event["seq"], "changed", "the event differs from the one in a compared "
                                               "export")
        _check_checkpoints(other, chain, by_seq, after, complete, keys, report)
    offered = len(document.get("checkpoints") or ()) + sum(
        len(other.get("checkpoints") or ()) for other in compare)
    if offered and not keys:
        report.notes.append(f"{offered} checkpoint{'s were' if offered != 1 else ' was'} not "
                            "checked: give the published keys with --jwks "
                            + str(document.get("jwks_uri") or "<the bridge>/audit/jwks"))
    elif not report.checkpoints:
        report.notes.append("no checkpoint was verified: the chain's newest events are not "
                            "fixed by a signature"
                            + (" (a CSV holds none: give the JSON export with --compare)"
                               if document.get("csv") else ""))
    elif report.last is not None and report.latest_checkpoint[0] < report.last:
        report.notes.append(f"events after seq {report.latest_checkpoint[0]} are not covered "
                            "by a checkpoint yet")
    if after:
        report.notes.append(f"this file starts after seq {after}: the events before it were "
                            "not checked")


def _check_fields(event, index: int) -> None:
    where = f"event {index + 1} of the file"
    if not isinstance(event, dict):
        _fail(None, "unreadable", f"{where} is not an object")
    seq = event.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        _fail(None, "unreadable", f"{where} has no seq")
    digest = event.get("hash")
    if not _is_hash(digest):
        _fail(seq, "unreadable", "the event has no hash of 64 hex digits")
    if "prev" in event and event["prev"] is not None and not _is_hash(event["prev"]):
        _fail(seq, "unreadable", "the event's prev is not 64 hex digits")
    for name in ("at", "event"):
        if not isinstance(event.get(name), str):
            _fail(seq, "unreadable", f"the event has no {name}")
    for name in ("tenant", "actor", "actor_role", "membership_id", "client_id"):
        if event.get(name) is not None and not isinstance(event[name], str):
            _fail(seq, "unreadable", f"the event's {name} is not text")


def _is_hash(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _check_positions(events, start: int) -> dict:
    by_seq: dict[int, dict] = {}
    for event in events:
        if event["seq"] in by_seq:
            _fail(event["seq"], "forked", "two events of the file have this seq")
        by_seq[event["seq"]] = event
    expected = start
    for event in events:
        seq = event["seq"]
        if seq == expected:
            expected += 1
            continue
        if seq < start:
            _fail(seq, "reordered" if start > 1 else "unreadable",
                  f"the file starts after seq {start - 1}")
        if expected in by_seq:
            _fail(expected, "reordered", f"seq {expected} comes after seq {seq} in the file")
        missing_to = min([s for s in by_seq if s > expected], default=seq) - 1
        _fail(expected, "removed", f"seq {expected}" + (f"-{missing_to}" if missing_to > expected
                                                        else "") + " missing")
    return by_seq


def _values(event: dict) -> dict:
    return {"at": event["at"], "tenant_id": event.get("tenant"), "event": event["event"],
            "actor": event.get("actor"), "actor_role": event.get("actor_role"),
            "membership_id": event.get("membership_id"), "client_id": event.get("client_id"),
            "detail": event.get("detail")}


def _hash_of(chain: str, event: dict, seq: int, prev: str) -> str | None:
    try:
        return event_hash(chain=chain, seq=seq, prev=prev, values=_values(event))
    except (TypeError, ValueError):
        return None  # a value no event can hold (a fraction, a huge number): changed


def _check_links(chain: str, events: list, after: int, by_seq: dict) -> None:
    if after == 0:
        prev = GENESIS
    else:
        prev = events[0].get("prev") if events else None
        if events and not _is_hash(prev):
            _fail(events[0]["seq"], "unreadable", "a file starting after seq 1 needs the "
                                                  "first event's prev")
    for index, event in enumerate(events):
        seq = event["seq"]
        stated = event.get("prev")
        if stated is not None and stated != prev:
            if _hash_of(chain, event, seq, stated) == event["hash"]:
                _fail(seq - 1, "changed", "the event was changed and its hash recomputed: the "
                                          "next event still commits to the original")
            _fail(seq, "changed", "the event's prev is not the hash of the event before it")
        if _hash_of(chain, event, seq, prev) != event["hash"]:
            belongs = _relocated(chain, event, events, index, by_seq)
            if belongs is not None:
                _fail(seq, "reordered", f"the event at seq {seq} was written as seq {belongs}")
            _fail(seq, "changed", "the event does not match its hash")
        prev = event["hash"]


def _relocated(chain: str, event: dict, events: list, index: int, by_seq: dict) -> int | None:
    """The position ``event``'s hash was made for, if another position of the file fits:
    a stored event moved (its seq swapped with another's)."""
    low, high = max(0, index - RELOCATION_WINDOW), min(len(events), index + RELOCATION_WINDOW)
    for other in events[low:high]:
        seq = other["seq"]
        if seq == event["seq"]:
            continue
        before = by_seq.get(seq - 1)
        candidates = {other["hash"], GENESIS if seq == 1 else (before or {}).get("hash")}
        for prev in candidates:
            if prev and _hash_of(chain, event, seq, prev) == event["hash"]:
                return seq
    return None


def _check_head(document: dict, events: list, after: int, complete: bool) -> None:
    head = document.get("head")
    if not complete or not isinstance(head, dict):
        return
    seq, digest = head.get("seq"), head.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return
    last = events[-1]["seq"] if events else after
    if seq > last:
        _fail(last + 1, "removed", f"the export names the head seq {seq}; its events end at "
                                   f"seq {last}")
    if events and seq == last and digest != events[-1]["hash"]:
        _fail(last, "changed", "the head the export names has another hash")


def _keys(document: dict, jwks: dict | None):
    if jwks is not None:
        return _key_map(jwks), "given"
    embedded = document.get("jwks")
    if isinstance(embedded, dict):
        return _key_map(embedded), "file"
    return {}, None


def _key_map(jwks) -> dict:
    keys = {}
    for jwk in (jwks.get("keys") if isinstance(jwks, dict) else None) or ():
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
            keys[jwk["kid"]] = jwk
    return keys


def _check_checkpoints(document, chain, by_seq, after, complete, keys, report) -> int:
    checked = 0
    last = max(by_seq) if by_seq else after
    for entry in document.get("checkpoints") or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("jws"), str):
            _fail(None, "unreadable", "a checkpoint has no jws")
        if not keys:
            continue
        claims = checkpoint_claims(entry["jws"], keys)
        seq = claims.get("seq") if claims else None
        if claims is None or not isinstance(seq, int) or not _is_hash(claims.get("hash")):
            _fail(entry.get("seq") if isinstance(entry.get("seq"), int) else None,
                  "checkpoint_signature", "a checkpoint's signature does not verify with the "
                                          "bridge's checkpoint keys")
        if claims.get("chain") != chain:
            _fail(seq, "checkpoint_mismatch", f"a checkpoint of chain {claims.get('chain')} "
                                              f"is in the export of {chain}")
        issuer = document.get("issuer")
        if issuer and claims.get("iss") != issuer:
            _fail(seq, "checkpoint_mismatch", "a checkpoint of another issuer")
        if entry.get("seq") != seq or entry.get("hash") != claims["hash"]:
            _fail(seq, "checkpoint_mismatch", "the checkpoint's seq or hash beside its "
                                              "signature differ from what was signed")
        event = by_seq.get(seq)
        if event is not None:
            if event["hash"] != claims["hash"]:
                _fail(seq, "checkpoint_mismatch", "the chain at this seq is not the one the "
                                                  "bridge signed")
        elif seq > last and complete:
            _fail(last + 1, "removed", f"the bridge signed the chain up to seq {seq}; the "
                                       f"events end at seq {last}")
        elif seq > last:
            continue  # beyond this page
        elif seq > after:
            _fail(seq, "removed", "a checkpoint names an event the file does not hold")
        else:
            continue  # before this file's first event
        checked += 1
        report.checkpoints += 1
        signed = _time(claims.get("iat"))
        if report.latest_checkpoint is None or seq >= report.latest_checkpoint[0]:
            report.latest_checkpoint = (seq, signed)
    return checked


def _time(iat) -> str:
    from datetime import datetime, timezone

    if not isinstance(iat, int) or isinstance(iat, bool):
        return "?"
    return datetime.fromtimestamp(iat, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def checkpoint_claims(token: str, keys: dict) -> dict | None:
    """The claims of a checkpoint whose signature verifies with ``keys`` (kid -> JWK), with
    ``typ`` :data:`CHECKPOINT_TYPE` and ES256; None otherwise."""
    from joserfc import jws
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey

    try:
        header = jws.extract_compact(token.encode()).protected
        jwk = keys.get(header.get("kid"))
        if jwk is None or header.get("alg") != "ES256" or header.get("typ") != CHECKPOINT_TYPE:
            return None
        key = ECKey.import_key(dict(jwk))
        if key.is_private or key.as_dict().get("crv") != "P-256":
            return None
        payload = jws.deserialize_compact(token, key, algorithms=["ES256"]).payload
        claims = json.loads(payload)
    except (JoseError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return claims if isinstance(claims, dict) else None
