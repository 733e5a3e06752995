"""The times' text as bytes is format_ms's, encoded."""

from hypothesis import given
from hypothesis import strategies as st

from stream.events.normalize import MAX_TIME_MS
from stream.events.timefmt import format_ms, format_ms_bytes


def test_format_ms_bytes_of_the_edges():
    assert format_ms_bytes(0) == b"1970-01-01 00:00:00.000000"
    assert format_ms_bytes(1_709_968_502_123) == b"2024-03-09 07:15:02.123000"
    assert format_ms_bytes(MAX_TIME_MS) == format_ms(MAX_TIME_MS).encode()


@given(st.integers(min_value=0, max_value=MAX_TIME_MS))
def test_format_ms_bytes_is_format_ms_encoded(ms):
    assert format_ms_bytes(ms) == format_ms(ms).encode()
    assert format_ms_bytes(ms) == format_ms(ms).encode()   # the second from the cache
