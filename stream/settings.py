"""The typed settings tree: one YAML file plus ``STREAM_*`` environment variables.

Environment variables override the file; nested keys use a double underscore
(``STREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092``). Unknown keys are errors that
name their path. Every field carries a description, which ``stream config-doc``
prints as the reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stream.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


COMPRESSION_LEVELS = {"gzip": (1, 9), "lz4": (1, 17), "zstd": (-131072, 22)}
"""The levels each codec takes (Kafka's compression.<codec>.level, KIP-390; liblz4 compresses 13 to 17 as 12)."""

ZSTD_LEVEL = 2
"""kafka.compression_level when it is not set and the codec is zstd (BENCHMARKS.md, "The producer's zstd level")."""


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated (host:port,...).")
    client_id: str = Field("stream", description="Client id sent to the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*.")
    sasl_username: str | None = Field(None, description="SASL user name (set it through STREAM_KAFKA__SASL_USERNAME).")
    sasl_password: str | None = Field(None, description="SASL password (set it through STREAM_KAFKA__SASL_PASSWORD).")
    session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer group session timeout. Short values speed up group joins and "
        "rebalances but evict a worker that stalls for longer than this.")
    heartbeat_interval_s: float = Field(
        3.0, gt=0, description="Consumer group heartbeat interval; keep it below a third of session_timeout_s.")
    compression_type: Literal["none", "gzip", "lz4", "zstd"] = Field(
        "zstd", description="Compression of the batches stream produces. Export rows compress about 9x with "
        "zstd, which cuts the bytes of every internal hop; Kafka >= 2.1 reads zstd.")
    compression_level: int | None = Field(
        ZSTD_LEVEL, description="Level of compression_type the batches stream produces are compressed at, as Kafka's "
        "producer setting compression.<codec>.level: zstd -131072 to 22, gzip 1 to 9, lz4 1 to 17; null (in the "
        "environment STREAM_KAFKA__COMPRESSION_LEVEL=null): the codec's default (zstd 3, gzip 9, lz4 9). Unset, it "
        "is 2 with zstd and null with the other codecs. zstd at 2 makes the same bytes as at 3 on the event batches (199 an event) with 10% less CPU (18% fewer "
        "instructions); 1 is no faster and 4% larger, -1 8% faster but 1.5x the bytes (BENCHMARKS.md, \"The "
        "producer's zstd level\"). The consumers read any level. Applied to every producer of the process "
        "(aiokafka has no setting for it: start-up fails, naming aiokafka's version, if its record batch builder "
        "cannot be given the level).")
    max_request_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest produce request (and batch message) the producer sends; "
        "the brokers' message.max.bytes must allow it.")
    prefetch_messages: int = Field(
        64, ge=1, description="Batch messages the dedupe stage may hold fetched ahead of processing, per stream. "
        "A batch is up to half of max_request_bytes, so this bounds the stage's memory; more only helps while "
        "the broker is far away.")

    @model_validator(mode="before")
    @classmethod
    def _level_of_codec(cls, data: Any) -> Any:
        # ZSTD_LEVEL is zstd's: with another codec, a level left unset is that codec's default
        if isinstance(data, dict) and "compression_level" not in data \
                and data.get("compression_type", "zstd") != "zstd":
            return {**data, "compression_level": None}
        if isinstance(data, dict) and isinstance(data.get("compression_level"), str) \
                and data["compression_level"].strip().lower() in ("", "null", "none"):
            # the environment's null (STREAM_KAFKA__COMPRESSION_LEVEL=null): a variable has no other way to say it
            return {**data, "compression_level": None}
        return data

    @field_validator("compression_level")
    @classmethod
    def _level_in_range(cls, level: int | None, info: Any) -> int | None:
        codec = info.data.get("compression_type")
        if level is None or codec is None:
            return level
        if codec == "none":
            raise ValueError(f"compression_type none compresses nothing: leave compression_level unset (null), not "
                             f"{level}")
        lo, hi = COMPRESSION_LEVELS[codec]
        if not lo <= level <= hi:
            raise ValueError(f"{codec} compresses at levels {lo} to {hi} (Kafka's compression.{codec}.level), not "
                             f"{level}")
        return level


class TopicSettings(_Section):
    prefix: str = Field("", description="Prepended to every topic name (one deployment per prefix).")
    ingest: str = Field("events.ingest", description="Raw JSON events from producers, one event per message.")
    valid: str = Field("events.valid", description="Validated events in batches, partitioned by device_id.")
    accepted: str = Field("events.accepted", description="Deduplicated events in batches, read by the exporters.")
    dead_letter: str = Field("events.dead-letter",
                             description="Rejected input with its reason (schemas/dead_letter.avsc).")
    identity_links: str = Field("identity.links", description="(device, user_id) pairs seen for the first time, "
                                "keyed by user_id, for the identity stage's user side.")
    identity_merges: str = Field("identity.merges", description="Merge records (amplitude_id merged into "
                                 "another), read by destinations that export merged ids. One partition.")
    export_ledger: str = Field("exports.ledger",
                               description="One record per object written to S3 (schemas/export_ledger.avsc).")
    export_control: str = Field(
        "exports.control", description="Runtime control of the exports (destinations turned off and on, backfills "
        "cancelled): JSON records, compacted, one partition (stream/export/control.py).")
    console_sessions: str = Field(
        "console.sessions", description="Web console sessions logged out, which every worker follows so that a "
        "logged-out session cookie is refused on every worker: JSON records, one partition, kept a day "
        "(stream/admin/sessions.py).")
    ingest_clamps: str = Field(
        "events.ingest-clamps", description="The ingest stage's record of the server times it replaced "
        "(ingest.max_clock_skew_s), so that a replay after a crash replaces them with the same time. Written only "
        "when a producer's clock is ahead; one partition.")
    import_files: str = Field(
        "imports.files", description="Import files discovered on the sources' buckets (by SQS notifications or the "
        "list scan), keyed by source and key (schemas/import_file.avsc); the partition that owns a key decides "
        "whether the file was already imported.")
    mutations: str = Field(
        "events.mutations", description="Mirror mutations read from the rows of mirror sources (schemas/mutation.avsc), "
        "each in the partition of its project and insert_id: every mutation of an event, and the mirror index entries "
        "of its insert_id, are in one partition. A record carries many, all of one partition (schemas/mutations.avsc, "
        "keyed by its first one's key); records of one mutation, as earlier versions wrote them, are read too.")
    profiles: str = Field(
        "profiles.mutations", description="Profile mutations read from the rows of sources of profiles, keyed by "
        "project and user_id (stream.imports.profiles); the profiles stage applies them to its table, whose "
        "compacted changelog holds each user's current profile.")
    mirror_index: str = Field(
        "mirror.index", description="Entries of the mirror index (which hours hold each insert_id of a project with a "
        "mirror source), re-keyed from events.accepted by project and insert_id, in batches per partition.")
    cohorts: str = Field(
        "cohorts.activity", description="The cohorts stage's records (schemas/cohort_record.avsc): accepted events "
        "re-keyed by amplitude_id, merges and each events.accepted partition's progress, read by the stage's state "
        "step; partitioned like events.accepted.")
    cohort_sync_requests: str = Field(
        "cohorts.sync-requests", description="Cohort \"sync now\" requests, from any worker's admin API or console, "
        "and what became of each (run or dropped), read by the worker holding the sync duty: JSON records, one "
        "partition, kept two days (stream/cohorts/requests.py).")
    partitions: int = Field(4, ge=1, le=999, description="Partitions of events.valid and events.accepted "
                            "(and of the dedupe changelog); the export key encodes the partition in three digits.")
    ingest_partitions: int = Field(4, ge=1, description="Partitions of events.ingest when stream creates it.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of the topics stream creates.")
    retention_days: float = Field(
        7, ge=1, description="Retention of events.ingest, events.valid and events.accepted (set on the topics stream "
        "creates; stream check compares it with the topics'). It bounds how long a destination may stay disabled or "
        "failing and still catch up, and how far back a backfill reads from events.accepted (older hours come from "
        "the archive destination). Offsets deleted before a destination exported them are reported as data lost.")
    dead_letter_retention_days: float = Field(14, gt=0, description="Retention of the dead-letter topic.")
    ledger_retention_days: float = Field(
        30, gt=0, description="Retention of the export ledger: how far back the status view sees, and it must "
        "cover more than any destination may stay disabled or failing (a resumed exporter reads the ledger of "
        "what it had written after its committed offsets).")

    def name(self, topic: str) -> str:
        """The full name of one of the topics above, with the prefix."""
        return self.prefix + getattr(self, topic)


