"""Java regular expressions and replacements keep their Java meaning in Python, or are refused with a reason."""

import re

import pytest

from stream.imports.converter.javaregex import (
    RegexError,
    compile_java_regex,
    compile_java_replacement,
    translate_java_regex,
)


def full(pattern: str, text: str) -> bool:
    return compile_java_regex(pattern).fullmatch(text) is not None


def test_amplitudes_example_patterns_compile():
    assert full("folder1/folder2/ds=202011[1-2][0-9]/.*\\.parquet", "folder1/folder2/ds=20201112/x.parquet")
    assert full(".*", "anything/at/all")
    assert full("\\w+\\_\\d{4}-\\d{2}-\\d{2}.json.gz", "events_2024-03-09.json.gz")


def test_shorthand_classes_are_ascii_as_in_java():
    assert not full("\\w+", "été")
    assert not full("\\d", "\u0663")  # ARABIC-INDIC DIGIT THREE
    assert full("(?i)abc", "ABC")


def test_dot_stops_at_every_java_line_terminator_unless_dotall():
    for terminator in "\n\r\u0085\u2028\u2029":
        assert not full("a.b", f"a{terminator}b")
        assert full("(?s)a.b", f"a{terminator}b")
    assert full("a(?s:.)b", "a\nb")
    assert not full("(?s)a(?-s:.)b", "a\nb")


def test_inline_flags_cover_the_rest_of_their_alternative():
    assert translate_java_regex("x(?i)b|c") == "x(?i:b)|(?i:c)"
    assert full("x(?i)b|c", "xB") and full("x(?i)b|c", "C") and not full("x(?i)b|c", "xC")
    assert full("(a(?i)b)c", "aBc") and not full("(a(?i)b)c", "aBC")


def test_named_groups_quotes_and_escapes_are_translated():
    assert full("(?<y>\\d+)-\\k<y>", "12-12") and not full("(?<y>\\d+)-\\k<y>", "12-13")
    assert full("\\Qa.b*\\E", "a.b*") and not full("\\Qa.b*\\E", "aXb")
    assert full("[\\Q]-\\E]+", "]-]")
    assert full("\\x{1F600}\\e\\cA\\0101", "\U0001F600\x1b\x01A")
    assert full("\\p{Lower}+\\P{Digit}[\\p{XDigit}_]", "ab!f")
    assert full("a\\h+b\\v", "a \u00a0b\u2028")
    assert full("a\\Rb", "a\r\nb") and full("a\\Rb", "a\u2028b")


def test_z_anchors_follow_java():
    assert full("ab\\z", "ab") and compile_java_regex("ab\\z").search("ab\n") is None
    assert compile_java_regex("ab\\Z").search("ab\n") is not None


def test_possessive_quantifiers_and_atomic_groups_keep_their_meaning():
    assert not full("a*+a", "aaa")
    assert not full("(?>a+)a", "aaa")


@pytest.mark.parametrize(("pattern", "message"), [
    ("\\p{L}+", "\\p{L} is not supported"),
    ("\\p{IsLatin}", "\\p{IsLatin} is not supported"),
    ("[a[b]]", "nested classes like [a[bc]] are not supported"),
    ("[a-z&&[^x]]", "class intersection && is not supported"),
    ("(?x) a", "flag (?x) is not supported"),
    ("(?u)a", "flag (?u) is not supported"),
    ("(?U)\\w", "flag (?U) is not supported"),
    ("\\Ga", "\\G has no Python equivalent"),
    ("(?P<n>a)", "unknown group '(?P'"),
    ("(?#note)a", "unknown group '(?#'"),
    ("a)", "unmatched ')' at position 1"),
    ("(a", "missing ')'"),
    ("a\\", "it ends with a lone backslash"),
    ("(?<=a+)b", "look-behind requires fixed-width pattern"),
    ("[^\\P{Digit}]", "\\P{Digit} inside [...] is not supported"),
    ("\\0", "\\0 must be followed by octal digits"),
])
def test_what_python_cannot_express_is_refused(pattern, message):
    with pytest.raises(RegexError) as info:
        compile_java_regex(pattern)
    assert message in str(info.value)
    assert repr(pattern) in str(info.value)


def sub(pattern: str, replacement: str, text: str) -> str:
    regex = compile_java_regex(pattern)
    return regex.sub(compile_java_replacement(replacement, regex), text)


def test_replacements_use_java_group_references_and_escapes():
    assert sub("(a)(b)", "$2$1", "ab") == "ba"
    assert sub("(?<first>a)", "${first}!", "a") == "a!"
    assert sub("a", "\\$1 \\\\ \\n", "a") == "$1 \\ n"
    assert sub("(a)", "$10", "a") == "a0"  # one group: Java reads $1 then the digit 0
    assert sub("(a)?b", "[$1]", "b") == "[]"
    assert sub("(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)", "$10", "abcdefghij") == "j"


@pytest.mark.parametrize(("replacement", "message"), [
    ("$2", "the pattern has no group 2 (it has 1)"),
    ("${nope}", "the pattern has no group named 'nope'"),
    ("$x", "'$' must be followed by a group number or {name}"),
    ("a\\", "ends with a lone backslash"),
])
def test_bad_replacements_are_refused_at_load(replacement, message):
    with pytest.raises(RegexError) as info:
        compile_java_replacement(replacement, re.compile("(a)"))
    assert message in str(info.value)
