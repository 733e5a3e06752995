"""Failed authentications per client address: after too many, the address waits (pure; time is a parameter).

Each address has a leaky bucket of its failures that drains ``max_failures`` per ``window_s``. While the
bucket holds ``max_failures`` or more, the address is refused before its credentials are even compared, and
told when to come back (``Retry-After``), so guessing a token costs at least ``window_s / max_failures`` seconds
a guess. A success does not empty the bucket: an attacker who knows one token must not reset the count of his
guesses of another. The state is per process and bounded: past ``max_addresses`` the drained buckets are
forgotten first, then the half that drains soonest.
"""

from __future__ import annotations

import math


class FailedAttempts:
    """Leaky buckets of failed authentications, one per address, kept as the moment each will be empty (ms)."""

    def __init__(self, max_failures: int, window_s: float, max_addresses: int = 100_000):
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures must be at least 1 and window_s positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self._ms_per_failure = window_s * 1000 / max_failures
        self._max_addresses = max_addresses
        self._empty_at: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._empty_at)

    def retry_after_s(self, address: str, now_ms: int) -> int | None:
        """Seconds the address must wait before its next attempt is looked at; None when it may try now."""
        empty_at = self._empty_at.get(address)
        if empty_at is None:
            return None
        # the bucket holds (empty_at - now) / per failures; it accepts one more once it holds max - 1 or fewer
        free_at = empty_at - (self.max_failures - 1) * self._ms_per_failure
        if free_at <= now_ms:
            return None
        return max(1, math.ceil((free_at - now_ms) / 1000))

    def failed(self, address: str, now_ms: int) -> None:
        """Count one failed attempt of the address."""
        self._empty_at[address] = max(self._empty_at.get(address, now_ms), now_ms) + self._ms_per_failure
        if len(self._empty_at) > self._max_addresses:
            self.prune(now_ms)

    def prune(self, now_ms: int) -> None:
        """Forget drained buckets; if that is not enough, the half that drains soonest."""
        for k in [k for k, t in self._empty_at.items() if t <= now_ms]:
            del self._empty_at[k]
        if len(self._empty_at) > self._max_addresses:
            keep = sorted(self._empty_at.items(), key=lambda kv: kv[1])[len(self._empty_at) // 2:]
            self._empty_at = dict(keep)
