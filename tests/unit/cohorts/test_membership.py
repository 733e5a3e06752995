"""One user's state through scripted histories on a fake ``today``: entering, exiting, merging, storing."""

from datetime import date

import pytest

from stream.cohorts.membership import (
    EMPTY,
    UserState,
    apply_event,
    counts_of,
    decode,
    encode,
    event_day,
    expire,
    is_member,
    members,
    merge,
    next_change,
)
from stream.cohorts.rules import parse_cohorts, parse_day

P = 424242
MAR_1 = parse_day("2024-03-01")

COHORTS = parse_cohorts([
    # at least 3 purchases in the last 7 days (today and the 6 before)
    {"id": "buyers", "project": P, "name": "Buyers", "rule": {
        "performed": "purchase", "count": {"op": "at_least", "n": 3}, "within_days": 7}},
    {"id": "pro", "project": P, "name": "Pro plan", "rule": {"user_property": "plan", "op": "=", "value": "pro"}},
    {"id": "lapsed", "project": P, "name": "No purchase this week", "rule": {"not": {
        "performed": "purchase", "within_days": 7}}},
    {"id": "march", "project": P, "name": "Bought in March", "rule": {
        "performed": "purchase", "between": ["2024-03-01", "2024-03-31"]}},
    {"id": "vip", "project": P, "name": "VIPs", "static": True},
    {"id": "other", "project": 7, "name": "Another project", "rule": {"not": {
        "performed": "purchase", "within_days": 7}}},
], keep_properties=["email"])
BUYERS, PRO, LAPSED, MARCH, VIP, OTHER = COHORTS.cohorts


def day_text(day):
    return date.fromordinal(day + date(1970, 1, 1).toordinal()).isoformat()


def event(day, event_type="purchase", user_id="u1", **fields):
    return {"app": P, "event_type": event_type, "event_time": f"{day_text(day)} 10:00:00.000000",
            "server_upload_time": f"{day_text(day)} 10:00:01.000000", "user_id": user_id, "amplitude_id": 1001,
            "user_properties": {"plan": "free", "email": "a@example.com", "age": 41}, **fields}


def replay(state, days, today=None, **fields):
    for day in days:
        state = apply_event(state, event(day, **fields), COHORTS, day if today is None else today)
    return state


def test_a_user_enters_on_the_third_purchase_within_seven_days():
    state = replay(EMPTY, [MAR_1, MAR_1 + 2])
    assert members(state, COHORTS, MAR_1 + 2) == {"march"}
    state = replay(state, [MAR_1 + 6])
    assert members(state, COHORTS, MAR_1 + 6) == {"buyers", "march"}


def test_a_user_exits_when_the_window_passes_without_new_events():
    state = replay(EMPTY, [MAR_1, MAR_1 + 2, MAR_1 + 6])
    # the first purchase leaves the window on MAR_1 + 7: two are left
    assert next_change(state, COHORTS, MAR_1 + 6) == MAR_1 + 7
    assert is_member(state, BUYERS, MAR_1 + 6) is True
    later = expire(state, COHORTS, MAR_1 + 7)
    assert is_member(later, BUYERS, MAR_1 + 7) is False
    assert counts_of(later, BUYERS) == {"c0": {MAR_1 + 2: 1, MAR_1 + 6: 1}}
    # and enters "lapsed" the day the last purchase leaves the window
    assert next_change(later, COHORTS, MAR_1 + 7) == MAR_1 + 13
    assert members(expire(later, COHORTS, MAR_1 + 13), COHORTS, MAR_1 + 13) == {"lapsed", "march"}


def test_a_user_exits_when_a_user_property_changes():
    state = replay(EMPTY, [MAR_1], event_type="login", user_properties={"plan": "pro"})
    assert is_member(state, PRO, MAR_1) is True
    state = replay(state, [MAR_1 + 1], event_type="downgrade", user_properties={"plan": "free"})
    assert is_member(state, PRO, MAR_1 + 1) is False
    # a property unset in the row's user_properties is unset in the state
    state = replay(state, [MAR_1 + 2], event_type="login", user_properties={})
    assert state.properties == {}


