import pytest

from stream.events.timefmt import HOUR_MS, format_ms, hour_label, hour_start
from stream.export.layout import amplitude_key, amplitude_marker_key, object_number, parse_number
from stream.export.rotation import CloseReason, hour_close_reason, rotation_reason, sealed_hour

H7 = 1709967600000  # 2024-03-09 07:00 UTC


def test_keys_follow_amplitudes_layout_with_an_unpadded_hour():
    assert amplitude_key("amp/", 424242, H7, 0, 0) == "amp/424242/424242_2024-03-09_7#0.json.gz"
    assert amplitude_key("amp/", 424242, H7, 1, 0) == "amp/424242/424242_2024-03-09_7#1.json.gz"
    assert amplitude_key("", 187520, 1579971600000, 3, 1234) == "187520/187520_2020-01-25_17#1234003.json.gz"


def test_the_key_number_gives_back_partition_and_start_offset():
    assert parse_number(object_number(7, 98765)) == (7, 98765)
    with pytest.raises(ValueError):
        object_number(1000, 0)


def test_timestamps_use_the_export_format_in_utc():
    assert format_ms(H7 + 62_123) == "2024-03-09 07:01:02.123000"
    assert hour_start(H7 + 59 * 60_000) == H7
    assert hour_label(H7) == ("2024-03-09", 7)


def test_an_hour_closes_when_the_data_passes_its_end_plus_grace():
    assert hour_close_reason(H7, H7, H7 + HOUR_MS + 19_999, False, 0, 20_000) is None
    assert hour_close_reason(H7, H7, H7 + HOUR_MS + 20_000, False, 0, 20_000) is CloseReason.HOUR_CLOSED


def test_an_idle_partition_closes_the_hour_by_the_clock():
    assert hour_close_reason(H7, H7, H7 + 5, True, H7 + HOUR_MS + 19_999, 20_000) is None
    assert hour_close_reason(H7, H7, H7 + 5, True, H7 + HOUR_MS + 20_000, 20_000) is CloseReason.IDLE
    assert hour_close_reason(H7, H7, H7 + 5, False, H7 + 2 * HOUR_MS, 20_000) is None


def test_a_straggler_object_waits_a_grace_after_it_opened():
    opened = H7 + 3 * HOUR_MS
    assert hour_close_reason(H7, opened, opened + 19_999, False, 0, 20_000) is None
    assert hour_close_reason(H7, opened, opened + 20_000, False, 0, 20_000) is CloseReason.HOUR_CLOSED


def test_rotation_counts_uncompressed_bytes_and_events():
    assert rotation_reason(99, 9, 100, 10) is None
    assert rotation_reason(100, 1, 100, 10) is CloseReason.SIZE
    assert rotation_reason(5, 10, 100, 10) is CloseReason.EVENTS


def test_the_marker_key_sits_beside_the_hours_objects():
    assert amplitude_marker_key("amp/", 424242, H7) == "amp/424242/424242_2024-03-09_7_complete"
    assert amplitude_marker_key("", 7, H7 + 17 * HOUR_MS) == "7/7_2024-03-10_0_complete"


def test_a_partition_seals_the_hours_its_data_has_passed_by_the_grace():
    assert sealed_hour(-1, False, H7, 60_000) is None                        # nothing read, not idle
    assert sealed_hour(H7 + HOUR_MS + 59_999, False, 0, 60_000) == (H7 - HOUR_MS, CloseReason.HOUR_CLOSED)
    assert sealed_hour(H7 + HOUR_MS + 60_000, False, 0, 60_000) == (H7, CloseReason.HOUR_CLOSED)


def test_an_idle_partition_seals_by_the_clock_even_with_no_data():
    assert sealed_hour(-1, True, H7 + HOUR_MS + 60_000, 60_000) == (H7, CloseReason.IDLE)
    assert sealed_hour(H7 + 5, True, H7 + 3 * HOUR_MS + 60_000, 60_000) == (H7 + 2 * HOUR_MS, CloseReason.IDLE)
    # the data can be ahead of the clock (producer timestamps): the later of the two wins
    assert sealed_hour(H7 + 3 * HOUR_MS + 60_000, True, H7, 60_000) == (H7 + 2 * HOUR_MS, CloseReason.HOUR_CLOSED)


def test_merged_ids_files_are_named_by_org_and_hour_in_the_project_folder_and_later_objects_numbered():
    from stream.export.layout import MergedIdsLayout
    lay = MergedIdsLayout("amp/", 187520, 189524)
    h17 = 1579971600000   # 2020-01-25 17:00 UTC
    assert lay.first_key(h17, "", 0, 12) == "amp/187520/-189524_2020-01-25_17.json.gz"
    assert lay.key(h17, "", 0, 12) == "amp/187520/-189524_2020-01-25_17#12000.json.gz"
    assert lay.marker_key(h17) is None


def test_two_projects_of_one_org_sharing_a_bucket_and_prefix_never_share_a_merged_ids_key():
    from stream.export.layout import MergedIdsLayout
    h17 = 1579971600000
    a, b = MergedIdsLayout("amp/", 187520, 189524), MergedIdsLayout("amp/", 187521, 189524)
    assert a.first_key(h17, "", 0, 0) == "amp/187520/-189524_2020-01-25_17.json.gz"
    assert b.first_key(h17, "", 0, 0) == "amp/187521/-189524_2020-01-25_17.json.gz"
    assert a.key(h17, "", 0, 5) != b.key(h17, "", 0, 5)