class IngestSettings(_Section):
    default_project: int | None = Field(
        None, description="Project of events.ingest messages that carry no `project` header. "
        "Without it, such messages go to the dead-letter topic (reason unknown_project).")
    unknown_fields: Literal["dead_letter", "keep"] = Field(
        "dead_letter", description="An event key that is neither an HTTP V2 event key nor an export field: "
        "dead_letter rejects the event (reason unknown_field); keep stores the value under `data`.")
    max_event_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest raw event accepted; larger ones are dead-lettered (too_large).")
    min_id_length: int = Field(5, ge=1,
                               description="user_id/device_id shorter than this are removed, as Amplitude does.")
    max_clock_skew_s: float = Field(
        300, ge=0, description="A server time (the Kafka record's timestamp, or server_upload_time / "
        "server_received_time in the event) ahead of the ingest clock by more than this is replaced by the ingest "
        "clock and counted (stream_ingest_clamped_events_total): a producer's clock must never hold hours open. "
        "Times in the past are kept as they are.")
    batch_max_events: int = Field(500, ge=1, le=65536, description="Most events per batch message on events.valid "
                                  "(at most 65536: the events of a batch the HTTP API writes are told apart by "
                                  "their index in it).")
    poll_max_records: int = Field(5000, ge=1, description="Most records one poll of events.ingest returns.")


class DedupeSettings(_Section):
    window_days: float = Field(7, gt=0, description="An event whose (device_id, insert_id) was seen this "
                               "recently (by server_upload_time) is dropped.")
    block_cache_mb: int = Field(64, ge=1, description="RocksDB block cache of each partition's dedupe state: what "
                                "the state may hold in memory for reads (faust's default, 2 GiB a partition, lets "
                                "a long-running worker grow far beyond its pod's limit).")
    write_buffer_mb: int = Field(16, ge=1, description="RocksDB write buffer (memtable) of each partition's dedupe "
                                 "state; two of them at most, then they are flushed to disk. A worker's state memory "
                                 "is at most its partitions x (block_cache_mb + 2 x write_buffer_mb).")


class IdentitySettings(_Section):
    enabled: bool = Field(True, description="Give every exported event its amplitude_id and the user's fields "
                          "(user_properties, user_creation_time, start_version, paying, group_properties), and "
                          "produce merge records (stream/identity/device.py says how). Off: those columns stay "
                          "null or as sent, and no destination may export merged ids.")
    max_properties_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest a user's (or a group's) properties may grow, as JSON. An update "
        "that would take them past it is not applied and is counted (stream_identity_updates_dropped_total): the "
        "event is exported with the properties as they were, as Amplitude ingests events whose property updates it "
        "drops. It bounds every exported row (the event plus its user's properties) and each user's state.")
    hold_s: float = Field(
        30.0, ge=0, description="Longest the rows of a device are held, from its first event with a user_id new to "
        "it, until the user side answers that link, so that a user known elsewhere has the user's amplitude_id and "
        "properties on every event from the first (stream/identity/stage.py says how). Rows held longer (or "
        "into a later hour) are exported with what their partition knows when its next batch is processed, and "
        "counted "
        "(stream_identity_unanswered_events_total). 0: nothing is held; the first events of a new (device, user) "
        "pair carry the device's id until the merge comes back.")
    block_cache_mb: int = Field(64, ge=1, description="RocksDB block cache of each partition's identity state "
                                "(devices, users, profiles), as dedupe.block_cache_mb is for the dedupe state.")
    write_buffer_mb: int = Field(16, ge=1, description="RocksDB write buffer (memtable) of each partition's "
                                 "identity state; two of them at most. With identity on, a worker's state memory is "
                                 "at most its partitions x (both block caches + 2 x both write buffers).")


class EncryptionSettings(_Section):
    type: Literal["none", "sse-s3", "sse-kms"] = Field(
        "sse-s3", description="Server-side encryption of written objects.")
    kms_key_id: str | None = Field(None, description="KMS key id or ARN, required for sse-kms.")

    @model_validator(mode="after")
    def _kms_needs_key(self) -> EncryptionSettings:
        if self.type == "sse-kms" and not self.kms_key_id:
            raise ValueError("kms_key_id is required when type is sse-kms")
        return self


class NotifySettings(_Section):
    """Who hears of a destination whose uploads keep failing."""

    after_failures: int = Field(5, ge=1, description="Failed upload attempts in a row (as the ledger records them, "
                                "at most one a minute per worker and reason) after which one notification of the "
                                "incident is sent; one more says when exports succeed again.")
    emails: list[str] = Field(default_factory=list, description="Addresses to email (notifications.smtp).")
    webhooks: list[str] = Field(default_factory=list, description="Names of notifications.webhooks to call.")