def test_two_merged_users_have_their_counters_summed():
    survivor = replay(EMPTY, [MAR_1, MAR_1 + 1], user_id="u1", user_properties={"plan": "pro"})
    merged = replay(EMPTY, [MAR_1 + 1], user_id="u2", user_properties={"plan": "free", "email": "b@example.com"})
    assert not is_member(survivor, BUYERS, MAR_1 + 1) and not is_member(merged, BUYERS, MAR_1 + 1)
    state = merge(survivor, merged)
    assert state.counts == {BUYERS.conditions[0].key: {MAR_1: 1, MAR_1 + 1: 2},
                            MARCH.conditions[0].key: {MAR_1: 1, MAR_1 + 1: 2}}
    assert (state.user_id, state.project) == ("u1", P)
    assert state.properties == {"plan": "pro", "email": "b@example.com"}  # the survivor's win, the merged fill in
    assert members(state, COHORTS, MAR_1 + 1) == {"buyers", "pro", "march"}
    # neither input changed
    assert survivor.counts[BUYERS.conditions[0].key] == {MAR_1: 1, MAR_1 + 1: 1}


def test_merging_into_an_unknown_survivor_takes_the_merged_ids():
    merged = replay(EMPTY, [MAR_1], user_id="u2")
    assert (merge(EMPTY, merged).user_id, merge(EMPTY, merged).project) == ("u2", P)


def test_a_condition_shared_by_cohorts_is_counted_once_per_event():
    state = replay(EMPTY, [MAR_1])
    assert state.counts == {BUYERS.conditions[0].key: {MAR_1: 1}, MARCH.conditions[0].key: {MAR_1: 1}}
    assert BUYERS.conditions[0].key == LAPSED.conditions[0].key


def test_an_event_older_than_its_window_is_not_stored_and_a_future_one_counts_today():
    today = MAR_1 + 20
    state = replay(EMPTY, [today - 7], today=today)
    assert state.counts == {MARCH.conditions[0].key: {today - 7: 1}}
    state = replay(EMPTY, [today + 2], today=today)
    assert state.counts[BUYERS.conditions[0].key] == {today: 1}
    # before the between window's first day, a purchase counts for it nowhere
    assert MARCH.conditions[0].key not in replay(EMPTY, [MAR_1 - 1]).counts


def test_the_day_is_the_event_time_then_the_upload_time():
    assert event_day({"event_time": "2024-03-01 23:59:59.999999", "server_upload_time": "2024-03-03 00:00:00.0"}) \
        == MAR_1
    assert event_day({"event_time": "2024-03-01T01:00:00.000", "server_upload_time": None}) == MAR_1
    assert event_day({"event_time": None, "server_upload_time": "2024-03-02 00:00:00.000000"}) == MAR_1 + 1
    assert event_day({"event_time": "garbage", "server_upload_time": "2024-03-02 00:00:00.000000"}) == MAR_1 + 1
    assert event_day({"event_time": 1709251200000}) is None
    # a row without any time still updates the properties, and counts nowhere
    state = apply_event(EMPTY, {**event(MAR_1, user_properties={"plan": "pro"}), "event_time": None,
                                "server_upload_time": None}, COHORTS, MAR_1)
    assert (state.counts, state.properties) == ({}, {"plan": "pro"})


def test_the_state_keeps_only_the_properties_cohorts_read_or_sync_files_export():
    state = replay(EMPTY, [MAR_1], user_properties={"plan": "pro", "email": "a@example.com", "age": 41,
                                                    "city": None})
    assert state.properties == {"plan": "pro", "email": "a@example.com"}
    # a row without user_properties leaves them as they were
    row = event(MAR_1)
    del row["user_properties"]
    assert apply_event(state, row, COHORTS, MAR_1).properties == state.properties


