"""Per-device/user leaky buckets: the average over the window stays at or under eps; a throttled request counts
against nothing."""

import pytest

from stream.api.throttle import Throttle

T = 1_700_000_000_000


def test_a_device_may_send_eps_times_window_at_once():
    t = Throttle(eps=30, window_s=30)
    assert t.admit(["dev-1"] * 900, [None] * 900, T) is None
    got = t.admit(["dev-1"], [None], T)
    assert got is not None
    assert got.body() == {"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 30,
                          "throttled_devices": {"dev-1": 30}, "throttled_users": {}, "throttled_events": [0]}


def test_the_bucket_drains_at_eps():
    t = Throttle(eps=30, window_s=30)
    assert t.admit(["dev-1"] * 900, [None] * 900, T) is None
    assert t.admit(["dev-1"] * 31, [None] * 31, T + 1000) is not None   # 30 drained, 31 asked
    assert t.admit(["dev-1"] * 30, [None] * 30, T + 1000) is None


def test_users_are_limited_across_devices_and_only_their_events_are_listed():
    t = Throttle(eps=1, window_s=2)
    got = t.admit(["dev-a", "dev-b", "dev-c", "dev-d"], ["user-1", "user-1", "user-1", "user-2"], T)
    assert got.body() == {"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 1,
                          "throttled_devices": {}, "throttled_users": {"user-1": 2}, "throttled_events": [0, 1, 2]}


def test_a_throttled_request_counts_against_nothing():
    t = Throttle(eps=1, window_s=10)
    assert t.admit(["dev-1"] * 11 + ["dev-2"], [None] * 12, T) is not None
    assert len(t) == 0
    assert t.admit(["dev-2"] * 10, [None] * 10, T) is None


def test_fractional_thresholds_are_reported_as_is():
    assert Throttle(eps=0.5, window_s=2).admit(["d"] * 2, [None] * 2, T).body()["eps_threshold"] == 0.5


def test_drained_ids_are_forgotten_when_the_table_is_full():
    t = Throttle(eps=10, window_s=1, max_ids=3)
    for i in range(3):
        assert t.admit([f"dev-{i}"], [None], T) is None
    assert len(t) == 3
    assert t.admit(["dev-9"], [None], T + 1000) is None   # the first three have drained
    assert len(t) == 1


def test_the_least_recent_half_goes_when_nothing_has_drained():
    t = Throttle(eps=1, window_s=100, max_ids=4)
    for i in range(5):
        assert t.admit([f"dev-{i}"], [None], T + i) is None
    assert len(t) == 3 and t.admit(["dev-4"] * 100, [None] * 100, T + 5) is not None  # dev-4 still counted


@pytest.mark.parametrize("eps,window_s,now", [(3, 3, 1000), (6, 30, 0), (7, 1, 0), (3, 30, T)])
def test_a_bucket_filled_to_capacity_in_fractional_steps_is_not_over(eps, window_s, now):
    t = Throttle(eps=eps, window_s=window_s)   # one event every 1000/eps ms: a float sum
    for i in range(eps * window_s):
        assert t.admit(["dev-1"], [None], now) is None, i
    got = t.admit(["dev-1"], [None], now)
    assert got is not None and got.devices == {"dev-1": round((eps * window_s + 1) / window_s)}


def test_a_steady_rate_at_the_threshold_is_never_throttled():
    t = Throttle(eps=7, window_s=3)
    assert t.admit(["dev-1"] * 21, ["user-1"] * 21, T) is None      # the burst the window allows
    for s in range(1, 200):                                          # then exactly eps per second
        assert t.admit(["dev-1"] * 7, ["user-1"] * 7, T + s * 1000) is None, s
    got = t.admit(["dev-1"], ["user-1"], T + 199_000)
    assert got.body()["throttled_devices"] == {"dev-1": 7} and got.body()["throttled_users"] == {"user-1": 7}


def test_a_throttled_request_says_when_it_fits_again():
    t = Throttle(eps=30, window_s=30)
    assert t.admit(["dev-1"] * 900, ["user-1"] * 900, T) is None
    assert t.admit(["dev-1"], [None], T).retry_after_s == 1             # one event over: 34 ms, rounded up
    assert t.admit([None] * 61, ["user-1"] * 61, T).retry_after_s == 3   # 61 events at 30/s: 2.03 s
    assert t.admit(["dev-1"] * 60, [None] * 60, T + 1000).retry_after_s == 1   # 30 drained meanwhile
