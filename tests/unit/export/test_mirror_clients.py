import asyncio
import contextlib

import pytest

from stream.agents.mirror import Held, Rebuilds, StageClients
from stream.clock import FakeClock
from stream.settings import Settings

CONV = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "e", "user_id": "u", "insert_id": "i"}}}


def settings():
    return Settings(projects=[{"id": 1}, {"id": 2}],
                    destinations=[{"name": "live", "project": 1, "bucket": "amp"},
                                  {"name": "arch", "project": 1, "bucket": "arch", "archive": True},
                                  {"name": "other", "project": 2, "bucket": "other"}],
                    sources=[{"name": "fixes", "project": 1, "bucket": "src", "prefix": "in/",
                              "strategy": "mirror", "converter": CONV}])


class Opener:
    """Counts what it enters and exits; entering a key in ``failing`` raises once."""

    def __init__(self, failing=()):
        self.entered, self.exited, self.failing = [], [], set(failing)

    @contextlib.asynccontextmanager
    async def __call__(self, key):
        await asyncio.sleep(0)      # let a concurrent first use of the key come in meanwhile
        if key in self.failing:
            self.failing.discard(key)
            raise OSError(f"cannot open {key}")
        self.entered.append(key)
        try:
            yield f"{key}#{len(self.entered)}"
        finally:
            self.exited.append(key)


def test_held_enters_each_key_once_until_closed_then_again():
    async def go():
        opener = Opener()
        held = Held(opener)
        got = [await held.get("a"), await held.get("b"), await held.get("a"), await held.get("a")]
        assert got == ["a#1", "b#2", "a#1", "a#1"]
        assert (opener.entered, opener.exited, held.holds()) == (["a", "b"], [], ["a", "b"])
        await held.aclose()
        assert (opener.exited, held.holds()) == (["b", "a"], [])
        assert await held.get("a") == "a#3"
        await held.aclose()
        assert opener.exited == ["b", "a", "a"]
    asyncio.run(go())


def test_held_enters_a_key_once_for_concurrent_first_uses_and_again_after_a_failed_open():
    async def go():
        opener = Opener(failing={"b"})
        held = Held(opener)
        assert await asyncio.gather(*(held.get("a") for _ in range(5))) == ["a#1"] * 5
        with pytest.raises(OSError, match="cannot open b"):
            await held.get("b")
        assert held.holds() == ["a"]
        assert await held.get("b") == "b#2"
        assert (opener.entered, held.holds()) == (["a", "b"], ["a", "b"])
        await held.aclose()
    asyncio.run(go())


def test_the_stages_logs_of_every_partition_and_take_share_one_s3_client_until_closed():
    async def go():
        clients = StageClients(settings())
        seen = []
        for _take in range(2):
            for _partition in range(4):
                async with clients.logs(1) as (storage, bucket):
                    seen.append((id(storage), bucket))
        assert len(set(seen)) == 1 and seen[0][1] == "arch"
        assert clients.storages.holds() == ["arch"]
        first = await clients.storages.get("arch")
        await clients.close()
        assert clients.storages.holds() == []
        async with clients.logs(1) as (storage, _):
            assert storage is not first
        await clients.close()
    asyncio.run(go())


def test_a_rebuild_uses_the_clients_of_the_projects_destinations_and_its_archive():
    s = settings()
    rebuilds = Rebuilds(s, FakeClock(0), StageClients(s))
    assert rebuilds.destinations(1) == ["live", "arch"]
    assert rebuilds.clients_of(1) == ["live", "arch"]
    assert rebuilds.clients_of(2) == ["other"]
