"""Every metric, declared once. Label values come from small fixed sets, never from data.

Names follow Prometheus conventions: ``stream_<stage>_<noun>_total`` for
counters, ``_seconds`` and ``_bytes`` for units, ``_timestamp_seconds`` for
points in time. Labels:

- ``stage``: ingest, dedupe, export, api
- ``reason``: a dead-letter reason code (``stream.events.normalize.Reason``), a
  close reason (``stream.export.rotation.CloseReason``) or an upload failure
  reason (``stream.s3.errors.FAILURE_REASONS``)
- ``destination``: a destination name from the configuration
- ``consumer``: ingest, dedupe, or ``export-<destination>``
- ``route``: an HTTP route template, ``status``: an HTTP status code
- ``cohort``: a cohort id from the configuration (cohorts[].id)
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- events through the pipeline ----------------------------------------------------------------------------------
EVENTS_INGESTED = Counter("stream_ingest_events_total", "Raw messages read from events.ingest.")
EVENTS_VALID = Counter("stream_ingest_valid_events_total", "Events validated and written to events.valid.")
EVENTS_CLAMPED = Counter("stream_ingest_clamped_events_total",
                         "Events whose server time was ahead of the ingest clock by more than ingest.max_clock_skew_s "
                         "and was replaced by the ingest clock (a producer's clock is wrong).")
EVENTS_DEAD_LETTERED = Counter("stream_dead_letter_events_total",
                               "Inputs written to the dead-letter topic, by the stage that rejected them.",
                               ["stage", "reason"])
RECORDS_READ_BACK = Counter("stream_agent_records_read_back_total",
                            "Records of an agent's input that the consumer passed over (around a rebalance) and the "
                            "agent read back from Kafka (stream.agents.contiguous).", ["stage"])
DEDUPE_EVENTS = Counter("stream_dedupe_events_total", "Events read by the dedupe stage.")
DEDUPE_DUPLICATES = Counter("stream_dedupe_duplicates_total", "Events dropped as duplicates.")
DEDUPE_ACCEPTED = Counter("stream_dedupe_accepted_events_total", "Events written to events.accepted.")
IDENTITY_IDS = Counter("stream_identity_ids_total", "amplitude_ids allocated (new devices and new (device, user) "
                       "pairs).")
IDENTITY_LINKS = Counter("stream_identity_links_total", "Links sent to the user side (new (device, user) pairs).")
IDENTITY_MERGES = Counter("stream_identity_merges_total", "Merge records produced (an id merged into a user's).")
IDENTITY_REMAPS = Counter("stream_identity_remaps_total", "Remaps applied to the device state.")
IDENTITY_DROPPED = Counter("stream_identity_updates_dropped_total",
                           "User or group property updates not applied because they would have grown the "
                           "properties past identity.max_properties_bytes (the events are exported).")
IDENTITY_HELD = Counter("stream_identity_held_events_total",
                       "Events held from a device's first event with a new user_id until the user side answered "
                       "the link (identity.hold_s).")
IDENTITY_UNANSWERED = Counter("stream_identity_unanswered_events_total",
                              "Held events exported without the user side's answer, because they were held "
                              "identity.hold_s or into a later hour: a user known elsewhere has the device's own id "
                              "and properties on them.")
IDENTITY_HOLD_SECONDS = Histogram("stream_identity_hold_seconds",
                                  "How long a device's rows were held for the user side's answer, from the Kafka "
                                  "timestamp of the events.valid message that held the first one.",
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
IDENTITY_PRUNED = Counter("stream_identity_journal_pruned_total",
                          "Replay journal entries deleted because their batches are below the committed offset.")
IDENTITY_PRUNE_FAILURES = Counter("stream_identity_journal_prune_failures_total",
                                  "Prunings of the replay journal skipped because the committed offset could not be "
                                  "read (the journal grows until it can).")
IDENTITY_READ_BACK = Counter("stream_identity_held_rows_read_back_total",
                             "Held rows whose events.valid message was not in the worker's memory when they were let "
                             "go (after a restart or a rebalance) and was read back from the topic.")
IDENTITY_ROLLBACKS = Counter("stream_identity_rollbacks_total", "Batches of identity state rolled back through the "
                             "journal before a replayed batch (after a crash).")
CONSUMER_LAG = Gauge("stream_consumer_lag_messages",
                     "Messages between a consumer's position and the end of the partitions this worker reads, "
                     "summed per topic.", ["consumer", "topic"])

# --- export ------------------------------------------------------------------------------------------------------
EXPORT_EVENTS = Counter("stream_export_events_total", "Rows written to exported objects.", ["destination"])
EXPORT_OBJECTS = Counter("stream_export_objects_total", "Objects written to S3, by why they were closed.",
                         ["destination", "reason"])
EXPORT_BYTES = Counter("stream_export_bytes_total", "Compressed bytes written to S3.", ["destination"])
EXPORT_SKIPPED = Counter("stream_export_replayed_events_total",
                         "Rows skipped because the ledger shows them already written.", ["destination"])
EXPORT_MARKERS = Counter("stream_export_markers_total", "_complete markers written for sealed hours.",
                         ["destination"])
EXPORT_UPLOAD_FAILURES = Counter("stream_export_upload_failures_total",
                                 "Failed S3 requests of the exporter, all retried, by reason "
                                 "(throttled, server_error, connection, timeout: transient; access_denied, "
                                 "kms_denied, no_such_bucket, wrong_region, credentials, other: someone must act).",
                                 ["destination", "reason"])
EXPORT_LOST = Counter("stream_export_lost_messages_total",
                      "Messages of the exporter's topic deleted by its retention before the destination exported them "
                      "(it was disabled or failing for longer than the retention): their events are missing from the "
                      "destination until its hours are rebuilt from the archive.", ["destination"])
EXPORT_FAILING = Gauge("stream_export_destination_failing",
                       "1 while the destination's uploads fail with an error retrying cannot fix (access, bucket, "
                       "key, region), 0 otherwise.", ["destination"])
EXPORT_RETRYING = Gauge("stream_export_destination_retrying",
                        "1 while the destination's uploads fail and are being retried (any reason), 0 otherwise.",
                        ["destination"])
EXPORT_OLDEST_AGE = Gauge("stream_export_oldest_unexported_event_age_seconds",
                          "Age (by server_upload_time) of the oldest event this worker has read for the destination "
                          "but not yet written to S3; 0 when everything read is written.", ["destination"])
EXPORT_LAST_SEALED = Gauge("stream_export_last_sealed_hour_timestamp_seconds",
                           "Start of the latest hour sealed on every partition of the destination (its _complete "
                           "marker is due), as a Unix timestamp.", ["destination"])

# --- HTTP API ----------------------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("stream_http_requests_total", "HTTP requests answered, by route and status.",
                        ["route", "status"])
HTTP_DURATION = Histogram("stream_http_request_duration_seconds", "Time to answer an HTTP request.", ["route"],
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
API_EVENTS = Counter("stream_api_events_total",
                     "Events received by the HTTP API, by outcome (accepted, rejected, throttled).", ["outcome"])
API_BUSY = Counter("stream_api_busy_total", "Requests answered 503 because the process held api.max_inflight_bytes "
                   "of requests already (the clients send them again).")
API_PRODUCE_DURATION = Histogram("stream_api_produce_duration_seconds",
                                 "Time from handing a request's batches to the producer to the broker's "
                                 "acknowledgement of all of them.",
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))

# --- access --------------------------------------------------------------------------------------------------------
AUTH_FAILURES = Counter("stream_auth_failures_total",
                        "Failed authentications, by surface (api, admin, console) and outcome (refused: a wrong or "
                        "missing credential; limited: refused unseen because the address failed too often).",
                        ["surface", "outcome"])

# --- mirror -------------------------------------------------------------------------------------------------------
MIRROR_MUTATIONS = Counter(
    "stream_mirror_mutations_total",
    "Mirror mutations read from events.mutations, by op (insert, update, delete) and outcome: routed (to the hours "
    "holding its event), new (an INSERT of an insert_id no hour holds: a new event), folded (applied to such an "
    "INSERT of the same batch), unknown (an UPDATE or DELETE naming no indexed event: dead-lettered), "
    "insert_conflict (an INSERT of a held insert_id, mirror.insert_is_update off: ignored). Counted by the worker "
    "that applies a take, once per message of events.mutations it applies: a file the import read again (a crash "
    "between producing its rows and writing its state, or stream import retry) has its mutations on "
    "events.mutations again and they are counted again, as is a take applied again after a crash or on another "
    "worker after a rebalance; each row once per file: stream import status / history.", ["op", "outcome"])
MIRROR_WAITING = Gauge("stream_mirror_oldest_waiting_seconds",
                       "Age of the oldest mirror mutation this worker took from events.mutations and has not applied "
                       "yet (being logged, or its hours pending and not rebuilt); 0 when none waits. Mutations not "
                       "taken yet show as consumer lag.")
MIRROR_PENDING_HOURS = Gauge("stream_mirror_pending_hours",
                             "Hours (per project) this worker's mirror stage has logged mutations in and not rebuilt "
                             "yet, over its partitions of events.mutations: rebuilt once it has taken every mutation "
                             "waiting, or once the oldest has waited mirror.rebuild_within_s.")
MIRROR_HOURS_REWRITTEN = Counter("stream_mirror_hours_rewritten_total",
                                 "Hours rebuilt for mirror mutations (one per project and pending hour of a rebuild, "
                                 "however many takes touched it).")
MIRROR_TAKE_BYTES = Histogram("stream_mirror_take_bytes",
                              "Bytes of the records of events.mutations of each take of the mirror stage (keys and "
                              "values): a take closes at mirror.take_max_bytes or 20,000 mutations, after half a "
                              "second without a mutation, or ten seconds after its first.",
                              buckets=(1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 21, 1 << 22, 1 << 23, 1 << 24,
                                       1 << 25, 1 << 26, 1 << 27))
MIRROR_REWRITE_LAG = Histogram("stream_mirror_rewrite_lag_seconds",
                               "Time from a mirror file's arrival (its S3 LastModified) to the rewrite of the hours "
                               "its mutations touched, once per file and partition of each take applied.",
                               buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))

# --- profiles -----------------------------------------------------------------------------------------------------
PROFILE_MUTATIONS = Counter(
    "stream_profile_mutations_total",
    "Profile mutations the profiles stage read from profiles.mutations, by op (insert, update, delete) and outcome: "
    "applied (the profile changed), unchanged (a newer mutation setting what is there), replayed (the mutation that "
    "set the stored profile, again after a crash), stale (older than the stored profile: nothing), invalid (not a "
    "profile mutation record: dead-lettered; op is unknown).", ["op", "outcome"])
PROFILE_SNAPSHOTS = Counter("stream_profile_snapshots_total",
                            "Daily snapshots of changed profiles written to a destination with exports: profiles.",
                            ["destination"])

# --- S3 import ---------------------------------------------------------------------------------------------------
IMPORT_FILES = Counter("stream_import_files_total",
                       "Import files by outcome: done (every row produced or dead-lettered), failed (unreadable: "
                       "reason says why), skipped (already imported or failed: a duplicate discovery).",
                       ["source", "outcome", "reason"])
IMPORT_ROWS = Counter("stream_import_rows_total",
                      "Rows of import files by outcome: imported (written to events.valid, or to events.mutations "
                      "for a mirror source) or dead_lettered.",
                      ["source", "outcome"])
IMPORT_MUTATIONS = Counter("stream_import_mutations_total",
                           "Mirror mutations read from a mirror source's rows and produced to events.mutations (to "
                           "profiles.mutations for a source of profiles), by op (insert, update, delete).",
                           ["source", "op"])
IMPORT_FIELDS_LEFT_OUT = Counter("stream_import_converter_fields_left_out_total",
                                 "Fields of converted rows the converter could not evaluate (left out of the "
                                 "event, as Amplitude does).", ["source"])
IMPORT_LAG = Histogram("stream_import_lag_seconds",
                       "From an import file's creation (the notification's eventTime, or LastModified for a scan) "
                       "to its last row acknowledged on events.valid (events.mutations for a mirror source).",
                       ["source"],
                       buckets=(.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 4 * 3600, 86400))
IMPORT_IN_PROGRESS = Gauge("stream_import_files_in_progress",
                           "Import files being read by this process.", ["source"])
IMPORT_CONVERT_PROCESSES = Gauge("stream_import_convert_processes",
                                 "Processes converting this worker's import rows (worker.import_processes once its "
                                 "first file started them; 0 while none run and when the worker converts them).")
IMPORT_LAST_DONE = Gauge("stream_import_last_file_done_timestamp_seconds",
                         "When this process last finished an import file of the source, as a Unix timestamp.",
                         ["source"])
IMPORT_SQS_MESSAGES = Counter(
    "stream_import_sqs_messages_total",
    "SQS messages of an import source's queue, by outcome: received (every message), test_event (the s3:TestEvent "
    "S3 sends when a notification configuration is saved), ignored (announces nothing the sources on the queue "
    "import: other events, buckets, prefixes or keys), unreadable (not an S3 event notification, or a record that "
    "cannot be read: left on the queue for its redrive policy), deleted (deleted from the queue once handled).",
    ["source", "outcome"])
IMPORT_SQS_VISIBILITY_EXTENSIONS = Counter(
    "stream_import_sqs_visibility_extensions_total",
    "Messages whose visibility timeout was extended because Kafka took more than half of it to acknowledge their "
    "discovery records.", ["source"])
IMPORT_SQS_ERRORS = Counter(
    "stream_import_sqs_errors_total",
    "Failed calls to an import source's SQS queue, all retried, by reason (throttled, server_error, connection, "
    "timeout: transient; access_denied, no_such_queue, credentials, other: someone must act).", ["source", "reason"])
IMPORT_FILES_DISCOVERED = Counter(
    "stream_import_files_discovered_total",
    "Import files discovered and acknowledged on imports.files, by how they were found (sqs, scan). A file may be "
    "discovered more than once; it is imported once.", ["source", "found_by"])
IMPORT_SCAN_LISTED = Counter(
    "stream_import_scan_listed_objects_total",
    "Objects listed by an import source's list scans (every object under the prefix, wanted or not).", ["source"])

# --- cohort syncs ------------------------------------------------------------------------------------------------
COHORT_MEMBERS = Gauge("stream_cohort_members", "Users in the cohort at its latest completed sync to the "
                       "destination (the rows of its existing file).", ["cohort", "destination"])
COHORT_ENTERING = Counter("stream_cohort_entering_users_total", "Rows of the entering files of completed syncs.",
                          ["cohort", "destination"])
COHORT_EXITING = Counter("stream_cohort_exiting_users_total", "Rows of the exiting files of completed syncs.",
                         ["cohort", "destination"])
COHORT_SYNC_DURATION = Histogram("stream_cohort_sync_duration_seconds",
                                 "Time to diff and write a sync's three files and its completion record (the "
                                 "events' reading not included).", ["cohort", "destination"],
                                 buckets=(.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
COHORT_SYNC_FAILURES = Counter("stream_cohort_sync_failures_total",
                               "Failed attempts at cohort syncs, by reason: an S3 failure reason of "
                               "stream.s3.errors, or chain (the diff cannot follow the latest completed sync: "
                               "another run completed one meanwhile, a later one is complete, or the previous "
                               "sync's existing file is missing), events (reading events.accepted or "
                               "identity.merges failed), other.",
                               ["cohort", "destination", "reason"])
COHORT_STATE_RECORDS = Counter("stream_cohort_state_records_total",
                               "Records of the cohorts topic the cohorts stage's state step handled, by outcome: "
                               "applied (an event or merge folded into a user's state), replayed (one it had "
                               "folded already, dropped); and users the day index touched: expired (counters left "
                               "their windows), forgotten (no event for cohort_state.state_days).", ["outcome"])
COHORT_LAST_COMPLETED = Gauge("stream_cohort_last_completed_sync_timestamp_seconds",
                              "Scheduled time of the latest completed sync of the cohort to the destination (or, "
                              "before any, when the worker began scheduling it); with several routing keys, the "
                              "oldest. Set by the worker's cohorts stage.", ["cohort", "destination"])
COHORT_SYNC_INTERVAL = Gauge("stream_cohort_sync_interval_seconds",
                             "The cadence of the cohort's syncs to the destination in seconds (3600 hourly, 86400 "
                             "daily, 0 once).", ["cohort", "destination"])
COHORT_SYNC_DUTY = Gauge("stream_cohort_sync_duty",
                         "1 on the worker that runs the cohort syncs (the one assigned partition 0 of the cohorts "
                         "topic), else 0: summed over the workers, 1 (0 while a rebalance moves it).")
COHORT_SYNC_REQUESTS = Counter("stream_cohort_sync_requests_total",
                               "Cohort \"sync now\" requests, by outcome: queued (recorded on the sync requests "
                               "topic by the worker whose admin API or console took it), run (the worker holding "
                               "the sync duty ran each sync it asked for), dropped (older than 24 hours when a "
                               "worker holding the duty read it: never run).", ["outcome"])
COHORT_CONSECUTIVE_FAILURES = Gauge("stream_cohort_sync_consecutive_failures",
                                    "Failed attempts in a row at the cohort's sync to the destination (0 once one "
                                    "completes); the worker retries with a backoff of 1 minute doubling to 30.",
                                    ["cohort", "destination"])
