"""A hold let go in the identity stage's device side hands the folded rekey step every part of its rows at once
(``register_folded``): their records go in a message per cohorts partition for each ``REKEY_TAKE_BYTES`` of rows,
the same records in the same order as one take of them, never one message the producer would refuse."""

from stream.agents.cohorts import REKEY_TAKE_BYTES, register_folded
from stream.cohorts.rules import parse_cohorts
from stream.cohorts.stage import Rekeyer, decode_all
from stream.events.batch import EventBatch
from tests.unit.identity.test_resolution import PROJECT, ev
from tests.unit.identity.test_stage import NOW, Stages

COHORTS = parse_cohorts([
    {"id": "viewers", "project": PROJECT, "name": "Viewers", "rule": {"and": [
        {"performed": "Page Viewed", "within_days": 7}, {"user_property": "v", "op": "=", "value": 1}]}},
])


def test_the_records_of_a_large_hold_let_go_are_sent_in_messages_of_at_most_a_take_of_rows(tmp_path):
    s = Stages(tmp_path, hold_s=3600)
    sends: list = []

    async def send(batch_sends):
        sends.append(batch_sends)
    register_folded(s.device, Rekeyer(COHORTS, 4), send)
    # a new (device, user) pair: its rows are held, batch after batch, until the user side answers
    n = 0
    for offset in range(60):
        events = [ev("dev-aaaa1", "user-1111", user_properties={"v": 1, "name": "x" * 40}) for _ in range(400)]
        s.batch(*events, partition=1, offset=offset, now=NOW + offset, source_offsets=list(range(n, n + 400)))
        n += 400
    assert sends == []                                  # all held
    q, value = s.links[0]
    s.user_side(q, 0, value)
    (_, remap), = s.valid
    assert s.remaps(remap, 1, 60)
    parts = [EventBatch.decode(v) for _, v in s.accepted]
    rows = sum(len(b.lines) for b in parts)
    assert rows == 24_000
    # one hand-over, sent in several messages, each under REKEY_TAKE_BYTES (the records of at most that many bytes
    # of rows; the user's records all go to one cohorts partition)
    sizes = [len(v) for batch_sends in sends for _, _, v in batch_sends]
    assert (len(sends), len(sizes)) == (58, 58) and max(sizes) <= REKEY_TAKE_BYTES     # a part a message
    # the same records, in the same order, as one take of every part
    (reference,) = Rekeyer(COHORTS, 4).take([(1, b) for b in parts])
    got = [r.encode() for batch_sends in sends for _, _, v in batch_sends for r in decode_all(v)]
    assert len(got) == 24_000 and got == [r.encode() for r in decode_all(reference[2])]
    assert {batch_sends[0][0] for batch_sends in sends} == {reference[0]}

