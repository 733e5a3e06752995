"""``stream check``: probe the broker and every bucket the way the worker uses them, and name what is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.export.layout import written_prefixes
from stream.kafka import client_args
from stream.s3.client import target_of
from stream.s3.probe import probe_writes
from stream.settings import DestinationSettings, Settings
from stream.topics import topic_specs


async def check_broker(settings: Settings, say: Callable[[str], None]) -> int:
    admin = AIOKafkaAdminClient(**client_args(settings.kafka), request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except Exception as exc:
        say(f"kafka: cannot reach {settings.kafka.bootstrap_servers}: {exc}")
        return 1
    finally:
        await admin.close()
    missing = [s.name for s in topic_specs(settings) if s.name not in existing]
    if missing:
        say(f"kafka: missing topics {', '.join(missing)} (the worker creates them at start if it may create "
            "topics; otherwise create them)")
        return len(missing)
    say(f"kafka: ok ({settings.kafka.bootstrap_servers}, {len(topic_specs(settings))} topics present)")
    return await check_retention(settings, say)


async def check_retention(settings: Settings, say: Callable[[str], None]) -> int:
    """Each topic whose retention stream sets keeps its records at least that long (a shorter retention than
    topics.retention_days can delete what a disabled or failing destination has not exported yet)."""
    wanted = {s.name: int(s.config["retention.ms"]) for s in topic_specs(settings) if "retention.ms" in s.config}
    admin = AIOKafkaAdminClient(**client_args(settings.kafka), request_timeout_ms=10_000)
    try:
        await admin.start()
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted])
    except Exception as exc:
        say(f"kafka: could not read the topics' retention ({type(exc).__name__}: {exc}); check it by hand")
        return 0
    finally:
        await admin.close()
    actual = {res[3]: dict((c[0], c[1]) for c in res[4]) for a in answers for res in a.resources}
    problems = 0
    for topic, want in wanted.items():
        got = actual.get(topic, {}).get("retention.ms")
        if got is None:
            continue   # the broker's default applies, which its DescribeConfigs answer may leave out
        if 0 <= int(got) < want:
            problems += 1
            days, needed = int(got) / 86_400_000, want / 86_400_000
            say(f"kafka: topic {topic} keeps records {days:g} days, less than the {needed:g} it needs: kafka-configs "
                f"--alter --entity-type topics --entity-name {topic} --add-config retention.ms={want}")
    return problems


async def check_destination(settings: Settings, dest: DestinationSettings, say: Callable[[str], None]) -> int:
    """Probe every place the destination writes, as the exporter writes (``stream.s3.probe``)."""
    prefixes = [p for _, p in written_prefixes(dest, segment_sources_of(settings, dest.project))]
    steps = await probe_writes(target_of(dest, settings.s3), prefixes, settings.s3)
    failed = [s for s in steps if s.problem is not None]
    if failed:
        say(f"destination {dest.name}: {failed[0].problem.message}")
        return 1
    places = ", ".join(f"s3://{dest.bucket}/{p}" for p in prefixes)
    say(f"destination {dest.name}: ok ({places}, encryption {dest.encryption.type})")
    return 0


def segment_sources_of(settings: Settings, project: int) -> list[str]:
    return [s.source_id for p in settings.projects if p.id == project for s in p.segment_sources]


async def run_checks(settings: Settings, timeout: float, say: Callable[[str], None]) -> int:
    async def bounded(coro, what: str) -> int:
        try:
            return await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            say(f"{what}: no answer within {timeout:.0f}s")
            return 1
        except Exception as exc:  # no credentials, endpoint unreachable...
            say(f"{what}: {type(exc).__name__}: {exc}")
            return 1
    problems = await bounded(check_broker(settings, say), "kafka")
    for d in settings.destinations:
        problems += await bounded(check_destination(settings, d, say), f"destination {d.name}")
    return problems
