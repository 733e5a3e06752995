"""Segment messages: completion (times, ids, merged context), the mapping to Amplitude, and back."""

import orjson
import pytest

from stream.events.normalize import Normalized, Reason, Rejected, Rules, normalize
from stream.events.segment import format_time, from_amplitude_row, full_message, parse_time, to_amplitude

RECEIVED = parse_time("2024-03-09T10:02:05.300Z")


def full(msg, call_type="track", **kw):
    return full_message(msg, call_type, received_ms=kw.pop("received_ms", RECEIVED), message_id="gen-1", **kw)


def test_times_parse_and_format_as_segment_writes_them():
    assert parse_time("2024-03-09T07:15:00.000Z") == 1709968500000
    assert parse_time("2024-03-09T09:15:00.5+02:00") == 1709968500500
    assert parse_time("2024-03-09T07:15:00") == 1709968500000
    assert format_time(1709968500007) == "2024-03-09T07:15:00.007Z"


def test_clock_skew_is_corrected_as_segment_does():
    # FORMATS.md §3.3: originalTimestamp 10:00:00.000, sentAt 10:00:05.000, receivedAt 10:02:05.300
    m = full({"userId": "u-77", "event": "E", "timestamp": "2024-03-09T10:00:00.000Z",
              "sentAt": "2024-03-09T10:00:05.000Z"})
    assert (m["originalTimestamp"], m["sentAt"], m["timestamp"], m["receivedAt"]) == (
        "2024-03-09T10:00:00.000Z", "2024-03-09T10:00:05.000Z", "2024-03-09T10:02:00.300Z",
        "2024-03-09T10:02:05.300Z")


def test_a_batch_sent_at_applies_to_its_messages_and_their_own_wins():
    a = full({"type": "track", "userId": "u-77", "event": "E", "timestamp": "2024-03-09T10:00:00Z"}, None,
             batch_sent_at="2024-03-09T10:00:01Z")
    assert a["timestamp"] == "2024-03-09T10:02:04.300Z"
    b = full({"userId": "u-77", "event": "E", "timestamp": "2024-03-09T10:00:00Z", "sentAt": "2024-03-09T10:00:02Z"},
             batch_sent_at="2024-03-09T10:00:01Z")
    assert b["timestamp"] == "2024-03-09T10:02:03.300Z"


def test_without_sent_at_the_timestamp_is_kept_and_without_any_time_it_is_received_at():
    m = full({"userId": "u-77", "event": "E", "timestamp": "2024-03-09T07:15:00.000Z"})
    assert (m["originalTimestamp"], m["sentAt"], m["timestamp"]) == (
        "2024-03-09T07:15:00.000Z", None, "2024-03-09T07:15:00.000Z")
    m = full({"userId": "u-77", "event": "E"})
    assert m["originalTimestamp"] == m["timestamp"] == m["receivedAt"] == "2024-03-09T10:02:05.300Z"


def test_original_timestamp_sent_by_the_client_is_the_client_time():
    m = full({"userId": "u-77", "event": "E", "originalTimestamp": "2024-03-09T10:00:00Z",
              "sentAt": "2024-03-09T10:00:05Z", "timestamp": "2030-01-01T00:00:00Z"})
    assert m["timestamp"] == "2024-03-09T10:02:00.300Z"


def test_the_full_message_merges_batch_context_and_drops_the_write_key():
    m = full({"type": "track", "userId": "u-77", "event": "E", "messageId": "m-1", "writeKey": "secret",
              "context": {"ip": "1.2.3.4", "library": {"name": "x"}}, "integrations": {"All": False}},
             None, batch_context={"library": {"name": "analytics-python", "version": "2.4.0"}, "locale": "en-US"},
             batch_integrations={"All": True, "S3": True})
    assert m == {"type": "track", "userId": "u-77", "event": "E", "messageId": "m-1",
                 "context": {"library": {"name": "x"}, "locale": "en-US", "ip": "1.2.3.4"},
                 "integrations": {"All": False, "S3": True}, "originalTimestamp": "2024-03-09T10:02:05.300Z",
                 "sentAt": None, "timestamp": "2024-03-09T10:02:05.300Z", "receivedAt": "2024-03-09T10:02:05.300Z"}
    assert "writeKey" not in m


def test_a_message_without_message_id_gets_the_generated_one():
    assert full({"anonymousId": "anon-1", "event": "E"})["messageId"] == "gen-1"


