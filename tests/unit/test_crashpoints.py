"""Pause points: the first pass through an armed one waits for its file; every other pass goes straight on."""

import asyncio

from stream import crashpoints


def test_an_armed_pause_point_waits_for_its_file_the_first_time_only(tmp_path, monkeypatch):
    go = tmp_path / "go"
    monkeypatch.setattr(crashpoints, "_PAUSE", "backfill.claimed")
    monkeypatch.setattr(crashpoints, "_PAUSE_UNTIL", str(go))
    monkeypatch.setattr(crashpoints, "PAUSE_LOOK_S", 0.01)

    async def run():
        await crashpoints.pause_point("export.added")          # another point: no wait
        paused = asyncio.ensure_future(crashpoints.pause_point("backfill.claimed"))
        for _ in range(5):
            await asyncio.wait([paused], timeout=0.02)
        waited = not paused.done()
        go.touch()
        await asyncio.wait_for(paused, 5)
        go.unlink()
        await asyncio.wait_for(crashpoints.pause_point("backfill.claimed"), 1)    # the second pass: no wait
        return waited
    assert asyncio.run(run()) is True


def test_an_unarmed_pause_point_does_not_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(crashpoints, "_PAUSE", None)
    monkeypatch.setattr(crashpoints, "_PAUSE_UNTIL", str(tmp_path / "never"))
    asyncio.run(asyncio.wait_for(crashpoints.pause_point("backfill.claimed"), 1))
