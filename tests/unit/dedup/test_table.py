"""The dedupe table against a real RocksDB (rocksdict), through faust's Table, without a broker."""

from types import SimpleNamespace

from faust.types import TP

from stream.app import build_app
from stream.dedup.policy import encode_changelog, encode_value
from stream.settings import load_settings

U1, U2 = b"1" * 16, b"2" * 16


def table(tmp_path):
    s = load_settings(None, worker={"app_id": "unit", "data_dir": str(tmp_path)}, projects=[{"id": 1}])
    return build_app(s).tables["dedupe"]


def changelog_event(partition, offset, value):
    tp = TP("unit-dedupe-changelog", partition)
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=partition, offset=offset, key=b"o", value=value))


def test_recovery_replays_each_batch_record_into_its_partition(tmp_path):
    t = table(tmp_path)
    a = [(b"1\x00d\x00a", encode_value(10, U1)), (b"1\x00d\x00b", encode_value(11, U2))]
    b = [(b"1\x00e\x00c", encode_value(12, U1))]
    t.apply_changelog_batch([changelog_event(0, 7, encode_changelog(a)), changelog_event(1, 3, encode_changelog(b)),
                             changelog_event(0, 8, None)])
    assert t.get_many(0, [k for k, _ in a] + [b"1\x00e\x00c"]) == [v for _, v in a] + [None]
    assert t.get_many(1, [b"1\x00e\x00c"]) == [encode_value(12, U1)]
    assert t.data.persisted_offset(TP("unit-dedupe-changelog", 0)) == 8
    assert t.data.persisted_offset(TP("unit-dedupe-changelog", 1)) == 3


def test_the_changelog_is_deleted_by_time_not_compacted(tmp_path):
    topic = table(tmp_path).changelog_topic
    assert (topic.compacting, topic.deleting, topic.retention) == (False, True, 8 * 86400.0)


def test_a_worker_without_the_dedupe_stage_has_no_agent_and_its_own_faust_group(tmp_path):
    s = load_settings(None, worker={"app_id": "unit", "data_dir": str(tmp_path), "stages": ["ingest"]},
                      projects=[{"id": 1}], destinations=[{"name": "d", "project": 1, "bucket": "bkt"}])
    app = build_app(s)
    assert (app.conf.id, list(app.agents), list(app.tables)) == ("unit-ingest", [], [])
    assert [t.__name__ for t in app._app_tasks] == ["http", "ingest"]   # worker.http_port is on by default


def test_a_table_of_one_key_per_record_replays_puts_and_tombstones_through_the_same_recovery():
    from stream.dedup.table import KeyedChangelog
    assert list(KeyedChangelog().changelog_ops(b"k", b"v")) == [(b"k", b"v")]
    assert list(KeyedChangelog().changelog_ops(b"k", None)) == [(b"k", None)]
    assert list(KeyedChangelog().changelog_ops(None, b"v")) == []
