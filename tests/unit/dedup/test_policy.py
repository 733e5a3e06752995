from stream.dedup.policy import DAY_MS, decide, decode_changelog, decode_value, encode_changelog, encode_value

W = 7 * DAY_MS
U1, U2, U3 = b"1" * 16, b"2" * 16, b"3" * 16


def test_a_later_duplicate_within_the_window_is_dropped():
    d = decide([b"k"], [1000 + W - 1], [U2], [encode_value(1000, U1)], W)
    assert d.keep == [False] and d.writes == [] and d.duplicates == 1


def test_after_the_window_the_key_is_accepted_again_and_remembered_anew():
    d = decide([b"k"], [1000 + W], [U2], [encode_value(1000, U1)], W)
    assert d.keep == [True] and d.writes == [(b"k", encode_value(1000 + W, U2))] and d.duplicates == 0


def test_a_replay_of_the_first_occurrence_is_not_a_duplicate_of_itself():
    d = decide([b"k"], [5000], [U1], [encode_value(1000, U1)], W)
    assert d.keep == [True] and d.writes == [] and d.duplicates == 0


def test_events_without_insert_id_are_never_deduplicated():
    d = decide([b"", b""], [1, 1], [U1, U2], [None, None], W)
    assert d.keep == [True, True] and d.writes == []


def test_duplicates_inside_one_batch_count_the_earlier_event_as_seen():
    d = decide([b"k", b"j", b"k"], [10, 11, 12], [U1, U2, U3], [None, None, None], W)
    assert d.keep == [True, True, False]
    assert d.writes == [(b"k", encode_value(10, U1)), (b"j", encode_value(11, U2))]
    assert d.duplicates == 1


def test_values_and_changelog_records_round_trip():
    assert decode_value(encode_value(123, U1)) == (123, U1)
    writes = [(b"424242\x00dev\x00a", encode_value(1, U1)), (b"k" * 300, encode_value(2, U2))]
    assert decode_changelog(encode_changelog(writes)) == writes
    assert decode_changelog(b"") == []
