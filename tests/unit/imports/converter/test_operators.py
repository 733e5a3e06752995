"""Each operator of FORMATS.md §4.4 on the reference's example row, with the table's exact results."""

import pytest

from stream.imports.converter import Ctx, NoValue, compile_source

ROW = {"u": "Ann", "ts": "2024-03-09T07:15:00", "meta": {"tags": ["a", "b"]}, "amt": "12.6", "p": '{"x":1}'}
NOW_MS = 1709968500123  # 2024-03-09T07:15:00.123Z


def ev(sd, row=ROW, now_ms=NOW_MS):
    return compile_source(sd)(row, Ctx(now_ms))


def fails(sd, row=ROW) -> str:
    with pytest.raises(NoValue) as info:
        ev(sd, row)
    return str(info.value)


def test_a_string_reads_a_top_level_field():
    assert ev("u") == "Ann"
    assert fails("user") == "no field 'user'"


def test_path_walks_objects_and_string_list_indexes():
    assert ev(["path", "meta", "tags", "1"]) == "b"
    assert ev(["path", "meta"]) == {"tags": ["a", "b"]}
    assert ev(["path"]) is ROW
    assert fails(["path", "meta", "tags", "2"]) == "no index 2 in a list of 2"
    assert fails(["path", "meta", "nope"]) == "no field 'nope'"


def test_path_steps_are_descriptions_of_the_current_element():
    assert ev(["path", "meta", ["any", "labels", "tags"], "0"]) == "a"
    assert ev(["path", ["parse_json_element", "p"], "x"]) == 1


def test_any_returns_the_first_source_that_has_a_value():
    assert ev(["any", "user", "u"]) == "Ann"
    assert ev(["any", "gone", "u"], {"gone": None, "u": "Ann"}) == "Ann"
    assert fails(["any", "user", "who"]) == "any: none of its 2 sources has a value"


def test_value_is_a_literal_copied_for_each_row():
    assert ev(["value", "s3-import"]) == "s3-import"
    assert ev(["value", None]) is None
    fn = compile_source(["value", {"a": [1]}])
    first = fn(ROW, Ctx(0))
    first["a"].append(2)
    assert fn(ROW, Ctx(0)) == {"a": [1]}


def test_dict_builds_an_object_and_an_object_is_sugar_for_it():
    assert ev(["dict", "who", "u"]) == {"who": "Ann"}
    assert ev({"who": "u", "n": ["int", 2]}) == {"who": "Ann", "n": 2}
    assert fails({"who": "u", "what": "nope"}) == "no field 'nope'"


def test_array_skips_the_sources_that_fail():
    assert ev(["array", "u", "nope"]) == ["Ann"]
    assert ev(["array", "nope"]) == []


def test_cond_returns_the_source_after_the_first_true_test():
    assert ev(["cond", ["eq", "u", ["value", "Ann"]], ["value", 1]]) == 1
    assert ev(["condition", ["bool", False], ["value", 1], "missing", ["value", 2], ["bool", True], ["value", 3]]) == 3
    assert fails(["cond", ["bool", False], ["value", 1]]) == "cond: no test is true"


def test_ifelse_picks_a_branch():
    assert ev(["ifelse", ["eq", "u", ["value", ""]], ["value", None], "u"]) == "Ann"
    assert ev(["ifelse", ["eq", "u", ["value", ""]], ["value", None], "u"], {"u": ""}) is None
    assert ev(["ifelse", ["eq", "missing", ["value", ""]], ["value", "then"], ["value", "else"]]) == "else"


def test_sample_md5_keeps_keys_whose_md5_falls_below_the_percent():
    # int(md5("Ann"), 16) % 100 == 8 and for "Bob" it is 91
    assert ev(["sample_md5", ["value", 10], "u"]) is True
    assert ev(["sample_md5", ["value", 8], "u"]) is False
    assert ev(["sample_md5", ["value", "92"], ["value", "Bob"]]) is True
    kept = sum(ev(["sample_md5", ["int", 10], ["value", f"user-{i}"]]) for i in range(1000))
    assert kept == 80


def test_iso_time_to_ms_reads_a_zone_less_time_as_utc():
    assert ev(["iso_time_to_ms", "ts"]) == 1709968500000
    assert ev(["iso_time_to_ms", ["value", "2024-03-09T08:15:00.5+01:00"]]) == 1709968500500
    assert ev(["iso_time_to_ms", ["value", "2024-03-09T07:15:00.123456Z"]]) == 1709968500123
    assert fails(["iso_time_to_ms", ["value", "2024-13-01T00:00:00"]]) == (
        "iso_time_to_ms: '2024-13-01T00:00:00' is not an ISO time (YYYY-MM-DDTHH:MM:SS)")


