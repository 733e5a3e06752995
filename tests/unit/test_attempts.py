import pytest

from stream.attempts import FailedAttempts


def test_an_address_is_refused_after_its_allowance_and_told_when_to_return():
    limit = FailedAttempts(max_failures=5, window_s=60)
    for _ in range(4):
        assert limit.retry_after_s("10.0.0.1", 0) is None
        limit.failed("10.0.0.1", 0)
    assert limit.retry_after_s("10.0.0.1", 0) is None
    limit.failed("10.0.0.1", 0)
    # five failures at once: one drains every 12 s, so the next attempt is looked at after 12 s
    assert limit.retry_after_s("10.0.0.1", 0) == 12
    assert limit.retry_after_s("10.0.0.1", 11_001) == 1
    assert limit.retry_after_s("10.0.0.1", 12_000) is None
    assert limit.retry_after_s("10.0.0.2", 0) is None


def test_guesses_spread_out_at_the_drain_rate_are_never_refused_and_faster_ones_are():
    limit = FailedAttempts(max_failures=3, window_s=3)
    for i in range(100):
        assert limit.retry_after_s("a", i * 1000) is None
        limit.failed("a", i * 1000)
    for i in range(3):
        limit.failed("b", 0)
    assert limit.retry_after_s("b", 0) == 1


def test_the_state_stays_bounded_and_forgets_drained_addresses_first():
    limit = FailedAttempts(max_failures=1, window_s=1, max_addresses=10)
    for i in range(10):
        limit.failed(f"old{i}", 0)
    for i in range(5):
        limit.failed(f"new{i}", 5_000)
    assert len(limit) == 5          # the old ones had drained: forgotten when the eleventh came
    for i in range(5, 11):
        limit.failed(f"new{i}", 5_000 + i)
    assert len(limit) == 6          # eleven undrained: the half that drains soonest went
    assert limit.retry_after_s("new10", 5_010) == 1
    assert limit.retry_after_s("new0", 5_010) is None


def test_settings_that_would_never_refuse_are_rejected():
    with pytest.raises(ValueError):
        FailedAttempts(max_failures=0, window_s=60)
