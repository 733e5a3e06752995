"""A backfill's plan: which source holds each hour, refusals naming the earliest hour, cut points."""

import pytest

from stream.export.backfill import Availability, BackfillRefused, Request, chunks, cuts, hour_text, parse_hour, plan
from stream.export.ledger import LedgerRecord

H = 1709967600000   # 2024-03-09 07:00 UTC
HOUR = 3_600_000


def test_hours_are_read_in_every_spelling_and_a_bad_one_is_named():
    assert [parse_hour(t) for t in ("2024-03-09T07", "2024-03-09T07:00", "2024-03-09T07:00:00Z",
                                    "2024-03-09 07")] == [H] * 4
    assert parse_hour("2024-03-09") == H - 7 * HOUR
    assert hour_text(H) == "2024-03-09T07"
    with pytest.raises(BackfillRefused, match=r"'yesterday' is not an hour: write it as 2024-03-01T07 \(UTC\)"):
        parse_hour("yesterday")


def test_each_hour_comes_from_the_topic_while_it_holds_it_else_from_the_archive():
    a = Availability(accepted_from=H + 2 * HOUR, archive=frozenset({H - HOUR, H, H + HOUR}))
    req = Request("d", H - HOUR, H + 3 * HOUR)
    assert plan(req, a) == [(H - HOUR, "archive"), (H, "archive"), (H + HOUR, "archive"), (H + 2 * HOUR, "accepted")]
    assert plan(Request("d", H, H + 2 * HOUR, source="archive"), a) == [(H, "archive"), (H + HOUR, "archive")]
    # a topic that never deleted a record holds every hour (an empty one is an hour without events)
    assert plan(Request("d", H, H + HOUR), Availability(None, None)) == [(H, "accepted")]


def test_hours_nobody_holds_are_refused_naming_the_earliest_available_one():
    a = Availability(accepted_from=H + 2 * HOUR, archive=frozenset({H + HOUR}))
    with pytest.raises(BackfillRefused) as e:
        plan(Request("d", H - HOUR, H + 3 * HOUR), a)
    assert str(e.value) == ("neither events.accepted nor the archive destination holds hour 2024-03-09T06 (2 hour(s) "
                            "of the range are not held); the earliest hour available is 2024-03-09T08; nothing was "
                            "written")
    with pytest.raises(BackfillRefused, match=r"^events.accepted does not hold hour 2024-03-09T08 \(1 hour\(s\) of "
                                              r"the range are not held\); the earliest hour available is "
                                              r"2024-03-09T09"):
        plan(Request("d", H + HOUR, H + 3 * HOUR, source="accepted"), a)
    with pytest.raises(BackfillRefused, match="must come after"):
        plan(Request("d", H, H), a)


def test_a_rebuild_cuts_its_objects_where_the_live_export_did_and_not_where_other_rebuilds_did():
    def obj(p, hour, start, end, key, detail=""):
        return LedgerRecord("d", 1, "t", p, hour, "b", key, start, end, 1, {}, 1, "idle", 0, "object", detail)
    records = [obj(0, H, 0, 4, "k0"), obj(0, H, 5, 9, "k1"), obj(1, H + HOUR, 0, 2, "k2"),
               obj(1, H, 3, 6, "k3", '{"job":"bf-1"}'), obj(0, H, 10, 12, "k4"),
               LedgerRecord("d", 1, "t", 0, H, "b", "k4", -1, -1, 0, {}, 0, "", 0, "deleted", '{"job":"bf-1"}')]
    assert cuts(records, {H}) == {(0, 4), (0, 9)}
    assert chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