class DestinationSettings(_Section):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                      description="Unique name: names the consumer group and appears in metrics and the ledger.")
    project: int = Field(..., description="Project whose events this destination exports.")
    layout: Literal["amplitude", "segment"] = Field(
        "amplitude", description="Object layout and record format: `amplitude` (Amplitude's raw export: "
        "<prefix><project>/<project>_<day>_<H>#<n>.json.gz, export rows, _complete markers) or `segment` (Segment's "
        "S3 destination: <prefix>segment-logs/<source_id>/<received_day>/<file>.gz, full Segment messages).")
    segment_source_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Segment layout: the segment-logs/<source_id>/ folder of "
        "events that did not come through Segment's tracking API (Amplitude events); default: the project id.")
    exports: Literal["events", "merged_ids", "both", "profiles"] = Field(
        "events", description="What the destination exports: `events` (the hourly event objects), `merged_ids` "
        "(the hourly merged Amplitude IDs files of the project, <prefix><project>/-<org_id>_<yyyy-MM-dd>_<H>.json.gz, "
        "FORMATS.md 1.5) or `both`, as Amplitude's export offers the two data sets; or `profiles` (the project needs "
        "a source of profiles): one snapshot per UTC day of the profiles that changed that day, "
        "<prefix><project>/profiles/<project>_profiles_<yyyy-MM-dd>.json.gz (docs/imports.md).")
    org_id: int | None = Field(
        None, gt=0, description="Organization id: names the merged-IDs files "
        "(`<project>/-<org_id>_<day>_<H>.json.gz`); required when exports is merged_ids or both.")
    bucket: str = Field(..., min_length=3, description="S3 bucket name.")
    prefix: str = Field("", description="Key prefix inside the bucket, e.g. `amp/`; objects go under "
                        "<prefix><project>/.")
    region: str | None = Field(None, description="Bucket region; defaults to s3.region.")
    endpoint_url: str | None = Field(None, description="S3 endpoint of this destination; defaults to "
                                     "s3.endpoint_url (unset for AWS).")
    role_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$",
        description="IAM role to assume for this destination (e.g. a role in the bucket owner's account); unset: "
        "the worker's own credentials (the AWS default chain: env, profile, IRSA).")
    external_id: str | None = Field(None, description="External ID to pass when assuming role_arn, if its trust "
                                    "policy requires one.")
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings, description="Server-side encryption.")
    enabled: bool = Field(True, description="A disabled destination keeps its place but exports nothing "
                          "(`stream exports disable` turns one off at runtime instead, without a restart).")
    notify: NotifySettings = Field(default_factory=NotifySettings, description="Notifications when uploads keep "
                                   "failing (and when they succeed again).")
    archive: bool = Field(
        False, description="This destination is the system of record: a backfill of hours events.accepted no longer "
        "holds reads them back from its objects. Amplitude layout only; at most one per project.")
    verify: bool = Field(
        True, description="Verify access (as `stream exports verify` does: a put under each prefix the layout writes, "
        "a multipart put for SSE-KMS) before the destination exports anything for the first time; until it passes, "
        "the destination is failing with the missing permission and nothing is read. false skips it.")
    close_grace_s: float = Field(
        60, ge=0, description="An hour closes (and is sealed) on a partition when the partition reaches events "
        "stamped this long after the hour's end, or when the partition is idle and the clock is this far past the "
        "hour; later events of the hour go into an extra object. Once every partition sealed an hour, its "
        "_complete marker is written.")
    idle_close_s: float = Field(
        10, ge=0, description="A partition counts as idle -- so the clock may close and seal its past hours -- once "
        "it has been caught up with nothing fetched for this long (end offsets alone are not trusted).")
    max_object_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="An object is closed and a new one started when its "
        "uncompressed size reaches this (deterministic: derived from the data, not the clock). Default 256 MiB; "
        "100 MB for the segment layout, as Segment rolls its files.")
    max_object_events: int = Field(
        1_000_000, gt=0, description="An object is closed and a new one started when it holds this many events.")

    @model_validator(mode="before")
    @classmethod
    def _segment_object_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("layout") == "segment" and "max_object_bytes" not in data:
            data = {**data, "max_object_bytes": 100 * 1000 * 1000}
        return data

    @model_validator(mode="after")
    def _merged_ids_need_an_org(self) -> DestinationSettings:
        if self.exports_merged_ids() and self.org_id is None:
            raise ValueError("org_id is required when exports is merged_ids or both")
        return self

    def exports_events(self) -> bool:
        return self.exports in ("events", "both")

    def exports_merged_ids(self) -> bool:
        return self.exports in ("merged_ids", "both")

    def exports_profiles(self) -> bool:
        return self.exports == "profiles"


class CsvSettings(_Section):
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field delimiter.")
    quote: str = Field('"', min_length=1, max_length=1, description="Quote character.")
    escape: str | None = Field(None, min_length=1, max_length=1, description="Escape character; none by default "
                               "(a quote inside quotes is doubled).")
    header: bool = Field(True, description="The first record names the columns; false: columns are named "
                         "\"0\", \"1\", ...")


class ImportRateSettings(_Section):
    events_per_s: float = Field(30_000, gt=0, description="Most rows per second one worker process reads the "
                                "source's files at, so that an import does not starve live traffic (Amplitude's "
                                "cap per project; N import replicas allow up to N times this).")
    files_per_s: float = Field(50, gt=0, description="Most files per second one worker process starts of the "
                               "source (Amplitude's cap per project).")


class ScanSettings(_Section):
    enabled: bool = Field(True, description="List the bucket to find files: every file when the source has no "
                          "queue, and what notifications missed when it has one.")
    interval_s: float = Field(60, gt=0, description="Pause between incremental scans: a listing that starts after "
                              "the greatest key found so far (StartAfter), for files named in the order they are "
                              "written, as Amplitude asks.")
    full_pass_s: float = Field(3600, gt=0, description="Pause between full passes, which list the whole prefix and "
                               "find files whose names sort before the greatest key.")


