"""Static cohorts: a list of user ids uploaded by hand, kept on S3, synced like any cohort (the same three CSVs).

A cohort defined with ``static: true`` has no rule: its members are the user ids last uploaded for it (``stream
cohorts upload``, ``PUT /admin/cohorts/{id}/members``, the console's upload form). An upload replaces the list.

**Where the list lives.** In each bucket the cohort is synced to, beside the sync records and under the same
prefix of stream's own (``records_prefix``, ``_stream/cohorts/`` by default)::

    <records_prefix><destination>/static/<project>_<cohort>.json

a JSON object ``{"cohort", "project", "user_ids" (sorted, each once), "uploaded_at_ms", "by"}``. The bucket is
where the sync that needs the list already reads and writes (the records of its chain, the previous existing
file), so the list needs no other store, no further permission and no topic, outlives any retention, and a
reader of the CSV files' folder never sees it. ``static/`` cannot be a cohort's records folder: those start with
the project's digits. An upload writes every destination's copy; a sync reads its own destination's.

**Members.** A sync of a static cohort lists, by amplitude_id, the users of the cohort's project whose user_id
is in the list: the files' first column is the amplitudeID, which only users with events have. A listed user_id
without events is in no file until its first event (an upload does not read the events). Before any upload the list is empty, so the syncs write files with no member.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from stream.cohorts.rules import Cohort

MAX_MEMBERS = 1_000_000
"""The most user ids one upload may hold (the list is read whole by each sync)."""
MAX_USER_ID = 1024
"""The longest user id (characters)."""


class StaticError(Exception):
    """An upload that cannot be stored as given: the message says which id or line, and what to do."""


def members_key(records_prefix: str, destination: str, cohort: Cohort) -> str:
    """``<records_prefix><destination>/static/<project>_<cohort>.json``: where a static cohort's list lives."""
    return f"{records_prefix}{destination}/static/{cohort.project}_{cohort.id}.json"


def check_ids(user_ids: Iterable[Any]) -> list[str]:
    """The ids, sorted and each once; a ``StaticError`` naming the first one that is not a user id."""
    seen: set[str] = set()
    for i, user_id in enumerate(user_ids):
        if not isinstance(user_id, str) or not user_id.strip():
            raise StaticError(f"user id {i + 1} is {user_id!r}: every member must be a non-empty string (a user_id)")
        if len(user_id) > MAX_USER_ID:
            raise StaticError(f"user id {i + 1} is {len(user_id)} characters long: at most {MAX_USER_ID}")
        if "\r" in user_id or "\n" in user_id:
            raise StaticError(f"user id {i + 1} holds a line break: give one user id per line")
        seen.add(user_id)
        if len(seen) > MAX_MEMBERS:
            raise StaticError(f"more than {MAX_MEMBERS:,} user ids: split the cohort in several")
    return sorted(seen)


def parse_lines(text: str) -> list[str]:
    """An uploaded text file: one user id per line (LF or CRLF), surrounding spaces dropped, empty lines skipped;
    a first line ``userID`` or ``user_id`` is a header and skipped too."""
    lines = [line.strip() for line in text.splitlines()]
    if lines and lines[0] in ("userID", "user_id"):
        lines = lines[1:]
    return check_ids(line for line in lines if line)


def encode(cohort: Cohort, user_ids: list[str], now_ms: int, by: str) -> bytes:
    return orjson.dumps({"cohort": cohort.id, "project": cohort.project, "user_ids": user_ids,
                         "uploaded_at_ms": now_ms, "by": by})


def decode(raw: bytes) -> dict[str, Any]:
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("user_ids"), list):
        raise StaticError("the stored list of a static cohort is not a JSON object with user_ids: upload it again")
    return doc


def members(users: Iterable[tuple[int, Any]], cohort: Cohort, user_ids: Iterable[str]) -> list[int]:
    """The amplitude_ids, ascending, of the users of ``cohort``'s project whose user_id is listed (``users``:
    (amplitude_id, anything with ``project`` and ``user_id``: a ``membership.UserState``) pairs)."""
    listed = frozenset(user_ids)
    return sorted(aid for aid, st in users if st.project == cohort.project and st.user_id in listed)


def users_of(membership: Any) -> Iterable[tuple[int, Any]]:
    """Every user's (amplitude_id, state) of what a sync reads the members from: the states it folded from the
    events (``sync.Membership``), or the cohorts stage's view (``stage.SyncView``: ``users()``, streamed)."""
    users = getattr(membership, "users", None)
    return users() if callable(users) else membership.states.items()


async def read(storage: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The stored list (``decode``), or None before the first upload."""
    from stream.cohorts.sync import _read_optional
    raw = await _read_optional(storage, bucket, key)
    return None if raw is None else decode(raw)


async def members_of(storage: Any, job: Any, membership: Any) -> list[int]:
    """The members of a sync of a static cohort (``sync.SyncJob``): the list in its destination's bucket matched to
    the users' states (``users_of(membership)``); none before the first upload."""
    d = job.destination
    doc = await read(storage, d.bucket, members_key(d.records_prefix, d.name, job.cohort))
    return members(users_of(membership), job.cohort, doc["user_ids"] if doc else ()) if doc else []


async def upload(destinations: list[Any], storage_of: Any, cohort: Cohort, user_ids: list[str], now_ms: int,
                 by: str) -> dict[str, Any]:
    """Store the list (``check_ids`` first) in every bucket of ``destinations`` (those syncing the cohort);
    ``storage_of(destination)`` gives a storage or an async context manager of one. A failure names the buckets
    already written."""
    from stream.cohorts.sync import _Storages
    ids = check_ids(user_ids)
    body = encode(cohort, ids, now_ms, by)
    written: list[str] = []
    async with _Storages(storage_of) as storages:
        for d in destinations:
            key = members_key(d.records_prefix, d.name, cohort)
            try:
                await (await storages.get(d)).put_bytes(d.bucket, key, body, "application/json")
            except Exception as exc:
                done = ", ".join(written) or "none"
                raise StaticError(f"storing the list in s3://{d.bucket}/{key} failed ({type(exc).__name__}: {exc}); "
                                  f"written already: {done}. Fix the access (stream policy {d.name} "
                                  "prints what it needs) and upload again") from exc
            written.append(f"s3://{d.bucket}/{key}")
    return {"cohort": cohort.id, "project": cohort.project, "members": len(ids), "uploaded_at_ms": now_ms,
            "stored": written}
