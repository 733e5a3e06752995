"""``stream check``: probe the broker and every bucket the way the worker uses them, and name what is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient

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
    return 0


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
