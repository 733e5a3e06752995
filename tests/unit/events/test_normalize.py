import orjson
import pytest

from stream.events.fields import EXPORT_FIELDS
from stream.events.normalize import (
    Normalized,
    Reason,
    Rejected,
    Rules,
    decode,
    normalize,
    normalize_message,
    uuid5_bytes,
    uuid_str,
)

RULES = Rules()
T = 1_710_000_000_123  # 2024-03-09 16:00:00.123 UTC
ORIGIN = "events.ingest/0/42"


def norm(value: bytes, key: bytes | None = None, rules: Rules = RULES):
    return normalize_message(value, key, 424242, T, ORIGIN, rules)


def test_writes_every_export_column_in_order_with_amplitude_values():
    ev = {"event_type": "Order Completed", "user_id": "user-20391", "device_id": "dev-12345", "time": 1709968500000,
          "insert_id": "ord-1", "app_version": "2.1.0", "carrier": "Verizon", "ip": "10.1.2.3", "price": 9.5,
          "quantity": 2, "idfv": "idfv-1", "event_properties": {"sku": "a"}}
    out = norm(orjson.dumps(ev))
    assert isinstance(out, Normalized)
    uid = uuid_str(uuid5_bytes(ORIGIN))
    assert out.line == (
        b'{"$insert_id":"ord-1","$schema":null,"adid":null,"amplitude_attribution_ids":null,"app":424242,'
        b'"city":null,"client_event_time":"2024-03-09 07:15:00.000000",'
        b'"client_upload_time":"2024-03-09 16:00:00.123000",'
        b'"country":null,"data":{"idfv":"idfv-1"},"device_brand":null,"device_carrier":"Verizon",'
        b'"device_family":null,"device_id":"dev-12345","device_manufacturer":null,"device_model":null,'
        b'"device_type":null,"dma":null,"event_id":null,"event_properties":{"sku":"a","$price":9.5,"$quantity":2},'
        b'"event_time":"2024-03-09 07:15:00.000000","event_type":"Order Completed",'
        b'"groups":{},"idfa":null,"ip_address":"10.1.2.3","is_attribution_event":null,"language":null,'
        b'"library":null,"location_lat":null,"location_lng":null,"os_name":null,"os_version":null,'
        b'"platform":null,"region":null,"sample_rate":null,'
        b'"server_received_time":"2024-03-09 16:00:00.123000","server_upload_time":"2024-03-09 16:00:00.123000",'
        b'"session_id":-1,"user_id":"user-20391","uuid":"' + uid.encode() + b'","version_name":"2.1.0",'
        # the identity stage's columns come last (IDENTITY_FIELDS)
        b'"amplitude_event_type":null,"amplitude_id":null,"group_properties":{},"paying":null,'
        b'"processed_time":"2024-03-09 16:00:00.123000","start_version":null,"user_creation_time":null,'
        b'"user_properties":{}}')
    assert list(orjson.loads(out.line)) == list(EXPORT_FIELDS)
    assert out.dedupe_key == b"424242\x00dev-12345\x00ord-1"
    assert out.partition_key == "dev-12345"
    assert (out.device_id, out.user_id) == ("dev-12345", "user-20391")
    assert out.upload_ms == T


def test_uuid_is_derived_from_the_source_coordinates():
    a = norm(b'{"event_type":"x","user_id":"user-1"}')
    b = normalize_message(b'{"event_type":"x","user_id":"user-1"}', None, 424242, T, ORIGIN, RULES)
    c = normalize_message(b'{"event_type":"x","user_id":"user-1"}', None, 424242, T, "events.ingest/0/43", RULES)
    assert a.uuid == b.uuid != c.uuid
    import uuid
    assert uuid.UUID(bytes=a.uuid) == uuid.uuid5(uuid.UUID("6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f"), ORIGIN)


def test_server_times_given_by_the_producer_win_over_the_record_timestamp():
    out = norm(b'{"event_type":"x","user_id":"user-1","server_upload_time":1700000000000}')
    assert out.upload_ms == 1700000000000
    assert orjson.loads(out.line)["server_upload_time"] == "2023-11-14 22:13:20.000000"
    assert orjson.loads(out.line)["server_received_time"] == "2024-03-09 16:00:00.123000"


def test_without_insert_id_there_is_no_dedupe_key_and_short_ids_are_removed():
    out = norm(b'{"event_type":"x","user_id":"user-1","device_id":"abc"}')
    assert out.dedupe_key == b""
    assert orjson.loads(out.line)["device_id"] is None
    assert out.partition_key == "user-1"
    assert (out.device_id, out.user_id) == (None, "user-1")


