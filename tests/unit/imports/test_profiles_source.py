"""Sources of profiles (data_type: profiles): their settings, rows, records and the profiles stage's pure parts."""

import pytest
from pydantic import ValidationError

from stream.settings import Settings, SourceSettings

FUNC = {"user_id": "user", "user_properties": {"plan": "plan", "age": "age"}, "$mutation_type": "op"}
CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": FUNC}}


def source(**kw):
    return SourceSettings(name="people", project=7, bucket="bkt", converter=CONVERTER, **kw)


def settings(**src):
    return Settings(projects=[{"id": 7}], worker={"data_dir": "/tmp/stream-test-profiles"},
                    sources=[{"name": "people", "project": 7, "bucket": "bkt", "converter": CONVERTER,
                              "data_type": "profiles", "strategy": "mirror", **src}])


def test_a_source_of_profiles_is_a_mirror_source_and_needs_no_archive_destination():
    s = settings()
    assert (s.source("people").data_type, s.source("people").strategy) == ("profiles", "mirror")
    assert s.profiles_projects() == frozenset({7})
    assert s.mirror_projects() == frozenset()       # no exported hours to rewrite: no mirror stage
    assert s.destinations == []


def test_profiles_refuse_append_only():
    with pytest.raises(ValidationError) as err:
        source(data_type="profiles")
    assert ("data_type: profiles are each user's current properties, which a row sets, replaces or deletes "
            "(Amplitude's Mirror strategy; append_only does not apply to them): set strategy: mirror") in str(err.value)


def test_without_a_source_of_profiles_no_project_has_profiles():
    s = Settings(projects=[{"id": 7}], sources=[{"name": "clicks", "project": 7, "bucket": "bkt",
                                                 "converter": CONVERTER}])
    assert s.profiles_projects() == frozenset()
