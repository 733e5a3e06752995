"""One user's cohort state and its pure updates: daily counters per condition, the properties cohorts read, the ids.

The cohort agent keeps a ``UserState`` per amplitude_id (``encode``/``decode``: msgpack, about 100 bytes for a user
with a few counters), calls ``apply_event`` for each export row of that user, and on the day ``next_change``
names (or daily) calls ``expire`` then ``members``. No function here changes its arguments; each returns a new
state. Only users the stream has seen have a state, so only they can be members, of ``not`` cohorts too.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from functools import lru_cache
from typing import Any

import msgspec

from stream.cohorts.rules import Cohort, CohortSet, expires_on, parse_day


class UserState(msgspec.Struct, frozen=True, array_like=True):
    """``counts``: condition key -> UTC day number -> events; ``properties``: the user's current user_properties,
    only those the project's cohorts read or the sync files export; ``project``: the row's ``app``."""

    project: int | None = None
    user_id: str | None = None
    counts: dict[str, dict[int, int]] = {}
    properties: dict[str, Any] = {}


EMPTY = UserState()
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(UserState).decode


def encode(state: UserState) -> bytes:
    return _encode(state)


def decode(data: bytes) -> UserState:
    return _decode(data)


@lru_cache(maxsize=4096)
def _day(text: str) -> int | None:
    return parse_day(text)


def event_day(row: Mapping[str, Any]) -> int | None:
    """The UTC day an export row counts on: its ``event_time``, else its ``server_upload_time``, else None.

    Cohorts ask when a user did something, and ``event_time`` is Amplitude's answer: the client's time corrected by
    the upload delay (FORMATS.md §1.3). An event buffered offline for two days counts on the day it happened, and a
    replay or a backfill of the same rows counts on the same days; ``server_upload_time`` would count the day of the
    upload. The price: an event arriving after its day left every window counts nowhere.
    """
    for field in ("event_time", "server_upload_time"):
        text = row.get(field)
        if isinstance(text, str):
            day = _day(text[:10])
            if day is not None:
                return day
    return None


def apply_event(state: UserState, row: Mapping[str, Any], cohorts: CohortSet, today: int) -> UserState:
    """The state after ``row``, an export row of this user, processed on day ``today``.

    Each condition matching the row adds one to its counter of the row's day (``event_day``); a day after today counts
    as today (the device ahead of the clock), and a day outside the condition's window (older than ``within_days``,
    outside ``between``) is not stored: it could never count. A condition several cohorts share counts once. The
    row's user_properties (the user's, after this event) replace the snapshot, restricted to the names the project
    keeps; a row without user_properties leaves it. The user_id is the row's when it has one.
    """
    project = row.get("app") if isinstance(row.get("app"), int) else state.project
    counts = state.counts
    day = event_day(row)
    if day is not None:
        day = min(day, today)
        for condition in cohorts.candidates(row):
            first, last = condition.window(today)
            if first <= day <= last and condition.matches(row):
                if counts is state.counts:
                    counts = dict(counts)
                days = dict(counts.get(condition.key, {}))
                days[day] = days.get(day, 0) + 1
                counts[condition.key] = days
    properties = state.properties
    given = row.get("user_properties")
    if isinstance(given, Mapping):
        # a null is not set (rules.Comparison): not stored
        properties = {name: given[name] for name in cohorts.properties_of(project) if given.get(name) is not None}
    user_id = row.get("user_id")
    return msgspec.structs.replace(state, project=project, counts=counts, properties=properties,
                                   user_id=user_id if isinstance(user_id, str) and user_id else state.user_id)


def expire(state: UserState, cohorts: CohortSet, today: int) -> UserState:
    """The state without what can no longer count on ``today`` or later: days out of their condition's window,
    counters of conditions no cohort has any more (removed, or edited to count something else), properties no
    cohort reads. Run it with the cohorts in force."""
    counts: dict[str, dict[int, int]] = {}
    for key, days in state.counts.items():
        condition = cohorts.conditions.get(key)
        if condition is None:
            continue
        kept = {day: n for day, n in days.items() if condition.keeps(day, today)}
        if kept:
            counts[key] = kept
    names = cohorts.properties_of(state.project)
    properties = {name: value for name, value in state.properties.items() if name in names}
    return msgspec.structs.replace(state, counts=counts, properties=properties)


def merge(into: UserState, other: UserState) -> UserState:
    """The surviving user's state after ``other`` (a merged amplitude_id) joined it.

    Counters add up per day: both ids' events are the one user's. Properties: the survivor's win, the merged user's
    fill the names the survivor lacks; the user's next row brings the properties the identity stage merged, so the
    choice lasts until then. The user_id and project are the survivor's when it has them. The agent then deletes
    the merged id's state.
    """
    counts = {key: dict(days) for key, days in into.counts.items()}
    for key, days in other.counts.items():
        mine = counts.setdefault(key, {})
        for day, n in days.items():
            mine[day] = mine.get(day, 0) + n
    return UserState(project=into.project if into.project is not None else other.project,
                     user_id=into.user_id or other.user_id, counts=counts,
                     properties={**other.properties, **into.properties})


def counts_of(state: UserState, cohort: Cohort) -> dict[str, Mapping[int, int]]:
    """The user's counters as ``cohort.evaluate`` reads them: by condition id."""
    return {c.id: state.counts.get(c.key, {}) for c in cohort.conditions}


def is_member(state: UserState, cohort: Cohort, today: int, static_members: Container[str] = frozenset()) -> bool:
    """Whether the user is in ``cohort`` on ``today``: by its rule, or for a static cohort by its uploaded user ids
    (``static_members``). A user of another project never is."""
    if cohort.project != state.project:
        return False
    if cohort.static:
        return state.user_id is not None and state.user_id in static_members
    return cohort.evaluate(counts_of(state, cohort), state.properties, today)


def members(state: UserState, cohorts: CohortSet, today: int,
            static_members: Mapping[str, Container[str]] | None = None) -> frozenset[str]:
    """The ids of the cohorts the user is in on ``today``; ``static_members``: static cohort id -> its user ids."""
    static_members = static_members or {}
    return frozenset(c.id for c in cohorts.cohorts
                     if is_member(state, c, today, static_members.get(c.id, frozenset())))


def next_change(state: UserState, cohorts: CohortSet, today: int) -> int | None:
    """The first day after ``today`` on which some rule cohort's result for this user changes with no new event
    (``rules.expires_on``), or None: the day to evaluate the user again."""
    days = [expires_on(counts_of(state, c), state.properties, c, today)
            for c in cohorts.cohorts if c.project == state.project and not c.static]
    return min((d for d in days if d is not None), default=None)
