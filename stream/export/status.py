"""The status view of every exporter of the configured destinations, from their ledger books (pure).

A destination has one exporter per data set: its events (named as the destination) and, when it exports them,
its merged-IDs files (``<destination>.merged-ids``). Each exporter's ``ExportBook`` folds its ledger records;
the worker passes the books of the exporters it runs, ``stream exports status`` the books read from the whole
ledger topic. The state of a destination turned off at runtime (``stream exports disable``) comes in ``paused``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

from stream.export.completion import ExportBook, iso_ms
from stream.export.exporter import exporters_of
from stream.settings import Settings


def export_status(settings: Settings, books: Mapping[str, ExportBook], hours: int = 48,
                  paused: Collection[str] = (), missing: str = "not running here",
                  now_ms: int | None = None) -> dict[str, Any]:
    """The status document: per exporter, its destination's settings and the state its book shows; an exporter
    without a book is ``missing`` (e.g. "not running here"), a destination turned off is ``disabled``."""
    out = []
    for d in settings.destinations:
        for name, what in exporters_of(d):
            book = books.get(name)
            enabled = d.enabled and name not in paused and d.name not in paused
            head = {"destination": name, "project": d.project, "exports": what,
                    "layout": d.layout if what == "events" else "merged_ids", "bucket": d.bucket,
                    "prefix": d.prefix, "enabled": enabled}
            if book is None:
                out.append({**head, "state": "disabled" if not enabled else missing})
                continue
            st = book.status(hours)
            if not enabled:
                st["state"] = "disabled"
            out.append({**head, **st})
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    return {"generated_at": iso_ms(now), "destinations": out}
