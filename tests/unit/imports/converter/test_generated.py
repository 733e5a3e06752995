"""Generated descriptions and rows: well-formed input never raises, malformed input is a ConverterError at its path."""

from datetime import datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.imports.converter import (
    OPERATORS,
    Converter,
    ConverterError,
    Ctx,
    NoValue,
    compile_source,
    parse_converter_config,
)
from stream.imports.converter.errors import child_path
from stream.imports.converter.javaregex import RegexError, compile_java_regex
from stream.imports.converter.javatime import compile_java_time
from stream.imports.converter.values import is_json

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = ["u", "ts", "meta", "amt", "p", "n", "flag", "nope", "0", "1"]
TEXTS = ["", "Ann", "12.6", "-3", "1e3", "true", "FALSE", "2024-03-09T07:15:00", "2024-03-09T07:15:00.5+01:00",
         "1/1/2021 5:06:07", "AP6qCz41AAAwhCUA", '{"x":1}', "[1,2]", "a-b-c", "1709968500000", "NaN", " 7"]
DATE_PATTERNS = ["M/d/yyyy H:mm:ss", "yyyy-MM-dd'T'HH:mm:ss.SSSX", "yyyyMMdd", "dd MMM yyyy hh:mm a", "EEE yy z"]
REPLACEMENTS = [("\\.", "_"), ("(\\d+)", "<$1>"), ("(?<w>\\w)", "${w}${w}"), ("(?i)A|b", "\\$"), ("\\p{Punct}", "")]
SEPARATORS = [".", "-", ",", "::", "_"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(TEXTS), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3)), max_leaves=8)
odd_values = st.sampled_from([b"bytes", datetime(2024, 3, 9, 7, 15), Decimal("1.5"), (1, 2), float("nan"),
                              float("inf"), 10**5000, {1: "int key"}])
json_rows = st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS})
any_rows = st.fixed_dictionaries({}, optional={name: st.one_of(json_values, odd_values) for name in FIELDS})
keys = st.sampled_from(["a", "b", "who", "x", "price"])


def op(name, *parts):
    """An operator list whose arguments come from the strategies ``parts`` (each drawing a list of arguments)."""
    return st.tuples(*parts).map(lambda groups: [name, *(arg for group in groups for arg in group)])


def one(strategy):
    return strategy.map(lambda value: [value])


def pairs(first, second, min_size=1):
    return st.lists(st.tuples(first, second), min_size=min_size, max_size=2).map(
        lambda items: [x for item in items for x in item])


LEAF_OPERATORS = {"value", "bool", "int", "iso_time_now", "ms_time_now"}  # generated as leaves below


def well_formed_operators(sd):
    """Strategies for each operator name and alias as written, with well-formed arguments."""
    some = st.lists(sd, min_size=1, max_size=3)
    table = {
        "path": [op("path", st.lists(st.one_of(sd, st.sampled_from(["0", "1", "tags"])), max_size=3))],
        "dict": [op("dict", pairs(keys, sd)).filter(lambda a: len(set(a[1::2])) == len(a[1::2])),
                 st.dictionaries(keys, sd, max_size=3)],
        "ifelse": [op("ifelse", st.lists(sd, min_size=3, max_size=3))],
        "parse_time_to_ms": [op("parse_time_to_ms", one(st.sampled_from(DATE_PATTERNS)), one(sd))],
        "flatten_dict": [op("flatten_dict", one(st.sampled_from(SEPARATORS)), one(sd), one(sd))],
        "exclude_keys": [op("exclude_keys", one(sd), st.lists(keys, max_size=2))],
        "replace_with": [op("replace_with", st.sampled_from(REPLACEMENTS).map(list), one(sd))],
        "split": [op("split", one(st.sampled_from(SEPARATORS)), one(sd))],
    }
    for name in ("condition", "cond"):
        table[name] = [op(name, pairs(sd, sd))]
    for name in ("contains", "is_substring"):
        table[name] = [op(name, one(st.text(max_size=3)), one(sd))]
    for name, spec in OPERATORS.items():
        if name in table or name in LEAF_OPERATORS:
            continue
        count = len(spec.fixed)
        table[name] = [op(name, some if spec.repeat else st.lists(sd, min_size=count, max_size=count))]
    return table


literals = [
    json_values.map(lambda v: ["value", v]),
    st.booleans().map(lambda b: ["bool", b]),
    st.integers(-3, 10**6).map(lambda i: ["int", i]),
    st.sampled_from([["iso_time_now"], ["ms_time_now"], ["path"]]),
]


def operator_lists(sd):
    """One operator list over ``sd``; drawn through a composite so the strategy's repr stays small."""
    table = well_formed_operators(sd)
    names = sorted(table)

    @st.composite
    def draw_operator(draw):
        return draw(st.one_of(table[draw(st.sampled_from(names))]))

    return draw_operator()


descriptions = st.recursive(st.one_of(st.sampled_from(FIELDS), *literals), operator_lists, max_leaves=12)


def test_the_generator_covers_every_operator_and_alias():
    assert set(well_formed_operators(st.just("u"))) | LEAF_OPERATORS == set(OPERATORS)


