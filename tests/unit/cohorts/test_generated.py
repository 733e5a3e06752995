"""Generated histories and id sets: counters agree with a brute-force count, expiry days are exact, the diff is a
set difference, CSV lines read back."""

import csv
import io
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.cohorts.csvfiles import diff, field, row
from stream.cohorts.membership import EMPTY, apply_event, counts_of, expire, is_member, merge
from stream.cohorts.rules import COUNT_OPS, expires_on, parse_cohort, parse_cohorts

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
P = 424242
START = 19_700

OPS = {"at_least": lambda total, n: total >= n, "at_most": lambda total, n: total <= n,
       "exactly": lambda total, n: total == n}

# one step of a history: days the clock moves first, the event's age when it arrives (negative: stamped ahead of
# the clock), its type, and whether an expire runs before it
steps = st.lists(st.tuples(st.integers(0, 3), st.integers(-2, 12), st.sampled_from(["purchase", "refund"]),
                           st.booleans()), max_size=40)


def event(day, event_type="purchase"):
    return {"app": P, "event_type": event_type, "user_id": "u1",
            "event_time": date.fromordinal(day + date(1970, 1, 1).toordinal()).isoformat() + " 12:00:00.000000"}


def play(history, cohorts, today=START):
    """The state after ``history``, the day it ends, and the raw (clamped) days of its purchases."""
    state, raw = EMPTY, []
    for advance, age, event_type, expire_first in history:
        today += advance
        if expire_first:
            state = expire(state, cohorts, today)
        state = apply_event(state, event(today - age, event_type), cohorts, today)
        if event_type == "purchase":
            raw.append(min(today - age, today))
    return state, today, raw


@FAST  # a history holds an event at least: a user the stream never saw has no state to be a member with
@given(history=steps.filter(bool), n=st.integers(0, 5), days=st.integers(1, 10), op=st.sampled_from(COUNT_OPS),
       tail=st.integers(0, 12), expire_last=st.booleans())
def test_a_rolling_count_equals_a_count_over_the_raw_history(history, n, days, op, tail, expire_last):
    cohorts = parse_cohorts([{"id": "x", "project": P, "name": "x", "rule": {
        "performed": "purchase", "count": {"op": op, "n": n}, "within_days": days}}])
    (cohort,) = cohorts.cohorts
    state, today, raw = play(history, cohorts)
    today += tail
    if expire_last:
        state = expire(state, cohorts, today)
    total = sum(1 for day in raw if today - days + 1 <= day <= today)
    assert cohort.evaluate(counts_of(state, cohort), {}, today) is OPS[op](total, n)
    assert is_member(state, cohort, today) is OPS[op](total, n)


@FAST
@given(first=steps, second=steps)
def test_merging_two_users_counts_as_one_user_with_both_histories(first, second):
    cohorts = parse_cohorts([{"id": "x", "project": P, "name": "x", "rule": {
        "performed": "purchase", "within_days": 7}}])
    a, a_today, _ = play(first, cohorts)
    b, today, _ = play(second, cohorts, a_today)
    both, _, _ = play(first + second, cohorts)
    # b's history started where a's ended, so each event arrived on the same day in both; the expires of b's history
    # did not run on a's counters, so compare what is left once the last day's expire ran on both
    assert expire(merge(a, b), cohorts, today).counts == expire(both, cohorts, today).counts
    assert merge(b, a).counts == merge(a, b).counts


day_counts = st.dictionaries(st.integers(START - 15, START + 5), st.integers(0, 3), max_size=8)
rules = st.sampled_from([
    {"performed": "purchase", "count": {"op": "at_least", "n": 2}, "within_days": 5},
    {"performed": "purchase", "count": {"op": "at_most", "n": 1}, "within_days": 3},
    {"performed": "purchase", "count": {"op": "exactly", "n": 2}, "within_days": 7},
    {"not": {"performed": "purchase", "within_days": 4}},
    {"performed": "purchase", "count": {"op": "at_least", "n": 2}, "between": ["2023-12-20", "2024-01-10"]},
    {"and": [{"performed": "purchase", "within_days": 2}, {"not": {"performed": "refund", "within_days": 6}}]},
    {"or": [{"performed": "purchase", "count": {"op": "exactly", "n": 1}, "within_days": 9},
            {"user_property": "plan", "op": "=", "value": "pro"}]},
])


@FAST
@given(rule=rules, c0=day_counts, c1=day_counts, plan=st.sampled_from([None, "pro", "free"]))
def test_expires_on_names_the_first_day_the_result_changes(rule, c0, c1, plan):
    cohort = parse_cohort({"id": "x", "project": P, "name": "x", "rule": rule})
    counts, props, today = {"c0": c0, "c1": c1}, {"plan": plan}, START
    now = cohort.evaluate(counts, props, today)
    day = expires_on(counts, props, cohort, today)
    # past the last counter and the longest window nothing moves any more
    horizon = START + 5 + 10
    for t in range(today + 1, horizon + 1 if day is None else day):
        assert cohort.evaluate(counts, props, t) is now
    if day is not None:
        assert day > today and cohort.evaluate(counts, props, day) is not now


ids = st.sets(st.integers(0, 60), max_size=30)


@FAST
@given(previous=ids, current=ids)
def test_the_streaming_diff_is_the_set_difference(previous, current):
    out = list(diff(iter(sorted(previous)), iter(sorted(current)), existing=True))
    assert [i for i, kind in out if kind == "entering"] == sorted(current - previous)
    assert [i for i, kind in out if kind == "exiting"] == sorted(previous - current)
    assert [i for i, kind in out if kind == "existing"] == sorted(current)
    assert [i for i, _ in out] == sorted(i for i, _ in out)
    assert list(diff(sorted(previous), sorted(current))) == [(i, k) for i, k in out if k != "existing"]


values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(),
                   st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers()))


@FAST
@given(amplitude_id=st.integers(0, 2**63), user_id=st.one_of(st.none(), st.text()), props=st.lists(values, max_size=5))
def test_a_csv_row_reads_back_as_its_fields(amplitude_id, user_id, props):
    data = row(amplitude_id, user_id, props)
    assert data.endswith(b"\r\n")
    (parsed,) = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert parsed == [str(amplitude_id), field(user_id), *map(field, props)]
