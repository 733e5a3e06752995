"""Per-device and per-user event rates, as Amplitude limits them (FORMATS.md §2.1), in one process's memory.

Each device_id and user_id has a leaky bucket that holds the events it sent and drains at ``eps`` events per
second; it holds at most ``eps * window_s`` events, so the average over any ``window_s`` stays at or under
``eps`` (bursts included). A request whose events would overflow any bucket is throttled whole, and then
counts against nothing: the client retries it later, as Amplitude's 429 asks.

The state is per process. Behind a load balancer that spreads one device's requests over N replicas, the
effective limit is up to N times higher; route by device (or user) to keep it exact.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_SLACK_MS = 0.001
"""Rounding room (1 µs) for a bucket filled exactly to its capacity: its empty moment is a sum of floats."""


@dataclass(frozen=True)
class Throttled:
    eps_threshold: float
    devices: dict[str, int]      # id -> its rate (events/s over the window) had the request been accepted
    users: dict[str, int]
    events: list[int]            # indexes of the events of throttled ids
    retry_after_s: int = 1       # seconds until every throttled id's bucket has room for the request again

    def body(self) -> dict[str, Any]:
        eps = int(self.eps_threshold) if float(self.eps_threshold).is_integer() else self.eps_threshold
        return {"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": eps,
                "throttled_devices": self.devices, "throttled_users": self.users, "throttled_events": self.events}


class Throttle:
    """Leaky buckets per device_id and per user_id; time is a parameter (epoch ms).

    A bucket is kept as the moment it will be empty (epoch ms, a float): ``n`` events move it
    ``n * 1000 / eps`` ms later, and it holds ``(empty_at - now) * eps / 1000`` events at ``now``, so one
    number per id and one comparison per id and request say whether it overflows.
    """

    def __init__(self, eps: float, window_s: float, max_ids: int = 1_000_000):
        self.eps = eps
        self.window_s = window_s
        self._window_ms = window_s * 1000
        self._ms_per_event = 1000 / eps
        self._max_ids = max_ids
        # id -> when its bucket is empty (epoch ms); devices and users apart
        self._devices: dict[str, float] = {}
        self._users: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._devices) + len(self._users)

    def admit(self, devices: Sequence[str | None], users: Sequence[str | None], now_ms: int) -> Throttled | None:
        """Count the request's events (event i has ``devices[i]``, ``users[i]``), or say which are throttled."""
        d_after = self._after(self._devices, devices, now_ms)
        u_after = self._after(self._users, users, now_ms)
        limit = now_ms + self._window_ms + _SLACK_MS
        # the latest moment first (in C): the ids over the limit are looked for only when there are some
        if max(d_after.values(), default=limit) > limit or max(u_after.values(), default=limit) > limit:
            d_over = {k: t for k, t in d_after.items() if t > limit}
            u_over = {k: t for k, t in u_after.items() if t > limit}
            wait_ms = max(max(d_over.values(), default=limit), max(u_over.values(), default=limit)) - limit
            return Throttled(
                self.eps, self._rates(d_over, now_ms), self._rates(u_over, now_ms),
                [i for i, (d, u) in enumerate(zip(devices, users)) if d in d_over or u in u_over],
                max(1, math.ceil(wait_ms / 1000)))
        self._devices.update(d_after)
        self._users.update(u_after)
        if len(self) > self._max_ids:
            self.prune(now_ms)
        return None

    def _after(self, empty_at: dict[str, float], ids: Sequence[str | None], now_ms: int) -> dict[str, float]:
        """Each id's empty moment had the request been counted."""
        wanted = Counter(ids)
        wanted.pop(None, None)
        get, per = empty_at.get, self._ms_per_event
        now = float(now_ms)   # the same number (epoch ms < 2**53): compared with floats without converting each time
        # max(t, now) spelt as a comparison: a builtin call per id cost more than the rest of the line
        return {k: (t if (t := get(k, now)) > now else now) + n * per for k, n in wanted.items()}

    def _rates(self, over: dict[str, float], now_ms: int) -> dict[str, int]:
        """Events/s over the window each id would have reached."""
        return {k: round((t - now_ms) / self._ms_per_event / self.window_s) for k, t in over.items()}

    def prune(self, now_ms: int) -> None:
        """Forget the ids whose bucket has drained (they would start from empty anyway); if that is not enough,
        the half whose buckets drain soonest."""
        for empty_at in (self._devices, self._users):
            drained = [k for k, t in empty_at.items() if t <= now_ms]
            for k in drained:
                del empty_at[k]
        if len(self) > self._max_ids:
            for empty_at in (self._devices, self._users):
                keep = sorted(empty_at.items(), key=lambda kv: kv[1])[len(empty_at) // 2:]
                empty_at.clear()
                empty_at.update(keep)
