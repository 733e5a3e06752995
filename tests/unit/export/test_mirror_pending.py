"""Which pending hours the mirror stage rebuilds when: the pending records of takes, the clock, drained or not."""

import asyncio

import orjson

from stream.clock import FakeClock
from stream.export import mirror_pending as mp
from stream.imports.mirror_files import FileTake

H = 3_600_000
T0 = 1_733_450_000_000


def take(url, partition, first, hours, at_ms=T0):
    return FileTake(url, 7, 1_000, partition, first, first + 9, 0, 9, {"UPDATE": 10}, {"applied": 10},
                    tuple((7, h) for h in hours), at_ms)


def recorded(pending, hours, files, now_ms, oldest_ms):
    """``pending`` with a take's records applied, as the table holds them (keys and values in key order)."""
    items = dict(_items(pending))
    for k, v in mp.writes(pending, hours, files, now_ms, oldest_ms).items():
        if v is None:
            items.pop(k, None)
        else:
            items[k] = v
    return mp.read(sorted(items.items()))


def _items(pending):
    for (p, h), ph in pending.hours.items():
        yield mp.hour_key(p, h), orjson.dumps({"since_ms": ph.since_ms, "oldest_ms": ph.oldest_ms})
    for k, t in pending.files.items():
        yield mp.FILE + k, t.encode()


def test_takes_of_a_backlog_wait_until_drained_then_every_hour_is_rebuilt_once():
    clock = FakeClock(T0)
    p0 = recorded(mp.Pending(), {7: [2 * H, H]}, [take("s3://b/f", 0, 0, [H, 2 * H])], clock.now_ms(), T0 - 500)
    clock.advance(8_000)
    p0 = recorded(p0, {7: [2 * H, 3 * H]}, [take("s3://b/f", 0, 10, [2 * H, 3 * H])], clock.now_ms(), T0 + 7_000)
    p1 = recorded(mp.Pending(), {7: [H], 9: [5 * H]}, [], clock.now_ms(), T0 + 7_500)
    # more waits on the partitions: nothing yet, however many takes
    assert mp.due_hours([p0, p1], clock.now_ms(), False, 60_000) == {}
    # an hour touched by two takes keeps its first time and its oldest mutation
    assert p0.hours == {(7, H): mp.PendingHour(T0, T0 - 500), (7, 2 * H): mp.PendingHour(T0, T0 - 500),
                        (7, 3 * H): mp.PendingHour(T0 + 8_000, T0 + 7_000)}
    assert (p0.since_ms(), p0.oldest_ms(), p1.since_ms(), p1.oldest_ms()) == (T0, T0 - 500, T0 + 8_000, T0 + 7_500)
    assert mp.oldest_waiting_s([p0.oldest_ms(), p1.oldest_ms(), None], clock.now_ms()) == 8.5
    assert (mp.hours_pending([p0, p1]), mp.hours_pending([p1]), mp.hours_pending([])) == (4, 2, 0)
    # drained: every pending hour of both partitions, each once
    assert mp.due_hours([p0, p1], clock.now_ms(), True, 60_000) == {7: [H, 2 * H, 3 * H], 9: [5 * H]}


def test_a_trickle_that_never_drains_is_rebuilt_once_the_oldest_hour_waited_the_bound():
    clock = FakeClock(T0)
    p = recorded(mp.Pending(), {7: [H]}, [], clock.now_ms(), T0)
    clock.advance(59_999)
    p = recorded(p, {7: [2 * H]}, [], clock.now_ms(), clock.now_ms())
    assert mp.due_hours([p], clock.now_ms(), False, 60_000) == {}
    clock.advance(1)
    assert mp.due_hours([p], clock.now_ms(), False, 60_000) == {7: [H, 2 * H]}


def test_hours_due_only_because_the_partitions_look_drained_are_confirmed_with_the_broker_first():
    clock = FakeClock(T0)
    p = recorded(mp.Pending(), {7: [H]}, [], clock.now_ms(), T0)
    assert mp.due_on_drain_only([p], clock.now_ms(), True, 60_000) is True
    assert mp.due_on_drain_only([p], clock.now_ms(), False, 60_000) is False    # not due at all
    assert mp.due_on_drain_only([mp.Pending()], clock.now_ms(), True, 60_000) is False    # nothing pending
    assert mp.due_on_drain_only([p], clock.now_ms(), True, 0) is False           # due after every take anyway
    clock.advance(60_000)
    assert mp.due_on_drain_only([p], clock.now_ms(), True, 60_000) is False      # due by the bound


def test_a_bound_of_zero_rebuilds_after_every_take_and_nothing_pending_rebuilds_nothing():
    clock = FakeClock(T0)
    assert mp.due_hours([mp.Pending(), mp.Pending()], clock.now_ms(), True, 0) == {}
    assert mp.due_hours([], clock.now_ms(), True, 60_000) == {}
    p = recorded(mp.Pending(), {7: [H]}, [], clock.now_ms(), T0)
    assert mp.due_hours([p], clock.now_ms(), False, 0) == {7: [H]}
    assert mp.oldest_waiting_s([mp.Pending().oldest_ms(), None], clock.now_ms()) == 0.0
    assert mp.oldest_waiting_s([None, T0 - 2_500], clock.now_ms()) == 2.5


