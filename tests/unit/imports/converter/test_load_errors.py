"""Mistakes in a SOURCE_DESCRIPTION fail at load with the exact path, the operator and what to write instead."""

import pytest

from stream.imports.converter import Converter, ConverterError, compile_source

CASES = [
    ({"time": ["iso_time_to_msec", "ts"]}, "convertToAmplitudeFunc.time", "iso_time_to_msec",
     "unknown operator 'iso_time_to_msec'; did you mean 'iso_time_to_ms'?"),
    ({"user_id": ["coalesce", "uid", "user"]}, "convertToAmplitudeFunc.user_id", "coalesce",
     "unknown operator 'coalesce'; write 'any': it returns the first source that has a value"),
    ({"tags": ["a", "b"]}, "convertToAmplitudeFunc.tags", "a",
     "unknown operator 'a'; write one of add, and, any, array, bool, concat, condition, contains, dict, divide, "
     "equals, exclude_keys, flatten_dict, ifelse, int, int96_time_to_ms, iso_time_now, iso_time_to_ms, lowercase, "
     "merge_dicts, ms_time_now, ms_to_iso_time, multiply, not, or, parse_json_element, parse_time_to_ms, path, "
     'replace_with, round, sample_md5, split, subtract, typeof, value (a literal list is ["value", [...]])'),
    ({"user_id": ["ifelse", ["eq", "uid", ["value", ""], "x"], ["value", None], "uid"]},
     "convertToAmplitudeFunc.user_id[1]", "eq",
     'takes 2 arguments, got 3; write ["eq", SOURCE_DESCRIPTION, SOURCE_DESCRIPTION]'),
    ({"time": ["iso_time_to_ms"]}, "convertToAmplitudeFunc.time", "iso_time_to_ms",
     'takes 1 argument, got 0; write ["iso_time_to_ms", SOURCE_DESCRIPTION]'),
    ({"now": ["ms_time_now", "ts"]}, "convertToAmplitudeFunc.now", "ms_time_now",
     'takes no arguments, got 1; write ["ms_time_now"]'),
    ({"x": ["concat"]}, "convertToAmplitudeFunc.x", "concat",
     'takes at least 1 argument, got 0; write ["concat", SOURCE_DESCRIPTION, ...]'),
    ({"x": ["cond", ["bool", True], "a", ["bool", False]]}, "convertToAmplitudeFunc.x", "cond",
     'takes an even number of arguments, at least 2, got 3; write ["cond", BOOLEAN_SOURCE, SOURCE_DESCRIPTION, ...]'),
    ({"x": ["dict", "a", "u", "a", "v"]}, "convertToAmplitudeFunc.x[3]", "dict", "key 'a' is given twice; keep one"),
    ({"flag": ["bool", "true"]}, "convertToAmplitudeFunc.flag[1]", "bool",
     'needs true or false, got \'true\'; write ["bool", true]'),
    ({"n": ["int", 5.0]}, "convertToAmplitudeFunc.n[1]", "int", 'needs an integer, got 5.0; write ["int", 5]'),
    ({"n": ["int", True]}, "convertToAmplitudeFunc.n[1]", "int", 'needs an integer, got true; write ["int", 5]'),
    ({"x": ["contains", ["value", "a"], "u"]}, "convertToAmplitudeFunc.x[1]", "contains",
     'needs a literal string here (it is not read from the row), got ["value", "a"]; '
     'write ["contains", "text", SOURCE_DESCRIPTION]'),
    ({"x": ["exclude_keys", "u", 3]}, "convertToAmplitudeFunc.x[2]", "exclude_keys",
     'needs a literal string here (it is not read from the row), got 3; '
     'write ["exclude_keys", SOURCE_DESCRIPTION, "key", ...]'),
    ({"x": ["split", "", "u"]}, "convertToAmplitudeFunc.x[1]", "split",
     'the separator is empty; write ["split", ",", SOURCE_DESCRIPTION]'),
    ({"x": ["replace_with", "a++(", "_", "amt"]}, "convertToAmplitudeFunc.x[1]", "replace_with",
     "invalid regular expression 'a++(': missing ')'"),
    ({"x": ["replace_with", "[a-z&&[^aeiou]]", "_", "amt"]}, "convertToAmplitudeFunc.x[1]", "replace_with",
     "regular expression '[a-z&&[^aeiou]]': class intersection && is not supported; "
     "list the characters the intersection allows"),
    ({"x": ["replace_with", "(a)", "$2", "amt"]}, "convertToAmplitudeFunc.x[2]", "replace_with",
     "replacement '$2': the pattern has no group 2 (it has 1); write \\$ for a dollar sign"),
    ({"t": ["parse_time_to_ms", "yyyy-MM-dd kk", "ts"]}, "convertToAmplitudeFunc.t[1]", "parse_time_to_ms",
     "date pattern 'yyyy-MM-dd kk': letter 'k' is not supported; use y M d H h m s S a E Z X z, "
     "and quote literal letters as 'T'"),
    ({"t": ["parse_time_to_ms", "yyyy-MM-dd'T", "ts"]}, "convertToAmplitudeFunc.t[1]", "parse_time_to_ms",
     "date pattern \"yyyy-MM-dd'T\": a quote ' is not closed; write '' for a quote"),
    ({"x": ["concat", "u", 5]}, "convertToAmplitudeFunc.x[2]", "concat",
     '5 is not a SOURCE_DESCRIPTION; write a field name ("user"), an operator list (["lowercase", "user"]) or an '
     'object ({"key": "user"}), or ["value", 5] for a literal'),
    ({"x": None}, "convertToAmplitudeFunc.x", None,
     'null is not a SOURCE_DESCRIPTION; write a field name ("user"), an operator list (["lowercase", "user"]) or an '
     'object ({"key": "user"}), or ["value", null] for a literal'),
    ({"x": []}, "convertToAmplitudeFunc.x", None,
     'an empty list is not a SOURCE_DESCRIPTION; write a field name ("user"), an operator list '
     '(["lowercase", "user"]) or an object ({"key": "user"})'),
    ({"x": [1, 2]}, "convertToAmplitudeFunc.x[0]", None,
     'the first element of a list names the operator, got 1; write ["value", ...] for a literal list'),
    ({"x": ["lower", ""]}, "convertToAmplitudeFunc.x[1]", "lower",
     'an empty field name; write the name of a column, such as "user"'),
    ({"event_properties": {"price": ["round", ["value"]]}}, "convertToAmplitudeFunc.event_properties.price[1]",
     "value", 'takes 1 argument, got 0; write ["value", JSON_VALUE]'),
    ({"a b": {"c.d": ["lowercas", "u"]}}, 'convertToAmplitudeFunc["a b"]["c.d"]', "lowercas",
     "unknown operator 'lowercas'; did you mean 'lowercase'?"),
]


@pytest.mark.parametrize(("func", "path", "operator", "detail"), CASES)
def test_a_load_error_names_the_path_and_the_operator(func, path, operator, detail):
    with pytest.raises(ConverterError) as info:
        Converter(func)
    assert (info.value.path, info.value.operator, info.value.detail) == (path, operator, detail)
    assert str(info.value) == (f"{path}: {operator}: {detail}" if operator else f"{path}: {detail}")


def test_a_lone_source_reports_paths_relative_to_where_it_was_given():
    with pytest.raises(ConverterError) as info:
        compile_source(["concat", "u", ["+", "a"], ["round"]])
    assert str(info.value) == '[3]: round: takes 1 argument, got 0; write ["round", SOURCE_DESCRIPTION]'
    with pytest.raises(ConverterError) as info:
        compile_source(["round"], "event_properties.price")
    assert info.value.path == "event_properties.price"


def test_descriptions_nested_beyond_the_limit_are_refused():
    sd = "u"
    for _ in range(70):
        sd = ["lower", sd]
    with pytest.raises(ConverterError) as info:
        compile_source(sd)
    assert info.value.detail == "nested more than 64 levels deep; simplify the description"
