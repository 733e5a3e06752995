import logging

from stream.events import deadletter
from stream.events.normalize import Reason, Rejected
from stream.redact import SecretFilter, install_log_filter, redact_fields, redact_json
from stream.settings import load_settings


def test_credential_fields_are_redacted_in_any_bytes():
    assert redact_json(b'{"userId":"u-1","writeKey":"wk-secret-1","event":"x"}') == \
        b'{"userId":"u-1","writeKey":"[redacted]","event":"x"}'
    assert redact_json(b'{"api_key" : "amp-key", "events": [') == b'{"api_key" : "[redacted]", "events": ['
    # not JSON, cut short, escaped quotes, a number instead of a string
    assert redact_json(b'garbage "writeKey":"a\\"b" tail') == b'garbage "writeKey":"[redacted]" tail'
    assert redact_json(b'{"writeKey":"unterminated') == b'{"writeKey":"[redacted]"'
    assert redact_json(b'{"writeKey":12345}') == b'{"writeKey":"[redacted]"}'
    assert redact_json(b'{"event":"writeKey"}') == b'{"event":"writeKey"}'
    assert redact_json(None) is None


def test_credential_fields_are_redacted_at_any_depth_of_a_decoded_value():
    assert redact_fields({"batch": [{"writeKey": "k", "a": 1}], "api_key": "x"}) == {
        "batch": [{"writeKey": "[redacted]", "a": 1}], "api_key": "[redacted]"}


def test_a_dead_letter_never_holds_a_write_key():
    rec = deadletter.encode(Rejected(Reason.MISSING_EVENT_TYPE, "event", "a track needs an event"), "http:/v1/track",
                            -1, 0, 1, None, b'{"type":"track","userId":"u-1","writeKey":"seg-write-key-1"}', 2, 1000)
    assert deadletter.decode(rec)["value"] == b'{"type":"track","userId":"u-1","writeKey":"[redacted]"}'


def test_configured_secrets_are_scrubbed_from_log_records(caplog):
    s = load_settings(None, projects=[{"id": 1, "api_keys": ["amp-key-1234"],
                                       "segment_sources": [{"write_key": "wk-abcdef", "source_id": "s"}]}],
                      kafka={"sasl_password": "hunter22"})
    old = logging.getLogRecordFactory()
    try:
        install_log_filter(s)
        with caplog.at_level(logging.INFO):
            logging.getLogger("t").info("key %s and %s, password hunter22", "amp-key-1234", "wk-abcdef")
            try:
                raise ValueError("bad key wk-abcdef")
            except ValueError:
                logging.getLogger("t").exception("failed")
    finally:
        logging.setLogRecordFactory(old)
    assert caplog.records[0].getMessage() == "key [redacted] and [redacted], password [redacted]"
    assert caplog.records[1].exc_text == "ValueError: bad key [redacted]"
    assert "wk-abcdef" not in caplog.text and "amp-key-1234" not in caplog.text


def test_short_values_are_not_treated_as_secrets():
    assert SecretFilter(["ab", "long-secret"]).scrub("ab long-secret") == "ab [redacted]"


def test_a_field_name_written_with_escapes_is_redacted_when_the_bytes_are_json():
    assert redact_json(b'{"userId":"u-1","write\\u004bey":"wk-secret-1","event":"x"}') == \
        b'{"userId":"u-1","writeKey":"[redacted]","event":"x"}'
    assert redact_json(b'{"api\\u005Fkey": "amp-key", "events": [{"event_type": "e\\u0301"}]}') == \
        '{"api_key":"[redacted]","events":[{"event_type":"e\u0301"}]}'.encode()
    # nested, and a name repeated (JSON keeps the last): one field, redacted
    assert redact_json(b'{"batch":[{"\\u0077riteKey":"k1","writeKey":"k2"}]}') == \
        b'{"batch":[{"writeKey":"[redacted]"}]}'
    # JSON that holds no credential is kept byte for byte, escapes and spacing included
    assert redact_json(b'{"e": "caf\\u00e9",  "n": 1}') == b'{"e": "caf\\u00e9",  "n": 1}'


def test_a_field_name_written_with_escapes_is_redacted_when_the_bytes_are_not_json():
    assert redact_json(b'{"api\\u005Fkey" : "amp-key", "events": [') == b'{"api\\u005Fkey" : "[redacted]", "events": ['
    assert redact_json(b'garbage "\\u0077rite\\u004Bey":"a\\"b" tail') == \
        b'garbage "\\u0077rite\\u004Bey":"[redacted]" tail'
    assert redact_json(b'{"\\u0061\\u0070\\u0069\\u005f\\u006b\\u0065\\u0079":12345,') == \
        b'{"\\u0061\\u0070\\u0069\\u005f\\u006b\\u0065\\u0079":"[redacted]",'
    assert redact_json(b'{"write\\u004bey2":"x",') == b'{"write\\u004bey2":"x",'


def test_a_dead_letter_of_the_kafka_path_never_holds_an_escaped_write_key():
    from stream.events.ingest import ingest_records
    from stream.events.normalize import Rules

    s = load_settings(None, ingest={"default_project": 424242}, projects=[{"id": 424242}])
    value = b'{"type":"track","userId":"u-1","write\\u004bey":"seg-write-key-1"}'

    class Rec:
        key, headers, offset, timestamp = b"k", (), 7, 1_700_000_000_000
    Rec.value = value
    res = ingest_records([Rec], "events.ingest", 0, projects=frozenset({424242}), default_project=424242,
                         rules=Rules.of(s.ingest), now_ms=1_700_000_000_000, partitions=2, max_events=100,
                         max_bytes=1 << 20)
    (dead,) = [deadletter.decode(r) for _, r in res.dead]
    assert dead["value"] == b'{"type":"track","userId":"u-1","writeKey":"[redacted]"}'
    assert b"seg-write-key-1" not in dead["value"]