class SourceSettings(_Section):
    """One S3 import source (FORMATS.md 4): files on a bucket the team owns, read once each."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                      description="Unique name: in metrics, status, dead letters and the CLI.")
    project: int = Field(..., description="Project the imported rows belong to.")
    bucket: str = Field(..., min_length=3, description="Bucket holding the files.")
    prefix: str = Field("", description="Only keys under this prefix are imported.")
    region: str | None = Field(None, description="Bucket region; defaults to s3.region.")
    endpoint_url: str | None = Field(None, description="S3 endpoint of this source; defaults to s3.endpoint_url.")
    role_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$",
        description="IAM role to assume to list and read the bucket (`stream policy` prints its policies); unset: "
        "the worker's own credentials.")
    external_id: str | None = Field(None, description="External ID to pass when assuming role_arn.")
    converter: dict[str, Any] | str = Field(
        ..., description="Amplitude's converter configuration (FORMATS.md 4.3), as Amplitude writes it: a mapping or "
        "its JSON text, with converterConfig.convertToAmplitudeFunc and optionally fileType, compressionType and "
        "keyValidatorConfig.filterPattern. Checked and compiled when the settings load.")
    filter_pattern: str | None = Field(
        None, description="Java regular expression a key must match in full to be imported: the whole key or the "
        "key after the prefix (a pattern pasted from Amplitude works either way; keys outside the prefix are never "
        "imported); default: the converter's keyValidatorConfig.filterPattern, else every key under the prefix.")
    file_type: Literal["json", "csv", "parquet"] | None = Field(
        None, description="json (JSON lines), csv or parquet; default: the converter's fileType, else each file's "
        "name: .csv or .csv.gz is CSV, .parquet parquet, anything else JSON lines.")
    compression: Literal["auto", "gzip", "none"] | None = Field(
        None, description="gzip, none or auto (gzip when a file starts with gzip's magic bytes); default: the "
        "converter's compressionType, else auto.")
    csv: CsvSettings = Field(default_factory=CsvSettings, description="How CSV files are read.")
    data_type: Literal["event", "user_properties", "group_properties", "profiles"] = Field(
        "event", description="event: a row is an event (an event_type of $identify or $groupidentify makes it an "
        "identify or group identify); user_properties: a row sets a user's properties (an identify); "
        "group_properties: a row sets a group's properties (`groups` and `group_properties`, a group identify); "
        "profiles (strategy: mirror only): a row is a user's current properties (user_id and user_properties), "
        "set, replaced or deleted by its $mutation_type in the worker's profiles stage (docs/imports.md).")
    strategy: Literal["append_only", "mirror"] = Field(
        "append_only", description="append_only: each row is added, with the normal dedupe and identity. mirror "
        "(data_type event or profiles): each row is an INSERT, UPDATE or DELETE, named by the field the converter "
        "maps to $mutation_type (missing: UPDATE); of data_type event, an exported event named by its insert_id, "
        "applied to the exported hours without enrichment, and the project needs an archive destination; of "
        "profiles, a user's profile named by its user_id (docs/imports.md).")
    skip_user_properties_sync: bool = Field(
        True, description="Events' user_properties are exported with them but do not update the user's stored "
        "properties (Amplitude's default for cloud storage imports); a row's own $skip_user_properties_sync wins.")
    queue_url: str | None = Field(None, description="SQS queue receiving the bucket's ObjectCreated notifications "
                                  "(`stream import setup` configures them); unset: the list scan alone finds files.")
    queue_region: str | None = Field(None, description="Region of the queue; defaults to the bucket's.")
    rate: ImportRateSettings = Field(default_factory=ImportRateSettings, description="Limits of the source's "
                                     "reading.")
    scan: ScanSettings = Field(default_factory=ScanSettings, description="The list scan.")
    enabled: bool = Field(True, description="A disabled source discovers and reads nothing.")
    _compiled: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _compile_converter(self) -> SourceSettings:
        from stream.imports.converter import ConverterError, parse_converter_config
        try:
            compiled = parse_converter_config(self.converter)
        except ConverterError as exc:
            raise ValueError(f"converter: {exc}") from None
        for ours, theirs, key in ((self.file_type, compiled.file_type, "fileType"),
                                  (self.compression, compiled.compression, "compressionType"),
                                  (self.filter_pattern, compiled.filter_pattern, "keyValidatorConfig.filterPattern")):
            if ours is not None and theirs is not None and ours != theirs:
                raise ValueError(f"the converter's {key} is {theirs!r} but the source sets {ours!r}; keep one")
        if self.filter_pattern is not None and compiled.filter_pattern is None:
            from stream.imports.converter.javaregex import RegexError, compile_java_regex
            try:
                compile_java_regex(self.filter_pattern)
            except RegexError as exc:
                raise ValueError(f"filter_pattern: {exc}") from None
        if self.data_type == "profiles" and self.strategy != "mirror":
            raise ValueError("data_type: profiles are each user's current properties, which a row sets, replaces or "
                             "deletes (Amplitude's Mirror strategy; append_only does not apply to them): set "
                             "strategy: mirror")
        if self.strategy == "mirror" and self.data_type not in ("event", "profiles"):
            raise ValueError(f"strategy: mirror applies to data_type event only, not {self.data_type} (user and group "
                             "properties are appended, as Amplitude offers only Append Only for them; profiles, "
                             "which Amplitude mirrors, are a data type of their own, not a strategy of these): use "
                             "strategy: append_only")
        self._compiled = compiled
        return self

    @property
    def compiled(self) -> Any:
        """The checked converter configuration (``stream.imports.converter.ConverterConfig``)."""
        return self._compiled


class CohortSyncSettings(_Section):
    """One cohort synced to a cohort destination (FORMATS.md 6)."""

    cohort: str = Field(..., description="Id of the cohort (an entry of `cohorts`); without `_`, which separates the "
                        "parts of the file names.")
    cadence: Literal["once", "hourly", "daily"] = Field(
        "daily", description="once: a single sync, at the time of the first one; hourly / daily: one sync per "
        "hour / day of `time_zone`, stamped with the hour's / day's start (the worker's `cohorts` stage runs each "
        "when it is due; `stream cohorts sync` syncs the latest one due).")
    time_zone: str = Field("UTC", description="IANA time zone (e.g. Europe/Paris) whose midnight starts a daily "
                           "sync's day (and whose hours an hourly sync follows); the file names' time stays UTC.")
    routing_key: str = Field("", description="Suffix of the file names (`..._<difftype>_<routing_key>.csv`): letters, "
                             "digits, `.` and `-`, at most 64; empty: none.")
    properties: list[str] = Field(default_factory=list, description="User properties exported as columns after "
                                  "amplitudeID and userID, in this order.")

    @field_validator("routing_key")
    @classmethod
    def _routing_key(cls, value: str) -> str:
        import re
        if not re.fullmatch(r"[A-Za-z0-9.-]{0,64}", value):
            raise ValueError(f"{value!r}: a routing key has letters, digits, '.' and '-' only, at most 64 (an '_' "
                             "would split the file name `..._<difftype>_<routing_key>.csv` in the wrong place for "
                             "a reader that splits on '_')")
        return value

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone: write one such as UTC or Europe/Paris") from None
        return value


class CohortDestinationSettings(_Section):
    """A bucket receiving cohort syncs: three CSV files per sync (entering, exiting, existing), FORMATS.md 6."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                      description="Unique name: in metrics, the CLI and the sync records.")
    bucket: str = Field(..., min_length=3, description="S3 bucket name.")
    region: str | None = Field(None, description="Bucket region; defaults to s3.region.")
    endpoint_url: str | None = Field(None, description="S3 endpoint of this destination; defaults to "
                                     "s3.endpoint_url (unset for AWS).")
    role_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$",
        description="IAM role to assume to write the bucket; unset: the worker's own credentials.")
    external_id: str | None = Field(None, description="External ID to pass when assuming role_arn.")
    path_prefix: str = Field("cohorts/", description="Prepended to every file's key, as written (`cohorts/` makes a "
                             "folder).")
    records_prefix: str = Field(
        "_stream/cohorts/", description="Where the sync records go in the bucket (each sync's completion record, "
        "the pointer to the latest completed sync, failed attempts), under <records_prefix><name>/: by default a "
        "top-level prefix of its own, like stream's other internal state, so that a reader listing path_prefix "
        "finds only the CSV files.")
    require_suffix: bool = Field(False, description="Every sync here must set a routing_key, appended to each "
                                 "file's name (the vendor's \"Require suffix\" option).")
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings, description="Server-side encryption.")
    hyphen_time: bool = Field(False, description="Write the time in keys as YYYY-MM-DDTHH-MM instead of "
                              "YYYY-MM-DDTHH:MM, for tools that cannot take a colon in a key.")
    user_id_property: str | None = Field(
        None, min_length=1, description="User property whose value fills the userID column; unset: the user_id "
        "of the user's latest event.")
    syncs: list[CohortSyncSettings] = Field(default_factory=list, description="The cohorts synced here.")

    @model_validator(mode="after")
    def _one_sync_per_file_name(self) -> CohortDestinationSettings:
        seen = [(s.cohort, s.routing_key) for s in self.syncs]
        if len(set(seen)) != len(seen):
            raise ValueError("syncs: two syncs of one cohort with the same routing_key would write the same files; "
                             "give each its own routing_key")
        if self.require_suffix:
            for j, sync in enumerate(self.syncs):
                if not sync.routing_key:
                    raise ValueError(f"syncs[{j}].routing_key: require_suffix is set, so every sync of {self.name} "
                                     "needs a routing_key (the suffix of its files' names); set one or unset "
                                     "require_suffix")
        return self


