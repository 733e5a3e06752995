"""The converter document: accepted shapes, the key filter, CSV options and every document-level error."""

import json

import pytest

from stream.imports.converter import ConverterError, CsvOptions, parse_converter_config

FUNC = {"event_type": "action"}


def doc(**converter_config):
    return {"converterConfig": {"convertToAmplitudeFunc": FUNC, **converter_config}}


def error(document) -> ConverterError:
    with pytest.raises(ConverterError) as info:
        parse_converter_config(document)
    return info.value


def test_amplitudes_own_example_document_is_accepted():
    config = parse_converter_config({
        "config_name": ["Event sample converter"],
        "converterConfig": {"fileType": "parquet", "compressionType": "none", "convertToAmplitudeFunc": {
            "event_type": "action", "user_id": "user", "event_properties": {"business_id_encid": "business_id"}}},
        "keyValidatorConfig": {"filterPattern": "folder1/folder2/ds=202011[1-2][0-9]/.*\\.parquet"},
    })
    assert (config.file_type, config.compression, config.csv, config.names) == (
        "parquet", "none", None, ("Event sample converter",))
    assert config.filter_pattern == "folder1/folder2/ds=202011[1-2][0-9]/.*\\.parquet"
    assert config.key_filter("folder1/folder2/ds=20201115/part-0.parquet")
    assert config.key_filter("folder1/folder2/ds=20201131/part-0.parquet") is False
    assert config.convert.fields == ("event_type", "user_id", "event_properties")


def test_the_filter_pattern_must_match_the_whole_key():
    config = parse_converter_config(json.dumps(
        doc() | {"keyValidatorConfig": {"filterPattern": "exports/\\d{4}-\\d{2}-\\d{2}/.*\\.json\\.gz"}}))
    assert config.key_filter("exports/2024-03-09/part-0001.json.gz") is True
    assert config.key_filter("exports/2024-03-09/part-0001.json.gz.tmp") is False
    assert config.key_filter("old/exports/2024-03-09/part-0001.json.gz") is False
    assert config.key_filter("exports/2024-3-09/part-0001.json.gz") is False
    assert config.key_filter("exports/2024-03-09/a\nb.json.gz") is False  # "." stops at line breaks, as in Java


def test_without_a_filter_pattern_every_key_is_accepted():
    config = parse_converter_config(doc())
    assert (config.filter_pattern, config.key_filter("any/key"), config.key_filter("")) == (None, True, True)
    assert parse_converter_config(doc() | {"keyValidatorConfig": {}}).key_filter("x") is True


def test_file_type_and_compression_may_be_left_out():
    config = parse_converter_config(doc())
    assert (config.file_type, config.compression, config.csv) == (None, None, None)
    assert parse_converter_config(doc(fileType=None)).file_type is None


def test_the_raw_document_is_kept():
    document = doc(fileType="json")
    assert parse_converter_config(document).raw is document
    assert parse_converter_config(json.dumps(document)).raw == document


def test_csv_files_get_default_options():
    assert parse_converter_config(doc(fileType="csv")).csv == CsvOptions(",", '"', None, True)


def test_csv_options_are_read_from_the_converter_config():
    config = parse_converter_config(doc(fileType="csv", delimiter=";", quoteChar="'", escapeChar="\\", header=False))
    assert config.csv == CsvOptions(delimiter=";", quote_char="'", escape_char="\\", header=False)
    assert parse_converter_config(doc(delimiter="\t")).csv == CsvOptions(delimiter="\t")


