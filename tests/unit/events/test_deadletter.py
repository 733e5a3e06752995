from stream.events import deadletter
from stream.events.normalize import Reason, Rejected


def dl(reason, topic, partition, offset, at, field=None, detail="bad", value=b"{}"):
    return deadletter.decode(deadletter.encode(Rejected(Reason(reason), field, detail), topic, partition, offset,
                                               at, None, value, at, 1000))


def test_a_dead_letter_is_described_in_one_line_with_its_source_coordinates():
    assert deadletter.describe(dl("missing_id", "events.ingest", 3, 41, 1709967600000, "user_id",
                                  "the event needs a user_id or a device_id", b'{"event_type":"x"}')) == (
        '2024-03-09 07:00:00Z missing_id user_id from events.ingest[3]@41: the event needs a user_id or a device_id '
        '| {"event_type":"x"}')
    assert deadletter.describe(dl("malformed_json", "http:/2/httpapi", -1, 2, 1709967600000, value=b"x" * 200),
                               value_chars=5) == (
        "2024-03-09 07:00:00Z malformed_json from http:/2/httpapi event 2: bad | xxxxx... (200 bytes)")


def test_dead_letters_are_summarized_by_reason_with_their_sources_and_latest_example():
    records = [dl("missing_id", "events.ingest", 0, 1, 1000, "user_id"),
               dl("malformed_json", "events.ingest", 1, 7, 2000),
               dl("missing_id", "http:/v1/batch", -1, 4, 3000, "userId", "no id"),
               dl("missing_id", "events.ingest", 0, 9, 2500, "user_id")]
    assert deadletter.summarize(records) == [
        {"reason": "missing_id", "count": 3, "sources": {"events.ingest": 2, "http:/v1/batch": 1}, "first_at": 1000,
         "last_at": 3000, "latest": {"source": "http:/v1/batch event 4", "field": "userId", "detail": "no id"}},
        {"reason": "malformed_json", "count": 1, "sources": {"events.ingest": 1}, "first_at": 2000, "last_at": 2000,
         "latest": {"source": "events.ingest[1]@7", "field": None, "detail": "bad"}}]
