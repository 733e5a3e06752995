"""The topics a deployment uses: names, partitions and configs, from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.events.timefmt import DAY_MS
from stream.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def dedupe_changelog(settings: Settings) -> str:
    return f"{settings.worker.app_id}-dedupe-changelog"


def dedupe_changelog_retention_ms(settings: Settings) -> int:
    """Each changelog record holds keys first seen in one batch; after the window plus a day none of
    them can decide anything, so the changelog is deleted by time instead of compacted."""
    return int((settings.dedupe.window_days + 1) * DAY_MS)


def import_changelog(settings: Settings) -> str:
    """The import agent's processed-files table's changelog (one name whatever stages a worker runs)."""
    return f"{settings.worker.app_id}-import-files-changelog"


def mirror_index_changelog(settings: Settings) -> str:
    """The mirror index table's changelog: a record per mirror.index message, kept mirror.index_days plus a day."""
    return f"{settings.worker.app_id}-mirror-index-changelog"


def mirror_pending_changelog(settings: Settings) -> str:
    """The mirror stage's pending table's changelog: per partition of events.mutations, the hours its logged
    mutations touched and not yet rebuilt, and the mirror-files records waiting for them; compacted."""
    return f"{settings.worker.app_id}-mirror-pending-changelog"


def mirror_files_topic(settings: Settings) -> str:
    """What the mirror stage did with each import file's mutations: a record per file, partition of events.mutations
    and take (``stream.imports.mirror_files``), compacted: a take applied again replaces its records."""
    return f"{settings.worker.app_id}-mirror-files"


def profiles_changelog(settings: Settings) -> str:
    """The profiles table's changelog: a record per user whose profile a mutation set, keyed like the table
    (``stream.imports.profiles.key``), compacted: its latest record of a key is the user's current profile."""
    return f"{settings.worker.app_id}-profiles-applied-changelog"


def cohorts_changelog(settings: Settings) -> str:
    """The cohorts stage's state table's changelog: a record per key written (a user's state, a day index entry, a
    partition's progress), compacted: its latest record of each key is the state, which cohort syncs read."""
    return f"{settings.worker.app_id}-cohorts-state-changelog"


def cohorts_enabled(settings: Settings) -> bool:
    """Whether the worker keeps cohort state: some cohort is synced somewhere."""
    return any(d.syncs for d in settings.cohort_destinations)


def identity_changelog(settings: Settings) -> str:
    return f"{settings.worker.app_id}-identity-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, as the worker creates them when missing."""
    t = settings.topics
    kept = {"retention.ms": str(int(t.retention_days * DAY_MS))}
    return [
        TopicSpec(t.name("ingest"), t.ingest_partitions, kept),
        TopicSpec(t.name("valid"), t.partitions, kept),
        TopicSpec(t.name("accepted"), t.partitions, kept),
        TopicSpec(t.name("dead_letter"), 1, {"retention.ms": str(int(t.dead_letter_retention_days * DAY_MS))}),
        TopicSpec(t.name("export_ledger"), 1, {"retention.ms": str(int(t.ledger_retention_days * DAY_MS))}),
        # a replay of events.ingest reads what it replaced; replays come from uncommitted offsets, so a week is
        # far more than it needs
        TopicSpec(t.name("ingest_clamps"), 1, {"retention.ms": str(7 * DAY_MS)}),
        # the latest record of each key is the state: kept for good, compacted
        TopicSpec(t.name("export_control"), 1, {"cleanup.policy": "compact"}),
        # logged-out console sessions, read by every worker; a session lasts 12 hours at most
        TopicSpec(t.name("console_sessions"), 1, {"retention.ms": str(DAY_MS)}),
        TopicSpec(dedupe_changelog(settings), t.partitions,
                  {"cleanup.policy": "delete", "retention.ms": str(dedupe_changelog_retention_ms(settings))}),
    ] + ([
        TopicSpec(t.name("identity_links"), t.partitions),
        # read by the cohorts stage (a merged id's state joins its survivor's) and by the merged-IDs export, which
        # catches up after an outage as the events' export does: kept as long as events.accepted keeps the events
        # they join (a merge is newer than the merged id's events before it), so never the broker's default, which
        # may be shorter
        TopicSpec(t.name("identity_merges"), 1, kept),
        # one record per key written: compaction keeps the latest of each (a broker that does not compact keeps all)
        TopicSpec(identity_changelog(settings), t.partitions, {"cleanup.policy": "compact"}),
    ] if settings.identity.enabled else []) + ([
        # one record per discovery of a file
        TopicSpec(t.name("import_files"), t.partitions, kept),
        # created here rather than by faust on first use, so that it has the partitions of imports.files even if
        # a reader asked for it first (a broker that creates topics on request gives its own default)
        TopicSpec(import_changelog(settings), t.partitions, {"cleanup.policy": "compact"}),
    ] if settings.sources else []) + ([
        # mutations read from mirror sources' files, keyed like the index entries
        TopicSpec(t.name("mutations"), t.partitions, kept),
        # index entries re-keyed from events.accepted, read within seconds by the index agent
        TopicSpec(t.name("mirror_index"), t.partitions, kept),
        # a record per index message: the index outlives it only where no write refreshed a key for longer
        TopicSpec(mirror_index_changelog(settings), t.partitions,
                  {"cleanup.policy": "delete", "retention.ms": str(int((settings.mirror.index_days + 1) * DAY_MS))}),
        # read whole by stream import status: one partition, the latest record of each key kept
        TopicSpec(mirror_files_topic(settings), 1, {"cleanup.policy": "compact"}),
        # one record per key written (a pending hour or file record; a tombstone once rebuilt): compacted
        TopicSpec(mirror_pending_changelog(settings), t.partitions, {"cleanup.policy": "compact"}),
    ] if settings.mirror_projects() else []) + ([
        # mutations read from sources of profiles, keyed by project and user_id; not compacted: the record of a key
        # produced last may be an older file's, and the newer one must still be applied
        TopicSpec(t.name("profiles"), t.partitions, kept),
        # the applied profiles, one record per key written: compaction keeps each user's current profile
        TopicSpec(profiles_changelog(settings), t.partitions, {"cleanup.policy": "compact"}),
    ] if settings.profiles_projects() else []) + ([
        # the stage's records, read within seconds by its state step
        TopicSpec(t.name("cohorts"), t.partitions, kept),
        # one record per key written: compaction keeps each user's current state
        TopicSpec(cohorts_changelog(settings), t.partitions, {"cleanup.policy": "compact"}),
        # "sync now" requests and what became of each, read whole by the worker holding the sync duty: kept longer
        # than a request may wait (stream.cohorts.requests.MAX_AGE_MS)
        TopicSpec(t.name("cohort_sync_requests"), 1, {"retention.ms": str(2 * DAY_MS)}),
    ] if cohorts_enabled(settings) else [])
