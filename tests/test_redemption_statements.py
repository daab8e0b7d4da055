"""What a first redemption costs in statements (issue 16: fewer statements, less work in the
transaction): the advisor's guess row in one upsert, both guess limits in one count, the
tenant's code state selected once (locked) and updated once."""

from __future__ import annotations

from statements import recorded


def test_a_first_redemption_touches_guesses_and_code_state_once_each(bridge):
    bridge.join("carol")  # clients, keys and the like are loaded and cached
    code = bridge.current_code()
    with recorded(bridge.services.db) as seen:
        joined = bridge.exchange("bob", code=code)
    assert joined.status_code == 200, joined.json
    guessers = [s for s in seen if "CODE_GUESSERS" in s]
    counts = [s for s in seen if s.startswith("SELECT COUNT(*)") and "CODE_GUESSES" in s]
    states = [s for s in seen if "ACCESS_CODE_STATES" in s]
    assert len(guessers) == 1 and guessers[0].startswith("INSERT INTO CODE_GUESSERS"), guessers
    assert "ON CONFLICT" in guessers[0] and "DO UPDATE" in guessers[0]
    assert len(counts) == 1, counts
    assert [s.split()[0] for s in states] == ["SELECT", "UPDATE"], states
    # The code was used: the next one differs and bob is a member now.
    assert bridge.current_code() != code
    assert bridge.exchange("bob").status_code == 200


def test_a_wrong_code_is_counted_once_and_the_state_read_once(bridge):
    bridge.join("carol")
    code = bridge.current_code()
    wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
    with recorded(bridge.services.db) as seen:
        refused = bridge.exchange("bob", code=wrong)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_grant"
    states = [s for s in seen if "ACCESS_CODE_STATES" in s]
    assert [s.split()[0] for s in states] == ["SELECT", "UPDATE"], states  # failures counted
    assert len([s for s in seen if s.startswith("INSERT INTO CODE_GUESSES")]) == 1
    assert bridge.current_code() == code  # a wrong guess does not rotate the code
