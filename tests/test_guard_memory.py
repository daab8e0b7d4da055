"""The guard's revocation set stays bounded: entries leave once every token they revoke has
expired, and never before (scopes/guard/revocation.py).

Time is a clock the tests move (never a sleep); memory is measured with tracemalloc.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import random
import threading
import time
import tracemalloc
from types import SimpleNamespace

import pytest

from scopes.guard import InvalidToken, TokenGuard
from scopes.guard import validation as validation_module
from scopes.guard.revocation import RevocationSet
from test_guard import AUDIENCE, TENANT, FakeIssuer, fake, loopback  # noqa: F401

LIFETIME = 300
LEEWAY = 30
KEEP = LIFETIME + 2 * LEEWAY  # what TokenGuard keeps an entry after its event_timestamp


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingDict(dict):
    """A table that counts the lookups pruning makes."""

    gets = 0

    def get(self, key, default=None):
        type(self).gets += 1
        return super().get(key, default)


# --- a million revocations ---

def test_a_million_revocations_leave_when_their_tokens_expire():
    start = 1_800_000_000.0
    clock = Clock(start)
    revocations = RevocationSet(KEEP, clock=clock)
    rng = random.Random(16)
    count = 1_000_000
    # Events of the last five minutes, in the order the feed delivers them (a receiver
    # catching up), half grants, half sids; values as long as a UUID.
    timestamps = sorted(start - rng.random() * LIFETIME for _ in range(count))

    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        refused = []  # (no assert in the loop: pytest's rewriting would cost more than it)
        revoke = revocations.revoke
        for i, stamp in enumerate(timestamps):
            if not revoke("grant_id" if i % 2 == 0 else "sid", f"{i:036d}", stamp):
                refused.append(i)
        assert not refused
        full = tracemalloc.get_traced_memory()[0] - baseline
        assert len(revocations) == count

        # Halfway through: exactly the entries whose time has passed may have left (up to a
        # bucket's width late), and none that still covers a token.
        clock.now = start + KEEP - LIFETIME / 2
        left = revocations.prune()
        must_stay = count - bisect.bisect_right(timestamps, clock.now - KEEP)
        may_stay = count - bisect.bisect_right(
            timestamps, clock.now - KEEP - RevocationSet.GRANULARITY)
        assert must_stay <= len(revocations) <= may_stay
        assert left == count - len(revocations)
        assert all(until > clock.now - RevocationSet.GRANULARITY for until in
                   itertools.chain(revocations.grants.values(), revocations.sids.values()))
        for i in range(0, count, 7):
            if timestamps[i] + KEEP > clock.now:  # still covers a token that could be accepted
                kind = "grant_id" if i % 2 == 0 else "sid"
                assert revocations.is_revoked(kind, f"{i:036d}")

        # Past every entry's time: the set is empty and its memory is given back.
        clock.now = start + KEEP + RevocationSet.GRANULARITY
        revocations.prune()
        assert len(revocations) == 0
        assert revocations.next_expiry is None
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert full > 100 * count  # the million entries were held (> 100 bytes each) ...
    assert after < full / 50  # ... and their memory has been given back
    assert after < 2_000_000


def test_pruning_touches_only_the_entries_that_leave():
    """No scan of the whole set: a prune looks at the entries of the buckets that are due."""
    clock = Clock(1_800_000_000.0)
    revocations = RevocationSet(KEEP, clock=clock)
    revocations.grants = CountingDict()
    for i in range(100_000):  # one second's bucket holds 1,000 of them
        revocations.revoke("grant_id", f"g{i}", clock.now - LIFETIME + (i % 100))
    CountingDict.gets = 0
    assert revocations.prune() == 0  # nothing due: no entry looked at
    assert CountingDict.gets == 0
    clock.now += KEEP - LIFETIME + 1  # the entries of the first second are due
    assert revocations.prune() == 1_000
    assert CountingDict.gets == 1_000
    assert len(revocations) == 99_000


def test_a_revocation_again_extends_its_entry_and_never_shortens_it():
    clock = Clock(1_800_000_000.0)
    revocations = RevocationSet(KEEP, clock=clock)
    assert revocations.revoke("sid", "s", clock.now)
    assert revocations.revoke("sid", "s", clock.now + 100)  # a newer event: kept longer
    assert revocations.revoke("sid", "s", clock.now - 100)  # an older one changes nothing
    assert revocations.sids["s"] == clock.now + 100 + KEEP
    clock.now += KEEP + 50  # the first event's time has passed, not the second's
    revocations.prune()
    assert revocations.is_revoked("sid", "s")
    clock.now += 100
    revocations.prune()
    assert not revocations.is_revoked("sid", "s")


def test_an_event_whose_tokens_have_all_expired_is_not_stored():
    clock = Clock(1_800_000_000.0)
    revocations = RevocationSet(KEEP, clock=clock)
    assert revocations.revoke("grant_id", "old", clock.now - KEEP - 1) is False
    assert len(revocations) == 0 and revocations.next_expiry is None


@pytest.mark.parametrize("keep_for", [0, -1, float("nan"), float("inf"), "300", True])
def test_keep_for_is_checked(keep_for):
    with pytest.raises(ValueError):
        RevocationSet(keep_for)


# --- through the guard: an entry covering a live token is never pruned ---

@pytest.fixture
def clocked(fake, monkeypatch):  # noqa: F811 - the fixture imported from test_guard
    """A guard whose wall clock (validation and revocation set) is a Clock the test moves."""
    clock = Clock(float(int(time.time())))
    monkeypatch.setattr(validation_module, "time",
                        SimpleNamespace(time=clock, monotonic=time.monotonic))
    guard = TokenGuard(fake.issuer, AUDIENCE, max_token_lifetime=LIFETIME, leeway=LEEWAY)
    guard.revocations = RevocationSet(guard.revocations.keep_for, clock=clock)
    assert guard.revocations.keep_for == KEEP
    guard.discover()
    return guard, clock


def refused(guard, token) -> str:
    with pytest.raises(InvalidToken) as caught:
        guard.validate(token, tenant=TENANT, scope="tenant:read")
    return caught.value.description


@pytest.mark.parametrize("issued_after_event", [-LIFETIME + 1, 0, LEEWAY],
                         ids=["expiring-a-second-after", "issued-at-the-event",
                              "signed-a-leeway-after-the-event"])
def test_a_revoked_token_is_refused_as_revoked_until_it_expires(fake, clocked,  # noqa: F811
                                                                issued_after_event):
    """The revocation event at ``t``; the token covered issued ``issued_after_event`` seconds
    from ``t`` (the last: an access token signed just after a removal it raced). Second by
    second, pruning each time, it is refused *as revoked* for as long as it would otherwise
    be accepted (``exp + leeway``), and only then as expired."""
    guard, clock = clocked
    event = clock.now
    iat = int(event + issued_after_event)
    token = fake.mint(iat=iat, exp=iat + LIFETIME)
    grant = token_claim(guard, fake, token)
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    guard.revoke("grant_id", grant, event)
    last_accepted = iat + LIFETIME + LEEWAY  # the guard's limit for an unrevoked token
    while clock.now <= last_accepted:
        guard.prune_revocations()
        assert refused(guard, token) == "token has been revoked", clock.now - event
        clock.now += 1
    clock.now = last_accepted
    guard.prune_revocations()
    assert refused(guard, token) == "token has been revoked"  # the last accepted moment
    clock.now = last_accepted + 0.001
    assert refused(guard, token) == "token has expired"
    clock.now = event + KEEP + RevocationSet.GRANULARITY
    guard.prune_revocations()
    assert guard.revocation_count == 0  # and then it left


def test_a_revocation_without_a_known_time_is_kept_for_the_max_lifetime(fake,  # noqa: F811
                                                                        clocked):
    guard, clock = clocked
    arrived = clock.now
    token = fake.mint(iat=int(arrived), exp=int(arrived) + LIFETIME)  # issued as it arrived
    grant = token_claim(guard, fake, token)
    assert guard.revoke("grant_id", grant)  # no event_timestamp
    assert guard.revocations.grants[grant] == arrived + KEEP
    clock.now = arrived + LIFETIME + LEEWAY
    guard.prune_revocations()
    assert refused(guard, token) == "token has been revoked"
    clock.now = arrived + KEEP - 0.001
    guard.prune_revocations()
    assert guard.is_revoked("grant_id", grant)
    clock.now = arrived + KEEP + RevocationSet.GRANULARITY
    guard.prune_revocations()
    assert not guard.is_revoked("grant_id", grant)
    assert guard.revocation_count == 0


def token_claim(guard, fake, token, name="grant_id"):  # noqa: F811
    return guard.validate(token, tenant=TENANT, scope="tenant:read")[name]


# --- threads ---

def test_concurrent_revocations_lookups_and_pruning():
    """Writers, readers and a pruner at once, with time moving: nothing raises, every entry
    still covering a token is there, and at the end everything has left."""
    clock = Clock(1_800_000_000.0)
    revocations = RevocationSet(KEEP, clock=clock)
    errors: list[BaseException] = []
    written: list[list[tuple[str, str, float]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def writer(n: int) -> None:
        rng = random.Random(n)
        try:
            for i in range(25_000):
                kind = "grant_id" if rng.random() < 0.5 else "sid"
                value = f"w{n}-{i % 20_000}"  # some values revoked twice
                stamp = clock.now - rng.random() * LIFETIME
                if revocations.revoke(kind, value, stamp):
                    written[n].append((kind, value, stamp))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                for i in range(0, 20_000, 7):
                    value = f"w1-{i}"
                    _ = value in revocations.grants or value in revocations.sids
                len(revocations)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def pruner() -> None:
        try:
            while not stop.is_set():
                clock.now += 0.5  # time moves while they work
                revocations.prune()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    others = [threading.Thread(target=reader), threading.Thread(target=reader),
              threading.Thread(target=pruner)]
    for thread in writers + others:
        thread.start()
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in others:
        thread.join(120)
    assert not errors
    assert not any(t.is_alive() for t in writers + others)

    revocations.prune()
    now = clock.now
    for entries in written:
        for kind, value, stamp in entries:
            if stamp + KEEP > now:
                assert revocations.is_revoked(kind, value), (kind, value)
    clock.now = now + KEEP + RevocationSet.GRANULARITY
    revocations.prune()
    assert len(revocations) == 0
    assert revocations.next_expiry is None