class SegmentSourceSettings(_Section):
    write_key: str = Field(..., min_length=1, description="The source's write key (HTTP Basic user name or "
                           "`writeKey` in the body).")
    source_id: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$",
                           description="Source id: the `{source_id}` folder of the Segment layout "
                           "(segment-logs/<source_id>/<received_day>/).")


MAX_PROJECT_ID = 2**63 - 1
"""The largest project id: batches carry it as an Avro long (signed 64 bits)."""


class ProjectSettings(_Section):
    id: int = Field(..., gt=0, le=MAX_PROJECT_ID, description="Project id: the `app` field of exported events and the "
                    "key prefix; at most 2**63 - 1.")
    name: str = Field("", description="Human-readable name.")
    api_keys: list[str] = Field(default_factory=list,
                                description="Amplitude API keys the HTTP API accepts for this project (/2/httpapi, "
                                "/batch).")
    segment_sources: list[SegmentSourceSettings] = Field(
        default_factory=list, description="Segment sources whose write keys the HTTP API accepts for this project "
        "(/v1/*).")

    @field_validator("id", mode="before")
    @classmethod
    def _id_fits_a_long(cls, value: Any) -> Any:
        if type(value) is int and value > MAX_PROJECT_ID:
            raise ValueError(f"the project id {value} is over {MAX_PROJECT_ID} (2**63 - 1), the largest the event "
                             "batches carry (an Avro long); use the project's id as Amplitude shows it")
        return value


class S3Settings(_Section):
    endpoint_url: str | None = Field(None, description="S3 endpoint; unset for AWS. Set it for a local stack.")
    region: str = Field("us-east-1", description="Default region of buckets.")
    upload_part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024,
                                   description="Part size of multipart uploads.")
    connect_timeout_s: float = Field(10, gt=0, description="Connection timeout of S3 requests.")
    read_timeout_s: float = Field(60, gt=0, description="Longest an S3 request may take: a stalled upload "
                                  "fails after this and is retried. Keep it above part size / bandwidth.")
    retry_max_s: float = Field(30, gt=0, description="Longest pause between retries of an upload that fails for a "
                               "passing reason (throttling, 5xx, connection, timeout); pauses double up to it.")
    worker_principal_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:.+$", description="The IAM role (or user) the workers run "
        "as, e.g. their IRSA role: the principal of the policies `stream policy` prints for destinations without "
        "their own role_arn, and of the trust policies of those with one.")
    permanent_retry_s: float = Field(60, gt=0, description="Pause between retries of an upload that fails for a "
                                     "reason someone must fix (access denied, no such bucket, KMS, region, "
                                     "credentials); the destination is marked failing meanwhile.")


class WorkerSettings(_Section):
    app_id: str = Field("stream", pattern=r"^[A-Za-z0-9._-]+$",
                        description="Faust application id: prefixes consumer groups and changelog topics.")
    data_dir: Path = Field(Path("data"), description="Local state: RocksDB tables and export spool files.")
    web_enabled: bool = Field(False, description="Serve faust's web endpoints.")
    web_port: int = Field(6066, description="Port of faust's web endpoints.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    stages: list[Literal["ingest", "dedupe", "export", "import", "cohorts", "mirror", "profiles"]] = Field(
        ["ingest", "dedupe", "export", "import", "cohorts", "mirror", "profiles"], min_length=1,
        description="The stages this worker runs. Each stage is its own consumer group, so workers running "
        "different stages can be scaled apart (e.g. more ingest replicas). A stage with nothing to do is left out "
        "(export without destinations, import without sources, cohorts without cohort_destinations' syncs, mirror "
        "without mirror sources of events, profiles without sources of profiles).")
    http_port: int | None = Field(
        9108, ge=1, le=65535, description="Serve /metrics (Prometheus), /healthz (liveness), /readyz (readiness) "
        "and /exports/status (JSON) on this port; null turns the server off.")
    http_host: str = Field("0.0.0.0", description="Address the worker's HTTP server listens on.")
    import_processes: int = Field(
        0, ge=0, le=64, description="Processes that convert the rows of the import stage's JSON-lines files of "
        "append sources (decode, converter, validation, batches) beside the worker's own, which reads the files and "
        "produces the records: about three quarters of an import's CPU moves to them; the same records in the same "
        "order, each file still imported once by the worker that owns its discovery record. 0: the worker converts "
        "them itself; give a worker with spare cores one per core (metric stream_import_convert_processes; "
        "docs/imports.md, Limits).")
    shutdown_timeout_s: float = Field(
        30, gt=0, description="On SIGTERM the worker stops reading, finishes the uploads in flight and commits "
        "what is durable; after this many seconds it abandons the rest (a restart replays it, exactly once). "
        "Keep Kubernetes' terminationGracePeriodSeconds above it.")
    gil_switch_interval_ms: float = Field(
        1, gt=0, le=100, description="The worker process's interpreter switch interval (sys.setswitchinterval), set "
        "as it starts: the longest a thread that gave the GIL up (the state tables' multi-gets, zstd, gzip) waits "
        "to get it back while another thread runs Python (faust's consumer thread, busy whenever the worker is). "
        "Python's own 5 ms makes the event loop wait that long after each such call; 1 ms gave more events a "
        "second for less CPU (BENCHMARKS.md). The API process has no second thread and keeps Python's.")


class WebhookSettings(_Section):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Name destinations refer to.")
    url: str = Field(..., pattern=r"^https?://", description="URL a notification is POSTed to.")
    format: Literal["json", "slack"] = Field(
        "json", description="json: the notification document; slack: `{\"text\": ...}` as Slack's incoming "
        "webhooks (and compatible chat tools) take.")
    timeout_s: float = Field(10, gt=0, description="Longest a POST may take.")


