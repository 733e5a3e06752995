"""aiokafka clients built from the settings, topic creation, and reading a topic to its end."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import aiokafka
import aiokafka.codec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.clock import Clock, SystemClock
from stream.errors import ConfigError
from stream.settings import COMPRESSION_LEVELS, KafkaSettings, Settings
from stream.topics import topic_specs

log = logging.getLogger(__name__)


def client_args(k: KafkaSettings) -> dict[str, Any]:
    args: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers, "client_id": k.client_id,
                            "security_protocol": k.security_protocol}
    if k.sasl_mechanism:
        args.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username,
                    sasl_plain_password=k.sasl_password)
    return args


def consumer_args(k: KafkaSettings) -> dict[str, Any]:
    return {**client_args(k), "enable_auto_commit": False, "auto_offset_reset": "earliest",
            "session_timeout_ms": int(k.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(k.heartbeat_interval_s * 1000),
            "max_partition_fetch_bytes": max(k.max_request_bytes, 1 << 20),
            "fetch_max_bytes": max(4 * k.max_request_bytes, 50 << 20)}


LEVEL_ARG = {"gzip": "compresslevel", "lz4": "level", "zstd": "level"}
"""The keyword of aiokafka.codec's encoder of each codec that takes its compression level."""

CODEC_IDS = {"gzip": 1, "lz4": 3, "zstd": 4}
"""Each codec's id in a record batch's attributes (Kafka's protocol)."""

AIOKAFKA_LEVELS = {"gzip": 9, "lz4": 9, "zstd": 3}
"""The level aiokafka's encoders compress at when they are not given one (Kafka's defaults, KIP-390)."""


def level_encoder(codec: str, level: int | None) -> Callable[[bytes], bytes]:
    """aiokafka's encoder of ``codec`` (aiokafka.codec.<codec>_encode), bound to ``level`` (its own when None)."""
    enc = getattr(aiokafka.codec, f"{codec}_encode")
    return enc if level is None else functools.partial(enc, **{LEVEL_ARG[codec]: level})


class CompressionLevelUnsupported(ConfigError):
    """aiokafka does not build its record batches the way ``set_compression_level`` relies on."""


_ORIGINAL: dict[tuple[str, str], Callable[..., bytes]] = {}     # (module, name) -> aiokafka's encoder it replaced
_APPLIED: list[tuple[str, int | None]] = []                     # the (codec, level) this process compresses at


def _refusal(level: int, m: ModuleType, why: str) -> CompressionLevelUnsupported:
    return CompressionLevelUnsupported(
        f"kafka.compression_level is {level}, but aiokafka {aiokafka.__version__}'s record batch builder "
        f"({m.__name__}) {why}; set kafka.compression_level to null (compression_level: null in the configuration "
        f"file, or STREAM_KAFKA__COMPRESSION_LEVEL=null; aiokafka then compresses at its own level), or install "
        f"the aiokafka of requirements.lock")


def _builder_modules(name: str, level: int) -> list[ModuleType]:
    """The modules whose record batch builders call ``name`` (a module global looked up at each batch): the one
    that defines the builder aiokafka's producer uses (the Cython one unless AIOKAFKA_NO_EXTENSIONS), then the
    pure-Python one if that is another. Raises CompressionLevelUnsupported when one of them lacks ``name``."""
    import aiokafka.record.default_records as py
    used = getattr(py, "DefaultRecordBatchBuilder", None)
    mods = [sys.modules.get(getattr(used, "__module__", "")), py]
    out: list[ModuleType] = []
    for m in mods:
        if m is not None and m not in out:
            out.append(m)
    for m in out:
        if not callable(getattr(m, name, None)):
            raise _refusal(level, m, f"has no {name} to replace with one bound to the level")
    return out


def set_compression_level(codec: str, level: int | None) -> None:
    """Make every record batch this process builds compress ``codec`` at ``level``: aiokafka's producers (faust's
    too) and the builders made by hand (stream.dedup.table) call ``<codec>_encode`` of the builder's module at each
    batch, which is replaced with aiokafka's encoder bound to the level; None puts aiokafka's own back (its
    default level, AIOKAFKA_LEVELS). aiokafka has no setting for it (Kafka's producer has compression.<codec>.level).

    Checked before a level is set: the builder's module has the encoder, and a batch built with a probe in its
    place calls the probe; else CompressionLevelUnsupported, and nothing is changed. None checks nothing (it is
    what to set when aiokafka cannot be given a level)."""
    name = f"{codec}_encode"
    if level is None:
        _put_back(name)
        _APPLIED[:] = [(codec, level)]
        return
    mods = _builder_modules(name, level)
    for m in mods:
        _ORIGINAL.setdefault((m.__name__, name), getattr(m, name))
    _check_builder_calls(mods[0], codec, name, level)
    for m in mods:
        setattr(m, name, level_encoder(codec, level))
    _APPLIED[:] = [(codec, level)]


