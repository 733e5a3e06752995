"""Every metric, declared once. Label values come from small fixed sets, never from data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_INGESTED = Counter("stream_ingest_events_total", "Raw events read from events.ingest.")
EVENTS_VALID = Counter("stream_ingest_valid_events_total", "Events validated and written to events.valid.")
EVENTS_DEAD_LETTERED = Counter("stream_ingest_dead_lettered_events_total",
                               "Inputs written to the dead-letter topic.", ["reason"])
DEDUPE_EVENTS = Counter("stream_dedupe_events_total", "Events read by the dedupe stage.")
DEDUPE_DUPLICATES = Counter("stream_dedupe_duplicates_total", "Events dropped as duplicates.")
EXPORT_EVENTS = Counter("stream_export_events_total", "Rows written to exported objects.", ["destination"])
EXPORT_OBJECTS = Counter("stream_export_objects_total", "Objects written to S3.", ["destination", "reason"])
EXPORT_BYTES = Counter("stream_export_bytes_total", "Compressed bytes written to S3.", ["destination"])
EXPORT_SKIPPED = Counter("stream_export_replayed_events_total",
                         "Rows skipped because the ledger shows them already written.", ["destination"])
EXPORT_UPLOAD_FAILURES = Counter("stream_export_upload_failures_total",
                                 "Failed uploads, retried: transient (throttling, 5xx, connection) or permanent "
                                 "(access, bucket: someone must act).", ["destination", "kind"])
EXPORT_FAILING = Gauge("stream_export_destination_failing",
                       "1 while the destination's uploads fail, 0 once one succeeds.", ["destination"])