class SmtpSettings(_Section):
    host: str = Field(..., description="SMTP server.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    sender: str = Field(..., description="From address of the notification emails.")
    username: str | None = Field(None, description="SMTP user name.")
    password: SecretStr | None = Field(None, description="SMTP password; set it through "
                                       "STREAM_NOTIFICATIONS__SMTP__PASSWORD.")
    starttls: bool = Field(True, description="Upgrade the connection with STARTTLS.")
    timeout_s: float = Field(15, gt=0, description="Longest sending a message may take.")


class NotificationSettings(_Section):
    """Where failure notifications go: webhooks by name, and email through one SMTP server."""

    webhooks: list[WebhookSettings] = Field(default_factory=list, description="Webhooks destinations may name.")
    smtp: SmtpSettings | None = Field(None, description="The SMTP server for destinations with notify.emails.")


class CohortStateSettings(_Section):
    """The cohorts stage's per-user state (stream/cohorts/stage.py), which the cohort syncs read."""

    state_days: int = Field(
        400, ge=1, le=3660, description="How long a user's cohort state is kept after the day of its latest event: "
        "its properties and counters outlive events.accepted's retention, so property-only, not and at_most cohorts "
        "keep their quiet users. No cohort window (within_days, or the span of between) may be longer.")
    grace_s: float = Field(
        60, ge=0, description="How far behind the latest upload time read from an events.accepted partition the "
        "stage says the partition has passed (events arrive roughly in upload order); a caught-up partition has "
        "passed the clock minus this.")
    sync_wait_s: float = Field(
        600, gt=0, description="How long a sync at T waits for every partition's state to pass T before it fails "
        "(and is retried): a stage behind by more than this delays the sync.")
    rekey_in_identity: bool | Literal["auto"] = Field(
        "auto", description="In a worker that runs the dedupe stage with identity on, make the cohort records from "
        "the batches the identity stage hands to events.accepted rather than reading events.accepted back (less CPU "
        "an event; the same records). auto: on where no record of events.accepted can be left unread: a new "
        "deployment (events.accepted empty, never read by the worker group), or one whose cohort state was made this "
        "way (stream/cohorts/rekey_mode.py); off elsewhere; the worker logs which and why as it starts. true: "
        "switch it on for every worker at once, once the cohorts-rekey agent has read events.accepted to "
        "its end (the worker group's committed offsets of events.accepted at the topic's end, ingestion paused): "
        "records it had not read when it stops are not rekeyed by the identity stage, nor, in a deployment whose "
        "cohorts stage first runs with it, the events events.accepted held before (the agent starts from the "
        "topic's beginning). Off again, that agent reads events.accepted on from where it stopped.")


class MirrorSettings(_Section):
    """Mirror sources (``strategy: mirror``): the index of exported events and how mutations apply to their hours."""

    index_days: int = Field(
        90, ge=8, le=3660, description="How long the mirror index keeps which hour holds each insert_id: an UPDATE or "
        "DELETE of an event exported longer ago than this is counted unknown and dead-lettered (unknown_insert_id). "
        "Longer than dedupe's 7 days, as mutations correct events long after they were sent.")
    insert_is_update: bool = Field(
        False, description="An INSERT whose insert_id names an event already exported replaces it as an UPDATE would; "
        "false: it is ignored and counted (insert_conflict).")
    log_prefix: str = Field(
        "_stream/mirror/", description="Where the applied mutations of each hour are kept, in the bucket of the "
        "project's archive destination, at the top of the bucket (not under the destination's prefix, so that a "
        "reader of the export's folder never lists them): every later rebuild of the hour applies them again.")
    rebuild_within_s: float = Field(
        60, ge=0, le=1800, description="How long the hours that mirror mutations touched may wait for their rebuild "
        "while more mutations keep coming: the mirror stage logs each take of mutations and records its hours as "
        "pending, and rebuilds the pending hours once it has read every mutation there is (each hour once for all "
        "the takes that touched it), or once the oldest has waited this long, whichever comes first. 0: every take's "
        "hours are rebuilt before the next take (each hour again for every take that touches it).")
    take_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024 * 1024, description="Bytes of mutations (their records on events.mutations) the "
        "mirror stage takes at once at most (or 20,000 mutations, whichever comes first): the worker holds a take's "
        "records until its mutations are logged, so this bounds the stage's memory whatever the events' size. A "
        "take costs a log object per partition and hour it touches, not a rebuild: the hours wait pending until "
        "every mutation is taken.")


class BackfillSettings(_Section):
    """Rebuilding past hours of a destination (``stream exports backfill``)."""

    chunk_hours: int = Field(24, ge=1, description="Hours a backfill claims and rebuilds in one pass over "
                             "events.accepted; a cancellation takes effect between passes.")
    ack_timeout_s: float = Field(120, gt=0, description="How long a backfill waits for the live exporters of the "
                                 "destination to acknowledge its claim of hours before it gives up (a live exporter "
                                 "acknowledges within a cycle, unless its uploads are failing).")
    progress_interval_s: float = Field(2, gt=0, description="How often a running backfill records its progress in "
                                       "the ledger (the admin API and `stream exports backfill` show it).")


MIN_TOKEN_CHARS = 32
"""The shortest admin token the settings accept."""


class AdminSettings(_Section):
    """Access to the admin endpoints: everything on worker.http_port but the probes and /metrics."""

    token: SecretStr | None = Field(
        None, description="Bearer token the admin endpoints (/exports/status, /admin/*, the console) require "
        "(`Authorization: Bearer <token>`); set it through STREAM_ADMIN__TOKEN, never in the file. Unset: those "
        "endpoints answer 401 to everyone. /healthz, /readyz and /metrics stay open. At least 32 characters: make "
        "one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'` or `openssl rand -base64 32`.")
    max_failed_auth: int = Field(
        10, ge=1, description="Failed authentications (a wrong admin token sent, a refused console sign-in) "
        "one client address may make per failed_auth_window_s; beyond it the address is answered 429 with "
        "Retry-After before its token is even compared. Counted per worker process.")
    failed_auth_window_s: float = Field(
        60, gt=0, description="Window of max_failed_auth: a failure is forgotten after "
        "failed_auth_window_s / max_failed_auth seconds.")
    trusted_proxies: list[str] = Field(
        [], description="Addresses or CIDRs (10.0.0.0/8) of the reverse proxies and ingress controllers in front "
        "of the workers. Only from them are X-Forwarded-For (the client address the failed-authentication limit "
        "counts) and X-Forwarded-Proto (https: the console's cookies are Secure) believed.")
    secure_cookies: bool = Field(
        False, description="Mark the console's cookies Secure whatever the request says: set it when the console "
        "is only reached over HTTPS (e.g. behind a TLS-terminating ingress that is not in trusted_proxies).")

    @field_validator("token")
    @classmethod
    def _long_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the admin token has {len(token.get_secret_value())} characters, fewer than {MIN_TOKEN_CHARS}: a "
                "short one is guessed; make one with python3 -c 'import secrets; print(secrets.token_urlsafe(32))' "
                "(or openssl rand -base64 32) and set it in STREAM_ADMIN__TOKEN")
        return token

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        import ipaddress
        for p in proxies:
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError:
                raise ValueError(f"{p!r} is not an address or a CIDR (such as 10.0.0.0/8)") from None
        return proxies


