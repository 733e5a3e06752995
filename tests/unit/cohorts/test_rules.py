"""Compiled cohorts: conditions on rows, windows, comparisons, evaluate and the day a result changes."""

import pytest

from stream.cohorts.rules import (
    Comparison,
    compile_cohorts,
    day_of_ms,
    expires_on,
    longest_window_days,
    parse_cohort,
    parse_cohorts,
    parse_day,
)

P = 424242
TODAY = parse_day("2024-03-09")


def rule_cohort(rule, cohort_id="abc12de", project=P):
    return parse_cohort({"id": cohort_id, "project": project, "name": "test", "rule": rule})


def bought(n=1, op="at_least", **window):
    return {"performed": "purchase", "count": {"op": op, "n": n}, **(window or {"within_days": 7})}


def row(event_type="purchase", **fields):
    return {"app": P, "event_type": event_type, "event_time": "2024-03-09 07:15:02.123000", **fields}


def test_days_are_counted_from_1970_01_01_utc():
    assert (parse_day("1970-01-01"), parse_day("1970-01-02 00:00:00.000000"), parse_day("2024-03-09")) == (0, 1, 19791)
    assert parse_day("2024-03-09T23:59:59.999") == 19791
    assert (parse_day("2024-13-01"), parse_day("2024/03/09"), parse_day("2024-03"), parse_day(None)) == (
        None, None, None, None)
    assert day_of_ms(1709967600000) == 19791 and day_of_ms(1709942400000 - 1) == 19790


def test_the_docstring_example_compiles_into_one_condition_and_one_property():
    c = rule_cohort({"and": [
        {"performed": "purchase", "where": [{"property": "event_properties.plan", "op": "=", "value": "pro"}],
         "count": {"op": "at_least", "n": 3}, "within_days": 7},
        {"user_property": "country", "op": "!=", "value": "FR"}]})
    (c0,) = c.conditions
    assert (c0.id, c0.event_type, c0.count_op, c0.n, c0.within_days, c0.between) == (
        "c0", "purchase", "at_least", 3, 7, None)
    assert c.user_properties == frozenset({"country"})
    assert c.evaluate({"c0": {TODAY: 3}}, {"country": "DE"}, TODAY) is True
    assert c.evaluate({"c0": {TODAY: 3}}, {"country": "FR"}, TODAY) is False
    assert c.evaluate({"c0": {TODAY: 2}}, {}, TODAY) is False


def test_conditions_are_numbered_in_the_order_the_rule_is_written():
    c = rule_cohort({"or": [
        {"not": {"performed": "a", "within_days": 1}},
        {"and": [{"user_property": "plan", "op": "is_set"}, {"performed": "b", "within_days": 2}]},
        {"performed": "c", "between": ["2024-03-01", "2024-03-31"]},
        {"user_property": "x.y", "op": "=", "value": 1}]})
    assert [(k.id, k.event_type) for k in c.conditions] == [("c0", "a"), ("c1", "b"), ("c2", "c")]
    assert c.user_properties == frozenset({"plan", "x.y"})


def test_count_defaults_to_at_least_once():
    (c0,) = rule_cohort({"performed": "purchase", "within_days": 7}).conditions
    assert (c0.count_op, c0.n) == ("at_least", 1)


def test_within_days_counts_today_and_the_days_before_both_included():
    c = rule_cohort(bought(1, within_days=7))
    assert c.conditions[0].window(TODAY) == (TODAY - 6, TODAY)
    assert c.evaluate({"c0": {TODAY - 6: 1}}, {}, TODAY) is True
    assert c.evaluate({"c0": {TODAY - 7: 1}}, {}, TODAY) is False
    assert c.evaluate({"c0": {TODAY: 1}}, {}, TODAY) is True
    # a counter of a day after today does not count yet
    assert c.evaluate({"c0": {TODAY + 1: 1}}, {}, TODAY) is False
    one_day = rule_cohort(bought(1, within_days=1))
    assert (one_day.evaluate({"c0": {TODAY: 1}}, {}, TODAY), one_day.evaluate({"c0": {TODAY - 1: 1}}, {}, TODAY)) == (
        True, False)


def test_between_counts_its_first_and_last_days_and_nothing_outside():
    c = rule_cohort(bought(2, between=["2024-03-01", "2024-03-05"]))
    first, last = parse_day("2024-03-01"), parse_day("2024-03-05")
    assert c.conditions[0].window(TODAY) == (first, last)
    assert c.conditions[0].window(first + 1) == (first, first + 1)
    assert c.evaluate({"c0": {first: 1, last: 1}}, {}, TODAY) is True
    assert c.evaluate({"c0": {first - 1: 1, last + 1: 1, first: 1}}, {}, TODAY) is False


