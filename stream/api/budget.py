"""How many request bytes a process may hold at once: a budget taken as bodies arrive and given back when they
are answered (pure).

Each request holds its body until the broker acknowledges its batches, and an Amplitude /batch body may be
20 MiB decoded; without a bound, a burst of large requests grows the process until the kernel kills it. The
API takes a body's bytes from the budget as they are read (its declared Content-Length at once, else chunk by
chunk, the decoded size for gzip) and answers 503 with Retry-After the moment the budget is exhausted, so
clients back off and send again while the memory of one process stays bounded (docs/api.md, "Memory").
"""

from __future__ import annotations


class Budget:
    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, n: int, alone: bool = False) -> bool:
        """Take ``n`` bytes; False (and nothing taken) when they do not fit, unless ``alone``: the only request
        held may always go on, or a request larger than the whole budget could never be answered."""
        if self.used + n > self.limit and not alone:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class Claim:
    """One request's share of a budget, grown as its body grows and given back whole at the end."""

    def __init__(self, budget: Budget):
        self.budget, self.held = budget, 0

    def grow_to(self, n: int) -> bool:
        """Hold ``n`` bytes in all (never less than already held); False when the budget cannot give more."""
        if n <= self.held:
            return True
        if not self.budget.take(n - self.held, alone=self.budget.used == self.held):
            return False
        self.held = n
        return True

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0
