import pytest

from stream.errors import ConfigError
from stream.settings import field_reference, load_settings


def test_the_example_configuration_is_valid():
    s = load_settings("examples/stream.yaml")
    assert [d.name for d in s.destinations] == ["amplitude-raw"]
    assert s.destinations[0].encryption.type == "sse-s3"
    assert (s.identity.enabled, s.destinations[0].exports, s.destinations[0].org_id) == (True, "both", 55)


def test_an_unknown_key_is_rejected_with_its_path(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("projects: [{id: 1}]\ndestinations:\n  - {name: a, project: 1, bucket: bkt, bukcet: x}\n")
    with pytest.raises(ConfigError) as e:
        load_settings(f)
    assert str(e.value) == f"invalid configuration in {f}: destinations[0].bukcet: unknown key"


def test_environment_variables_override_the_file(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("kafka: {bootstrap_servers: 'a:1'}\n")
    monkeypatch.setenv("STREAM_KAFKA__BOOTSTRAP_SERVERS", "b:2")
    assert load_settings(f).kafka.bootstrap_servers == "b:2"


def test_a_destination_must_name_a_declared_project():
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.project: project 9 is not declared"):
        load_settings(None, destinations=[{"name": "a", "project": 9, "bucket": "bkt"}])


def test_sse_kms_needs_a_key():
    with pytest.raises(ConfigError, match="kms_key_id is required"):
        load_settings(None, projects=[{"id": 1}], destinations=[
            {"name": "a", "project": 1, "bucket": "bkt", "encryption": {"type": "sse-kms"}}])


def test_every_field_is_documented():
    rows = field_reference()
    assert ("kafka.bootstrap_servers", "'127.0.0.1:9092'",
            "Kafka bootstrap servers, comma separated (host:port,...).") in rows
    assert [p for p, _, doc in rows if not doc] == []


def test_merged_ids_need_an_org_id_and_the_identity_stage():
    import pytest as _pytest

    from stream.errors import ConfigError
    dest = {"name": "d", "project": 1, "bucket": "bkt", "exports": "both"}
    with _pytest.raises(ConfigError, match="org_id is required"):
        load_settings(None, projects=[{"id": 1}], destinations=[dest])
    with _pytest.raises(ConfigError, match="needs identity.enabled"):
        load_settings(None, projects=[{"id": 1}], destinations=[{**dest, "org_id": 5}], identity={"enabled": False})
    s = load_settings(None, projects=[{"id": 1}], destinations=[{**dest, "org_id": 5}])
    assert (s.destinations[0].exports_events(), s.destinations[0].exports_merged_ids()) == (True, True)


def test_two_projects_of_one_org_may_export_merged_ids_to_one_bucket_and_prefix():
    dest = {"bucket": "bkt", "prefix": "amp/", "exports": "both", "org_id": 55}
    s = load_settings(None, projects=[{"id": 1}, {"id": 2}], destinations=[
        {"name": "a", "project": 1, **dest}, {"name": "b", "project": 2, **dest}])
    assert [d.name for d in s.destinations] == ["a", "b"]


def test_two_destinations_that_would_write_the_same_keys_are_refused():
    with pytest.raises(ConfigError, match=r"destinations a and b would both write s3://bkt/amp/1/\.\.\. "):
        load_settings(None, projects=[{"id": 1}], destinations=[
            {"name": "a", "project": 1, "bucket": "bkt", "prefix": "amp/"},
            {"name": "b", "project": 1, "bucket": "bkt", "prefix": "amp/"}])
    with pytest.raises(ConfigError, match=r"would both write s3://bkt/seg/segment-logs/src-1/\.\.\. "):
        load_settings(None, projects=[{"id": 1, "segment_sources": [{"write_key": "w1", "source_id": "src-1"}]},
                                     {"id": 2}], destinations=[
            {"name": "a", "project": 1, "bucket": "bkt", "prefix": "seg/", "layout": "segment"},
            {"name": "b", "project": 2, "bucket": "bkt", "prefix": "seg/", "layout": "segment",
             "segment_source_id": "src-1"}])
    # events of one project and the merged ids of another in one place: different keys
    s = load_settings(None, projects=[{"id": 1}], destinations=[
        {"name": "a", "project": 1, "bucket": "bkt", "prefix": "amp/"},
        {"name": "b", "project": 1, "bucket": "bkt", "prefix": "amp/", "exports": "merged_ids", "org_id": 5}])
    assert len(s.destinations) == 2


def test_the_ledger_must_outlive_the_topics_the_exporters_read_again():
    with pytest.raises(ConfigError, match=r"topics.ledger_retention_days \(5\) must be at least "
                                          r"topics.retention_days \(7\)"):
        load_settings(None, topics={"ledger_retention_days": 5})
    s = load_settings(None, topics={"retention_days": 10, "ledger_retention_days": 30})
    from stream.topics import topic_specs
    assert {t.name: t.config.get("retention.ms") for t in topic_specs(s)}["events.accepted"] == str(10 * 86_400_000)


def test_a_project_id_past_an_avro_long_is_refused_with_what_to_do(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"projects: [{{id: 1}}, {{id: {2**63}}}]\n")
    with pytest.raises(ConfigError) as e:
        load_settings(f)
    assert str(e.value) == (
        f"invalid configuration in {f}: projects[1].id: Value error, the project id 9223372036854775808 is over "
        "9223372036854775807 (2**63 - 1), the largest the event batches carry (an Avro long); use the project's id "
        "as Amplitude shows it")
    assert load_settings(None, projects=[{"id": 2**63 - 1}]).projects[0].id == 2**63 - 1
