"""A take's new INSERTs go to events.valid in the order of their source offsets, whatever their files' order: the
exporter skips a batch whose offsets are all at or below one it took for the same hour and source partition."""

import asyncio

import stream.agents.mirror as agent
from stream.agents.mirror import new_event_batches, take_failed
from stream.events.batch import EventBatch
from stream.export.mirror import Mutation, Op
from stream.export.mirror_apply import Targeted
from stream.health import Health
from tests.unit.export.test_mirror_apply import applier
from tests.unit.export.test_segment_mirror import PROJECT, row, settings


def test_the_new_inserts_of_files_read_in_another_order_than_their_records_go_in_increasing_source_offsets():
    # late.json (LastModified 6) was imported first (records at offsets 9..), early.json (LastModified 5) after it
    # (offsets 200..); the applier lists their mutations in the files' order: early.json's first
    take = [Targeted(PROJECT, Mutation(f"a{i}", Op.INSERT, (6, "s3://src/late.json", i), None,
                                       row(f"a{i}", "Late", n=i % 200)), 9 + i // 4, i % 4) for i in range(600)]
    take += [Targeted(PROJECT, Mutation(f"b{i}", Op.INSERT, (5, "s3://src/early.json", i), None,
                                        row(f"b{i}", "Early", n=i % 200)), 200 + i // 4, i % 4) for i in range(600)]
    a, _, _ = applier({})
    new = asyncio.run(a.log(0, 9, take)).new
    assert len(new) == 1_200 and new[0].mutation.insert_id == "b0"
    batches = [(target, EventBatch.decode(value)) for target, value in new_event_batches(new, "events.mutations", 0,
                                                                                          settings())]
    assert [(target, len(b.offsets)) for target, b in batches] == [(0, 500), (0, 500), (0, 200)]
    offsets = [o for _, b in batches for o in b.offsets]
    assert offsets == sorted(t.source_offset for t in take)
    assert all(min(b.offsets) > max(prev.offsets) for (_, prev), (_, b) in zip(batches, batches[1:]))


def test_a_take_the_stage_cannot_apply_marks_the_worker_failed_saying_why_and_what_happens():
    health, kept = Health(), agent.HEALTH
    agent.HEALTH = health
    try:
        why = take_failed(OSError("the disk is full"))
    finally:
        agent.HEALTH = kept
    assert why == ("the mirror stage could not apply a take of events.mutations (OSError: the disk is full); it is "
                   "not acknowledged, and the worker is marked failed so that a restart reads it again from the "
                   "committed offsets: see the worker's log for the error and docs/runbook.md (mirror)")
    assert health.live() == (False, {"status": "failed", "failed": {"mirror": "failed"}})
    assert health.details()["failed"] == {"mirror": why}