@FAST
@given(descriptions, st.lists(json_rows, max_size=4), st.integers(-(2**40), 2**45))
def test_well_formed_descriptions_compile_and_give_json_or_no_value(sd, rows, now_ms):
    fn = compile_source(sd, "f")
    for row in rows:
        try:
            result = fn(row, Ctx(now_ms))
        except NoValue as exc:
            assert str(exc)
            continue
        assert is_json(result)


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS + ["event_properties"]), descriptions, min_size=1, max_size=4),
       st.lists(any_rows, max_size=4))
def test_a_converter_only_ever_returns_outputs_and_field_errors(func, rows):
    convert = Converter(func)
    for row in rows:
        output, errors = convert(row, 1709968500000)
        failed = {error.field.split(".")[0] for error in errors}
        assert set(output) | failed == set(func)


# -- malformed input -----------------------------------------------------------------------------------------------

defects = st.one_of(
    st.tuples(st.sampled_from(["nosuchop", "iso_time_to_msec", "coalesce", "Value", ""]), st.just("u")).map(
        lambda t: (list(t), "")),
    st.sampled_from([5, 1.5, True, None, [], ""]).map(lambda bad: (bad, "")),
    st.just(([3, "u"], "[0]")),
    st.sampled_from(["yes", 1, None, [True]]).map(lambda bad: (["bool", bad], "[1]")),
    st.sampled_from([1.5, "5", False, None]).map(lambda bad: (["int", bad], "[1]")),
    st.sampled_from(["(", "[a", "a)", "\\p{L}", "[a&&b]", "(?x)a", "\\"]).map(
        lambda bad: (["replace_with", bad, "x", "u"], "[1]")),
    st.just((["replace_with", "(a)", "$9", "u"], "[2]")),
    st.sampled_from(["", "yyyy-kk", "'open", "HH hh", "T"]).map(lambda bad: (["parse_time_to_ms", bad, "u"], "[1]")),
    st.sampled_from([5, None, ["value", ","], {"a": "b"}]).map(lambda bad: (["split", bad, "u"], "[1]")),
    st.just((["split", "", "u"], "[1]")),
    st.sampled_from(list(OPERATORS)).map(lambda name: ([name, *["u"] * 7], "")).filter(
        lambda d: not OPERATORS[d[0][0]].accepts(7)),
    st.sampled_from(["ifelse", "eq", "sample_md5", "subtract", "typeof", "value"]).map(lambda name: ([name], "")),
    st.just((["dict", "a", "u", "a", "u"], "[3]")),
)
wrappers = st.sampled_from([
    (lambda x: ["concat", "u", x], "[2]"),
    (lambda x: ["ifelse", x, "a", "b"], "[1]"),
    (lambda x: ["ifelse", ["bool", True], "a", x], "[3]"),
    (lambda x: {"k": "u", "where": x}, ".where"),
    (lambda x: ["path", "meta", x], "[2]"),
    (lambda x: ["array", x], "[1]"),
    (lambda x: ["cond", ["bool", False], "u", x, "u"], "[3]"),
    (lambda x: ["dict", "a", x], "[2]"),
    (lambda x: ["flatten_dict", ".", x, "u"], "[2]"),
    (lambda x: ["exclude_keys", x, "a"], "[1]"),
])


def at(path: str, suffix: str) -> str:
    if suffix.startswith("."):
        return child_path(path, suffix[1:])
    return path + suffix


@FAST
@given(defects, st.lists(wrappers, max_size=3))
def test_a_malformed_description_is_a_converter_error_at_its_path(defect, around):
    sd, suffix = defect
    for wrap, _ in around:
        sd = wrap(sd)
    path = "f"
    for _, wrapper_suffix in reversed(around):  # the last wrapper is the outermost
        path = at(path, wrapper_suffix)
    expected_path = at(path, suffix)
    try:
        compile_source(sd, "f")
    except ConverterError as exc:
        assert exc.path == expected_path
        assert str(exc).startswith(f"{expected_path}: ")
    else:
        raise AssertionError(f"no ConverterError for {sd!r}")


@FAST
@given(st.recursive(st.one_of(scalars, st.sampled_from(list(OPERATORS))), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=3)), max_leaves=12))
def test_any_json_compiles_or_is_a_converter_error(sd):
    try:
        compile_source(sd, "f")
    except ConverterError as exc:
        assert exc.path.startswith("f")


@FAST
@given(st.one_of(
    st.text(max_size=40),
    st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["converterConfig", "keyValidatorConfig", "config_name", "fileType", "compressionType", "filterPattern",
         "convertToAmplitudeFunc", "delimiter", "header", "quoteChar", "escapeChar", "x"]), inner, max_size=4)),
        max_leaves=10),
))
def test_any_document_parses_or_is_a_converter_error(document):
    try:
        parse_converter_config(document)
    except ConverterError:
        pass


@FAST
@given(st.text(alphabet="ab.*+?|()[]{}^$\\-&:<>=!,0123456789dDwWsSpPQEkxcehvRzZGbBi", max_size=16))
def test_any_regex_text_compiles_or_is_a_regex_error(pattern):
    try:
        regex = compile_java_regex(pattern)
    except RegexError:
        return
    regex.search("ab\n12")


@FAST
@given(st.text(alphabet="yMdHhmsSaEZXzkT'-/: .", max_size=12), st.text(alphabet="0123456789-:/ .APMZ+", max_size=20))
def test_any_date_pattern_compiles_or_is_refused_and_parses_or_is_refused(pattern, text):
    try:
        parse = compile_java_time(pattern)
    except ValueError:
        return
    try:
        assert isinstance(parse(text), int)
    except ValueError:
        pass