def test_at_most_zero_means_did_not_perform_and_exactly_means_exactly():
    none = rule_cohort(bought(0, "at_most"))
    assert (none.evaluate({}, {}, TODAY), none.evaluate({"c0": {TODAY: 1}}, {}, TODAY)) == (True, False)
    two = rule_cohort(bought(2, "exactly"))
    assert [two.evaluate({"c0": {TODAY: n}}, {}, TODAY) for n in (1, 2, 3)] == [False, True, False]
    three = rule_cohort(bought(3, "at_most"))
    assert [three.evaluate({"c0": {TODAY: n}}, {}, TODAY) for n in (3, 4)] == [True, False]


def test_not_and_or_combine_results():
    c = rule_cohort({"or": [{"not": bought(1)}, {"user_property": "plan", "op": "=", "value": "pro"}]})
    assert c.evaluate({}, {}, TODAY) is True
    assert c.evaluate({"c0": {TODAY: 1}}, {}, TODAY) is False
    assert c.evaluate({"c0": {TODAY: 1}}, {"plan": "pro"}, TODAY) is True


def test_a_condition_matches_its_project_event_type_and_every_filter():
    (c0,) = rule_cohort({"performed": "purchase", "within_days": 7, "where": [
        {"property": "event_properties.plan", "op": "=", "value": "pro"},
        {"property": "platform", "op": "=", "value": "iOS"}]}).conditions
    good = row(platform="iOS", event_properties={"plan": "pro"})
    assert c0.matches(good) is True
    assert c0.matches({**good, "app": P + 1}) is False
    assert c0.matches({**good, "event_type": "refund"}) is False
    assert c0.matches({**good, "platform": "Android"}) is False
    assert c0.matches({**good, "event_properties": {"plan": "free"}}) is False
    assert c0.matches({**good, "event_properties": None}) is False


def test_a_filter_name_keeps_its_dots_and_user_properties_are_those_of_the_row():
    (c0,) = rule_cohort({"performed": "view", "within_days": 7, "where": [
        {"property": "event_properties.page.url", "op": "contains", "value": "/pricing"},
        {"property": "user_properties.plan", "op": "is_set"}]}).conditions
    assert c0.matches(row("view", event_properties={"page.url": "https://x/pricing?a=1"},
                          user_properties={"plan": "free"})) is True
    assert c0.matches(row("view", event_properties={"page": {"url": "/pricing"}}, user_properties={"plan": 1})) is False
    assert c0.matches(row("view", event_properties={"page.url": "/pricing"}, user_properties={"plan": None})) is False


@pytest.mark.parametrize(("op", "value", "actual", "expected"), [
    ("=", "pro", "pro", True),
    ("=", "pro", "Pro", False),                       # case counts
    ("=", 3, 3.0, True),                              # numbers compare numerically
    ("=", 3, "3", True),                              # a numeric string is that number next to a number
    ("=", "3", 3, True),
    ("=", "3", "3.0", False),                         # two strings compare as strings
    ("=", 2.5, "2.50", True),
    ("=", 10**20, 10**20 + 1, False),                 # big integers stay exact
    ("=", 3, "3 apples", False),
    ("=", 1, True, False),                            # booleans are not numbers
    ("=", True, True, True),
    ("=", True, "true", False),
    ("=", "b", ["a", "b"], True),                     # a list is = when an element is
    ("=", "pro", None, False),
    ("!=", "pro", None, True),                        # != is not =: an absent property is != anything
    ("!=", "b", ["a", "b"], False),
    ("!=", 3, "3", False),
    ("contains", "ro", "pro", True),
    ("contains", "RO", "pro", False),
    ("contains", 2, ["1", 2], True),                  # membership in a list
    ("contains", 2, ["1", "2"], True),
    ("contains", 2, "123", False),                    # substrings are of string values only
    ("contains", "a", {"a": 1}, False),
    ("contains", "a", None, False),
    ("<", 10, 9.5, True),
    ("<", 10, "9", True),                             # numeric strings compare as numbers
    ("<", 10, "10", False),
    ("<", 10, "nan", False),
    ("<", 10, "1_0", False),                          # only plain decimal spellings are numbers
    (">", 10, "1e2", True),
    (">", 10, "eleven", False),
    (">", 10, [11], False),
    (">", 10, True, False),
    (">", 10, None, False),
    ("is_set", None, "", True),                       # an empty string is set
    ("is_set", None, 0, True),
    ("is_set", None, None, False),                    # null is not set
    ("is_not_set", None, None, True),
    ("is_not_set", None, [], False),
])
def test_comparisons(op, value, actual, expected):
    assert Comparison(op, value)(actual) is expected


def test_absent_and_null_user_properties_are_both_not_set():
    c = rule_cohort({"user_property": "plan", "op": "is_not_set"})
    assert (c.evaluate({}, {}, TODAY), c.evaluate({}, {"plan": None}, TODAY), c.evaluate({}, {"plan": ""}, TODAY)) == (
        True, True, False)


