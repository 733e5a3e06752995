"""The followers a worker starts before what depends on them -- the export control state (before any exporter) and
the console's revoked sessions (before any cookie is accepted) -- have read their topic to its end when their start
returns, however slowly the broker answers: here each fetch takes 1 s, longer than the polls of 300 ms after which
a start used to take the broker's silence for the end."""

import asyncio

import pytest

from stream.admin import sessions
from stream.export import control
from stream.kafka import ensure_topics, stop_all

pytestmark = pytest.mark.integration

SLOW = {"fetch_min_bytes": 50 << 20, "fetch_max_wait_ms": 1000}
"""Consumer settings that make the broker hold each fetch 1 s (it waits for 50 MB that never come)."""


def test_the_export_control_state_is_read_whole_before_its_start_returns_when_the_broker_is_slow(deployment):
    settings, _ = deployment

    async def go():
        await ensure_topics(settings)
        for i in range(3):
            await control.append(settings, control.exports_record(f"d{i}", False, 1000 + i, "ops"))
        await control.append(settings, control.exports_record("d1", True, 2000, "ops"))
        await control.append(settings, control.cancel_record("bf-1", 3000, "ops"))
        state = control.Control()
        tail = control.ControlTail(settings, state, **SLOW)
        try:
            await tail.start()
            return state.paused, state.cancelled
        finally:
            await stop_all(tail.consumer)
    assert asyncio.run(go()) == ({"d0": 1000, "d2": 1002}, {"bf-1"})


def test_the_revoked_sessions_are_read_whole_before_the_start_returns_when_the_broker_is_slow(deployment):
    settings, _ = deployment
    now = 10_000_000

    async def go():
        await ensure_topics(settings)
        for i in range(4):
            await sessions.publish(settings, sessions.record(f"nonce-{i}", now - 1000 * i, now))
        revoked = sessions.Revoked(session_ms=3_600_000, ready=False)
        tail = sessions.RevokedTail(settings, revoked, lambda: now, **SLOW)
        try:
            await tail.start()
            return sorted(revoked.until), revoked.ready
        finally:
            await stop_all(tail.consumer)
    assert asyncio.run(go()) == ([f"nonce-{i}" for i in range(4)], True)
