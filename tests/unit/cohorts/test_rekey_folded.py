"""The rekey step folded into the identity stage's device side (``DeviceStage.on_accepted``, as
``stream.agents.cohorts.register_folded`` wires it): the batches the device side hands to events.accepted, rekeyed as
they are, give the cohort state the same stores, byte for byte, as the rekey step reading events.accepted back (each
message decoded), on generated batches with holds let go by the user side's answers and messages read again (a crash
before the commit)."""

import random

from stream.agents.cohorts import register_folded
from stream.cohorts.rules import parse_cohorts
from stream.cohorts.stage import LocalStage, decode_all
from stream.events.batch import EventBatch
from tests.unit.identity.test_resolution import PROJECT, ev
from tests.unit.identity.test_stage import NOW, Stages

COHORTS = parse_cohorts([
    {"id": "viewers", "project": PROJECT, "name": "Viewers", "rule": {"and": [
        {"performed": "Page Viewed", "within_days": 7}, {"user_property": "v", "op": "=", "value": 1}]}},
    {"id": "buyers", "project": PROJECT, "name": "Buyers", "rule": {"performed": "purchase", "within_days": 2}},
])


def records(stage: LocalStage, sends) -> None:
    """``sends`` delivered to ``stage``, their records kept in ``stage.seen`` per cohorts partition."""
    for q, _, value in sends:
        stage.seen.setdefault(q, []).extend(r.encode() for r in decode_all(value))
    stage.deliver(sends)


def test_generated_batches_rekeyed_in_the_device_side_give_the_state_of_events_accepted_read_back(tmp_path):
    for seed in range(3):
        rnd = random.Random(seed)
        s = Stages(tmp_path / f"s{seed}")
        folded, read_back = LocalStage(COHORTS, 4, 30), LocalStage(COHORTS, 4, 30)
        folded.seen, read_back.seen = {}, {}
        accepted: list[bytes] = []        # events.accepted[1], in the order the stages send to it

        async def send(sends):
            records(folded, sends)
        register_folded(s.device, folded.rekeyer, send)
        pending: list[bytes] = []
        source, answered, now, held = 0, 0, NOW, 0
        for offset in range(150):
            now += rnd.choice([1, 10, 2000, 60_000])
            if pending and rnd.random() < 0.35:
                value = pending.pop(0)

                def step(value=value, offset=offset):
                    assert s.remaps(value, 1, offset) is True
            else:
                events = [ev(f"dev-{rnd.randrange(6)}", rnd.choice([None, f"user-{rnd.randrange(4)}"]),
                             event_type=rnd.choice(["Page Viewed", "purchase", "other"]),
                             user_properties={"v": rnd.randrange(3)}) for _ in range(rnd.randrange(1, 6))]
                offsets = list(range(source, source + len(events)))
                source += len(events)

                def step(events=events, offsets=offsets, offset=offset, now=now):
                    out = s.batch(*events, partition=1, offset=offset, now=now, source_offsets=offsets)
                    if out.lines:       # what the dedupe stage sends once the device side returns it: in parts
                        s.accepted += [(1, part.encode()) for part in out.split(900)]
            for _ in range(2 if rnd.random() < 0.3 else 1):     # read again: the same rows, the same records
                step()
            accepted += [v for _, v in s.accepted[len(accepted):]]
            for (q, value) in s.links[answered:]:
                s.user_side(q, answered, value)
                answered += 1
            pending += [v for p, v in s.valid if p == 1]
            s.valid.clear()
        for value in accepted:
            b = EventBatch.decode(value)
            held += str(b.source) == "events.valid.held[1]"
            records(read_back, read_back.rekeyer.batch(1, b))
        for stage in (folded, read_back):
            stage.advance(now + 600_000, caught_up=False)
        assert held > 5, seed                                  # rows did go through holds
        assert folded.seen == read_back.seen, seed             # the same records, in the same order
        assert sum(map(len, folded.seen.values())) > 300
        assert {q: st.data for q, st in folded.stores.items()} == {q: st.data for q, st in read_back.stores.items()}
        assert folded.totals == read_back.totals and folded.totals.replayed > 20, (seed, folded.totals)