def test_the_counter_key_follows_what_is_counted_not_how_many_times_nor_the_filter_order():
    f1 = {"property": "platform", "op": "=", "value": "iOS"}
    f2 = {"property": "event_properties.plan", "op": "=", "value": "pro"}

    def key(rule, project=P):
        return rule_cohort(rule, project=project).conditions[0].key

    base = key({"performed": "purchase", "where": [f1, f2], "within_days": 7})
    assert len(base) == 8
    assert key({"performed": "purchase", "where": [f2, f1], "within_days": 7,
                "count": {"op": "at_most", "n": 9}}) == base
    assert key({"performed": "purchase", "where": [f1, f2], "within_days": 8}) != base
    assert key({"performed": "purchase", "where": [f1], "within_days": 7}) != base
    assert key({"performed": "refund", "where": [f1, f2], "within_days": 7}) != base
    assert key({"performed": "purchase", "where": [f1, f2], "within_days": 7}, project=P + 1) != base
    assert key({"performed": "purchase", "where": [f1, {**f2, "value": "free"}], "within_days": 7}) != base


def test_cohorts_with_the_same_condition_share_its_counters():
    cohorts = parse_cohorts([
        {"id": "a", "project": P, "name": "a", "rule": bought(1)},
        {"id": "b", "project": P, "name": "b", "rule": {"and": [bought(3), {"performed": "refund", "within_days": 7}]}},
    ], keep_properties=["email"])
    a, b = cohorts.cohorts
    assert a.conditions[0].key == b.conditions[0].key
    assert len(cohorts.conditions) == 2
    assert [c.event_type for c in cohorts.candidates(row())] == ["purchase"]
    assert cohorts.candidates(row(app=P + 1)) == ()
    assert cohorts.properties == {P: frozenset({"email"})}
    assert cohorts.cohort("b") is b and cohorts.cohort("z") is None


def test_longest_window_days_is_the_longest_rolling_window():
    cohorts = parse_cohorts([
        {"id": "a", "project": P, "name": "a", "rule": {"or": [bought(1, within_days=30), bought(1, within_days=90)]}},
        {"id": "b", "project": P, "name": "b", "rule": bought(1, between=["2020-01-01", "2024-01-01"])},
        {"id": "c", "project": P, "name": "c", "static": True},
    ])
    assert longest_window_days(cohorts.cohorts) == 90
    assert longest_window_days(cohorts.cohorts[1:]) == 0


def test_a_member_by_at_least_exits_the_day_its_needed_counter_leaves_the_window():
    c = rule_cohort(bought(2, within_days=7))
    counts = {"c0": {TODAY - 5: 1, TODAY - 2: 1, TODAY: 1}}
    # three events: the first leaving (on TODAY - 5 + 7) leaves two, the second leaving leaves one
    assert expires_on(counts, {}, c, TODAY) == TODAY - 2 + 7
    assert c.evaluate(counts, {}, TODAY + 4) is True and c.evaluate(counts, {}, TODAY + 5) is False


def test_a_not_cohort_is_entered_the_day_the_last_event_leaves_the_window():
    c = rule_cohort({"not": bought(1, within_days=7)})
    counts = {"c0": {TODAY - 6: 2, TODAY - 1: 1}}
    assert c.evaluate(counts, {}, TODAY) is False
    assert expires_on(counts, {}, c, TODAY) == TODAY - 1 + 7


def test_a_result_that_no_passing_day_changes_has_no_expiry():
    # the user property keeps the user out whatever the counters do
    c = rule_cohort({"and": [bought(1), {"user_property": "plan", "op": "=", "value": "pro"}]})
    assert expires_on({"c0": {TODAY: 1}}, {"plan": "free"}, c, TODAY) is None
    assert expires_on({"c0": {TODAY: 1}}, {"plan": "pro"}, c, TODAY) == TODAY + 7
    assert expires_on({}, {}, c, TODAY) is None


def test_between_windows_never_expire_without_events():
    c = rule_cohort(bought(1, between=["2024-03-01", "2024-03-31"]))
    assert expires_on({"c0": {parse_day("2024-03-02"): 1}}, {}, c, TODAY) is None
    assert expires_on({}, {}, c, TODAY) is None
    # a counter of a later day (a clock behind the data) enters on its day
    assert expires_on({"c0": {TODAY + 2: 1}}, {}, c, TODAY) == TODAY + 2


def test_a_static_cohort_has_no_expiry():
    c = parse_cohort({"id": "vip", "project": P, "name": "VIPs", "static": True})
    assert expires_on({}, {}, c, TODAY) is None


def test_compile_keeps_the_sync_columns_for_every_project():
    cohorts = compile_cohorts([rule_cohort({"user_property": "plan", "op": "is_set"}),
                               rule_cohort(bought(), cohort_id="b", project=7)], keep_properties=("email",))
    assert cohorts.properties == {P: frozenset({"plan", "email"}), 7: frozenset({"email"})}
    assert cohorts.properties_of(None) == frozenset() and cohorts.properties_of(8) == frozenset()
    assert cohorts.all_properties == frozenset({"plan", "email"})