@pytest.mark.parametrize("msg, call_type, reason, field", [
    ([1], None, Reason.NOT_AN_OBJECT, None),
    ({"userId": "u"}, None, Reason.MISSING_EVENT_TYPE, "type"),
    ({"userId": "u", "type": "flush"}, None, Reason.INVALID_VALUE, "type"),
    ({"event": "E"}, "track", Reason.MISSING_ID, "userId"),
    ({"userId": "", "anonymousId": "", "event": "E"}, "track", Reason.MISSING_ID, "userId"),
    ({"userId": ["u"], "event": "E"}, "track", Reason.INVALID_TYPE, "userId"),
    ({"userId": "u"}, "track", Reason.MISSING_EVENT_TYPE, "event"),
    ({"userId": "u", "event": 5}, "track", Reason.INVALID_TYPE, "event"),
    ({"userId": "u"}, "group", Reason.INVALID_VALUE, "groupId"),
    ({"userId": "u"}, "alias", Reason.INVALID_VALUE, "previousId"),
    ({"anonymousId": "a", "previousId": "p"}, "alias", Reason.MISSING_ID, "userId"),
    ({"userId": "u", "event": "E", "properties": [1]}, "track", Reason.INVALID_TYPE, "properties"),
    ({"userId": "u", "event": "E", "messageId": "m" * 100}, "track", Reason.INVALID_VALUE, "messageId"),
    ({"userId": "u", "event": "E", "timestamp": "yesterday"}, "track", Reason.INVALID_VALUE, "timestamp"),
    ({"userId": "u", "event": "E", "sentAt": 5}, "track", Reason.INVALID_TYPE, "sentAt"),
])
def test_messages_segment_would_refuse_are_rejected_with_reason_and_field(msg, call_type, reason, field):
    got = full(msg, call_type)
    assert isinstance(got, Rejected)
    assert (got.reason, got.field) == (reason, field)


CONTEXT = {
    "app": {"name": "Shop", "version": "4.2.0", "build": "420"},
    "device": {"type": "ios", "manufacturer": "Apple", "model": "iPhone15,2", "advertisingId": "ad-1",
               "id": "dev-hw"},
    "os": {"name": "iOS", "version": "17.4.1"},
    "network": {"carrier": "Verizon", "wifi": True},
    "location": {"country": "United States", "region": "California", "city": "San Francisco",
                 "latitude": 37.77, "longitude": -122.41},
    "ip": "203.0.113.9", "locale": "en-US", "userAgent": "Shop/4.2.0",
    "library": {"name": "analytics-ios", "version": "4.1.8"},
    "traits": {"plan": "pro"},
}


def amp(msg, call_type):
    return to_amplitude(full(dict(msg, messageId="m-1", timestamp="2024-03-09T07:15:00.000Z"), call_type))


def test_track_maps_to_an_amplitude_event_with_context_fields():
    got = amp({"userId": "u-77", "anonymousId": "anon-123", "event": "Plan Upgraded",
               "properties": {"plan": "pro", "revenue": 9.5}, "context": CONTEXT}, "track")
    assert got == {
        "event_type": "Plan Upgraded", "event_properties": {"plan": "pro", "revenue": 9.5}, "revenue": 9.5,
        "user_id": "u-77", "device_id": "anon-123", "insert_id": "m-1", "time": 1709968500000,
        "user_properties": {"plan": "pro"}, "app_version": "4.2.0", "platform": "ios", "os_name": "iOS",
        "os_version": "17.4.1", "device_manufacturer": "Apple", "device_model": "iPhone15,2", "carrier": "Verizon",
        "country": "United States", "region": "California", "city": "San Francisco", "location_lat": 37.77,
        "location_lng": -122.41, "ip": "203.0.113.9", "language": "en-US", "library": "analytics-ios/4.1.8",
        "user_agent": "Shop/4.2.0", "idfa": "ad-1"}


@pytest.mark.parametrize("msg, call_type, expected", [
    ({"userId": "u-77", "name": "Pricing", "category": "Docs", "properties": {"path": "/pricing"}}, "page",
     {"event_type": "Viewed Pricing Page", "event_properties": {"path": "/pricing", "name": "Pricing",
                                                                "category": "Docs"}}),
    ({"userId": "u-77"}, "page", {"event_type": "Loaded a Page", "event_properties": {}}),
    ({"userId": "u-77", "name": "Home"}, "screen", {"event_type": "Viewed Home Screen",
                                                    "event_properties": {"name": "Home"}}),
    ({"userId": "u-77", "traits": {"email": "a@b.c"}}, "identify",
     {"event_type": "$identify", "user_properties": {"$set": {"email": "a@b.c"}}}),
    ({"userId": "u-77", "groupId": "acme", "traits": {"group_type": "company", "size": 50}}, "group",
     {"event_type": "$groupidentify", "groups": {"company": "acme"}, "group_properties": {"$set": {"size": 50}}}),
    ({"userId": "u-77", "groupId": 42}, "group",
     {"event_type": "$groupidentify", "groups": {"group": "42"}, "group_properties": {"$set": {}}}),
    ({"userId": "u-77", "previousId": "anon-123", "anonymousId": "anon-123"}, "alias",
     {"event_type": "[Segment] Alias", "event_properties": {"previousId": "anon-123"}}),
])
def test_other_calls_map_to_amplitudes_special_events(msg, call_type, expected):
    got = amp(msg, call_type)
    assert got == {**expected, "user_id": "u-77", "insert_id": "m-1", "time": 1709968500000}