def _put_back(name: str | None = None) -> None:
    """Put aiokafka's own encoders back where a level was set: ``name``'s (``<codec>_encode``), or every one."""
    for (mod, n), enc in _ORIGINAL.items():
        if name is None or n == name:
            setattr(sys.modules[mod], n, enc)


def _check_builder_calls(m: ModuleType, codec: str, name: str, level: int) -> None:
    """Build one small batch of ``codec`` with a probe in place of ``m.<name>`` that compresses with the encoder
    bound to ``level`` (what is put there after); raise unless the probe was called with the batch's bytes alone
    and the batch was built."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    calls: list[int] = []
    before = getattr(m, name)
    encode = level_encoder(codec, level)

    def probe(data: Any, *args: Any, **kwargs: Any) -> bytes:
        calls.append(len(data))
        if args or kwargs:   # the builder gives a level (or more) of its own, which the bound encoder would clash with
            raise _refusal(level, m, f"calls {name} with arguments of its own ({len(args)} more, keywords "
                           f"{sorted(kwargs)}), so the level cannot be set")
        return encode(data)

    setattr(m, name, probe)
    try:
        b = DefaultRecordBatchBuilder(2, CODEC_IDS[codec], 0, -1, -1, 0, 1 << 16)
        b.append(0, 0, None, b"x" * 64, [])
        b.build()
    except CompressionLevelUnsupported:
        raise
    except Exception as exc:
        raise _refusal(level, m, f"fails to build a batch with {name} bound to the level ({type(exc).__name__}: "
                       f"{exc})") from exc
    finally:
        setattr(m, name, before)
    if not calls:
        raise _refusal(level, m, f"does not call its module's {name} to compress a batch, so the level cannot be set")


def apply_compression_level(k: KafkaSettings) -> None:
    """``set_compression_level`` for the settings' codec and level, once per process (again only when they
    change), logged. Called where a process starts producing: the worker's and the API's start-up and every
    ``producer``. Raises CompressionLevelUnsupported (a ConfigError) when aiokafka cannot be made to."""
    want = (k.compression_type, k.compression_level)
    if _APPLIED == [want]:
        return
    if k.compression_type == "none":
        _put_back()     # levels set before (tests) are put back
    else:
        set_compression_level(k.compression_type, k.compression_level)
    _APPLIED[:] = [want]
    if k.compression_type == "none":
        log.info("batches produced uncompressed (kafka.compression_type none)")
    else:
        level = k.compression_level if k.compression_level is not None else AIOKAFKA_LEVELS[k.compression_type]
        log.info("batches produced with %s at level %d (kafka.compression_level%s)", k.compression_type,
                 level, "" if k.compression_level is not None else " null: aiokafka's default")


def producer(k: KafkaSettings) -> AIOKafkaProducer:
    apply_compression_level(k)
    # acks=all: a batch counts as written only once every in-sync replica has it.
    return AIOKafkaProducer(**client_args(k), acks="all", linger_ms=5, max_batch_size=1 << 20,
                            max_request_size=k.max_request_bytes,
                            compression_type=None if k.compression_type == "none" else k.compression_type)


async def stop_all(*clients: Any) -> None:
    """Stop every client, whatever happens to one of them.

    A client left running after its loop ended keeps its group membership alive in
    the background (a consumer's heartbeats go on), and holds partitions nobody
    reads. aiokafka's ``stop`` can raise, or let a CancelledError out of its fetcher,
    when the broker went away: each client is stopped regardless, and only a
    cancellation of the caller itself is raised again, at the end.
    """
    cancelled = False
    for c in clients:
        if c is None:
            continue
        try:
            await c.stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                cancelled = True
            else:
                log.warning("stopping %s: a cancellation from inside the client, ignored", type(c).__name__)
        except Exception as exc:
            log.warning("stopping %s: %s", type(c).__name__, exc)
    if cancelled:
        raise asyncio.CancelledError()


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(**client_args(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(s.name, s.partitions, settings.topics.replication_factor, topic_configs=s.config)
               for s in topic_specs(settings) if s.name not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another worker created them first
            log.info("created topics %s", ", ".join(t.name for t in new))
        return [t.name for t in new]
    finally:
        await admin.close()


async def lag(consumer: AIOKafkaConsumer) -> int:
    """Messages between the consumer's positions and the ends of its assigned partitions (as last fetched)."""
    total = 0
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is not None:
            total += max(0, high - await consumer.position(tp))
    return total


async def partitions(c: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partitions of ``topic`` as the broker has them now (none when it does not exist): the metadata of every
    topic, fetched for this call. The client's own copy (``c.partitions_for_topic``) is refreshed in the background
    every metadata_max_age_ms (5 minutes), so a topic created after the consumer started is not in it yet; and
    asking for the topic by name could create it on a broker that creates topics on demand."""
    return (await c._client.fetch_all_metadata()).partitions_for_topic(topic) or set()


async def partition_count(settings: Settings, topic: str) -> int:
    """The number of partitions of ``topic`` (0 when it does not exist)."""
    c = AIOKafkaConsumer(**{**client_args(settings.kafka), "enable_auto_commit": False})
    await c.start()
    try:
        return len(await partitions(c, topic))
    finally:
        await stop_all(c)


async def assign_from_beginning(c: AIOKafkaConsumer, topic: str, default: frozenset[int] = frozenset()) -> bool:
    """Assign every partition of ``topic`` to ``c`` (``default`` when the broker knows none, even after a metadata
    refresh) and seek them to their beginning; False when there is none to assign."""
    parts = c.partitions_for_topic(topic) or await partitions(c, topic) or default
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    if not tps:
        return False
    c.assign(tps)
    await c.seek_to_beginning(*tps)
    return True


async def until_quiet(c: AIOKafkaConsumer, quiet_polls: int = 2, poll_ms: int = 300) -> AsyncIterator[Any]:
    """Every record the assigned partitions of ``c`` hold from their positions on, until ``quiet_polls`` polls in
    a row return nothing.

    A poll that returns nothing does not mean a partition is at its end: a fetch slower than ``poll_ms`` (a busy
    broker) looks the same, and the read ends short. Where every record up to now must be read, use ``to_end``.
    """
    quiet = 0
    while quiet < quiet_polls:
        batches = await c.getmany(timeout_ms=poll_ms)
        quiet = 0 if batches else quiet + 1
        for recs in batches.values():
            for r in recs:
                yield r


class ReadStalled(RuntimeError):
    """A read to the end offsets fetched nothing for its ``stall_s`` with records below an end still to read."""


async def to_end(c: AIOKafkaConsumer, poll_ms: int = 1000, stall_s: float = 60.0,
                 clock: Clock | None = None) -> AsyncIterator[dict[TopicPartition, list[Any]]]:
    """The records of the partitions assigned to ``c``, from their positions up to their ends as they are when the
    read starts, as ``getmany`` returns them (partition -> records; a partition's last batch may run past its end).

    The ends are the broker's end offsets, each raised to the high watermark of the partition's first fetch
    response: on Kafka the end offsets are exact; the local Tansu broker reports them short (LOCAL-STACK.md) and
    its fetch responses carry the true end. The read ends at them however slowly the broker answers: a poll of
    ``poll_ms`` that returns nothing is waited past, not taken for the end. When nothing at all is fetched for
    ``stall_s`` seconds (by ``clock``) while a partition is below its end, ``ReadStalled`` is raised: the records
    are not all read, and the caller must not act as if they were.
    """
    clock = clock or SystemClock()
    tps = sorted(c.assignment())
    if not tps:
        return
    ends = dict(await c.end_offsets(tps))
    raised: set[TopicPartition] = set()
    last_ms = clock.now_ms()
    while True:
        for tp in tps:
            high = c.highwater(tp) if tp not in raised else None
            if high is not None:
                ends[tp] = max(ends[tp], high)
                raised.add(tp)
        left = [tp for tp in tps if await c.position(tp) < ends[tp]]
        if not left:
            return
        got = await c.getmany(*left, timeout_ms=poll_ms)
        if got:
            last_ms = clock.now_ms()
            yield got
        elif clock.now_ms() - last_ms >= stall_s * 1000:
            at = ", ".join([f"{tp.topic}[{tp.partition}] at offset {await c.position(tp)} of {ends[tp]}"
                            for tp in left])
            raise ReadStalled(f"nothing was fetched for {stall_s:g}s while reading to the end: {at}; the broker is "
                              "slow or unreachable (see its logs and the worker's connection errors), try again "
                              "once it answers")


async def records_to_end(c: AIOKafkaConsumer, poll_ms: int = 1000, stall_s: float = 60.0,
                         clock: Clock | None = None) -> AsyncIterator[Any]:
    """``to_end``, a record at a time."""
    async for got in to_end(c, poll_ms, stall_s, clock):
        for recs in got.values():
            for r in recs:
                yield r


async def fetched_ends(c: AIOKafkaConsumer, poll_ms: int = 1000, stall_s: float = 60.0,
                       clock: Clock | None = None) -> dict[TopicPartition, int]:
    """partition -> its end as it is now, for every partition assigned to ``c`` (each must have a position): the
    broker's end offset, raised to the high watermark of the first fetch response for the partition (records it
    fetches are dropped). On Kafka the end offsets are exact; the local Tansu broker reports them short
    (LOCAL-STACK.md) and its fetch responses carry the true end. A slow broker makes this slower, never short: when no
    fetch response comes for ``stall_s`` seconds (by ``clock``), ``ReadStalled``."""
    clock = clock or SystemClock()
    tps = sorted(c.assignment())
    ends = dict(await c.end_offsets(tps)) if tps else {}
    started = clock.now_ms()
    highs: dict[TopicPartition, int] = {}
    while True:
        for tp in tps:
            high = c.highwater(tp) if tp not in highs else None
            if high is not None:
                highs[tp] = high
        unknown = [tp for tp in tps if tp not in highs]
        if not unknown:
            return {tp: max(ends[tp], highs[tp]) for tp in tps}
        if clock.now_ms() - started >= stall_s * 1000:
            raise ReadStalled(f"no fetch response came for {stall_s:g}s while finding the end of "
                              + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in unknown)
                              + "; the broker is slow or unreachable (see its logs and the worker's connection "
                                "errors), try again once it answers")
        await c.getmany(*unknown, timeout_ms=poll_ms)


async def end_offsets(settings: Settings, topic: str, poll_ms: int = 1000, stall_s: float = 60.0,
                      clock: Clock | None = None, **consumer: Any) -> dict[int, int]:
    """partition -> the offset after the last record of ``topic`` that can be fetched now (``fetched_ends``: a cut
    made at these offsets never leaves records below it unseen); ``consumer``: more aiokafka consumer settings."""
    c = AIOKafkaConsumer(**{**client_args(settings.kafka), "enable_auto_commit": False, **consumer})
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await partitions(c, topic))]
        if not tps:
            return {}
        reported = await c.end_offsets(tps)
        c.assign(tps)
        for tp in tps:
            c.seek(tp, reported[tp])
        return {tp.partition: o for tp, o in (await fetched_ends(c, poll_ms, stall_s, clock)).items()}
    finally:
        await stop_all(c)


async def iter_all(settings: Settings, topic: str, poll_ms: int = 1000, stall_s: float = 60.0,
                   clock: Clock | None = None, **consumer: Any) -> AsyncIterator[Any]:
    """Every record of ``topic`` from the beginning up to its end offsets as they are when the read starts
    (``to_end``), as they are fetched; ``consumer``: more aiokafka consumer settings."""
    c = AIOKafkaConsumer(**{**client_args(settings.kafka), "enable_auto_commit": False, **consumer})
    await c.start()
    try:
        if await assign_from_beginning(c, topic):
            async for r in records_to_end(c, poll_ms, stall_s, clock):
                yield r
    finally:
        await stop_all(c)


async def read_all(settings: Settings, topic: str, poll_ms: int = 1000, stall_s: float = 60.0,
                   clock: Clock | None = None, **consumer: Any) -> list[Any]:
    """Every record of ``topic`` from the beginning up to its end offsets when the read starts (``iter_all``): a
    restarted exporter that read its ledger short would write again what it had already written."""
    return [r async for r in iter_all(settings, topic, poll_ms, stall_s, clock, **consumer)]
