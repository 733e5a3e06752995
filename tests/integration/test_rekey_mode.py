"""``cohort_state.rekey_in_identity: auto`` on the real broker (``stream.cohorts.rekey_mode.resolve``): a new
deployment rekeys in the identity stage and keeps doing so; a worker that read events.accepted turns ``auto`` off
for good; a first start beside events already on events.accepted reads them."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.cohorts import rekey_mode
from stream.kafka import client_args, ensure_topics
from stream.settings import load_settings

pytestmark = pytest.mark.integration


def marker(settings):
    async def read():
        c = AIOKafkaConsumer(**{**client_args(settings.kafka), "enable_auto_commit": False,
                                "group_id": rekey_mode.marker_group(settings.worker.app_id)})
        await c.start()
        try:
            return await c.committed(TopicPartition(settings.topics.name("accepted"), 0))
        finally:
            await c.stop()
    return asyncio.run(read())


def resolve(settings, setting="auto", can_fold=True):
    s = settings.model_copy(update={"cohort_state": settings.cohort_state.model_copy(
        update={"rekey_in_identity": setting})})
    return asyncio.run(rekey_mode.resolve(s, can_fold))


def produce_one(settings):
    async def send():
        p = AIOKafkaProducer(**client_args(settings.kafka))
        await p.start()
        try:
            await p.send_and_wait(settings.topics.name("accepted"), b"x", partition=1)
        finally:
            await p.stop()
    asyncio.run(send())


def test_a_new_deployment_rekeys_in_the_identity_stage_until_a_worker_reads_events_accepted(deployment):
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    assert (load_settings(_).cohort_state.rekey_in_identity, marker(settings)) == ("auto", None)
    assert (resolve(settings), marker(settings)) == (True, rekey_mode.IN_IDENTITY)      # events.accepted empty
    produce_one(settings)
    assert (resolve(settings), marker(settings)) == (True, rekey_mode.IN_IDENTITY)      # made that way before
    assert (resolve(settings, can_fold=False), marker(settings)) == (False, rekey_mode.READ_BACK)
    assert (resolve(settings), marker(settings)) == (False, rekey_mode.READ_BACK)       # a reader read it since
    assert (resolve(settings, True), marker(settings)) == (True, rekey_mode.IN_IDENTITY)  # switched by hand
    assert resolve(settings) is True


def test_a_first_start_beside_events_already_accepted_reads_them(deployment):
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    produce_one(settings)
    assert (resolve(settings), marker(settings)) == (False, rekey_mode.READ_BACK)
    assert resolve(settings) is False
