"""Console sessions logged out, shared by every worker of a deployment through the console sessions topic.

A session cookie is valid on every worker that has the admin token (``stream.admin.console``); logging out on one
worker writes the session's nonce to ``topics.console_sessions``, which every worker follows, so the cookie is
refused everywhere, not only where it was logged out. A revoked nonce is kept until its session would have
expired anyway; the topic keeps its records for twice that, so a worker that starts reads every revocation that
still matters.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from stream import kafka
from stream.settings import Settings

log = logging.getLogger(__name__)


class Revoked:
    """Nonces of logged-out sessions, each kept until its session expires (pure; time is a parameter)."""

    def __init__(self, session_ms: int, ready: bool = True):
        """``ready``: whether every revocation so far is known (False until the topic has been read)."""
        self.session_ms = session_ms
        self.until: dict[str, int] = {}     # nonce -> when its session expires (ms)
        self.ready = ready

    def __contains__(self, nonce: object) -> bool:
        return nonce in self.until

    def __len__(self) -> int:
        return len(self.until)

    def add(self, nonce: str, issued_ms: int, now_ms: int) -> None:
        self.until = {n: t for n, t in self.until.items() if t > now_ms}
        if issued_ms + self.session_ms > now_ms:
            self.until[nonce] = issued_ms + self.session_ms

    def add_record(self, value: bytes | None, now_ms: int) -> None:
        """Add a revocation record of the topic (records that are not one are skipped, with a warning)."""
        parsed = decode(value)
        if parsed is None:
            log.warning("console sessions: skipped a record that is not a revocation: %r", (value or b"")[:200])
            return
        self.add(*parsed, now_ms)


def record(nonce: str, issued_ms: int, at_ms: int) -> tuple[bytes, bytes]:
    """(key, value) of the revocation of the session ``nonce``, issued at ``issued_ms``."""
    return nonce.encode(), orjson.dumps({"nonce": nonce, "issued_ms": issued_ms, "revoked_at": at_ms})


def decode(value: bytes | None) -> tuple[str, int] | None:
    """(nonce, issued_ms) of a revocation record, None if it is not one."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("nonce"), str) or \
            not isinstance(doc.get("issued_ms"), int) or isinstance(doc.get("issued_ms"), bool):
        return None
    return doc["nonce"], doc["issued_ms"]


async def publish(settings: Settings, rec: tuple[bytes, bytes]) -> None:
    """Append a revocation (acknowledged by the broker)."""
    p = kafka.producer(settings.kafka)
    await p.start()
    try:
        await (await p.send(settings.topics.name("console_sessions"), rec[1], key=rec[0], partition=0))
    finally:
        await kafka.stop_all(p)


class RevokedTail:
    """Follows the console sessions topic into a ``Revoked``, from its beginning."""

    def __init__(self, settings: Settings, revoked: Revoked, now_ms, poll_s: float = 1.0, **consumer: Any):
        """``consumer``: more aiokafka consumer settings."""
        self.topic = settings.topics.name("console_sessions")
        self.revoked, self.now_ms, self.poll_ms = revoked, now_ms, int(poll_s * 1000)
        self.consumer = AIOKafkaConsumer(**{**kafka.client_args(settings.kafka), "enable_auto_commit": False,
                                            **consumer})

    async def start(self) -> None:
        """Read the revocations the topic holds, up to its end offset as it is now however slowly the broker answers
        (``stream.kafka.to_end``); the consumer is stopped if that fails."""
        try:
            await self.consumer.start()
            await kafka.assign_from_beginning(self.consumer, self.topic, default=frozenset({0}))
            async for m in kafka.records_to_end(self.consumer, self.poll_ms):
                self.revoked.add_record(m.value, self.now_ms())
            self.revoked.ready = True
        except BaseException:
            await kafka.stop_all(self.consumer)
            raise

    async def run(self, stop=lambda: False) -> None:
        """Follow the topic until ``stop()`` (checked every poll)."""
        try:
            while not stop():
                for recs in (await self.consumer.getmany(timeout_ms=self.poll_ms)).values():
                    for m in recs:
                        self.revoked.add_record(m.value, self.now_ms())
        finally:
            await kafka.stop_all(self.consumer)
