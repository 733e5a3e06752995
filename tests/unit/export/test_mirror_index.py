from stream.events.timefmt import HOUR_MS
from stream.export import mirror_index as ix

HOUR = 1709967600000   # 2024-03-09T07:00Z
N = HOUR // HOUR_MS


def test_keys_are_the_project_then_the_insert_id_and_split_back():
    assert ix.key(42, "ins-1") == b"\x00\x00\x00*ins-1"
    assert ix.split_key(ix.key(42, "ins-é")) == (42, "ins-é")


def test_entries_are_eight_bytes_each_and_read_back():
    entries = [ix.entry(HOUR + 5, "d1"), ix.entry(HOUR + 3 * HOUR_MS, None)]
    data = ix.encode(entries)
    assert len(data) == 16
    assert ix.decode(data) == entries
    assert ix.decode(None) == [] and ix.decode(b"") == []


def test_adding_keeps_each_entry_once_sorted_and_drops_what_is_older_than_the_kept_days():
    now = HOUR + 90 * 24 * HOUR_MS
    oldest = ix.oldest_hour(now, 90)
    assert oldest == N
    old = (N - 1, ix.device_hash("d"))
    kept = (N, ix.device_hash("d"))
    assert ix.added([old, kept], [kept, ix.entry(now, "e")], oldest) == [kept, ix.entry(now, "e")]


def test_a_mutation_with_a_device_finds_that_devices_hours_and_one_without_finds_every_devices():
    entries = [ix.entry(HOUR, "d1"), ix.entry(HOUR + HOUR_MS, "d2"), ix.entry(HOUR + HOUR_MS, "d1")]
    assert ix.hours_of(entries, "d1", 0) == [HOUR, HOUR + HOUR_MS]
    assert ix.hours_of(entries, "d2", 0) == [HOUR + HOUR_MS]
    assert ix.hours_of(entries, "d3", 0) == []
    assert ix.hours_of(entries, None, 0) == [HOUR, HOUR + HOUR_MS]
    assert ix.hours_of(entries, None, N + 1) == [HOUR + HOUR_MS]


def test_an_accepted_batch_gives_an_entry_per_row_with_an_insert_id():
    blob = b"\n".join([b'{"$insert_id":"a","device_id":"d1"}', b'{"$insert_id":null,"device_id":"d1"}',
                       b'{"$insert_id":"a","device_id":"d2"}', b'{"$insert_id":"b","device_id":null}'])
    assert ix.entries_of(7, HOUR + 1234, blob) == {
        ix.key(7, "a"): [(N, ix.device_hash("d1")), (N, ix.device_hash("d2"))],
        ix.key(7, "b"): [(N, ix.device_hash(None))]}


def test_a_batch_of_writes_is_one_message_and_reads_back_in_order():
    writes = [(ix.key(1, "a"), ix.encode([(N, 1)])), (ix.key(1, "é" * 300), b""), (b"k", b"v" * 70000)]
    assert ix.decode_writes(ix.encode_writes(writes)) == writes
    assert ix.decode_writes(b"") == []


def test_incoming_entries_merge_into_what_is_stored():
    stored = ix.encode([(N, 5)])
    assert ix.merged([stored, None], [ix.encode([(N, 5), (N + 1, 5)]), ix.encode([(N, 9)])], N) == [
        ix.encode([(N, 5), (N + 1, 5)]), ix.encode([(N, 9)])]
