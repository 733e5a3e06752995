from stream.agents.mirror import runs
from stream.events.timefmt import HOUR_MS

H = 1709967600000


def test_touched_hours_are_rebuilt_as_runs_of_consecutive_hours_in_order():
    assert runs([H + 5 * HOUR_MS, H, H + HOUR_MS, H, H + 3 * HOUR_MS]) == [
        (H, H + 2 * HOUR_MS), (H + 3 * HOUR_MS, H + 4 * HOUR_MS), (H + 5 * HOUR_MS, H + 6 * HOUR_MS)]
    assert runs([]) == []
