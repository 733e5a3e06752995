"""Amplitude's S3-import converter configuration: parsed, checked and compiled once into plain functions.

``parse_converter_config(document)`` checks the whole document (FORMATS.md §4.3) and compiles its
``convertToAmplitudeFunc`` (the SOURCE_DESCRIPTION language of §4.4) into a ``Converter``: a call with a row and
the current time returns the output object and the fields it had to leave out. A bad configuration fails at load
with a ``ConverterError`` naming the path (``convertToAmplitudeFunc.user_id[1]``), the operator and the cure; bad
data never raises, it only leaves fields out (``FieldError``). The package is pure: no I/O, no clock.

Modules: ``config`` (the document), ``converter`` (the output object), ``compile`` (the grammar), ``operators``
(the table of operators) with their builders in ``ops_structure``, ``ops_logic``, ``ops_time``, ``ops_text`` and
``ops_numbers``, ``values`` (coercions), ``isotime``, ``javatime`` (Java date patterns) and ``javaregex`` (Java
regular expressions).

Unverified choices
------------------
Amplitude documents the language loosely (FORMATS.md §4.4 and §8). Where it is silent, this is what we do:

* CSV options live in ``converterConfig``: ``delimiter`` (one character, default ","), ``quoteChar`` (default '"'),
  ``escapeChar`` (default none), ``header`` (bool, default true); only with fileType "csv" or no fileType.
* ``fileType`` is one of json, csv, parquet and ``compressionType`` one of gzip, none; others are refused.
* ``filterPattern`` must match the whole object key (as if anchored at both ends).
* A JSON null for an optional key of the document reads as if it were absent; in JSON text a repeated key is refused.
* ``path``: each argument is a SOURCE_DESCRIPTION evaluated on what the previous one returned (the first on the row).
* ``path``: a string step is an object key or a decimal list index ("1"); ``["path"]`` alone is the whole row.
* A field present with the value null yields null; only a missing field (or key, or index) has no value.
* ``any`` skips sources that fail and sources that give null; with none left it fails.
* An output field that evaluates to null is kept, as null.
* Objects of the output itself leave out a failing entry (reported as ``event_properties.price``) and keep the rest.
* An object under an operator is a plain value: one failing entry fails the whole object.
* Boolean contexts (cond, ifelse, not, and, or) read true, or a string "true" in any case, as true; all else as false.
* In boolean contexts a source that fails reads as false (so ``["!", "missing"]`` is true).
* ``cond`` with no true test fails the field; ``ifelse`` takes the else branch when its test fails.
* ``equals`` is strict JSON equality: same type; numbers by value (1 equals 1.0); "1" is not 1; true is not 1.
* Text from a non-string (concat, contains, lowercase, split, replace_with, parse_json_element, sample_md5 key):
  numbers and booleans as their JSON text ("12.6", "3", "true"); null, lists and objects fail.
* ``contains`` of null is false (as documented); of a list or object it fails.
* Numbers from a value (round, add, subtract, multiply, divide, sample_md5 percent, flatten_dict depth):
  numbers as they are, strings parsed as Java parses them (no spaces, no NaN), null as 0, booleans fail.
* ``add``, ``subtract``, ``multiply`` give an int when every operand is an integer, else a float.
* ``divide`` gives an int when both operands are integers and divide exactly, else a float; by zero it fails.
* Arithmetic and ``round`` results beyond 64-bit integers or finite doubles fail instead of overflowing.
* ``round`` rounds half up, as Java's Math.round: 2.5 -> 3, -2.5 -> -2.
* ``iso_time_to_ms`` reads ``YYYY-MM-DDTHH:MM:SS`` with an optional fraction and zone (``Z``, ``±hh:mm``).
* ``iso_time_to_ms``: a zone-less time is UTC; fractions of 1-9 digits are truncated to milliseconds.
* ``ms_to_iso_time`` and ``iso_time_now`` print UTC ``YYYY-MM-DDTHH:MM:SS``, with ``.SSS`` only when not zero.
* ``ms_to_iso_time`` takes whole milliseconds (a numeric string is accepted; null and 1.5 fail).
* ``sample_md5(percent, key)`` is true when int(md5(key as UTF-8).hexdigest(), 16) % 100 < percent.
* ``int96_time_to_ms``: base64 of 12 bytes: little-endian nanoseconds of the day (below one day) then Julian day.
* ``int96_time_to_ms``: Julian day 2440588 is 1970-01-01; the result is truncated to milliseconds.
* ``parse_time_to_ms`` reads y M d H h m s S a E Z X z and '...' literals; other letters are refused at load.
* ``parse_time_to_ms``: ``yy`` is 2000 + yy; ``y``/``yyyy`` read at least as many digits as letters (up to 9).
* ``parse_time_to_ms``: M/MM is a number, MMM/MMMM an English month name or abbreviation, in any case.
* ``parse_time_to_ms``: S reads 1-9 digits as a fraction of a second (not Java 7's count of milliseconds).
* ``parse_time_to_ms``: E must be an English day name but is not checked against the date.
* ``parse_time_to_ms``: h is 1-12, PM adds 12, no ``a`` means AM; an ``a`` beside H is ignored.
* ``parse_time_to_ms``: Z, X and z all read Z, +hh, +hhmm, +hh:mm, or UTC/GMT/UT with an optional offset.
* ``parse_time_to_ms``: named zones (Europe/Paris, PST) are not read; a zone-less time is UTC.
* ``parse_time_to_ms``: numeric fields with no separator between them (yyyyMMdd) take exactly their width.
* ``parse_time_to_ms``: fields left out default to 1970-01-01 00:00:00.000; the whole text must match.
* ``parse_json_element`` refuses NaN and Infinity; a repeated key keeps its last value.
* ``merge_dicts`` is shallow and later keys win; a source that is not an object fails the field.
* ``flatten_dict(sep, depth, obj)`` joins nested keys with sep, at most ``depth`` keys per name (1: unchanged).
* ``flatten_dict``: values deeper than ``depth``, lists and empty objects stay as they are; depth below 1 fails.
* ``exclude_keys`` removes top-level keys only; a source that is not an object fails the field.
* ``split`` splits on the literal separator (not a regex), keeping empty pieces, trailing ones included.
* ``replace_with`` reads Java regex and Java replacement syntax ($1, ${name}, backslash escapes the next character).
* Java regex: \\w \\d \\s \\b and case-insensitivity are ASCII-only, as Java's defaults; Unicode properties are refused.
* ``lowercase`` is Unicode lowercasing, independent of any locale.
* ``typeof`` of a value that is not JSON (a timestamp object from parquet) fails the field.
* ``int`` takes a JSON integer only (5.0 is refused); ``bool`` takes true or false only.
"""

from stream.imports.converter.compile import compile_source
from stream.imports.converter.config import ConverterConfig, CsvOptions, parse_converter_config
from stream.imports.converter.converter import Converter
from stream.imports.converter.errors import ConverterError, FieldError, NoValue
from stream.imports.converter.operators import OPERATORS
from stream.imports.converter.values import Ctx

__all__ = [
    "OPERATORS",
    "Converter",
    "ConverterConfig",
    "ConverterError",
    "CsvOptions",
    "Ctx",
    "FieldError",
    "NoValue",
    "compile_source",
    "parse_converter_config",
]
