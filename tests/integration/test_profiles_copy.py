"""The cohort syncs' local copy of the profiles changelog against the broker: read from the beginning, then only the
records written since, a tombstone deleting its key; opened again, it reads on from where it was; naming offsets past
the topic's end, it is read again from the beginning, also when each fetch takes longer than the polls (the local
broker reports the end offsets of the changelog's partitions short)."""

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from stream.cohorts.profiles_copy import ProfilesCopy, catch_up, profile_reader
from stream.imports import profiles
from stream.topics import profiles_changelog
from tests.integration.test_profiles import PROJECT, SLOW, T0, write_changelog

pytestmark = pytest.mark.integration


async def send(settings, records):
    topic, n = profiles_changelog(settings), settings.topics.partitions
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for k, v in records:
            await p.send_and_wait(topic, v, key=k, partition=profiles.partition(k, n))
    finally:
        await p.stop()


def held(copy, keys):
    return {k: profiles.decode(copy.get(k)) for k in keys if copy.get(k) is not None}


def test_the_profiles_copy_reads_the_changelog_once_then_what_was_written_since_and_again_when_the_topic_is_not_its(
        deployment, tmp_path):
    settings, _ = deployment
    users = [f"user-{i}" for i in range(40)]
    written = asyncio.run(write_changelog(settings, users))
    keys = [profiles.key(PROJECT, u) for u in users + ["user-40"]]
    copy = ProfilesCopy.open(tmp_path / "data", profiles_changelog(settings))
    try:
        assert asyncio.run(catch_up(copy, settings)) == 80
        assert held(copy, keys) == written
        assert sum(copy.saved().values()) == 80
        profile_of = profile_reader(copy, frozenset({PROJECT}))
        assert [profile_of(PROJECT, "user-0"), profile_of(PROJECT, "user-3"), profile_of(PROJECT, "user-40")] == [
            {"plan": "plan-1-0"}, None, None]

        new = profiles.Profile({"plan": "new"}, (T0, "s3://people/in/q.json", 1), T0 + 99)
        asyncio.run(send(settings, [(keys[0], profiles.encode(new)), (keys[1], None),
                                    (keys[40], profiles.encode(new))]))
        assert asyncio.run(catch_up(copy, settings)) == 3
        after = {**{k: p for k, p in written.items() if k != keys[1]}, keys[0]: new, keys[40]: new}
        assert held(copy, keys) == after
        assert sum(copy.saved().values()) == 83
        assert asyncio.run(catch_up(copy, settings)) == 0
    finally:
        copy.close()

    again = ProfilesCopy.open(tmp_path / "data", profiles_changelog(settings))
    try:
        assert asyncio.run(catch_up(again, settings)) == 0
        assert held(again, keys) == after
        again.mark({0: 1_000_000})
        assert asyncio.run(catch_up(again, settings, **SLOW)) == 83
        assert held(again, keys) == after
        assert sum(again.saved().values()) == 83
    finally:
        again.close()
