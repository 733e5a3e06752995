"""Amplitude's converter configuration document parsed and checked at load; every mistake is a ConverterError.

The document, as Amplitude writes it (FORMATS.md §4.3)::

    {"config_name": ["..."],
     "converterConfig": {"fileType": "json", "compressionType": "gzip", "convertToAmplitudeFunc": {...}},
     "keyValidatorConfig": {"filterPattern": "<Java regex matched against the whole object key>"}}

``fileType``, ``compressionType``, ``keyValidatorConfig`` and ``config_name`` may be left out (a JSON null counts
as left out); ``converterConfig`` and its ``convertToAmplitudeFunc`` may not. Unknown keys are errors everywhere
but inside ``convertToAmplitudeFunc``, whose keys are the output fields.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stream.imports.converter.converter import Converter
from stream.imports.converter.errors import ConverterError, child_path
from stream.imports.converter.javaregex import RegexError, compile_java_regex
from stream.imports.converter.values import show

FILE_TYPES = ("json", "csv", "parquet")
COMPRESSIONS = ("gzip", "none")
CSV_KEYS = ("delimiter", "quoteChar", "escapeChar", "header")
_DOCUMENT_KEYS = ("config_name", "converterConfig", "keyValidatorConfig")
_CONVERTER_KEYS = ("fileType", "compressionType", "convertToAmplitudeFunc", *CSV_KEYS)
_KEY_VALIDATOR_KEYS = ("filterPattern",)
_FUNC_PATH = "convertToAmplitudeFunc"  # error paths start here: the part of the document people edit most


@dataclass(frozen=True)
class CsvOptions:
    """How CSV files are read (the JSON key names are our choice: Amplitude's are not public)."""

    delimiter: str = ","
    quote_char: str = '"'
    escape_char: str | None = None
    header: bool = True


@dataclass(frozen=True, eq=False)
class ConverterConfig:
    """A checked converter configuration, with its converter and key filter compiled."""

    file_type: str | None
    compression: str | None
    filter_pattern: str | None
    key_filter: Callable[[str], bool]
    convert: Converter
    csv: CsvOptions | None
    raw: dict[str, Any]
    names: tuple[str, ...] = ()  # config_name


class _DuplicateKey(Exception):
    pass


def parse_converter_config(obj: Mapping[str, Any] | str) -> ConverterConfig:
    """Parse and check a whole converter document given as a mapping or as JSON text."""
    doc = _load(obj)
    _check_keys(doc, "", _DOCUMENT_KEYS)
    names = _config_name(doc.get("config_name"))
    converter_config = doc.get("converterConfig")
    if not isinstance(converter_config, Mapping):
        raise ConverterError("converterConfig", None, "is missing or not an object; write "
                             '{"converterConfig": {"fileType": "json", "compressionType": "gzip", '
                             '"convertToAmplitudeFunc": {...}}}')
    _check_keys(converter_config, "converterConfig", _CONVERTER_KEYS)
    file_type = _choice(converter_config, "fileType", FILE_TYPES)
    compression = _choice(converter_config, "compressionType", COMPRESSIONS)
    if "convertToAmplitudeFunc" not in converter_config:
        raise ConverterError("converterConfig", None, 'has no "convertToAmplitudeFunc"; write the output fields, '
                             'e.g. "convertToAmplitudeFunc": {"event_type": "action", "user_id": "user"}')
    convert = Converter(converter_config["convertToAmplitudeFunc"], _FUNC_PATH)
    filter_pattern, key_filter = _key_validator(doc.get("keyValidatorConfig"))
    return ConverterConfig(
        file_type=file_type,
        compression=compression,
        filter_pattern=filter_pattern,
        key_filter=key_filter,
        convert=convert,
        csv=_csv_options(converter_config, file_type),
        raw=doc if isinstance(doc, dict) else dict(doc),
        names=names,
    )


def _load(obj: Mapping[str, Any] | str) -> Mapping[str, Any]:
    if isinstance(obj, str):
        try:
            obj = json.loads(obj, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
        except _DuplicateKey as exc:
            raise ConverterError("", None, f"key {exc.args[0]!r} appears twice in one object; keep one") from None
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno} column {exc.colno}"
            raise ConverterError("", None, f"not valid JSON: {exc.msg} at {where}") from None
        except (ValueError, RecursionError) as exc:
            raise ConverterError("", None, f"not valid JSON: {exc}") from None
    if not isinstance(obj, Mapping):
        raise ConverterError("", None, 'must be a JSON object such as {"converterConfig": {...}}, '
                             f"got {show(obj)}")
    return obj


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # json.loads would silently keep the last: a second "time" would hide the first
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _check_keys(obj: Mapping[str, Any], path: str, accepted: tuple[str, ...]) -> None:
    for key in obj:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConverterError(child_path(path, str(key)), None,
                                 f"unknown key {key!r}; {hint}accepted keys: {', '.join(accepted)}")


def _config_name(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConverterError("config_name", None, f'must be an array of strings, e.g. ["Event sample converter"], '
                             f"got {show(value)}")
    return tuple(value)


def _choice(obj: Mapping[str, Any], key: str, accepted: tuple[str, ...]) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if value not in accepted:
        choices = ", ".join(f'"{a}"' for a in accepted)
        raise ConverterError(f"converterConfig.{key}", None, f"{show(value)} is not accepted; write one of {choices}")
    return str(value)


def _key_validator(section: Any) -> tuple[str | None, Callable[[str], bool]]:
    if section is None:
        return None, _every_key
    if not isinstance(section, Mapping):
        raise ConverterError("keyValidatorConfig", None, 'must be an object; write {"filterPattern": ".*"}')
    _check_keys(section, "keyValidatorConfig", _KEY_VALIDATOR_KEYS)
    pattern = section.get("filterPattern")
    if pattern is None:
        return None, _every_key
    path = "keyValidatorConfig.filterPattern"
    if not isinstance(pattern, str) or not pattern:
        raise ConverterError(path, None, f"must be a non-empty Java regex, got {show(pattern)}; write \".*\" "
                             "to accept every key")
    try:
        regex = compile_java_regex(pattern)
    except RegexError as exc:
        raise ConverterError(path, None, str(exc)) from None
    return pattern, _full_match(regex)


def _every_key(key: str) -> bool:
    return True


def _full_match(regex: re.Pattern[str]) -> Callable[[str], bool]:
    def key_filter(key: str) -> bool:
        return regex.fullmatch(key) is not None  # the whole key, as if the pattern were anchored at both ends

    return key_filter


def _csv_options(section: Mapping[str, Any], file_type: str | None) -> CsvOptions | None:
    given = [key for key in CSV_KEYS if section.get(key) is not None]
    if file_type != "csv" and (file_type is not None or not given):
        if given:
            raise ConverterError(f"converterConfig.{given[0]}", None,
                                 f'applies to CSV files only; remove it or set "fileType": "csv" (it is "{file_type}")')
        return None
    delimiter = _one_char(section, "delimiter", ",")
    quote_char = _one_char(section, "quoteChar", '"')
    escape_char = _one_char(section, "escapeChar", None)
    header = section.get("header", True)
    if header is None:
        header = True
    if not isinstance(header, bool):
        raise ConverterError("converterConfig.header", None, f"must be true or false, got {show(header)}")
    if quote_char == delimiter or escape_char == delimiter:
        clash = "quoteChar" if quote_char == delimiter else "escapeChar"
        raise ConverterError(f"converterConfig.{clash}", None,
                             f"is the delimiter {delimiter!r} too; pick another character")
    return CsvOptions(delimiter=delimiter, quote_char=quote_char, escape_char=escape_char, header=header)


def _one_char(section: Mapping[str, Any], key: str, default: str | None) -> Any:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
        raise ConverterError(f"converterConfig.{key}", None,
                             f'must be one character other than a line break, e.g. ";", got {show(value)}')
    return value