@pytest.mark.parametrize("value,key,reason,field", [
    (b"", None, Reason.EMPTY_MESSAGE, None),
    (b'{"event_type":"x","user_id":"user-1"', None, Reason.MALFORMED_JSON, None),
    (b'["x"]', None, Reason.NOT_AN_OBJECT, None),
    (b'{"user_id":"user-1"}', None, Reason.MISSING_EVENT_TYPE, "event_type"),
    (b'{"event_type":"","user_id":"user-1"}', None, Reason.MISSING_EVENT_TYPE, "event_type"),
    (b'{"event_type":"x"}', None, Reason.MISSING_ID, "user_id"),
    (b'{"event_type":"x","user_id":"u1"}', None, Reason.MISSING_ID, "user_id"),
    (b'{"event_type":"x","user_id":"null"}', None, Reason.INVALID_ID, "user_id"),
    (b'{"event_type":"x","user_id":"user-1","time":"yesterday"}', None, Reason.INVALID_TYPE, "time"),
    (b'{"event_type":"x","user_id":"user-1","event_properties":[1,2]}', None, Reason.INVALID_TYPE,
     "event_properties"),
    (b'{"event_type":5,"user_id":"user-1"}', None, Reason.INVALID_TYPE, "event_type"),
    (b'{"event_type":"x","user_id":"user-1","colour":"red"}', None, Reason.UNKNOWN_FIELD, "colour"),
    (b'{"event_type":"x","user_id":"user-1","uuid":"nope"}', None, Reason.INVALID_VALUE, "uuid"),
    (b'{"event_type":"x","user_id":"user-1","time":-5}', None, Reason.INVALID_VALUE, "time"),
    (b'{"event_type":"x","user_id":"' + b"u" * 1025 + b'"}', None, Reason.INVALID_VALUE, "user_id"),
    (b'{"event_type":"caf\xe9","user_id":"user-1"}', None, Reason.INVALID_UTF8, None),
    (b'{"event_type":"x","user_id":"user-1"}', b"\xff\xfe", Reason.INVALID_KEY, None),
])
def test_each_bad_input_is_rejected_with_its_reason_and_field(value, key, reason, field):
    out = norm(value, key)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field) == (reason, field)
    assert out.detail


def test_an_event_over_the_size_limit_is_too_large():
    big = b'{"event_type":"x","user_id":"user-1","event_properties":{"blob":"' + b"a" * 2_000_000 + b'"}}'
    out = norm(big)
    assert (out.reason, out.field) == (Reason.TOO_LARGE, None)
    assert out.detail == "the event is 2000068 bytes; the limit is 1048576 (ingest.max_event_bytes)"


@pytest.mark.parametrize("field, value", [
    ("user_properties", {None: 1}),
    ("event_properties", {"nested": {"ok": 1, None: "x"}}),
    ("groups", {"team": 1, (1, 2): "x"}),
])
def test_an_object_key_json_cannot_write_is_rejected_naming_its_field(field, value):
    """normalize takes any dict (the readers give text keys; a caller could give others): an object key JSON has no
    text for refuses the event with its field instead of raising."""
    out = normalize({"event_type": "x", "user_id": "user-1", field: value}, 424242, T, ORIGIN, RULES)
    assert out == Rejected(Reason.INVALID_VALUE, field, f"{field} holds an object whose key is neither text nor a "
                           "number: give its keys as text")


def test_object_keys_of_numbers_are_written_as_their_text():
    out = normalize({"event_type": "x", "user_id": "user-1", "user_properties": {1: "a", 2.5: "b", True: "c"}},
                    424242, T, ORIGIN, RULES)
    assert orjson.loads(out.line)["user_properties"] == {"1": "c", "2.5": "b"}


def test_unknown_fields_are_kept_in_data_when_configured():
    out = norm(b'{"event_type":"x","user_id":"user-1","colour":"red"}', rules=Rules(keep_unknown_fields=True))
    assert orjson.loads(out.line)["data"] == {"colour": "red"}


def test_numeric_strings_are_accepted_for_numbers():
    out = norm(b'{"event_type":"x","user_id":"user-1","time":"1709968500000","location_lat":"52.5"}')
    row = orjson.loads(out.line)
    assert row["client_event_time"] == "2024-03-09 07:15:00.000000"
    assert row["location_lat"] == 52.5


SAMPLES = [
    {"event_type": "a", "user_id": "user-1"},
    {"event_type": "a", "device_id": "device-1", "insert_id": "i-1", "event_properties": {"x": [1, {"y": None}]},
     "user_properties": {"$set": {"plan": "pro"}}, "groups": {"org": "acme"}, "group_properties": {}},
    {"event_type": "a", "user_id": "user-1", "version_name": "2", "app_version": "1", "revenue": 3,
     "currency": "EUR", "plan": {"branch": "main"}, "extra": {"k": 1}, "$skip_user_properties_sync": True,
     "location_lng": 13, "session_id": 1709968500000, "event_id": 7, "idfa": "i", "adid": "a"},
    {"event_type": "a", "user_id": "user-1", "event_properties": None, "user_id_2": None},
    {"event_type": "a", "user_id": "user-1", "uuid": "BF0B9B2A-304D-11E6-934F-22000B56058F"},
]


@pytest.mark.parametrize("ev", SAMPLES)
def test_the_fast_path_and_the_reference_path_agree(ev):
    raw = orjson.dumps(ev)
    fast = norm(raw)
    obj = decode(raw, None, RULES)
    ref = normalize(obj, 424242, T, ORIGIN, RULES)
    assert type(fast) is type(ref)
    if isinstance(ref, Normalized):
        assert fast._replace(line=b"") == ref._replace(line=b"")
        assert orjson.loads(fast.line) == orjson.loads(ref.line)
        assert list(orjson.loads(fast.line)) == list(orjson.loads(ref.line))
    else:
        assert fast == ref


def test_an_export_row_gives_back_the_event_normalize_built_it_from():
    from stream.events.normalize import from_row
    ev = {"event_type": "buy", "device_id": "device-1", "user_id": "user-1", "insert_id": "ins-12345",
          "time": 1709967600000, "event_properties": {"sku": "a"}}
    built = normalize(ev, 42, 1709967601234, "events.ingest/0/7", Rules())
    again = from_row(42, orjson.loads(built.line))
    assert again == built._replace(clamped=False)
    assert again.line == built.line
