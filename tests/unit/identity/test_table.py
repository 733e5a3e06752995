"""The identity table against a real RocksDB: journaled writes, rollback of replayed batches, recovery."""

import asyncio
from types import SimpleNamespace

from faust.types import TP

from stream.app import build_app
from stream.identity.records import APPLIED, decode_int, encode_ops, journal_key
from stream.identity.table import PRUNE_EVERY
from stream.settings import load_settings


def table(tmp_path):
    """The table, its changelog records kept in a list (no broker here)."""
    s = load_settings(None, worker={"app_id": "unit", "data_dir": str(tmp_path)}, projects=[{"id": 1}])
    t = build_app(s).tables["identity"]
    t.sent = []
    t.send_changelog = lambda partition, key, value, **kw: t.sent.append((partition, key, value))
    return t


def run(coro):
    return asyncio.run(coro)


def state(t, partition, keys):
    return dict(zip(keys, t.get_many(partition, keys)))


def test_a_replayed_batch_rolls_the_state_back_to_before_it(tmp_path):
    t = table(tmp_path)
    run(t.apply(0, 10, {b"k": b"1", b"m": b"x"}, {b"k": None, b"m": None}))
    run(t.apply(0, 11, {b"k": b"2"}, {b"k": b"1"}))
    run(t.apply(0, 12, {b"m": None, b"n": b"3"}, {b"m": b"x", b"n": None}))
    assert state(t, 0, [b"k", b"m", b"n"]) == {b"k": b"2", b"m": None, b"n": b"3"}
    assert run(t.rollback(0, 13)) == 0                        # not a replay
    assert run(t.rollback(0, 11)) == 2                        # batches 11 and 12 are undone, newest first
    assert state(t, 0, [b"k", b"m", b"n", journal_key(11), journal_key(12)]) == {
        b"k": b"1", b"m": b"x", b"n": None, journal_key(11): None, journal_key(12): None}
    assert t.applied(0) == 10
    # one changelog record per key written: the keys, the journal entry and the applied offset of each batch
    assert t.sent[:4] == [(0, b"k", b"1"), (0, b"m", b"x"), (0, journal_key(10), encode_ops({b"k": None, b"m": None})),
                          (0, APPLIED, b"\0" * 7 + b"\x0a")]
    assert (0, b"m", None) in t.sent                     # a delete is a tombstone
    assert t.applied(1) == -1                            # partitions are apart


def test_journal_entries_below_the_committed_offset_are_pruned(tmp_path):
    t = table(tmp_path)
    for o in range(PRUNE_EVERY - 3, PRUNE_EVERY):
        run(t.apply(0, o, {b"k": b"%d" % o}, {b"k": None}))
    assert run(t.apply(0, PRUNE_EVERY, {b"k": b"x"}, {b"k": None}, committed=PRUNE_EVERY - 1)) == 2
    kept = [o for o in range(PRUNE_EVERY - 3, PRUNE_EVERY + 1) if t.get_many(0, [journal_key(o)])[0] is not None]
    assert kept == [PRUNE_EVERY - 1, PRUNE_EVERY]


def test_recovery_replays_puts_and_deletes_in_order(tmp_path):
    t = table(tmp_path)
    tp = TP("unit-identity-changelog", 1)

    def rec(offset, key, value):
        return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=1, offset=offset, key=key, value=value))
    t.apply_changelog_batch([rec(0, b"a1", b"1"), rec(1, b"a2", b"2"), rec(2, APPLIED, b"\0" * 7 + b"\5"),
                             rec(3, b"a1", None)])
    assert state(t, 1, [b"a1", b"a2"]) == {b"a1": None, b"a2": b"2"}
    assert decode_int(t.get_many(1, [APPLIED])[0], -1) == 5
    assert t.data.persisted_offset(tp) == 3


def test_the_changelog_is_compacted(tmp_path):
    topic = table(tmp_path).changelog_topic
    assert (topic.compacting, topic.deleting) == (True, False)