class ApiSettings(_Section):
    """The HTTP ingestion service (``stream api``): Amplitude HTTP V2 / Batch and Segment's tracking API."""

    host: str = Field("0.0.0.0", description="Address `stream api` listens on (--host).")
    port: int = Field(8080, ge=1, le=65535, description="Port `stream api` listens on (--port).")
    amplitude_httpapi_max_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest /2/httpapi body (after gzip decoding); larger ones get 413, as "
        "Amplitude answers above 1 MB.")
    amplitude_batch_max_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest /batch body (after gzip decoding); Amplitude's limit is 20 MB.")
    amplitude_max_events: int = Field(2000, gt=0, description="Most events in one Amplitude request.")
    httpapi_device_eps: float = Field(
        30, gt=0, description="Events per second one device_id or user_id may send to /2/httpapi, averaged over "
        "throttle_window_s; above it the events get 429 (Amplitude: 30).")
    batch_device_eps: float = Field(
        1000, gt=0, description="Events per second one device_id or user_id may send to /batch, averaged over "
        "throttle_window_s (Amplitude: 1000).")
    throttle_window_s: float = Field(30, gt=0, description="Window of the per-device/user rate limits.")
    segment_max_message_bytes: int = Field(32 * 1024, gt=0, description="Largest Segment message (Segment: 32 KB).")
    segment_max_batch_bytes: int = Field(500 * 1024, gt=0, description="Largest /v1/batch body (Segment: 500 KB).")
    segment_max_batch_messages: int = Field(2500, gt=0, description="Most messages in one /v1/batch (Segment: 2500).")
    cors_origins: list[str] = Field(["*"], description="Origins browser SDKs may send from (CORS); [] turns CORS off.")
    max_inflight_bytes: int = Field(
        128 * 1024 * 1024, ge=1024 * 1024, description="Most bytes the requests one `stream api` process is "
        "answering may hold at once (each request: its decoded body as it is read, then its rows and their batches): "
        "beyond it a request is answered 503 with Retry-After (the SDKs send it again), so a burst of large "
        "requests cannot exhaust the memory. A process stays within its idle size plus this plus about 32 MiB "
        "(docs/api.md, 'Memory'); a single request larger than this is still answered when it is the only one.")
    produce_timeout_s: float = Field(
        10, gt=0, description="Longest a request waits for the broker to acknowledge its batches before it is "
        "answered 503 (the client retries).")
    request_timeout_s: float = Field(
        30, gt=0, description="Longest a client may take to send a request body; a slower one is answered 408 "
        "and its connection closed (a trickling client cannot hold a connection forever).")
    trust_forwarded_for: bool = Field(
        False, description="Take the client address (for Amplitude's `ip: $remote` and the failed-authentication "
        "limit) from the last entry of X-Forwarded-For, as the load balancer in front appends it; off: the peer "
        "address of the connection.")
    segment_device_eps: float = Field(
        1000, gt=0, description="Events per second one anonymousId (the device) or userId may send to the Segment "
        "endpoints (/v1/*, together), averaged over throttle_window_s; above it the request gets 429 with "
        "Retry-After (as batch_device_eps for /batch).")
    max_failed_auth: int = Field(
        20, ge=0, description="Failed authentications (a missing or unknown api_key on /2/httpapi and /batch, a "
        "missing or unknown write key on /v1/*) one client address may make per failed_auth_window_s; beyond it "
        "every request from the address is answered 429 with Retry-After before its key is compared. The address "
        "is the connection's peer: behind a load balancer, set trust_forwarded_for, or all clients share the "
        "balancer's address and one misconfigured SDK locks them all out. 0 turns the limit off. Per process.")
    failed_auth_window_s: float = Field(
        60, gt=0, description="Window of max_failed_auth: a failure is forgotten after "
        "failed_auth_window_s / max_failed_auth seconds.")