def test_drained_needs_every_partitions_end_known_and_reached():
    assert mp.drained({0: 10, 1: 4}, {0: 10, 1: 4}) is True
    assert mp.drained({0: 10, 1: 3}, {0: 10, 1: 4}) is False        # one more mutation waits on partition 1
    assert mp.drained({0: 10}, {0: 10, 1: 0}) is False               # partition 1's start not known
    assert mp.drained({0: 10, 1: 0}, {0: 10, 1: None}) is False      # no fetch answered for partition 1 yet
    assert mp.drained({}, {}) is True


def test_the_waiting_files_records_get_the_rewrite_time_and_are_cleared_with_the_hours():
    a, b = take("s3://b/f", 0, 0, [H]), take("s3://b/g", 0, 20, [H, 2 * H])
    p = recorded(mp.Pending(), {7: [H, 2 * H]}, [b, a], T0, T0)
    assert p.files == {a.key: take("s3://b/f", 0, 0, [H], at_ms=0), b.key: take("s3://b/g", 0, 20, [H, 2 * H],
                                                                                  at_ms=0)}
    assert mp.rewritten(p, T0 + 5) == [take("s3://b/f", 0, 0, [H], T0 + 5), take("s3://b/g", 0, 20, [H, 2 * H],
                                                                                    T0 + 5)]
    assert mp.clears(p) == {mp.hour_key(7, H): None, mp.hour_key(7, 2 * H): None, mp.FILE + a.key: None,
                            mp.FILE + b.key: None}
    # the same take replayed writes the same records
    again = mp.writes(p, {7: [H, 2 * H]}, [b, a], T0 + 9_000, T0 + 8_000)
    assert again == mp.writes(p, {7: [H, 2 * H]}, [a, b], T0, T0)
    assert recorded(p, {7: [H, 2 * H]}, [b, a], T0 + 9_000, T0 + 8_000) == p


def test_the_pending_table_keeps_a_partitions_records_in_rocksdb_and_sends_each_key_to_its_changelog(tmp_path):
    from stream.app import build_app
    from stream.settings import load_settings
    conv = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "e", "user_id": "u", "insert_id": "i"}}}
    s = load_settings(None, worker={"app_id": "unit", "data_dir": str(tmp_path)}, projects=[{"id": 7}],
                      destinations=[{"name": "arch", "project": 7, "bucket": "arch", "archive": True}],
                      sources=[{"name": "fixes", "project": 7, "bucket": "src", "prefix": "in/", "strategy": "mirror",
                                "converter": conv}])
    t = build_app(s).tables["mirror-pending"]
    sent = []
    t.send_changelog = lambda partition, key, value, **kw: sent.append((partition, key, value))
    f = take("s3://b/f", 2, 0, [H])
    ops = mp.writes(mp.Pending(), {7: [H]}, [f], T0, T0 - 1)
    asyncio.run(t.write(2, ops))
    assert t.pending(2) == mp.Pending({(7, H): mp.PendingHour(T0, T0 - 1)}, {f.key: take("s3://b/f", 2, 0, [H], 0)})
    assert t.pending(1) == mp.Pending()
    asyncio.run(t.write(2, mp.clears(t.pending(2))))
    assert t.pending(2) == mp.Pending()
    assert sent == [(2, k, v) for k, v in ops.items()] + [(2, mp.hour_key(7, H), None), (2, mp.FILE + f.key, None)]
    # a look at the pending hours reads the hours' records only, before and after the files' in key order
    asyncio.run(t.write(2, ops))
    asyncio.run(t.write(2, mp.writes(t.pending(2), {7: [2 * H], 3: [H]}, [], T0 + 5, T0 + 4)))
    assert t.pending(2, files=False) == mp.Pending({(3, H): mp.PendingHour(T0 + 5, T0 + 4),
                                                    (7, H): mp.PendingHour(T0, T0 - 1),
                                                    (7, 2 * H): mp.PendingHour(T0 + 5, T0 + 4)})
    assert t.pending(2).files == {f.key: take("s3://b/f", 2, 0, [H], 0)}
    assert t.pending(1, files=False) == mp.Pending()


def test_partitions_that_look_drained_are_rebuilt_only_once_the_brokers_ends_agree_asked_once_per_take():
    asked = []
    ends = {0: 120, 1: 40}

    async def read():
        asked.append(dict(ends))
        return dict(ends)

    check = mp.DrainCheck()
    # the consumer's last fetch saw partition 0 end at 100: the broker has 20 more, the burst's end not taken yet
    assert asyncio.run(check.confirmed({0: 100, 1: 40}, read)) is False
    assert asyncio.run(check.confirmed({0: 100, 1: 40}, read)) is False      # not asked again for the same take
    assert len(asked) == 1
    # the next take holds them: asked again, and now they agree
    assert asyncio.run(check.confirmed({0: 120, 1: 40}, read)) is True
    assert len(asked) == 2
    ends[1] = 41
    assert asyncio.run(check.confirmed({0: 120, 1: 40}, read)) is False     # a partition the broker has more of
    assert asyncio.run(check.confirmed({0: 120, 1: None}, read)) is False   # one whose position is not known
