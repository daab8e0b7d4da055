"""Access codes (DESIGN.md section 7): format, input normalisation, derivation, expiry,
rotation on redemption (never because of wrong guesses: those are limited per advisor,
tests/test_guess_limits.py), and no code in clear in the database."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st

from conftest import OTHER_TENANT, TENANT, dump_database
from idp_bridge.domain.access_codes import (
    ALPHABET,
    CODE_LENGTH,
    AccessCodes,
    MalformedCode,
    derive_code,
    format_code,
    normalize_code,
)
from idp_bridge.storage.models import AccessCodeState

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DISPLAY = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
SECRET = b"s" * 32
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def codes():
    return AccessCodes(SECRET, ttl_seconds=3600)


def current(db, codes, now, tenant=TENANT):
    with db.transaction() as session:
        return codes.current(session, tenant, now)


def check(db, codes, candidate, now, tenant=TENANT):
    with db.transaction() as session:
        return codes.check(session, tenant, candidate, now)


def wrong_code(right: str) -> str:
    return "00000000" if right != "00000000" else "11111111"


# --- format and normalisation ---

def test_alphabet_is_crockford_base32():
    assert ALPHABET == CROCKFORD
    assert CODE_LENGTH == 8
    assert not set("ILOU") & set(ALPHABET)


def test_displayed_code_is_two_groups_of_four(migrated_db, codes):
    code = current(migrated_db, codes, T0)
    assert DISPLAY.match(code.display), code.display
    assert code.display == format_code(code.code)
    assert len(code.code) == 8 and set(code.code) <= set(CROCKFORD)


@pytest.mark.parametrize("text, expected", [
    ("ABCD-EFGH", "ABCDEFGH"),
    ("abcd-efgh", "ABCDEFGH"),
    ("AbCd eFgH", "ABCDEFGH"),
    ("ABCDEFGH", "ABCDEFGH"),
    ("  ab-cd -ef gh ", "ABCDEFGH"),
    ("A-B-C-D-E-F-G-H", "ABCDEFGH"),
    ("abcd\tefgh", "ABCDEFGH"),
    ("IL10-0OoZ", "1110000Z"),  # I and L read as 1, O as 0
    ("iiii-llll", "11111111"),
    ("oooo-OOOO", "00000000"),
])
def test_normalize_accepts_spoken_forms(text, expected):
    assert normalize_code(text) == expected


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"),
    pytest.param("ABCD-EFG", id="seven-chars"),
    pytest.param("ABCD-EFGHJ", id="nine-chars"),
    pytest.param("----", id="only-dashes"),
    pytest.param("ABCD-EFGU", id="U-is-not-crockford"),
    pytest.param("uuuu-uuuu", id="lowercase-u"),
    pytest.param("ABCD.EFGH", id="dot"),
    pytest.param("ABCD_EFGH", id="underscore"),
    pytest.param("ABCD-EFG!", id="bang"),
    pytest.param("ABCD/EFGH", id="slash"),
    pytest.param("ABCD\nEFGH", id="newline"),
    pytest.param("ABCD\u2013EFGH", id="en-dash"),
    pytest.param("ＡＢＣＤ-ＥＦＧＨ", id="fullwidth"),
    pytest.param("ABCDEF\u00df", id="sharp-s-uppercases-to-SS"),
    pytest.param("ABCD-EFG\u0131", id="dotless-i-uppercases-to-I"),
    pytest.param("ABCD-EFGH" + " " * 24, id="33-chars-with-padding"),
    pytest.param("A" + "-" * 40 + "BCDEFGH", id="oversized"),
    pytest.param(None, id="none"),
    pytest.param(12345678, id="int"),
    pytest.param(b"ABCDEFGH", id="bytes"),
    pytest.param(["ABCDEFGH"], id="list"),
])
def test_normalize_rejects_malformed(text):
    with pytest.raises(MalformedCode):
        normalize_code(text)


def test_normalize_accepts_exactly_32_chars():
    assert normalize_code("ABCD-EFGH" + " " * 23) == "ABCDEFGH"


# --- derivation ---

def test_derive_is_deterministic():
    assert derive_code(SECRET, TENANT, 7) == derive_code(SECRET, TENANT, 7)


def test_different_tenants_get_different_codes(migrated_db, codes):
    assert derive_code(SECRET, TENANT, 0) != derive_code(SECRET, OTHER_TENANT, 0)
    a = current(migrated_db, codes, T0, TENANT)
    b = current(migrated_db, codes, T0, OTHER_TENANT)
    assert a.code != b.code


def test_different_secrets_give_different_codes(migrated_db):
    assert derive_code(b"a" * 32, TENANT, 0) != derive_code(b"b" * 32, TENANT, 0)
    one = current(migrated_db, AccessCodes(b"a" * 32), T0)
    other = AccessCodes(b"b" * 32)
    with migrated_db.read() as session:
        assert other.current(session, TENANT, T0).code != one.code


def test_counters_give_different_codes():
    assert len({derive_code(SECRET, TENANT, n) for n in range(50)}) == 50


# --- expiry: the 60-minute window ---

def test_expires_at_is_issued_at_plus_ttl(migrated_db, codes):
    code = current(migrated_db, codes, T0)
    assert code.issued_at == T0
    assert code.expires_at == T0 + timedelta(minutes=60)
    later = current(migrated_db, codes, T0 + timedelta(minutes=59))
    assert later.code == code.code
    assert later.expires_at == code.expires_at


def test_custom_ttl_sets_expiry(migrated_db):
    codes = AccessCodes(SECRET, ttl_seconds=600)
    code = current(migrated_db, codes, T0)
    assert code.expires_at - code.issued_at == timedelta(seconds=600)


def test_code_changes_when_window_ends_without_a_write(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    with migrated_db.read() as session:
        after = codes.current(session, TENANT, T0 + timedelta(minutes=61))
        assert not session.new and not session.dirty  # derived, nothing written
    assert after.code != first.code
    assert after.counter == first.counter + 1
    assert after.issued_at == T0 + timedelta(minutes=60)
    assert after.expires_at == T0 + timedelta(minutes=120)
    with migrated_db.read() as session:
        state = session.get(AccessCodeState, TENANT)
        assert (state.counter, state.issued_at) == (0, T0)


def test_expired_code_is_refused(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    result = check(migrated_db, codes, first.code, T0 + timedelta(minutes=61))
    assert result.ok is False


def test_code_valid_until_just_before_expiry(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    result = check(migrated_db, codes, first.code, T0 + timedelta(minutes=59, seconds=59))
    assert result.ok is True


# --- rotation ---

def test_successful_check_rotates(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    now = T0 + timedelta(minutes=10)
    result = check(migrated_db, codes, first.code, now)
    assert (result.ok, result.rotated) == (True, True)
    second = current(migrated_db, codes, now)
    assert second.code != first.code
    assert second.issued_at == now
    assert second.expires_at == now + timedelta(minutes=60)
    # single use: the redeemed code never works again
    assert check(migrated_db, codes, first.code, now).ok is False


def test_wrong_guesses_never_rotate_the_code(migrated_db, codes):
    """A tenant-wide rotation after a few failures would let anyone invalidate the code an
    honest advisor was just told (and lock the tenant out by repeating it)."""
    first = current(migrated_db, codes, T0)
    wrong = wrong_code(first.code)
    for attempt in range(1, 51):
        result = check(migrated_db, codes, wrong, T0)
        assert (result.ok, result.rotated, result.failures) == (False, False, attempt)
    assert current(migrated_db, codes, T0).code == first.code
    assert check(migrated_db, codes, first.code, T0).ok is True


def test_failures_are_reset_by_a_successful_rotation(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    for _ in range(4):
        check(migrated_db, codes, wrong_code(first.code), T0)
    assert check(migrated_db, codes, first.code, T0).ok is True
    second = current(migrated_db, codes, T0)
    for attempt in range(1, 5):
        result = check(migrated_db, codes, wrong_code(second.code), T0)
        assert (result.rotated, result.failures) == (False, attempt)
    assert current(migrated_db, codes, T0).code == second.code


def test_failures_are_counted_per_code_window(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    for _ in range(4):
        check(migrated_db, codes, wrong_code(first.code), T0)
    later = T0 + timedelta(minutes=61)
    code_now = current(migrated_db, codes, later)
    result = check(migrated_db, codes, wrong_code(code_now.code), later)
    assert (result.ok, result.rotated, result.failures) == (False, False, 1)
    assert current(migrated_db, codes, later).code == code_now.code


def test_failures_of_one_tenant_do_not_touch_another(migrated_db, codes):
    other = current(migrated_db, codes, T0, OTHER_TENANT)
    first = current(migrated_db, codes, T0)
    for _ in range(5):
        check(migrated_db, codes, wrong_code(first.code), T0)
    assert current(migrated_db, codes, T0, OTHER_TENANT).code == other.code
    assert check(migrated_db, codes, wrong_code(other.code), T0, OTHER_TENANT).failures == 1


def test_lock_current_is_the_current_code(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    later = T0 + timedelta(minutes=61)
    with migrated_db.transaction() as session:
        assert codes.lock_current(session, TENANT, T0) == first
        assert codes.lock_current(session, TENANT, later) == codes.current(session, TENANT, later)
        assert codes.lock_current(session, TENANT, later).counter == first.counter + 1


def test_explicit_rotate(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    with migrated_db.transaction() as session:
        rotated = codes.rotate(session, TENANT, T0)
    assert rotated.code != first.code
    assert current(migrated_db, codes, T0).code == rotated.code


# --- nothing in clear at rest ---

def test_code_not_stored_in_clear(migrated_db, codes):
    first = current(migrated_db, codes, T0)
    check(migrated_db, codes, wrong_code(first.code), T0)
    check(migrated_db, codes, first.code, T0)
    live = current(migrated_db, codes, T0)
    dump = dump_database(migrated_db)
    assert "access_code_states" in dump  # the dump does see the state row
    for code in (live.code, live.display, first.code, first.display):
        assert code not in dump


def test_code_not_stored_in_clear_through_the_api(bridge, app):
    bridge.join("bob")
    live = bridge.current_code()
    assert bridge.exchange("carol", code=wrong_code(live.replace("-", ""))).status_code == 400
    dump = dump_database(bridge.services.db)
    assert "membership.created" in dump
    assert live not in dump and live.replace("-", "") not in dump


# --- properties ---

secrets_ = st.binary(min_size=1, max_size=64)
tenants = st.text(alphabet="0123456789abcdef-", min_size=1, max_size=64)
counters = st.integers(min_value=0, max_value=2**63 - 1)
canonical = st.text(alphabet=CROCKFORD, min_size=8, max_size=8)


@given(secrets_, tenants, counters)
def test_derive_output_is_eight_alphabet_chars(secret, tenant, counter):
    code = derive_code(secret, tenant, counter)
    assert len(code) == CODE_LENGTH
    assert set(code) <= set(CROCKFORD)


@given(secrets_, tenants, counters)
def test_normalize_format_derive_round_trip(secret, tenant, counter):
    code = derive_code(secret, tenant, counter)
    assert DISPLAY.match(format_code(code))
    assert normalize_code(format_code(code)) == code


@given(st.text(alphabet=CROCKFORD + CROCKFORD.lower() + "ILOilo- ", max_size=32))
def test_normalize_is_idempotent(text):
    try:
        once = normalize_code(text)
    except MalformedCode:
        return
    assert normalize_code(once) == once
    assert normalize_code(format_code(once)) == once


@st.composite
def spoken(draw):
    code = draw(canonical)
    parts = []
    for ch in code:
        parts.append(draw(st.sampled_from(["", "-", " ", "--", " -"])))
        parts.append(ch.lower() if draw(st.booleans()) else ch)
    parts.append(draw(st.sampled_from(["", "-", " "])))
    text = "".join(parts)
    assert len(text) <= 32  # 8 characters and at most 9 separators of 2
    return code, text


@hypothesis_settings(max_examples=200)
@given(spoken())
def test_any_spelling_normalizes_to_the_canonical_code(pair):
    code, text = pair
    assert normalize_code(text) == code
