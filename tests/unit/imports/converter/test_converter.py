"""The compiled convertToAmplitudeFunc end to end: outputs, and fields left out with their FieldErrors."""

import pickle

from stream.imports.converter import Converter, ConverterError, FieldError, parse_converter_config

# FORMATS.md §4.4, "Full converter example (JSON lines, gzip)", as written there
FULL_EXAMPLE = r"""
{"converterConfig":{"fileType":"json","compressionType":"gzip","convertToAmplitudeFunc":{
  "event_type":"action","user_id":["ifelse",["eq","uid",["value",""]],["value",null],"uid"],
  "device_id":"device","time":["iso_time_to_ms","ts"],"insert_id":"row_id",
  "event_properties":{"sku":"sku","price":"price"},"user_properties":{"plan":"plan"}}},
 "keyValidatorConfig":{"filterPattern":"exports/\\d{4}-\\d{2}-\\d{2}/.*\\.json\\.gz"}}
"""
ROW = {"action": "Purchase", "uid": "u-7", "device": "d-1", "ts": "2024-03-09T07:15:00", "row_id": "r-1",
       "sku": "SKU-9", "price": "12.6", "plan": "pro", "unmapped": "ignored"}
NOW_MS = 1709968500123


def test_the_reference_example_converts_a_row_end_to_end():
    config = parse_converter_config(FULL_EXAMPLE)
    assert config.convert.fields == ("event_type", "user_id", "device_id", "time", "insert_id", "event_properties",
                                     "user_properties")
    assert config.convert(ROW, NOW_MS) == ({
        "event_type": "Purchase",
        "user_id": "u-7",
        "device_id": "d-1",
        "time": 1709968500000,
        "insert_id": "r-1",
        "event_properties": {"sku": "SKU-9", "price": "12.6"},
        "user_properties": {"plan": "pro"},
    }, [])


def test_an_empty_user_id_becomes_null_as_the_example_intends():
    config = parse_converter_config(FULL_EXAMPLE)
    output, errors = config.convert(ROW | {"uid": ""}, NOW_MS)
    assert output["user_id"] is None
    assert errors == []


def test_a_field_that_fails_is_left_out_and_reported():
    config = parse_converter_config(FULL_EXAMPLE)
    row = {k: v for k, v in ROW.items() if k not in ("device", "uid")} | {"ts": "2024-13-01T00:00:00"}
    output, errors = config.convert(row, NOW_MS)
    assert output == {"event_type": "Purchase", "insert_id": "r-1",
                      "event_properties": {"sku": "SKU-9", "price": "12.6"}, "user_properties": {"plan": "pro"}}
    assert errors == [
        FieldError("user_id", "no field 'uid'"),
        FieldError("device_id", "no field 'device'"),
        FieldError("time", "iso_time_to_ms: '2024-13-01T00:00:00' is not an ISO time (YYYY-MM-DDTHH:MM:SS)"),
    ]


def test_an_entry_of_an_output_object_fails_alone():
    config = parse_converter_config(FULL_EXAMPLE)
    output, errors = config.convert({k: v for k, v in ROW.items() if k != "price"}, NOW_MS)
    assert output["event_properties"] == {"sku": "SKU-9"}
    assert errors == [FieldError("event_properties.price", "no field 'price'")]


def test_output_objects_nest_and_dict_operators_count_as_output_objects():
    convert = Converter({"a": {"b": ["dict", "c", "x", "d", "nope"]}, "e": ["dict", "f", "nope"]})
    assert convert({"x": 1}, 0) == ({"a": {"b": {"c": 1}}, "e": {}}, [
        FieldError("a.b.d", "no field 'nope'"),
        FieldError("e.f", "no field 'nope'"),
    ])


def test_an_object_under_an_operator_fails_as_a_whole():
    convert = Converter({"props": ["merge_dicts", {"a": "x", "b": "nope"}, {"c": "x"}]})
    assert convert({"x": 1}, 0) == ({}, [FieldError("props", "no field 'nope'")])


def test_the_converter_reads_time_only_from_its_argument():
    convert = Converter({"at": ["ms_time_now"], "iso": ["iso_time_now"]})
    assert convert({}, 0) == ({"at": 0, "iso": "1970-01-01T00:00:00"}, [])
    assert convert({}, NOW_MS) == ({"at": NOW_MS, "iso": "2024-03-09T07:15:00.123"}, [])


def test_data_of_any_type_only_produces_field_errors():
    convert = Converter({"n": ["+", "v", ["int", 1]], "t": ["lower", "v"], "k": ["typeof", "v"], "i": "v"})
    output, errors = convert({"v": object}, 0)
    assert output == {"i": object}
    assert [e.field for e in errors] == ["n", "t", "k"]


def test_a_converter_error_survives_pickling():
    error = ConverterError("convertToAmplitudeFunc.x", "eq", "takes 2 arguments, got 1")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.operator, str(copy)) == (error.path, error.operator, str(error))
