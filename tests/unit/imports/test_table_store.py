"""The import agent's store of the processed-files state, on the real table (RocksDB) without a broker."""

import asyncio

from stream.agents.imports import _TableStore
from stream.app import build_app
from stream.settings import load_settings


def table(tmp_path):
    s = load_settings(None, worker={"app_id": "unit", "data_dir": str(tmp_path), "stages": ["import"]},
                      projects=[{"id": 7}], topics={"partitions": 4},
                      sources=[{"name": "clicks", "project": 7, "bucket": "bkt", "prefix": "in/",
                                "converter": {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "e"}}}}])
    return build_app(s).tables["import-files"]


def test_a_state_written_outside_an_agents_event_lands_on_its_partition_and_its_changelog(tmp_path, monkeypatch):
    """A record handed over by the tail check of stream.agents.contiguous is handled with no current faust event:
    the state is written all the same, on the partition named, and sent to the changelog."""
    t = table(tmp_path)
    sent = []

    async def send(**kw):
        sent.append((kw["key"], kw["value"], kw["partition"]))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut
    monkeypatch.setattr(t.changelog_topic, "send", send)
    store = _TableStore(t)
    asyncio.run(store.put(b"clicks:in/a.json", b"state-a", 3))
    asyncio.run(store.put(b"clicks:in/b.json", b"state-b", 1))
    assert sent == [(b"clicks:in/a.json", b"state-a", 3), (b"clicks:in/b.json", b"state-b", 1)]
    assert store.get(b"clicks:in/a.json") == b"state-a" and store.get(b"clicks:in/b.json") == b"state-b"
    assert t.data._db_for_partition(3).get(b"clicks:in/a.json") == b"state-a"
    assert t.data._db_for_partition(1).get(b"clicks:in/a.json") is None
    assert store.get(b"clicks:in/c.json") is None
