"""Where an exporter's batches come from: the live consumer group of a destination (``KafkaFeed``), and the export
ledger as read whole at an assignment (``load_ledger``) and followed afterwards (``LedgerTail``).

``KafkaFeed`` reads with ``auto_offset_reset=none``: a partition without a committed offset (a new destination)
starts from its beginning, as it always did, but a committed offset the topic no longer holds -- the records
were deleted by its retention while the destination was disabled or failing -- is not skipped over silently.
The feed seeks such a partition to the topic's first offset and reports the offsets lost (``Gap``), which the
exporter records in its ledger, its metrics and its log (``ExportCycle``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, NoOffsetForPartitionError, OffsetOutOfRangeError

from stream import kafka
from stream.export.ledger import LedgerIndex, LedgerRecord
from stream.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_MS = 200
"""How long a poll waits for records: an empty poll marks its partitions idle, which lets a past hour close."""


@dataclass(frozen=True)
class Gap:
    """Offsets ``[first, end)`` of a partition deleted by the topic's retention before they were exported."""

    partition: int
    first: int
    end: int


class _Assignments(ConsumerRebalanceListener):
    """Notes a new assignment and a revocation; the cycle reads the ledger before it takes any record.

    (aiokafka starts fetching for new partitions while this listener still runs, so reading the ledger here
    would race the first records of a replay.)
    """

    def __init__(self, on_revoked) -> None:
        self.on_revoked = on_revoked
        self.assigned: set[int] | None = None

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in assigned}


class KafkaFeed:
    """A destination exporter's consumer of ``topic`` in its own consumer group."""

    def __init__(self, settings: Settings, group: str, topic: str, on_revoked) -> None:
        self.topic = topic
        # An upload that keeps failing holds the loop (backpressure: nothing more is read) for as long as the
        # failure lasts; the group must not evict the exporter for not polling meanwhile: any other exporter of
        # the destination would be held by the same bucket.
        self.consumer = AIOKafkaConsumer(group_id=group, **{**kafka.consumer_args(settings.kafka),
                                                            "auto_offset_reset": "none",
                                                            "max_poll_interval_ms": 86_400_000})
        self._assignments = _Assignments(on_revoked)
        self.consumer.subscribe([topic], listener=self._assignments)
        self._gaps: list[Gap] = []

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await kafka.stop_all(self.consumer)

    def partitions(self) -> int:
        return len(self.consumer.partitions_for_topic(self.topic) or ())

    def take_assigned(self) -> set[int] | None:
        """The partitions of the latest assignment, once (None when there was none since the last call)."""
        assigned, self._assignments.assigned = self._assignments.assigned, None
        return assigned

    def take_gaps(self) -> list[Gap]:
        gaps, self._gaps = self._gaps, []
        return gaps

    async def poll(self) -> dict[int, list[Any]]:
        """The records fetched, by partition (offset order)."""
        try:
            polled = await self.consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=2000)
        except NoOffsetForPartitionError as exc:     # a new destination: from the beginning
            tp = exc.args[0] if exc.args else None
            await self.consumer.seek_to_beginning(*([tp] if isinstance(tp, TopicPartition) else
                                                    self.consumer.assignment()))
            return {}
        except OffsetOutOfRangeError as exc:
            await self._lost(exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {})
            return {}
        return {tp.partition: recs for tp, recs in polled.items()}

    async def _lost(self, positions: dict[TopicPartition, int]) -> None:
        tps = list(positions) or list(self.consumer.assignment())
        begins = await self.consumer.beginning_offsets(tps)
        for tp in tps:
            first, begin = positions.get(tp, -1), begins[tp]
            if 0 <= first < begin:
                self._gaps.append(Gap(tp.partition, first, begin))
            self.consumer.seek(tp, begin)

    async def caught_up(self, polled: set[int]) -> set[int]:
        """The partitions whose poll fetched nothing and whose position is at the end they last reported."""
        out = set()
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None and tp.partition not in polled and await self.consumer.position(tp) >= high:
                out.add(tp.partition)
        return out

    async def lag(self) -> int:
        return await kafka.lag(self.consumer)

    async def seek(self, partition: int, offset: int) -> None:
        self.consumer.seek(TopicPartition(self.topic, partition), offset)

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Commit ``offsets``; False when the group rebalanced meanwhile (the next owner replays them)."""
        try:
            await self.consumer.commit({TopicPartition(self.topic, p): o for p, o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offsets %s of %s not committed (%s); the next owner replays them", offsets, self.topic, exc)
            return False
        return True


async def load_ledger(settings: Settings, name: str) -> tuple[LedgerIndex, list[LedgerRecord]]:
    """The ledger of exporter ``name``, read whole: its index, and its records in order."""
    topic = settings.topics.name("export_ledger")
    records = [r for r in (LedgerRecord.decode(m.value) for m in await kafka.read_all(settings, topic))
               if r.destination == name]
    log.info("export %s: read %d ledger records of %s", name, len(records), topic)
    return LedgerIndex(records), records


class LedgerTail:
    """Follows exports.ledger from its beginning (no consumer group): the records of one exporter, as they come."""

    def __init__(self, settings: Settings, name: str):
        self.topic = settings.topics.name("export_ledger")
        self.name = name
        self.consumer = AIOKafkaConsumer(**{**kafka.client_args(settings.kafka), "enable_auto_commit": False})

    async def start(self) -> None:
        await self.consumer.start()
        await kafka.assign_from_beginning(self.consumer, self.topic, default=frozenset({0}))

    async def poll(self) -> list[LedgerRecord]:
        out = []
        for recs in (await self.consumer.getmany(timeout_ms=0, max_records=5000)).values():
            for m in recs:
                r = LedgerRecord.decode(m.value)
                if r.destination == self.name:
                    out.append(r)
        return out

    async def stop(self) -> None:
        await kafka.stop_all(self.consumer)
