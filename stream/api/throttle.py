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
    """Leaky buckets per device_id and per user_id; time is a parameter (epoch ms)."""

    def __init__(self, eps: float, window_s: float, max_ids: int = 1_000_000):
        self.eps = eps
        self.capacity = eps * window_s
        self.window_s = window_s
        self._per_ms = eps / 1000
        self._max_ids = max_ids
        # id -> (events in its bucket, as of epoch ms); devices and users apart
        self._devices: dict[str, tuple[float, int]] = {}
        self._users: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._devices) + len(self._users)

    def admit(self, devices: Sequence[str | None], users: Sequence[str | None], now_ms: int) -> Throttled | None:
        """Count the request's events (event i has ``devices[i]``, ``users[i]``), or say which are throttled."""
        per_ms, cap = self._per_ms, self.capacity
        after: list[list[tuple[str, float]]] = [[], []]
        over: list[dict[str, float]] = [{}, {}]
        for side, (levels, ids) in enumerate(((self._devices, devices), (self._users, users))):
            wanted = Counter(ids)
            wanted.pop(None, None)
            side_after, side_over = after[side], over[side]
            get = levels.get
            for key, n in wanted.items():
                entry = get(key)
                total = n if entry is None else max(0.0, entry[0] - (now_ms - entry[1]) * per_ms) + n
                if total > cap:
                    side_over[key] = total
                side_after.append((key, total))
        d_over, u_over = over
        if d_over or u_over:
            return Throttled(
                self.eps, {k: round(v / self.window_s) for k, v in d_over.items()},
                {k: round(v / self.window_s) for k, v in u_over.items()},
                [i for i, (d, u) in enumerate(zip(devices, users)) if d in d_over or u in u_over])
        for levels, side_after in ((self._devices, after[0]), (self._users, after[1])):
            for key, total in side_after:
                levels[key] = (total, now_ms)
        if len(self) > self._max_ids:
            self.prune(now_ms)
        return None

    def prune(self, now_ms: int) -> None:
        """Forget the ids whose bucket has drained (they would start from empty anyway); if that is not enough,
        the least recently seen half."""
        per_ms = self._per_ms
        for levels in (self._devices, self._users):
            drained = [k for k, (level, t) in levels.items() if level - (now_ms - t) * per_ms <= 0]
            for k in drained:
                del levels[k]
        if len(self) > self._max_ids:
            for levels in (self._devices, self._users):
                keep = sorted(levels.items(), key=lambda kv: kv[1][1])[len(levels) // 2:]
                levels.clear()
                levels.update(keep)
