"""Access codes (Zugangscodes), DESIGN.md section 7.

A code is 8 characters of Crockford base32, shown as ``XXXX-XXXX``. It is derived, never
stored: ``HMAC-SHA256(secret, tenant || counter)``, so a database dump reveals no live code.
The stored state per tenant is a rotation counter and the time the current code was issued.
A code lives ``ttl`` seconds; expiry needs no write: the current counter is derived from the
stored one and the windows elapsed since. Redemption rotates the code at once (counter + 1,
new window); so may a tenant admin.

Wrong guesses do not rotate the code: a tenant-wide rotation after a few failures let anyone
invalidate the code an honest advisor was just told. Guessing is bounded per advisor instead
(:class:`idp_bridge.domain.exchange.GuessLimiter`: a few guesses per advisor and code, and a
sliding window per advisor); the tenant-wide count of wrong guesses is kept for the audit.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from ..storage.models import AccessCodeState

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
CODE_LENGTH = 8
# Crockford decoding: read-aloud confusions map to the digit they look like.
_DECODE = {**{c: c for c in ALPHABET}, "I": "1", "L": "1", "O": "0"}
_IGNORED = {"-", " ", "\t"}


class MalformedCode(ValueError):
    """Input that cannot be an access code (wrong length or characters)."""


def normalize_code(text: str) -> str:
    """Canonical form of user input: case-insensitive, dashes and spaces ignored."""
    # ASCII only: str.upper() maps some letters to ASCII ones ("\u0131" -> "I", "\u00df" -> "SS").
    if not isinstance(text, str) or len(text) > 32 or not text.isascii():
        raise MalformedCode("an access code has 8 characters, like ABCD-EFGH")
    chars = []
    for ch in text.upper():
        if ch in _IGNORED:
            continue
        mapped = _DECODE.get(ch)
        if mapped is None:
            raise MalformedCode("an access code has 8 characters, like ABCD-EFGH")
        chars.append(mapped)
    if len(chars) != CODE_LENGTH:
        raise MalformedCode("an access code has 8 characters, like ABCD-EFGH")
    return "".join(chars)


def format_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def derive_code(secret: bytes, tenant_id: str, counter: int) -> str:
    """The code of ``tenant_id`` at rotation ``counter`` (40 bits of an HMAC)."""
    message = f"access-code\x00{tenant_id}\x00{counter}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    value = int.from_bytes(digest[:5], "big")  # 40 bits = 8 base32 characters
    return "".join(ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH)))


@dataclass(frozen=True)
class CurrentCode:
    tenant_id: str
    code: str  # canonical, without dash
    counter: int
    issued_at: datetime
    expires_at: datetime

    @property
    def display(self) -> str:
        return format_code(self.code)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    rotated: bool
    #: Wrong guesses for this code so far, by anyone (audit only: it limits nothing).
    failures: int = 0


#: ``session.info`` key: the code states this transaction locked, by tenant.
_LOCKED = "idp_bridge.locked_code_states"


class AccessCodes:
    """Derivation, checking and rotation of the tenants' access codes."""

    def __init__(self, secret: bytes, ttl_seconds: int = 3600):
        self._secret = secret
        self.ttl = timedelta(seconds=ttl_seconds)

    def _window(self, state: AccessCodeState, now: datetime) -> tuple[int, datetime]:
        elapsed = int((now - state.issued_at) / self.ttl) if now >= state.issued_at else 0
        return state.counter + elapsed, state.issued_at + elapsed * self.ttl

    def _current(self, state: AccessCodeState, now: datetime) -> CurrentCode:
        counter, issued_at = self._window(state, now)
        return CurrentCode(
            tenant_id=state.tenant_id,
            code=derive_code(self._secret, state.tenant_id, counter),
            counter=counter,
            issued_at=issued_at,
            expires_at=issued_at + self.ttl,
        )

    def _state(self, session, tenant_id: str, now: datetime, *, for_update=False,
               locked=False):
        # ``locked``: this transaction holds the row's lock already (lock_current), so the
        # object it loaded then is current; no second round trip.
        held = session.info.setdefault(_LOCKED, {})
        state = held.get(tenant_id) if locked else None
        if state is None:
            query = select(AccessCodeState).where(AccessCodeState.tenant_id == tenant_id)
            if for_update or locked:
                query = query.with_for_update()
            state = session.scalars(query).first()
        if state is None:
            state = AccessCodeState(tenant_id=tenant_id, counter=0, issued_at=now,
                                    failures=0, failures_counter=0)
            session.add(state)
            session.flush()
        if for_update or locked:
            held[tenant_id] = state  # (the session's identity map holds it only weakly)
        return state

    def current(self, session, tenant_id: str, now: datetime) -> CurrentCode:
        """The code to show on the tenant's help page."""
        return self._current(self._state(session, tenant_id, now), now)

    def lock_current(self, session, tenant_id: str, now: datetime) -> CurrentCode:
        """The current code, with the tenant's state row locked until the transaction ends
        (the guess limit is checked against this code before :meth:`check`)."""
        return self._current(self._state(session, tenant_id, now, for_update=True), now)

    def check(self, session, tenant_id: str, candidate: str, now: datetime, *,
              locked: bool = False) -> CheckResult:
        """Compare in constant time; rotate on success. A wrong guess only counts.

        Runs inside the caller's transaction; the state row is locked so that two
        concurrent redemptions of one code cannot both succeed (``locked``: the caller's
        :meth:`lock_current` in this transaction took that lock already).
        """
        state = self._state(session, tenant_id, now, for_update=True, locked=locked)
        current = self._current(state, now)
        ok = hmac.compare_digest(candidate.encode(), current.code.encode())
        if ok:
            self._rotate(state, current, now)
            return CheckResult(ok=True, rotated=True)
        failures = (state.failures if state.failures_counter == current.counter else 0) + 1
        state.failures, state.failures_counter = failures, current.counter
        return CheckResult(ok=False, rotated=False, failures=failures)

    def rotate(self, session, tenant_id: str, now: datetime) -> CurrentCode:
        state = self._state(session, tenant_id, now, for_update=True)
        self._rotate(state, self._current(state, now), now)
        return self._current(state, now)

    @staticmethod
    def _rotate(state: AccessCodeState, current: CurrentCode, now: datetime) -> None:
        state.counter = current.counter + 1
        state.issued_at = now
        state.failures = 0
        state.failures_counter = state.counter
