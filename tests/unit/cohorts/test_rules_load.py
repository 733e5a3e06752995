"""Loading definitions: what is accepted, and every mistake is a CohortError naming its path and the cure."""

import pickle

import pytest

from stream.cohorts.rules import CohortError, parse_cohort, parse_cohorts, parse_members
from stream.errors import ConfigError

BUY = {"performed": "purchase", "within_days": 7}


def cohort(rule=None, **fields):
    base = {"id": "abc12de", "project": 424242, "name": "Buyers", "rule": BUY if rule is None else rule}
    return {**base, **fields}


def error(definitions) -> CohortError:
    with pytest.raises(CohortError) as info:
        parse_cohorts(definitions)
    return info.value


def test_a_mistake_deep_in_the_third_cohort_names_its_whole_path_and_the_cure():
    bad = {"and": [BUY, {"performed": "purchase", "count": {"op": "atleast", "n": 3}, "within_days": 7}]}
    e = error([cohort(id="a"), cohort(id="b"), cohort(bad, id="c")])
    assert e.path == "cohorts[2].rule.and[1].count.op"
    assert str(e) == "cohorts[2].rule.and[1].count.op: unknown count op 'atleast'; write at_least, at_most or exactly"


def test_the_error_is_a_config_error_and_survives_pickling():
    e = error([cohort(name="")])
    assert isinstance(e, ConfigError)
    assert (pickle.loads(pickle.dumps(e)).path, str(pickle.loads(pickle.dumps(e)))) == (e.path, str(e))


@pytest.mark.parametrize(("definition", "path", "message"), [
    (cohort(colour="red"), "cohorts[0].colour",
     "unknown key; a cohort takes id, project, name, rule, static"),
    ({"project": 1, "name": "x", "rule": BUY}, "cohorts[0]", "missing id: write id: an id such as abc12de"),
    (cohort(id="has space"), "cohorts[0].id", "'has space' is not an id: write 1 to 64 letters, digits, _ or -"),
    (cohort(id="x" * 65), "cohorts[0].id", f"{'x' * 65!r} is not an id: write 1 to 64 letters, digits, _ or -"),
    (cohort(project="424242"), "cohorts[0].project", "expected a positive integer project id, got '424242'"),
    (cohort(project=True), "cohorts[0].project", "expected a positive integer project id, got True"),
    (cohort(name="  "), "cohorts[0].name", "expected a non-empty string"),
    (cohort(static="yes"), "cohorts[0].static", "expected true or false, got a string"),
    (cohort(static=True), "cohorts[0].rule", "a static cohort has no rule: remove rule, or remove static: true"),
    ({"id": "a", "project": 1, "name": "x"}, "cohorts[0]",
     "missing rule: write rule: {performed: ..., within_days: ...}, or static: true"),
    (cohort([BUY]), "cohorts[0].rule", ("expected a mapping, got a list; write {performed: ...}, {user_property: ...}, "
                                       "{and: [...]}, {or: [...]} or {not: {...}}")),
    (cohort({"perfomed": "purchase"}), "cohorts[0].rule",
     "found perfomed; a rule starts with one of performed, user_property, and, or, not"),
    (cohort({"performed": "purchase", "user_property": "plan"}), "cohorts[0].rule",
     "performed and user_property in one rule; write each in its own rule inside {and: [...]}"),
    (cohort({"and": []}), "cohorts[0].rule.and", "expected a non-empty list of rules, got a list"),
    (cohort({"or": BUY}), "cohorts[0].rule.or", "expected a non-empty list of rules, got a mapping"),
    (cohort({"and": [BUY], "within_days": 3}), "cohorts[0].rule.within_days", "unknown key; an and rule takes and"),
    (cohort({"not": {"not": {"performed": ""}}}), "cohorts[0].rule.not.not.performed",
     "expected an event type, e.g. purchase"),
    (cohort({**BUY, "wihtin": 3}), "cohorts[0].rule.wihtin",
     "unknown key; a performed rule takes performed, where, count, within_days, between"),
    (cohort({"performed": "purchase"}), "cohorts[0].rule",
     ('missing window: add within_days: 30 (today and the 29 days before) or between: ["2024-03-01", "2024-03-31"] '
     "(UTC days, both included)")),
    (cohort({**BUY, "between": ["2024-03-01", "2024-03-31"]}), "cohorts[0].rule",
     "write either within_days or between, not both"),
    (cohort({"performed": "purchase", "within_days": 0}), "cohorts[0].rule.within_days",
     "expected a number of days from 1 to 3660 (7: today and the 6 days before), got 0"),
    (cohort({"performed": "purchase", "within_days": "7"}), "cohorts[0].rule.within_days",
     "expected a number of days from 1 to 3660 (7: today and the 6 days before), got '7'"),
    (cohort({"performed": "purchase", "between": ["2024-03-01"]}), "cohorts[0].rule.between",
     'expected two UTC days, first and last: ["2024-03-01", "2024-03-31"]'),
    (cohort({"performed": "purchase", "between": ["2024-03-01", "20240331"]}), "cohorts[0].rule.between[1]",
     "expected a day as YYYY-MM-DD, e.g. 2024-03-01, got '20240331'"),
    (cohort({"performed": "purchase", "between": ["2024-02-30", "2024-03-31"]}), "cohorts[0].rule.between[0]",
     "expected a day as YYYY-MM-DD, e.g. 2024-03-01, got '2024-02-30'"),
    (cohort({"performed": "purchase", "between": ["2024-03-31", "2024-03-01"]}), "cohorts[0].rule.between",
     "the first day is after the last: write [earlier, later]"),
    (cohort({**BUY, "count": {"op": "at_least"}}), "cohorts[0].rule.count",
     "missing n: write n: how many times, e.g. 3"),
    (cohort({**BUY, "count": {"op": "at_least", "n": -1}}), "cohorts[0].rule.count.n",
     "expected a whole number of times, 0 or more, got -1"),
    (cohort({**BUY, "count": {"op": "at_least", "n": 2.5}}), "cohorts[0].rule.count.n",
     "expected a whole number of times, 0 or more, got 2.5"),
    (cohort({**BUY, "count": {"op": "at_least", "n": 1, "times": 2}}), "cohorts[0].rule.count.times",
     "unknown key; a count takes op, n"),
    (cohort({**BUY, "where": {"property": "platform", "op": "=", "value": "iOS"}}), "cohorts[0].rule.where",
     "expected a list of filters, got a mapping"),
    (cohort({**BUY, "where": [{"property": "platfrom", "op": "=", "value": "iOS"}]}),
     "cohorts[0].rule.where[0].property",
     ("'platfrom' is not a row field: write event_properties.<name>, user_properties.<name> or an export column such "
     "as platform or country")),
    (cohort({**BUY, "where": [{"property": "group_properties.x", "op": "is_set"}]}),
     "cohorts[0].rule.where[0].property",
     ("'group_properties.x' is not a row field: write event_properties.<name>, user_properties.<name> or an export "
     "column such as platform or country")),
    (cohort({**BUY, "where": [{"property": "event_properties.", "op": "is_set"}]}),
     "cohorts[0].rule.where[0].property",
     ("'event_properties.' is not a row field: write event_properties.<name>, user_properties.<name> or an export "
     "column such as platform or country")),
    (cohort({**BUY, "where": [{"property": "platform", "op": "==", "value": "iOS"}]}), "cohorts[0].rule.where[0].op",
     "unknown op '=='; write one of =, !=, contains, <, >, is_set, is_not_set"),
    (cohort({**BUY, "where": [{"property": "platform", "op": "="}]}), "cohorts[0].rule.where[0]",
     "missing value: write value: the value to compare with ="),
    (cohort({**BUY, "where": [{"property": "platform", "op": "=", "value": None}]}), "cohorts[0].rule.where[0].value",
     "null is not a value: to test for a missing property write op: is_not_set (or is_set)"),
    (cohort({**BUY, "where": [{"property": "platform", "op": "is_set", "value": True}]}),
     "cohorts[0].rule.where[0].value", "is_set takes no value: remove value"),
    (cohort({**BUY, "where": [{"property": "event_properties.n", "op": ">", "value": "10"}]}),
     "cohorts[0].rule.where[0].value", "> compares numbers: write a number such as 10, got '10'"),
    (cohort({**BUY, "where": [{"property": "event_properties.n", "op": "=", "value": [1]}]}),
     "cohorts[0].rule.where[0].value", "= compares with a string, number or boolean, got a list"),
    (cohort({"user_property": "plan", "op": "contains"}), "cohorts[0].rule",
     "missing value: write value: the value to compare with contains"),
    (cohort({"user_property": "", "op": "is_set"}), "cohorts[0].rule.user_property",
     "expected a user property name, e.g. plan"),
    (cohort({"user_property": "plan", "op": "is_set", "where": []}), "cohorts[0].rule.where",
     "unknown key; a user_property rule takes user_property, op, value"),
])
def test_a_mistake_is_reported_at_its_path_with_what_to_write(definition, path, message):
    e = error([definition])
    assert (e.path, e.detail) == (path, message)