def test_context_values_of_the_wrong_type_are_left_out():
    got = amp({"userId": "u-77", "event": "E", "context": {"os": {"name": ["x"], "version": 17}, "device": "x",
                                                             "ip": None, "library": {"name": "lib"}}}, "track")
    assert {k: got.get(k) for k in ("os_name", "os_version", "library", "ip")} == {
        "os_name": None, "os_version": "17", "library": "lib", "ip": None}


def test_android_advertising_id_is_adid_and_numbers_become_string_ids():
    got = amp({"userId": 12345, "event": "E", "context": {"os": {"name": "Android"},
                                                         "device": {"advertisingId": "gaid-1"}}}, "track")
    assert (got["user_id"], got["adid"], "idfa" in got) == ("12345", "gaid-1", False)


def test_every_mapped_message_passes_normalize():
    for msg, call_type in [({"userId": "u-77", "event": "E", "context": CONTEXT}, "track"),
                           ({"anonymousId": "anon-123", "traits": {"a": 1}}, "identify"),
                           ({"userId": "u-77", "groupId": "g"}, "group"),
                           ({"userId": "u-77", "previousId": "p"}, "alias"),
                           ({"userId": "u-77", "name": "N"}, "screen")]:
        assert isinstance(normalize(amp(msg, call_type), 1, RECEIVED, "x", Rules(min_id_length=1)), Normalized)


def test_an_amplitude_row_maps_back_to_the_segment_track_message():
    m = full({"userId": "u-77", "anonymousId": "anon-123", "event": "Plan Upgraded", "messageId": "m-1",
              "properties": {"plan": "pro"}, "context": CONTEXT, "timestamp": "2024-03-09T10:00:00.000Z",
              "sentAt": "2024-03-09T10:00:05.000Z"})
    row = orjson.loads(normalize(to_amplitude(m), 1, RECEIVED, "x", Rules(min_id_length=1)).line)
    back = from_amplitude_row(row)
    assert back == {
        "type": "track", "event": "Plan Upgraded", "messageId": "m-1", "userId": "u-77", "anonymousId": "anon-123",
        "properties": {"plan": "pro"},
        "context": {"app": {"version": "4.2.0"},
                    "device": {"type": "ios", "manufacturer": "Apple", "model": "iPhone15,2",
                               "advertisingId": "ad-1"},
                    "os": {"name": "iOS", "version": "17.4.1"}, "network": {"carrier": "Verizon"},
                    "location": {"country": "United States", "region": "California", "city": "San Francisco",
                                 "latitude": 37.77, "longitude": -122.41},
                    "ip": "203.0.113.9", "locale": "en-US", "library": {"name": "analytics-ios", "version": "4.1.8"},
                    "traits": {"plan": "pro"}},
        "integrations": {},
        # the corrected time is the event time; the server's receive time is received and sent
        "originalTimestamp": "2024-03-09T10:02:00.300Z", "sentAt": "2024-03-09T10:02:05.300Z",
        "timestamp": "2024-03-09T10:02:00.300Z", "receivedAt": "2024-03-09T10:02:05.300Z"}
    # the parts a track message is made of survive the round trip
    assert {k: back[k] for k in ("type", "event", "messageId", "userId", "anonymousId", "properties", "timestamp",
                                 "receivedAt")} == {k: m[k] for k in ("type", "event", "messageId", "userId",
                                                                      "anonymousId", "properties", "timestamp",
                                                                      "receivedAt")}


def test_a_row_without_insert_id_uses_its_uuid_and_sparse_rows_give_sparse_messages():
    row = {"event_type": "E", "device_id": "dev-1", "uuid": "bf0b9b2a-304d-11e6-934f-22000b56058f",
           "$insert_id": None, "event_properties": {}, "client_event_time": "2024-03-09 07:15:00.123000",
           "event_time": "2024-03-09 07:15:00.123000", "server_received_time": "2024-03-09 07:15:01.000000",
           "client_upload_time": "2024-03-09 07:15:01.000000", "library": None, "user_properties": {}}
    assert from_amplitude_row(row) == {
        "type": "track", "event": "E", "messageId": "bf0b9b2a-304d-11e6-934f-22000b56058f", "anonymousId": "dev-1",
        "properties": {}, "context": {}, "integrations": {}, "originalTimestamp": "2024-03-09T07:15:00.123Z",
        "sentAt": "2024-03-09T07:15:01.000Z", "timestamp": "2024-03-09T07:15:00.123Z",
        "receivedAt": "2024-03-09T07:15:01.000Z"}