@pytest.mark.parametrize(("document", "message"), [
    ([], '(document): must be a JSON object such as {"converterConfig": {...}}, got []'),
    ("{", "(document): not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    ('{"converterConfig": {"convertToAmplitudeFunc": {"a": "b", "a": "c"}}}',
     "(document): key 'a' appears twice in one object; keep one"),
    ('{"converterConfig": {"convertToAmplitudeFunc": {"a": ["value", NaN]}}}',
     "(document): not valid JSON: NaN is not allowed in JSON"),
    ({"converterConfig": {"convertToAmplitudeFunc": FUNC}, "keyValidator": {}},
     "keyValidator: unknown key 'keyValidator'; did you mean 'keyValidatorConfig'? "
     "accepted keys: config_name, converterConfig, keyValidatorConfig"),
    ({"config_name": "x", "converterConfig": {"convertToAmplitudeFunc": FUNC}},
     'config_name: must be an array of strings, e.g. ["Event sample converter"], got \'x\''),
    ({}, 'converterConfig: is missing or not an object; write {"converterConfig": {"fileType": "json", '
         '"compressionType": "gzip", "convertToAmplitudeFunc": {...}}}'),
    ({"converterConfig": {"fileType": "json"}},
     'converterConfig: has no "convertToAmplitudeFunc"; write the output fields, e.g. "convertToAmplitudeFunc": '
     '{"event_type": "action", "user_id": "user"}'),
    (doc(filetype="json"),
     "converterConfig.filetype: unknown key 'filetype'; did you mean 'fileType'? accepted keys: fileType, "
     "compressionType, convertToAmplitudeFunc, delimiter, quoteChar, escapeChar, header"),
    (doc(fileType="jsonl"),
     'converterConfig.fileType: \'jsonl\' is not accepted; write one of "json", "csv", "parquet"'),
    (doc(compressionType="bz2"),
     'converterConfig.compressionType: \'bz2\' is not accepted; write one of "gzip", "none"'),
    (doc(fileType="json", delimiter=";"),
     'converterConfig.delimiter: applies to CSV files only; remove it or set "fileType": "csv" (it is "json")'),
    (doc(fileType="csv", delimiter=";;"),
     'converterConfig.delimiter: must be one character other than a line break, e.g. ";", got \';;\''),
    (doc(fileType="csv", quoteChar=","), "converterConfig.quoteChar: is the delimiter ',' too; pick another character"),
    (doc(fileType="csv", header="yes"), "converterConfig.header: must be true or false, got 'yes'"),
    ({"converterConfig": {"convertToAmplitudeFunc": []}},
     'convertToAmplitudeFunc: must be an object of output fields, e.g. {"event_type": "action"}'),
    ({"converterConfig": {"convertToAmplitudeFunc": {}}},
     'convertToAmplitudeFunc: maps no field; write at least {"event_type": ..., "user_id": ...}'),
    (doc() | {"keyValidatorConfig": {"filterPatern": ".*"}},
     "keyValidatorConfig.filterPatern: unknown key 'filterPatern'; did you mean 'filterPattern'? "
     "accepted keys: filterPattern"),
    (doc() | {"keyValidatorConfig": {"filterPattern": ""}},
     'keyValidatorConfig.filterPattern: must be a non-empty Java regex, got \'\'; write ".*" to accept every key'),
    (doc() | {"keyValidatorConfig": {"filterPattern": "data/[0-9"}},
     "keyValidatorConfig.filterPattern: invalid regular expression 'data/[0-9': a character class '[' is not closed"),
    (doc() | {"keyValidatorConfig": {"filterPattern": "\\p{L}+"}},
     "keyValidatorConfig.filterPattern: regular expression '\\\\p{L}+': \\p{L} is not supported (Python has no "
     "Unicode properties); write the characters out, e.g. [A-Za-z], or use \\p{Lower}, \\p{Upper}, \\p{ASCII}, "
     "\\p{Alpha}, \\p{Digit}, \\p{Alnum}, \\p{Punct}, \\p{Graph}, \\p{Print}, \\p{Blank}, \\p{Cntrl}, \\p{XDigit}, "
     "\\p{Space}"),
])
def test_document_errors_name_the_key_and_the_cure(document, message):
    err = error(document)
    assert str(err) == message
    assert err.operator is None


def test_a_converter_error_is_a_value_error_with_its_path():
    err = error(doc(fileType="xml"))
    assert isinstance(err, ValueError)
    assert err.path == "converterConfig.fileType"
