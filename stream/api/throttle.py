"""Per-device and per-user event rates, as Amplitude limits them (FORMATS.md §2.1), in one process's memory.

Each device_id and user_id has a leaky bucket that holds the events it sent and drains at ``eps`` events per
second; it holds at most ``eps * window_s`` events, so the average over any ``window_s`` stays at or under
``eps`` (bursts included). A request whose events would overflow any bucket is throttled whole, and then
counts against nothing: the client retries it later, as Amplitude's 429 asks.

The state is per process. Behind a load balancer that spreads one device's requests over N replicas, the
effective limit is up to N times higher; route by device (or user) to keep it exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Throttled:
    eps_threshold: float
    devices: dict[str, int]      # id -> its rate (events/s over the window) had the request been accepted
    users: dict[str, int]
    events: list[int]            # indexes of the events of throttled ids

    def body(self) -> dict[str, Any]:
        eps = int(self.eps_threshold) if float(self.eps_threshold).is_integer() else self.eps_threshold
        return {"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": eps,
                "throttled_devices": self.devices, "throttled_users": self.users, "throttled_events": self.events}


class Throttle:
    """Leaky buckets keyed by ``d:<device_id>`` / ``u:<user_id>``; time is a parameter (epoch ms)."""

    def __init__(self, eps: float, window_s: float, max_ids: int = 1_000_000):
        self.eps = eps
        self.capacity = eps * window_s
        self.window_s = window_s
        self._per_ms = eps / 1000
        self._max_ids = max_ids
        self._levels: dict[str, tuple[float, int]] = {}   # key -> (events in the bucket, as of ms)

    def __len__(self) -> int:
        return len(self._levels)

    def _level(self, key: str, now_ms: int) -> float:
        entry = self._levels.get(key)
        if entry is None:
            return 0.0
        level, t = entry
        return max(0.0, level - (now_ms - t) * self._per_ms)

    def admit(self, devices: Sequence[str | None], users: Sequence[str | None], now_ms: int) -> Throttled | None:
        """Count the request's events (event i has ``devices[i]``, ``users[i]``), or say which are throttled."""
        wanted: Counter[str] = Counter()
        for d in devices:
            if d is not None:
                wanted["d:" + d] += 1
        for u in users:
            if u is not None:
                wanted["u:" + u] += 1
        over: dict[str, float] = {}
        for key, n in wanted.items():
            total = self._level(key, now_ms) + n
            if total > self.capacity:
                over[key] = total
        if over:
            rate = {k: round(v / self.window_s) for k, v in over.items()}
            return Throttled(
                self.eps,
                {k[2:]: r for k, r in rate.items() if k[0] == "d"},
                {k[2:]: r for k, r in rate.items() if k[0] == "u"},
                [i for i, (d, u) in enumerate(zip(devices, users))
                 if (d is not None and "d:" + d in over) or (u is not None and "u:" + u in over)])
        for key, n in wanted.items():
            self._levels[key] = (self._level(key, now_ms) + n, now_ms)
        if len(self._levels) > self._max_ids:
            self.prune(now_ms)
        return None

    def prune(self, now_ms: int) -> None:
        """Forget the ids whose bucket has drained (they would start from empty anyway); if that is not enough,
        the least recently seen half."""
        self._levels = {k: v for k, v in self._levels.items() if v[0] - (now_ms - v[1]) * self._per_ms > 0}
        if len(self._levels) > self._max_ids:
            keep = sorted(self._levels.items(), key=lambda kv: kv[1][1])[len(self._levels) // 2:]
            self._levels = dict(keep)
