"""What a process's parts report about themselves, for /healthz and /readyz.

Each part (a stage loop, an exporter, the HTTP API's producer) is *expected*
when the process starts, says *ready* once it does its job (its consumer has
joined its group, its producer reached the brokers), and says *failed* with a
reason when it stopped and cannot go on. Liveness fails only on a failure;
readiness also waits for every expected part.

The probes are open (Kubernetes calls them without credentials), so they answer the parts' names and states
only; why a part failed -- an error text, which may name buckets, hosts or worse -- is in ``details()``, which
the worker serves behind the admin token (``GET /admin/health``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Health:
    expected: set[str] = field(default_factory=set)
    ready: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)

    def expect(self, *parts: str) -> None:
        self.expected.update(parts)

    def mark_ready(self, part: str) -> None:
        """The part works (again): ready, and no longer failed."""
        self.expected.add(part)
        self.ready.add(part)
        self.failed.pop(part, None)

    def mark_not_ready(self, part: str) -> None:
        self.ready.discard(part)

    def mark_failed(self, part: str, why: str) -> None:
        self.expected.add(part)
        self.ready.discard(part)
        self.failed[part] = why

    def live(self) -> tuple[bool, dict]:
        """(alive, body): alive unless a part failed; the body names the failed parts, not why."""
        return not self.failed, {"status": "failed" if self.failed else "ok",
                                 "failed": {part: "failed" for part in sorted(self.failed)}}

    def readiness(self) -> tuple[bool, dict]:
        """(ready, body): every expected part ready and none failed; the body names the parts, not why."""
        waiting = sorted(self.expected - self.ready - set(self.failed))
        ok = not waiting and not self.failed
        return ok, {"status": "ready" if ok else "not ready", "ready": sorted(self.ready), "waiting": waiting,
                    "failed": {part: "failed" for part in sorted(self.failed)}}

    def details(self) -> dict:
        """The readiness with why each failed part failed (for the admin endpoints only)."""
        ok, body = self.readiness()
        return {**body, "failed": {part: self.failed[part] for part in sorted(self.failed)}}


HEALTH = Health()
"""The process's registry (one per process, like the metrics registry)."""
