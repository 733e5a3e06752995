"""``stream exports status``: the status view built from the whole ledger topic, as a table or JSON."""

from __future__ import annotations

from typing import Any

from stream import kafka
from stream.export.completion import ExportBook
from stream.export.exporter import exporters_of
from stream.export.ledger import LedgerRecord
from stream.export.status import export_status
from stream.settings import Settings


async def read_status(settings: Settings, hours: int) -> dict[str, Any]:
    partitions = {"events": await kafka.partition_count(settings, settings.topics.name("accepted"))
                  or settings.topics.partitions, "merged_ids": 1}     # identity.merges has one partition
    books = {name: ExportBook(name, partitions[what]) for d in settings.destinations
             for name, what in exporters_of(d)}
    for m in await kafka.read_all(settings, settings.topics.name("export_ledger")):
        r = LedgerRecord.decode(m.value)
        if r.destination in books:
            books[r.destination].add(r)
    return export_status(settings, books, hours)


def render(doc: dict[str, Any]) -> str:
    out = []
    for d in doc["destinations"]:
        out.append(f"{d['destination']}: project {d['project']}, {d['layout']} layout, s3://{d['bucket']}/{d['prefix']}"
                   f"  [{d['state']}]")
        if "hours" not in d:
            continue
        out.append(f"  sealed through {d['sealed_through'] or '-'}; partitions: "
                   + ", ".join(f"{p}: {h or '-'}" for p, h in d["partitions"].items()))
        if d["last_error"]:
            e = d["last_error"]
            out.append(f"  last error {e['at']}: {e['reason']}: {e['detail']}")
        out.append(f"  {'hour (UTC)':<21} {'state':<7} {'marker':<7} {'objects':>7} {'events':>10} {'bytes':>12}  "
                   "last error")
        for h in d["hours"]:
            err = f"{h['last_error']['reason']} at {h['last_error']['at']}" if h["last_error"] else ""
            out.append(f"  {h['hour']:<21} {h['state']:<7} {'yes' if h['complete_marker'] else 'no':<7} "
                       f"{h['objects']:>7} {h['events']:>10} {h['bytes']:>12}  {err}".rstrip())
    return "\n".join(out)