def test_ms_to_iso_time_prints_milliseconds_only_when_there_are_some():
    assert ev(["ms_to_iso_time", ["value", 1709968500000]]) == "2024-03-09T07:15:00"
    assert ev(["ms_to_iso_time", ["value", "1709968500042"]]) == "2024-03-09T07:15:00.042"
    assert ev(["ms_to_iso_time", ["int", -1]]) == "1969-12-31T23:59:59.999"
    assert fails(["ms_to_iso_time", ["value", 1.5]]) == "ms_to_iso_time: 1.5 is not an integer"


def test_iso_time_now_and_ms_time_now_read_the_given_time():
    assert ev(["iso_time_now"]) == "2024-03-09T07:15:00.123"
    assert ev(["ms_time_now"]) == NOW_MS
    assert ev(["ms_time_now"], now_ms=0) == 0
    with pytest.raises(NoValue, match="iso_time_now: the time 1000000000000000 ms is outside years 1-9999"):
        ev(["iso_time_now"], now_ms=10**15)


def test_int96_time_to_ms_decodes_a_base64_parquet_int96():
    assert ev(["int96_time_to_ms", ["value", "AP6qCz41AAAwhCUA"]]) == 1562516140600  # 2019-07-07T16:15:40.600Z
    assert ev(["int96_time_to_ms", ["value", "FVWW6LwXAADbiiUA"]]) == 1709968500123
    assert fails(["int96_time_to_ms", ["value", "AAAA"]]) == (
        "int96_time_to_ms: 'AAAA' is not a base64 INT96 (3 bytes, an INT96 has 12)")


def test_parse_time_to_ms_reads_a_java_date_pattern():
    assert ev(["parse_time_to_ms", "M/d/yyyy H:mm:ss", ["value", "1/1/2021 5:06:07"]]) == 1609477567000
    assert fails(["parse_time_to_ms", "M/d/yyyy H:mm:ss", "ts"]) == (
        "parse_time_to_ms: '2024-03-09T07:15:00' does not match 'M/d/yyyy H:mm:ss'")


def test_parse_json_element_and_its_alias_parse_a_json_string():
    assert ev(["parse_json_element", "p"]) == {"x": 1}
    assert ev(["parse_json_object", ["value", "[1, 2]"]]) == [1, 2]
    assert fails(["parse_json_element", "u"]) == "parse_json_element: 'Ann' is not JSON"


def test_merge_dicts_lets_later_keys_win():
    assert ev(["merge_dicts", {"a": "u"}, ["parse_json_element", "p"]]) == {"a": "Ann", "x": 1}
    assert ev(["merge_dicts", {"x": "u"}, ["parse_json_element", "p"]]) == {"x": 1}
    assert fails(["merge_dicts", "meta", "u"]) == "merge_dicts: 'Ann' is not an object"


def test_flatten_dict_joins_nested_keys_down_to_the_depth():
    assert ev(["flatten_dict", ".", ["int", 5], "meta"]) == {"tags": ["a", "b"]}
    nested = {"o": {"a": {"b": {"c": 1}}, "d": 2, "e": {}}}
    assert ev(["flatten_dict", "_", ["int", 5], "o"], nested) == {"a_b_c": 1, "d": 2, "e": {}}
    assert ev(["flatten_dict", ".", ["int", 2], "o"], nested) == {"a.b": {"c": 1}, "d": 2, "e": {}}
    assert ev(["flatten_dict", ".", ["int", 1], "o"], nested) == nested["o"]
    assert fails(["flatten_dict", ".", ["int", 0], "o"], nested) == "flatten_dict: the depth must be 1 or more, got 0"


def test_exclude_keys_drops_the_named_keys():
    assert ev(["exclude_keys", {"a": "u", "b": "amt"}, "b"]) == {"a": "Ann"}
    assert ev(["exclude_keys", "meta"]) == {"tags": ["a", "b"]}


def test_concat_joins_values_as_text():
    assert ev(["concat", "u", ["value", "-"], "amt"]) == "Ann-12.6"
    assert ev(["concat", ["int", 3], ["value", 1.5], ["bool", True]]) == "31.5true"
    assert fails(["concat", "u", "meta"]) == "concat: {\"tags\": [\"a\", \"b\"]} is not a string"


