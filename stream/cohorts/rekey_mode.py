"""Where the cohorts stage's rekey step reads its rows: events.accepted read back (the ``cohorts-rekey`` agent), or
the batches the identity stage's device side hands to events.accepted (``cohort_state.rekey_in_identity``).

Both give the same records, and the cohort state drops a record it already took by its source offsets, so the
two may run side by side. Switching from the reader to the identity stage is the one move that can lose records:
those the reader had not read when it stopped, or, on a first start, what events.accepted already held. So with
``auto`` (the default) a worker rekeys in the identity stage only where nothing can be left unread:

- the deployment's marker says its cohort state was made that way (it was on from the start), or
- there is no marker, no worker group ever read events.accepted, and events.accepted holds no record (a new
  deployment).

The marker is the committed offset of partition 0 of events.accepted in the consumer group
``<worker.app_id>-cohorts-rekey-mode``, which no consumer joins: 1 once a worker rekeyed in the identity stage, 0
once one read events.accepted (then ``auto`` stays off until ``true`` switches it, see the setting). Every worker
running the cohorts stage writes it as it starts.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

log = logging.getLogger(__name__)

IN_IDENTITY, READ_BACK = 1, 0
"""The marker's values."""


def marker_group(app_id: str) -> str:
    return f"{app_id}-cohorts-rekey-mode"


def choose(setting: bool | Literal["auto"], can_fold: bool, marker: int | None, read_before: bool,
           accepted_records: int) -> tuple[bool, str]:
    """Whether this worker rekeys in the identity stage, and why. ``can_fold``: it runs the dedupe stage with
    identity on; ``marker``: the deployment's (None: none yet); ``read_before``: the worker group has committed an
    offset of events.accepted (a reader read it); ``accepted_records``: the records events.accepted holds."""
    if not can_fold:
        return False, "the rekey step reads events.accepted (this worker does not run the dedupe stage with identity)"
    if setting is True:
        return True, "the rekey step takes the identity stage's batches (cohort_state.rekey_in_identity: true)"
    if setting is False:
        return False, "the rekey step reads events.accepted (cohort_state.rekey_in_identity: false)"
    if marker == IN_IDENTITY:
        return True, ("the rekey step takes the identity stage's batches, as it did when this deployment's cohort "
                      "state was made (cohort_state.rekey_in_identity: auto)")
    if marker == READ_BACK or read_before:
        return False, ("the rekey step reads events.accepted, as it did before in this deployment "
                       "(cohort_state.rekey_in_identity: auto; to switch, see the setting)")
    if accepted_records:
        return False, (f"the rekey step reads events.accepted from its beginning, whose {accepted_records:,} "
                       "record(s) the cohort state has not counted yet (cohort_state.rekey_in_identity: auto)")
    return True, ("the rekey step takes the identity stage's batches: a new deployment, events.accepted is empty "
                  "(cohort_state.rekey_in_identity: auto)")


async def resolve(settings: Any, can_fold: bool) -> bool:
    """``choose`` on the deployment's topics and groups, the marker written with the answer (logged)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from stream.kafka import client_args

    accepted = settings.topics.name("accepted")
    tps = [TopicPartition(accepted, p) for p in range(settings.topics.partitions)]
    args = {**client_args(settings.kafka), "enable_auto_commit": False}
    group = AIOKafkaConsumer(**{**args, "group_id": settings.worker.app_id})
    mark = AIOKafkaConsumer(**{**args, "group_id": marker_group(settings.worker.app_id)})
    await group.start()
    await mark.start()
    try:
        marker = await mark.committed(tps[0])
        read_before = any([await group.committed(tp) is not None for tp in tps])
        ends, starts = await group.end_offsets(tps), await group.beginning_offsets(tps)
        records = sum(ends[tp] - starts[tp] for tp in tps)
        fold, why = choose(settings.cohort_state.rekey_in_identity, can_fold, marker, read_before, records)
        mark.assign([tps[0]])
        await mark.commit({tps[0]: OffsetAndMetadata(IN_IDENTITY if fold else READ_BACK, "")})
    finally:
        await group.stop()
        await mark.stop()
    log.info("cohorts: %s", why)
    return fold