def test_a_row_without_a_user_id_keeps_the_known_one():
    state = replay(EMPTY, [MAR_1], user_id="u1")
    assert replay(state, [MAR_1], user_id=None).user_id == "u1"
    assert replay(state, [MAR_1], user_id="u9").user_id == "u9"


def test_apply_event_changes_nothing_it_was_given():
    state = replay(EMPTY, [MAR_1])
    before = encode(state)
    row = event(MAR_1)
    replay(state, [MAR_1, MAR_1 + 1])
    apply_event(state, row, COHORTS, MAR_1)
    expire(state, COHORTS, MAR_1 + 40)
    assert encode(state) == before
    assert EMPTY == UserState()


def test_expire_drops_days_out_of_window_and_counters_no_cohort_has():
    state = replay(EMPTY, [MAR_1, MAR_1 + 10])
    state = UserState(project=state.project, user_id=state.user_id,
                      counts={**state.counts, "gone1234": {MAR_1: 5}}, properties={**state.properties, "old": 1})
    later = expire(state, COHORTS, MAR_1 + 12)
    assert later.counts == {BUYERS.conditions[0].key: {MAR_1 + 10: 1},
                            MARCH.conditions[0].key: {MAR_1: 1, MAR_1 + 10: 1}}
    assert later.properties == {"plan": "free", "email": "a@example.com"}
    # the between window keeps its days for as long as the cohort exists
    assert expire(state, COHORTS, MAR_1 + 400).counts == {MARCH.conditions[0].key: {MAR_1: 1, MAR_1 + 10: 1}}


def test_a_static_cohort_holds_its_uploaded_user_ids():
    state = replay(EMPTY, [MAR_1], user_id="u1")
    assert is_member(state, VIP, MAR_1, frozenset({"u1"})) is True
    assert is_member(state, VIP, MAR_1, frozenset({"u2"})) is False
    assert is_member(EMPTY, VIP, MAR_1, frozenset({"u1"})) is False
    assert "vip" in members(state, COHORTS, MAR_1, {"vip": {"u1"}})


def test_a_user_is_never_in_another_projects_cohort():
    state = replay(EMPTY, [MAR_1])
    assert is_member(state, OTHER, MAR_1) is False
    assert OTHER.evaluate(counts_of(state, OTHER), {}, MAR_1) is True  # the rule alone would say yes


def test_a_user_without_counters_has_no_next_change():
    assert next_change(replay(EMPTY, [MAR_1], event_type="login"), COHORTS, MAR_1) is None


def test_a_state_round_trips_through_bytes():
    state = replay(EMPTY, [MAR_1, MAR_1, MAR_1 + 3, MAR_1 + 5], user_properties={"plan": "pro", "email": "x@y.z"})
    assert decode(encode(state)) == state
    assert decode(encode(EMPTY)) == EMPTY
    assert encode(EMPTY) == b"\x94\xc0\xc0\x80\x80"  # [null, null, {}, {}]


def test_a_typical_user_takes_under_100_bytes():
    # 3 purchases over a week counted by two conditions, 2 properties, a user id
    state = replay(EMPTY, [MAR_1, MAR_1 + 2, MAR_1 + 6], user_id="user-8c1f2a",
                   user_properties={"plan": "pro", "email": "ann@example.com"})
    data = encode(state)
    # array 1 + project 5 + user_id 12 + counters 1 + 2 x (key 9 + map 1 + 3 x (day 3 + count 1)) + properties 1
    # + plan 5 + pro 4 + email 6 + the address 16
    assert len(data) == 95
    print(f"bytes per user: {len(data)}")


@pytest.mark.parametrize("days", [1, 7, 30])
def test_bytes_grow_about_four_per_counted_day(days):
    one = len(encode(replay(EMPTY, [MAR_1], user_id="u1")))
    many = len(encode(replay(EMPTY, [MAR_1 + d for d in range(days)], user_id="u1")))
    # each day with events adds a day number (3 bytes) and a count (1) to each of the two conditions; past 15 days
    # a counter's map header takes 2 bytes more
    assert many - one == 2 * 4 * (days - 1) + (2 * 2 if days > 15 else 0)