def test_replace_with_replaces_every_java_regex_match():
    assert ev(["replace_with", "\\.", "_", "amt"]) == "12_6"
    assert ev(["replace_with", "(\\d+)\\.(\\d+)", "$2,$1 \\$", "amt"]) == "6,12 $"
    assert ev(["replace_with", "(?<int>\\d+)", "<${int}>", "amt"]) == "<12>.<6>"


def test_split_cuts_on_a_literal_separator():
    assert ev(["split", "-", ["value", "a-b"]]) == ["a", "b"]
    assert ev(["split", ".", "amt"]) == ["12", "6"]
    assert ev(["split", ",", ["value", "a,,b,"]]) == ["a", "", "b", ""]


def test_lowercase_and_its_alias():
    assert ev(["lower", "u"]) == "ann"
    assert ev(["lowercase", ["value", "ÀB"]]) == "àb"


def test_typeof_names_the_json_type():
    assert ev(["typeof", "meta"]) == "dict"
    assert [ev(["typeof", ["value", v]]) for v in ("s", [1], True, 1.5, 3, None)] == [
        "string", "list", "bool", "number", "number", "null"]


def test_bool_is_a_static_boolean():
    assert ev(["bool", True]) is True
    assert ev(["bool", False]) is False


def test_not_negates_with_null_false_and_true_false_strings_cast():
    assert ev(["!", ["bool", False]]) is True
    assert ev(["not", ["value", None]]) is True
    assert ev(["not", ["value", "TRUE"]]) is False
    assert ev(["not", ["value", "false"]]) is True
    assert ev(["not", "missing"]) is True


def test_and_is_true_when_every_argument_is():
    assert ev(["&&", ["bool", True], ["value", "true"]]) is True
    assert ev(["and", ["bool", True], "u"]) is False
    assert ev(["and", ["bool", True]]) is True


def test_or_is_true_when_one_argument_is():
    assert ev(["||", ["bool", False], ["value", "True"]]) is True
    assert ev(["or", ["value", None], "missing"]) is False


def test_equals_and_its_aliases_compare_strict_json():
    assert ev(["eq", "u", ["value", "Ann"]]) is True
    assert ev(["equals", ["value", 1], ["value", 1.0]]) is True
    assert ev(["=", "amt", ["value", 12.6]]) is False
    assert ev(["eq", ["value", True], ["value", 1]]) is False
    assert ev(["eq", "meta", ["value", {"tags": ["a", "b"]}]]) is True


def test_contains_tests_a_literal_substring():
    assert ev(["contains", "nn", "u"]) is True
    assert ev(["is_substring", "x", "u"]) is False
    assert ev(["contains", "2.", "amt"]) is True
    assert ev(["contains", "a", ["value", None]]) is False


def test_int_is_a_static_integer():
    assert ev(["int", 5]) == 5


def test_round_coerces_strings_and_reads_null_as_zero():
    assert ev(["round", "amt"]) == 13
    assert ev(["round", ["value", None]]) == 0
    assert ev(["round", ["value", 2.5]]) == 3
    assert ev(["round", ["value", -2.5]]) == -2
    assert fails(["round", "u"]) == "round: 'Ann' is not a number"
    assert fails(["round", ["value", 1e300]]) == "round: the result does not fit 64 bits"


def test_add_gives_an_integer_for_integers_and_a_float_otherwise():
    assert ev(["+", ["int", 2], ["value", "3"], ["value", None]]) == 5
    assert isinstance(ev(["add", ["int", 2], ["int", 3]]), int)
    assert ev(["add", "amt", ["int", 1]]) == 13.6


def test_subtract_takes_the_second_from_the_first():
    assert ev(["-", ["int", 10], ["value", "4"]]) == 6
    assert ev(["subtract", "amt", ["value", 0.6]]) == 12.0


def test_multiply_multiplies_every_argument():
    assert ev(["*", ["int", 2], ["int", 3], ["value", "4"]]) == 24
    assert ev(["multiply", "amt", ["int", 2]]) == 25.2
    assert fails(["*", ["int", 2**62], ["int", 2]]) == "*: the result does not fit 64 bits"
    assert fails(["*", ["value", 1e300], ["value", 1e300]]) == "*: the result is too large"


def test_divide_keeps_exact_integer_quotients_whole():
    assert ev(["/", ["int", 10], ["int", 2]]) == 5
    assert isinstance(ev(["/", ["int", 10], ["int", 2]]), int)
    assert ev(["divide", ["int", 7], ["int", 2]]) == 3.5
    assert fails(["/", ["int", 1], ["int", 0]]) == "/: division by zero"