class Settings(BaseSettings):
    """The root of the settings tree."""

    model_config = SettingsConfigDict(env_prefix="STREAM_", env_nested_delimiter="__", extra="forbid",
                                      frozen=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="The Kafka cluster.")
    topics: TopicSettings = Field(default_factory=TopicSettings, description="Topic names and sizes.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Validation of raw events.")
    dedupe: DedupeSettings = Field(default_factory=DedupeSettings, description="Duplicate detection.")
    identity: IdentitySettings = Field(default_factory=IdentitySettings,
                                       description="amplitude_ids, merges, user and group properties.")
    s3: S3Settings = Field(default_factory=S3Settings, description="S3 client.")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="The worker process.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP ingestion service (`stream api`).")
    admin: AdminSettings = Field(default_factory=AdminSettings, description="Access to the admin endpoints.")
    backfill: BackfillSettings = Field(default_factory=BackfillSettings, description="Rebuilding past hours.")
    cohort_state: CohortStateSettings = Field(default_factory=CohortStateSettings,
                                              description="The cohorts stage's per-user state, read by cohort syncs.")
    mirror: MirrorSettings = Field(default_factory=MirrorSettings, description="Mirror sources: the index of "
                                   "exported events and how mutations rewrite their hours.")
    notifications: NotificationSettings = Field(default_factory=NotificationSettings,
                                                description="Channels of failure notifications.")
    projects: list[ProjectSettings] = Field(default_factory=list, description="Projects events belong to.")
    destinations: list[DestinationSettings] = Field(default_factory=list, description="Where events are exported.")
    sources: list[SourceSettings] = Field(default_factory=list, description="S3 import sources: files on buckets "
                                          "the team owns, imported once each (docs/imports.md).")
    cohorts: list[dict[str, Any]] = Field(
        default_factory=list, description="Cohort definitions (stream/cohorts/rules.py: id, project, name, rule or "
        "static), checked and compiled when the settings load.")
    cohort_destinations: list[CohortDestinationSettings] = Field(
        default_factory=list, description="Buckets receiving cohort syncs (FORMATS.md 6).")
    _cohort_set: Any = PrivateAttr(None)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment first: it overrides the YAML file passed as init kwargs
        return env_settings, init_settings

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        ids = [p.id for p in self.projects]
        if len(set(ids)) != len(ids):
            raise ValueError(f"projects: duplicate project id in {ids}")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destinations: duplicate destination name in {names}")
        for i, d in enumerate(self.destinations):
            if d.project not in ids:
                raise ValueError(f"destinations[{i}].project: project {d.project} is not declared in projects")
        for i, d in enumerate(self.destinations):
            if d.exports_profiles() and d.project not in self.profiles_projects():
                raise ValueError(f"destinations[{i}] ({d.name}): exports: profiles needs a source of profiles "
                                 f"(data_type: profiles) of project {d.project}, whose users' profiles it exports; "
                                 "add one, or export events")
            if d.exports_profiles() and (d.layout != "amplitude" or d.archive):
                raise ValueError(f"destinations[{i}] ({d.name}): exports: profiles writes daily profile snapshots "
                                 "in the amplitude layout and is not an archive: use layout: amplitude and "
                                 "archive: false, or another destination for the events")
        merged = [d for d in self.destinations if d.exports_merged_ids()]
        if merged and not self.identity.enabled:
            raise ValueError(f"destinations {[d.name for d in merged]} export merged ids, which needs "
                             "identity.enabled")
        self._no_shared_keys()
        sources = [src.name for src in self.sources]
        if len(set(sources)) != len(sources):
            raise ValueError(f"sources: duplicate source name in {sources}")
        for i, src in enumerate(self.sources):
            if src.project not in ids:
                raise ValueError(f"sources[{i}].project: project {src.project} is not declared in projects")
        self._one_archive_per_project()
        for i, src in enumerate(self.sources):
            if src.strategy == "mirror" and src.data_type == "event" and self.archive_of(src.project) is None:
                raise ValueError(
                    f"sources[{i}] ({src.name}): a mirror source needs an archive destination of project "
                    f"{src.project}: the applied mutations are kept in its bucket (mirror.log_prefix), and hours "
                    "older than topics.retention_days are rebuilt from its objects; add `archive: true` to a "
                    f"destination of project {src.project} with the amplitude layout, or use strategy: append_only")
        hooks = {w.name for w in self.notifications.webhooks}
        for i, d in enumerate(self.destinations):
            unknown = [w for w in d.notify.webhooks if w not in hooks]
            if unknown:
                raise ValueError(f"destinations[{i}].notify.webhooks: {unknown} not in notifications.webhooks")
            if d.notify.emails and self.notifications.smtp is None:
                raise ValueError(f"destinations[{i}].notify.emails needs notifications.smtp")
        keys = [k for p in self.projects for k in p.api_keys]
        if len(set(keys)) != len(keys):
            raise ValueError("projects[].api_keys: an API key may belong to one project only")
        write_keys = [src.write_key for p in self.projects for src in p.segment_sources]
        if len(set(write_keys)) != len(write_keys):
            raise ValueError("projects[].segment_sources: a write key may belong to one source only")
        if self.ingest.max_event_bytes + 65536 > self.kafka.max_request_bytes // 2:
            raise ValueError(f"ingest.max_event_bytes ({self.ingest.max_event_bytes}) must stay below half of "
                             f"kafka.max_request_bytes ({self.kafka.max_request_bytes}) minus 64 KiB: a batch holds "
                             "at least one event's row")
        if self.topics.ledger_retention_days < self.topics.retention_days:
            raise ValueError(f"topics.ledger_retention_days ({self.topics.ledger_retention_days:g}) must be at least "
                             f"topics.retention_days ({self.topics.retention_days:g}): an exporter that reads "
                             "events.accepted again must find in the ledger what it wrote of them, or it writes them "
                             "twice")
        if self.ingest.default_project is not None and self.ingest.default_project not in ids:
            raise ValueError(f"ingest.default_project: project {self.ingest.default_project} is not declared "
                             "in projects")
        self._compile_cohorts()
        return self

    def _compile_cohorts(self) -> None:
        from stream.cohorts.rules import CohortError, parse_cohorts
        keep = {p for d in self.cohort_destinations for s in d.syncs for p in s.properties}
        keep |= {d.user_id_property for d in self.cohort_destinations if d.user_id_property}
        try:
            cohorts = parse_cohorts(self.cohorts, "cohorts", sorted(keep))
        except CohortError as exc:
            raise ValueError(str(exc)) from None
        keep_days = self.cohort_state.state_days
        for i, c in enumerate(cohorts.cohorts):
            for cond in c.conditions:
                span = cond.within_days if cond.within_days is not None else cond.between[1] - cond.between[0] + 1
                if span > keep_days:
                    raise ValueError(f"cohorts[{i}] ({c.id}): a window of {span} days, longer than the "
                                     f"{keep_days} days a user's cohort state is kept after its latest event "
                                     "(cohort_state.state_days): raise cohort_state.state_days to at least "
                                     f"{span}, or shorten the window")
        names = [d.name for d in self.cohort_destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"cohort_destinations: duplicate destination name in {names}")
        for i, d in enumerate(self.cohort_destinations):
            for j, sync in enumerate(d.syncs):
                if cohorts.cohort(sync.cohort) is None:
                    raise ValueError(f"cohort_destinations[{i}].syncs[{j}].cohort: no cohort {sync.cohort!r} in "
                                     "cohorts")
                if "_" in sync.cohort:
                    raise ValueError(f"cohort_destinations[{i}].syncs[{j}].cohort: {sync.cohort!r} has an '_', which "
                                     "separates the parts of the file names (<project>_<cohort>_<time>_<difftype>): "
                                     "a reader splitting them on '_' would take a wrong cohort id and time; rename "
                                     "the cohort with letters, digits and '-'")
        from stream.cohorts.csvfiles import key_collision
        if (collision := key_collision(self.cohort_destinations)) is not None:
            raise ValueError(f"cohort_destinations: {collision}")
        self._cohort_set = cohorts

    @property
    def cohort_set(self) -> Any:
        """The cohorts, checked and compiled (``stream.cohorts.rules.CohortSet``); their users' states keep the
        properties the syncs export too."""
        return self._cohort_set

    def cohort_destination(self, name: str) -> CohortDestinationSettings | None:
        return next((d for d in self.cohort_destinations if d.name == name), None)

    def _one_archive_per_project(self) -> None:
        seen: dict[int, str] = {}
        for d in self.destinations:
            if not d.archive:
                continue
            if d.layout != "amplitude":
                raise ValueError(f"destinations {d.name}: an archive destination must use the amplitude layout")
            if d.project in seen:
                raise ValueError(f"destinations {seen[d.project]} and {d.name}: project {d.project} has two archive "
                                 "destinations; name one system of record")
            seen[d.project] = d.name

    def archive_of(self, project: int) -> DestinationSettings | None:
        return next((d for d in self.destinations if d.archive and d.project == project), None)

    def source(self, name: str) -> SourceSettings | None:
        return next((src for src in self.sources if src.name == name), None)

    def mirror_projects(self) -> frozenset[int]:
        """The projects with a mirror source of events: their exported hours are rewritten by mutations."""
        return frozenset(s.project for s in self.sources if s.strategy == "mirror" and s.data_type == "event")

    def profiles_projects(self) -> frozenset[int]:
        """The projects with a source of profiles: the profiles stage keeps their users' current properties."""
        return frozenset(s.project for s in self.sources if s.data_type == "profiles")

    def destination(self, name: str) -> DestinationSettings | None:
        return next((d for d in self.destinations if d.name == name), None)

    def _no_shared_keys(self) -> None:
        """Two destinations must never write the same keys: the later object would replace the earlier."""
        sources = {p.id: {s.source_id for s in p.segment_sources} for p in self.projects}
        seen: dict[tuple[str, str, str], str] = {}
        for d in self.destinations:
            if d.layout == "segment":   # segment-logs/<source>/...: no project in the key
                places = {(d.bucket, d.prefix, f"segment-logs/{s}/")
                          for s in {d.segment_source_id or str(d.project)} | sources.get(d.project, set())}
            else:
                places = {(d.bucket, d.prefix, f"{d.project}/")} if d.exports_events() else set()
            if d.exports_merged_ids():
                places.add((d.bucket, d.prefix, f"{d.project}/-"))
            if d.exports_profiles():
                places.add((d.bucket, d.prefix, f"{d.project}/profiles/"))
            for place in places:
                other = seen.setdefault(place, d.name)
                if other != d.name:
                    raise ValueError(f"destinations {other} and {d.name} would both write s3://{place[0]}/{place[1]}"
                                     f"{place[2]}... (the later object would replace the earlier); give one of them "
                                     "another bucket or prefix")

    def project_ids(self) -> frozenset[int]:
        return frozenset(p.id for p in self.projects)


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = _format_loc(tuple(e["loc"]))
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{loc}: {msg}")
    return f"invalid configuration in {source}: " + "; ".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load and validate the settings from ``path`` (YAML) and the environment.

    Raises ConfigError with one line naming each offending key.
    """
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
        data = loaded
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def field_reference(model: type[BaseModel] = Settings, prefix: str = "") -> list[tuple[str, str, str]]:
    """(path, default, description) of every field, for the configuration reference."""
    rows = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = f.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is None and getattr(ann, "__origin__", None) is list:
            (item,) = ann.__args__
            if isinstance(item, type) and issubclass(item, BaseModel):
                rows.append((path, "[]", f.description or ""))
                rows += field_reference(item, f"{path}[].")
                continue
        if sub is not None:
            rows += field_reference(sub, f"{path}.")
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        rows.append((path, default, f.description or ""))
    return rows
