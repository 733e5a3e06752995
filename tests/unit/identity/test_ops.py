"""Identify operations: one case per operator, the order they run in, and the errors that dead-letter an event."""

import orjson
import pytest

from stream.identity.ops import MAX_PROPERTIES, IdentifyError, apply_identify, check_set, set_values, within_limits


def test_set_overwrites_and_adds():
    assert apply_identify({"a": 1, "b": 2}, {"$set": {"a": 5, "c": [1]}}) == {"a": 5, "b": 2, "c": [1]}


def test_set_once_keeps_a_value_already_set():
    assert apply_identify({"a": 1}, {"$setOnce": {"a": 5, "b": 6}}) == {"a": 1, "b": 6}


def test_add_increments_and_counts_a_missing_property_as_zero():
    assert apply_identify({"n": 2, "x": 1.5}, {"$add": {"n": 3, "x": -0.5, "m": 4}}) == {"n": 5, "x": 1.0, "m": 4}


def test_add_leaves_a_property_that_is_not_a_number():
    assert apply_identify({"s": "ten"}, {"$add": {"s": 1}}) == {"s": "ten"}


@pytest.mark.parametrize("value", ["5", "five", None, [1], {"a": 1}, True])
def test_add_of_anything_but_a_number_is_an_error(value):
    with pytest.raises(IdentifyError) as e:
        apply_identify({}, {"$add": {"n": value}})
    assert (e.value.reason, e.value.field) == ("invalid_identify", "user_properties.$add.n")


def test_append_adds_at_the_end_making_lists():
    got = apply_identify({"l": [1], "s": "x"}, {"$append": {"l": [2, 3], "s": "y", "new": 7}})
    assert got == {"l": [1, 2, 3], "s": ["x", "y"], "new": [7]}


def test_prepend_adds_at_the_front():
    assert apply_identify({"l": [1]}, {"$prepend": {"l": [2, 3], "new": "a"}}) == {"l": [2, 3, 1], "new": ["a"]}


def test_unset_removes_properties():
    assert apply_identify({"a": 1, "b": 2}, {"$unset": {"a": "-", "zz": "-"}}) == {"b": 2}


def test_remove_takes_values_out_of_lists():
    got = apply_identify({"l": [1, 2, 1, 3], "s": "x", "t": "y"}, {"$remove": {"l": [1, 3], "s": "x", "t": "z"}})
    assert got == {"l": [2], "t": "y"}


def test_clear_all_removes_every_property_before_the_other_operations():
    assert apply_identify({"a": 1, "b": 2}, {"$set": {"c": 3}, "$clearAll": "-"}) == {"c": 3}


def test_operations_run_in_amplitudes_order_whatever_the_json_order():
    # $unset before $set, $set before $setOnce, $setOnce before $add, $add before $append
    ops = {"$append": {"n": 1}, "$add": {"n": 1}, "$setOnce": {"n": 10}, "$set": {"k": 1}, "$unset": {"k": "-"}}
    assert apply_identify({}, ops) == {"n": [11, 1], "k": 1}


def test_plain_keys_of_an_identify_are_set():
    assert apply_identify({"a": 1}, {"b": 2, "$add": {"a": 1}}) == {"a": 2, "b": 2}


def test_the_input_is_never_modified():
    props = {"l": [1]}
    apply_identify(props, {"$append": {"l": 2}, "$set": {"x": 1}})
    assert props == {"l": [1]}


@pytest.mark.parametrize("ops, field", [
    ({"$set": "plan=pro"}, "user_properties.$set"),
    ({"$set": ["a"]}, "user_properties.$set"),
    ({"$unset": None}, "user_properties.$unset"),
    ({"$increment": {"a": 1}}, "user_properties.$increment"),
])
def test_an_operation_that_is_not_an_object_or_unknown_is_an_error(ops, field):
    with pytest.raises(IdentifyError) as e:
        apply_identify({}, ops)
    assert (e.value.reason, e.value.field) == ("invalid_identify", field)


def test_user_properties_that_are_not_an_object_are_an_error():
    with pytest.raises(IdentifyError) as e:
        apply_identify({}, ["$set"])
    assert e.value.reason == "invalid_identify"


def test_more_properties_than_the_limit_in_one_operation_is_an_error():
    with pytest.raises(IdentifyError) as e:
        apply_identify({}, {"$set": {f"p{i}": i for i in range(MAX_PROPERTIES + 1)}})
    assert (e.value.reason, e.value.field) == ("too_many_properties", "user_properties.$set")
    assert len(apply_identify({}, {"$set": {f"p{i}": i for i in range(MAX_PROPERTIES)}})) == MAX_PROPERTIES


def test_a_string_value_over_1024_characters_is_an_error_even_nested():
    with pytest.raises(IdentifyError) as e:
        apply_identify({}, {"$set": {"bio": {"long": ["x" * 1025]}}})
    assert (e.value.reason, e.value.field) == ("invalid_value", "user_properties.$set.bio")
    assert apply_identify({}, {"$set": {"bio": "x" * 1024}}) == {"bio": "x" * 1024}


def test_a_plain_update_sets_its_keys_and_ignores_operations():
    assert set_values({"a": 1}, check_set({"a": 2, "b": 3, "$set": {"c": 1}})) == {"a": 2, "b": 3}
    with pytest.raises(IdentifyError):
        check_set({f"p{i}": i for i in range(MAX_PROPERTIES + 1)})


def test_a_plain_update_without_operations_is_merged_whole():
    assert set_values({"a": 1, "b": 2}, {"b": 3, "$own": 4}) == {"a": 1, "b": 3, "$own": 4}


def _nested(levels):
    v = 0
    for _ in range(levels):
        v = [v]
    return v


@pytest.mark.parametrize("value, walked", [
    ({"plan": "pro", "tags": ["a", "b"]}, False),      # small and shallow: nothing to walk
    ({"a": _nested(40)}, False),                        # 41 brackets
    ({"bio": "x" * 1020}, True),                        # over MAX_STRING bytes of JSON
    ({"a": "[" * 41}, True),                           # 42 brackets, if only in a string: walked for nothing
])
def test_json_that_cannot_break_a_limit_is_not_walked(value, walked):
    raw = orjson.dumps(value)
    assert within_limits(raw) is not walked
    assert check_set(value, raw=raw) is value


def test_a_limit_is_enforced_with_or_without_the_json_it_came_from():
    deep = {"a": [0]}
    for _ in range(41):
        deep = {"a": [deep]}
    for value, reason in [({"bio": "x" * 1025}, "invalid_value"), (deep, "invalid_value"),
                          ({f"p{i}": i for i in range(MAX_PROPERTIES + 1)}, "too_many_properties")]:
        for raw in (None, orjson.dumps(value)):
            with pytest.raises(IdentifyError) as e:
                check_set(value, raw=raw)
            assert e.value.reason == reason
