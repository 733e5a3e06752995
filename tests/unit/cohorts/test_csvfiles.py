"""Sync files: keys exactly as FORMATS.md §6.1 writes them, exact CSV bytes, and the streaming diff."""

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from stream.cohorts.csvfiles import diff, field, header, line, row, sync_key

SYNC_MS = int(datetime(2024, 3, 9, 7, 0, tzinfo=UTC).timestamp() * 1000)


def test_the_formats_example_key():
    assert sync_key("cohorts/", 424242, "abc12de", SYNC_MS, "entering", "crm") == (
        "cohorts/424242_abc12de_2024-03-09T07:00_entering_crm.csv")
    assert sync_key("cohorts/", 424242, "abc12de", SYNC_MS, "exiting", "crm") == (
        "cohorts/424242_abc12de_2024-03-09T07:00_exiting_crm.csv")
    assert sync_key("cohorts/", 424242, "abc12de", SYNC_MS, "existing", "crm") == (
        "cohorts/424242_abc12de_2024-03-09T07:00_existing_crm.csv")


def test_an_empty_routing_key_drops_its_part_with_the_underscore():
    assert sync_key("cohorts/", 424242, "abc12de", SYNC_MS, "entering", "") == (
        "cohorts/424242_abc12de_2024-03-09T07:00_entering.csv")
    assert sync_key("", 424242, "abc12de", SYNC_MS, "exiting") == "424242_abc12de_2024-03-09T07:00_exiting.csv"


def test_the_hyphen_form_writes_hours_and_minutes_with_a_hyphen():
    assert sync_key("cohorts/", 424242, "abc12de", SYNC_MS, "entering", "crm", hyphen=True) == (
        "cohorts/424242_abc12de_2024-03-09T07-00_entering_crm.csv")


def test_the_key_holds_the_utc_minute_of_the_scheduled_time():
    later = SYNC_MS + 23 * 60_000 + 59_999
    assert sync_key("p/", 1, "c", later, "existing") == "p/1_c_2024-03-09T07:23_existing.csv"
    assert sync_key("p/", 1, "c", 0, "existing") == "p/1_c_1970-01-01T00:00_existing.csv"


def test_an_unknown_diff_type_is_refused():
    with pytest.raises(ValueError, match="diff type 'entered': expected one of entering, exiting, existing"):
        sync_key("p/", 1, "c", SYNC_MS, "entered")


def test_the_header_names_the_ids_then_the_properties():
    assert header(["plan", "email"]) == b"amplitudeID,userID,plan,email\r\n"
    assert header([]) == b"amplitudeID,userID\r\n"
    assert header(["city, state", 'say "hi"']) == b'amplitudeID,userID,"city, state","say ""hi"""\r\n'


def test_a_row_writes_each_kind_of_value():
    assert row(1001, "u1", ["pro", 3, 2.5, True, False, None, "", {"b": [1, 2], "a": None}, ["x", 1]]) == (
        b'1001,u1,pro,3,2.5,true,false,,,"{""b"":[1,2],""a"":null}","[""x"",1]"\r\n')


def test_a_row_without_a_user_id_has_an_empty_field():
    assert row(1001, None, []) == b"1001,\r\n"


def test_fields_with_commas_quotes_and_line_breaks_are_quoted_and_quotes_doubled():
    assert row(1, "a,b", ['he said "no"', "two\nlines", "cr\rhere", "crlf\r\n", "plain text", " spaced "]) == (
        b'1,"a,b","he said ""no""","two\nlines","cr\rhere","crlf\r\n",plain text, spaced \r\n')


def test_text_is_utf8_and_numbers_are_exact():
    assert row(2**63 + 5, "Zoë", [10**20, 1e16, 0.1, -0.0, float("nan"), float("inf")]) == (
        "9223372036854775813,Zoë,100000000000000000000,1e16,0.1,-0.0,,\r\n".encode())


def test_tuples_are_lists_keys_become_strings_and_other_values_their_text():
    assert (field(("a", 1)), field({1: "x"}), field(Decimal("1.50"))) == ('["a",1]', '{"1":"x"}', "1.50")
    assert line([]) == b"\r\n"


def test_diff_yields_entering_and_exiting_in_id_order():
    assert list(diff([1, 3, 5, 7], [2, 3, 7, 8, 9])) == [
        (1, "exiting"), (2, "entering"), (5, "exiting"), (8, "entering"), (9, "entering")]


def test_diff_with_existing_feeds_all_three_files_in_one_pass():
    assert list(diff([1, 3, 5], [2, 3], existing=True)) == [
        (1, "exiting"), (2, "entering"), (2, "existing"), (3, "existing"), (5, "exiting")]


def test_diff_of_empty_sides():
    assert list(diff([], [])) == []
    assert list(diff([], [4, 5])) == [(4, "entering"), (5, "entering")]
    assert list(diff([4, 5], [])) == [(4, "exiting"), (5, "exiting")]
    assert list(diff([4], [4])) == []


def test_diff_streams_without_reading_ahead():
    # endless inputs: only a merge that reads as it yields can answer
    evens, threes = itertools.count(0, 2), itertools.count(0, 3)
    assert list(itertools.islice(diff(evens, threes), 6)) == [
        (2, "exiting"), (3, "entering"), (4, "exiting"), (8, "exiting"), (9, "entering"), (10, "exiting")]


@pytest.mark.parametrize(("previous", "current", "message"), [
    ([1, 3, 2], [], "previous ids must be strictly ascending: 2 after 3"),
    ([], [5, 5], "current ids must be strictly ascending: 5 after 5"),
])
def test_diff_refuses_ids_out_of_order(previous, current, message):
    with pytest.raises(ValueError, match=message):
        list(diff(previous, current))
