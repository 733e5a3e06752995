"""Cohorts of a project with a source of profiles: user_property conditions (and the properties the syncs export)
read the user's profile, which replaces what its rows carried; a user without a profile, or a deleted one, keeps
its rows'."""

import asyncio

from stream.cohorts.sync import EventSource, Membership
from stream.imports.profiles import Profile, key
from stream.settings import load_settings
from tests.unit.cohorts.test_sync import P, T2, row

CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {"user_id": "user", "user_properties": {"c": "c"}}}}
SEQ = (1, "s3://b/p.json", 1)


def settings():
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "french", "project": P, "name": "French", "rule": {"user_property": "country", "op": "=",
                                                                  "value": "FR"}}],
        sources=[{"name": "people", "project": P, "bucket": "bkt", "converter": CONVERTER, "data_type": "profiles",
                  "strategy": "mirror"}])


def rows():
    return [row(1, "view", "2024-03-10 10:00", "u1", country="DE"),
            row(2, "view", "2024-03-10 10:00", "u2", country="FR"),
            row(3, "view", "2024-03-10 10:00", "u3", country="FR"),
            row(4, "view", "2024-03-10 10:00", "u4", country="FR"),
            row(5, "view", "2024-03-10 10:00", None, country="FR")]


PROFILES = {key(P, "u1"): Profile({"country": "FR", "plan": "pro"}, SEQ, 1),   # the profile says FR
            key(P, "u2"): Profile({"country": "US"}, SEQ, 1),                  # the profile says US
            key(P, "u3"): Profile(None, SEQ, 1),                               # deleted: the rows' FR
            key(7, "u4"): Profile({"country": "US"}, SEQ, 1)}                  # another project's user


class Profiles(EventSource):
    """No rows on Kafka (the test adds them), the profiles above."""

    async def _nothing(self):
        return
        yield

    def _records(self, topic):
        return self._nothing()

    async def profiles(self):
        return PROFILES


def test_a_users_profile_replaces_the_properties_its_rows_carried():
    s = settings()
    m = Membership(s.cohort_set, [P], T2)
    for r, uploaded in rows():
        m.add_row(r, uploaded)
    asyncio.run(Profiles(s).fold(m))
    assert m.members(s.cohort_set.cohort("french")) == [1, 3, 4, 5]
    assert m.states[1].properties == {"country": "FR"}        # only the names the cohorts read are kept
    assert m.states[2].properties == {"country": "US"}


def test_without_a_source_of_profiles_the_rows_properties_are_read():
    s = load_settings(None, projects=[{"id": P}], cohorts=settings().cohorts)
    m = Membership(s.cohort_set, [P], T2)
    for r, uploaded in rows():
        m.add_row(r, uploaded)
    asyncio.run(Profiles(s).fold(m))
    assert m.members(s.cohort_set.cohort("french")) == [2, 3, 4, 5]
