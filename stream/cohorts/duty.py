"""Which worker runs the cohort syncs: the one assigned partition ``DUTY_PARTITION`` of the cohorts topic.

Every worker running the ``cohorts`` stage folds its share of the cohorts topic (the ``cohorts-state`` agent,
one consumer group); the scheduler of syncs (``stream.cohorts.schedule``) runs only on the worker that is
assigned the topic's partition 0 at that moment. Kafka gives each partition to one member of the group, so
exactly one live worker holds the duty, and a rebalance (a worker started, stopped, or gone silent for
``kafka.session_timeout_s``) moves it with the partition. A worker that loses the partition starts no more
syncs; one it is running finishes, and the chain check of ``stream.cohorts.sync`` refuses it if the new holder
has completed a later sync meanwhile. A worker that gains it reads each sync's latest completed sync again.

The decisions are pure functions of the partitions a rebalance assigned or revoked; ``SyncDuty`` keeps this
process's answer (one per process, like ``schedule.NOW``), set from faust's rebalance signals by
``stream.app``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DUTY_PARTITION = 0
"""The partition of the cohorts topic whose holder runs the syncs."""


def holds_duty(partitions: Iterable[tuple[str, int]], cohorts_topic: str) -> bool:
    """Whether ``partitions`` ((topic, partition) pairs, e.g. faust's TPs) include the duty's partition: once a
    rebalance assigned a worker its active partitions, whether it holds the duty (a partition not in its new
    assignment is not its own any more)."""
    return any(topic == cohorts_topic and partition == DUTY_PARTITION for topic, partition in partitions)


def after_revocation(held: bool | None, revoked: Iterable[tuple[str, int]], cohorts_topic: str) -> bool | None:
    """Whether the worker holds the duty once a rebalance took ``revoked`` from it (before it is assigned again):
    the duty goes with the partition; unknown (None) stays unknown."""
    if holds_duty(revoked, cohorts_topic):
        return False
    return held


@dataclass
class SyncDuty:
    """This process's view of the duty: ``held`` is None until its first assignment, then whether it holds it;
    ``changes`` counts the changes, so that a wait can end when it changes."""

    held: bool | None = None
    changes: int = 0

    def set(self, held: bool | None) -> None:
        if held != self.held:
            self.held = held
            self.changes += 1


DUTY = SyncDuty()
"""This process's (one per process)."""
