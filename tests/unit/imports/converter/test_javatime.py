"""Java date patterns parse whole strings to epoch ms; bad patterns fail at load, bad text at run time."""

import pytest

from stream.imports.converter.isotime import int96_to_ms, iso_to_ms, ms_to_iso
from stream.imports.converter.javatime import compile_java_time

T = 1709968500000  # 2024-03-09T07:15:00Z


@pytest.mark.parametrize(("pattern", "text", "ms"), [
    ("M/d/yyyy H:mm:ss", "1/1/2021 5:06:07", 1609477567000),
    ("yyyy-MM-dd'T'HH:mm:ss.SSSX", "2024-03-09T07:15:00.250Z", T + 250),
    ("yyyy-MM-dd HH:mm:ss.S", "2024-03-09 07:15:00.123456", T + 123),
    ("yyyyMMddHHmmss", "20240309071500", T),
    ("dd MMM yyyy hh:mm a", "09 mar 2024 07:15 AM", T),
    ("dd MMMM yyyy hh:mm a", "09 March 2024 07:15 pm", T + 12 * 3_600_000),
    ("EEE, d MMM yyyy HH:mm:ss Z", "Sat, 9 Mar 2024 08:15:00 +0100", T),
    ("yyyy-MM-dd HH:mm:ssXXX", "2024-03-09 02:15:00-05:00", T),
    ("yyyy-MM-dd HH:mm z", "2024-03-09 09:15 GMT+02:00", T),
    ("yyyy-MM-dd HH:mm z", "2024-03-09 07:15 UTC", T),
    ("yy-MM-dd HH:mm", "24-03-09 07:15", T),
    ("h:mm a", "12:00 AM", 0),
    ("yyyy-MM-dd", "2024-03-09", T - (7 * 60 + 15) * 60_000),
    ("'at' HH 'o''clock' yyyy", "at 07 o'clock 1970", 7 * 3_600_000),
])
def test_java_patterns_parse_to_epoch_ms(pattern, text, ms):
    assert compile_java_time(pattern)(text) == ms


@pytest.mark.parametrize(("pattern", "text"), [
    ("M/d/yyyy", "13/1/2021"),
    ("M/d/yyyy", "2/30/2021"),
    ("M/d/yyyy", "1/1/2021 extra"),
    ("HH:mm", "24:00"),
    ("hh:mm a", "13:00 PM"),
    ("MMM yyyy", "Foo 2024"),
    ("EEE yyyy", "Xyz 2024"),
    ("yyyy-MM-dd HH:mm Z", "2024-03-09 07:15 +1900"),
    ("yyyy", "0000"),
])
def test_text_that_does_not_fit_the_pattern_is_a_value_error(pattern, text):
    with pytest.raises(ValueError):
        compile_java_time(pattern)(text)


@pytest.mark.parametrize(("pattern", "message"), [
    ("", "the date pattern is empty; write one such as 'yyyy-MM-dd HH:mm:ss'"),
    ("yyyy-MM-dd kk:mm", "date pattern 'yyyy-MM-dd kk:mm': letter 'k' is not supported; use y M d H h m s S a E Z X z, "
                         "and quote literal letters as 'T'"),
    ("yyyy-MM-ddTHH", "date pattern 'yyyy-MM-ddTHH': letter 'T' is not supported; use y M d H h m s S a E Z X z, "
                      "and quote literal letters as 'T'"),
    ("yyyy 'at", "date pattern \"yyyy 'at\": a quote ' is not closed; write '' for a quote"),
    ("HH:mm hh", "date pattern 'HH:mm hh': the hour appears twice"),
    ("ss.SSSSSSSSSS", "date pattern 'ss.SSSSSSSSSS': at most 9 S (nanoseconds)"),
    ("'literal'", "date pattern \"'literal'\" has no date or time letter; write one such as 'yyyy-MM-dd'"),
])
def test_bad_patterns_are_refused_when_compiled(pattern, message):
    with pytest.raises(ValueError) as info:
        compile_java_time(pattern)
    assert str(info.value) == message


def test_iso_times_round_trip_through_milliseconds():
    assert iso_to_ms("2024-03-09T07:15:00") == T
    assert ms_to_iso(T) == "2024-03-09T07:15:00"
    assert ms_to_iso(T + 7) == "2024-03-09T07:15:00.007"
    assert iso_to_ms(ms_to_iso(T + 7)) == T + 7
    assert iso_to_ms("2024-03-09T02:15:00-05:00") == T
    for bad in ("2024-03-09 07:15:00", "2024-03-09T07:15", "2024-02-30T00:00:00", "2024-03-09T07:15:00+19:00",
                "2024-03-09T07:15:60"):
        with pytest.raises(ValueError):
            iso_to_ms(bad)
    with pytest.raises(ValueError):
        ms_to_iso(10**15)


def test_int96_needs_twelve_bytes_within_one_day():
    assert int96_to_ms("AP6qCz41AAAwhCUA") == 1562516140600
    for bad in ("not base64!", "AAAA", "//////////8AAAAA"):
        with pytest.raises(ValueError):
            int96_to_ms(bad)
