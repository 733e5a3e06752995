"""The profiles stage's schedule of daily snapshots: every five minutes by the worker's clock, or as a test arms it."""

import pytest

from stream.agents.profiles import SNAPSHOT_LOOK_S, Ahead, snapshot_schedule
from stream.clock import FakeClock


def test_unarmed_the_stage_looks_every_five_minutes_by_the_workers_clock():
    assert snapshot_schedule(None) == snapshot_schedule("") == (SNAPSHOT_LOOK_S, 0) == (300.0, 0)


def test_armed_it_looks_as_often_as_asked_with_its_clock_ahead():
    assert snapshot_schedule("1") == (1.0, 0)
    assert snapshot_schedule("0.5:87000000") == (0.5, 87_000_000)
    clock = FakeClock(1_000)
    ahead = Ahead(clock, 87_000_000)
    clock.advance(5)
    assert ahead.now_ms() == 87_001_005


@pytest.mark.parametrize("armed", ["0", "-1:5", "1:-5", "x", "1:y", ":5"])
def test_a_badly_armed_schedule_says_what_it_expects(armed):
    with pytest.raises(ValueError) as err:
        snapshot_schedule(armed)
    assert str(err.value) == (
        f"STREAM_PROFILES_SNAPSHOTS={armed!r}: expected <look_s>[:<ahead_ms>], seconds between looks (more than 0) "
        "and milliseconds the snapshot writer's clock runs ahead (0 or more), e.g. 1:87000000; unset it to look "
        "every 300s by the worker's clock")