def test_rules_nest_at_most_32_deep():
    rule = BUY
    for _ in range(32):
        rule = {"not": rule}
    e = error([cohort(rule)])
    assert e.path == "cohorts[0].rule" + ".not" * 32
    assert e.detail == "rules nest at most 32 deep; flatten and/or lists"
    assert parse_cohort(cohort(rule["not"])).rule is not None


def test_cohort_ids_are_unique_across_projects():
    e = error([cohort(), cohort(project=7)])
    assert str(e) == "cohorts[1].id: duplicate id 'abc12de' (also cohorts[0].id); give each cohort its own id"


def test_the_list_itself_must_be_a_list():
    assert str(error({"id": "a"})) == "cohorts: expected a list of cohorts, got a mapping; write [{id: ..., ...}]"


def test_a_static_cohort_has_no_rule_and_no_conditions():
    c = parse_cohort({"id": "vip", "project": 424242, "name": "VIPs", "static": True})
    assert (c.static, c.rule, c.conditions, c.user_properties) == (True, None, (), frozenset())
    with pytest.raises(ValueError, match="cohort vip is static"):
        c.evaluate({}, {}, 0)


def test_static_members_are_a_list_of_non_empty_user_ids():
    assert parse_members(["u1", "u2", "u1"]) == frozenset({"u1", "u2"})
    with pytest.raises(CohortError) as info:
        parse_members(["u1", ""], "members")
    assert str(info.value) == "members[1]: expected a user id (a non-empty string), got a string"
    with pytest.raises(CohortError) as info:
        parse_members("u1")
    assert str(info.value) == 'members: expected a list of user ids, got a string; write ["user-1", "user-2"]'


def test_static_false_with_a_rule_is_a_rule_cohort():
    assert parse_cohort(cohort(static=False)).static is False
