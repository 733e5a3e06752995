"""The state step keeps the states it wrote decoded for the partition's next apply: the stores and writes are the same,
byte for byte, as decoding each state again; a state whose stored bytes are not those it wrote is decoded."""

import sys
from pathlib import Path

import orjson

from stream.cohorts import stage
from stream.cohorts.stage import CohortState, LocalStage, MemoryStore, Rekeyer, decode_user, user_key
from stream.events.batch import EventBatch
from stream.settings import load_settings
from tests.unit.cohorts.test_stage_takes import HOUR, MIN, P, T, batch, row, settings

UPLOADED = 1_733_000_000_000


def figure_b(events, seed):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    import workload
    from bench_cohorts import ten_cohorts
    w = workload.generate(events, 4, seed=seed, now_ms=UPLOADED)
    s = load_settings(None, projects=[{"id": P}], cohorts=ten_cohorts())
    ids, batches = {}, []
    for part, data, _ in workload.batches(w, "events.ingest", P, 4):
        b = EventBatch.decode(data)
        rows = [orjson.loads(line) for line in b.lines]
        for r in rows:
            r["amplitude_id"] = ids.setdefault(r.get("user_id") or r["device_id"], len(ids) + 1)
        b.lines = [orjson.dumps(r) for r in rows]
        batches.append((part, b))
    batches.sort(key=lambda pb: min(pb[1].times))
    return s, batches


def run(s, batches, take, monkeypatch, decoded_max):
    monkeypatch.setattr(stage, "DECODED_MAX", decoded_max)
    st = LocalStage(s.cohort_set, 4, s.cohort_state.state_days)
    writes, apply = [], st.state.apply

    def counted(q, records):
        applied = apply(q, records)
        writes.append((q, applied.writes))
        return applied
    st.state.apply = counted
    for k in range(0, len(batches), take):
        st.deliver(st.rekeyer.take(batches[k:k + take]))
        st.deliver(st.rekeyer.advance(batches[k][0], max(batches[k][1].times), False))
    return st, writes


def test_the_states_kept_decoded_give_the_same_writes_and_stores_as_decoding_them_again(monkeypatch):
    s, batches = figure_b(6000, 3)
    for take in (1, 4):
        kept, kept_writes = run(s, batches, take, monkeypatch, 1024)
        again, again_writes = run(s, batches, take, monkeypatch, 0)
        assert kept_writes == again_writes
        assert {q: st.data for q, st in kept.stores.items()} == {q: st.data for q, st in again.stores.items()}
        assert sum(len(d) for d in kept.state._decoded.values()) > 0
        assert all(len(d) == 0 for d in again.state._decoded.values())
    # at most DECODED_MAX a partition, the latest written
    few, _ = run(s, batches, 4, monkeypatch, 5)
    assert {len(d) for d in few.state._decoded.values()} == {5}


def test_a_state_whose_stored_bytes_changed_since_it_was_written_is_decoded_again():
    s = settings()
    r = Rekeyer(s.cohort_set, 1, 0)
    first = r.batch(0, batch(1, [(row(10, "purchase", T + HOUR), T + HOUR + 5_000)]))
    later = r.batch(0, batch(4, [(row(10, "purchase", T + HOUR + 3 * MIN), T + HOUR + 3 * MIN + 5_000)]))
    other = r.batch(0, batch(3, [(row(10, "view", T + HOUR + 2 * MIN, user_properties={"plan": "free"}),
                                  T + HOUR + 2 * MIN + 5_000)]))
    store = MemoryStore()
    state = CohortState(s.cohort_set, 1, 30, lambda q: store)
    store.write(state.apply(0, [(k, v) for _, k, v in first]).writes)
    (kept_bytes, kept), = state._decoded[0].values()
    # the partition restored with another state of the user (written elsewhere): not the object kept
    elsewhere = MemoryStore()
    other_state = CohortState(s.cohort_set, 1, 30, lambda q: elsewhere)
    for msgs in (first, other):
        elsewhere.write(other_state.apply(0, [(k, v) for _, k, v in msgs]).writes)
    store.data = dict(elsewhere.data)
    assert store.data[user_key(10)] != kept_bytes
    got = state.apply(0, [(k, v) for _, k, v in later]).writes
    fresh = MemoryStore()
    fresh.data = dict(elsewhere.data)
    expected = CohortState(s.cohort_set, 1, 30, lambda q: fresh).apply(0, [(k, v) for _, k, v in later]).writes
    assert got == expected
    # the restored state's properties are there: its bytes were read, not the object written before them
    assert [p for _, p in decode_user(dict(got)[user_key(10)]).props] == [{"plan": "pro"}, {"plan": "free"},
                                                                          {"plan": "pro"}]
