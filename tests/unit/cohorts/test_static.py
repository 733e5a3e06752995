"""Static cohorts (stream.cohorts.static): the uploaded list checked and parsed, where it is kept, and the members a
sync lists from the users' states, folded or streamed."""

import pytest

from stream.cohorts.membership import UserState
from stream.cohorts.rules import parse_cohort
from stream.cohorts.static import StaticError, check_ids, members, members_key, parse_lines, users_of

VIPS = parse_cohort({"id": "vips", "project": 424242, "name": "VIPs", "static": True})
STATES = {30: UserState(424242, "u-3"), 10: UserState(424242, "u-1"), 20: UserState(7, "u-1"),
          40: UserState(424242, None)}


def test_an_upload_is_sorted_once_each_and_a_text_file_is_one_id_per_line():
    assert check_ids(["b", "a", "b"]) == ["a", "b"]
    assert parse_lines("userID\r\nu-2\n\n  u-1  \nu-2\n") == ["u-1", "u-2"]
    assert parse_lines("user_id\n") == [] and parse_lines("") == []


@pytest.mark.parametrize("ids, error", [
    (["a", 3], "user id 2 is 3: every member must be a non-empty string (a user_id)"),
    (["  "], "user id 1 is '  ': every member must be a non-empty string (a user_id)"),
    (["a\nb"], "user id 1 holds a line break: give one user id per line"),
    (["x" * 1025], "user id 1 is 1025 characters long: at most 1024"),
])
def test_what_is_not_a_user_id_is_named(ids, error):
    with pytest.raises(StaticError) as exc:
        check_ids(ids)
    assert str(exc.value) == error


def test_the_list_is_kept_beside_the_destinations_sync_records():
    assert members_key("_stream/cohorts/", "crm", VIPS) == "_stream/cohorts/crm/static/424242_vips.json"


def test_the_members_are_the_projects_users_with_a_listed_user_id_from_folded_or_streamed_states():
    class Folded:
        states = STATES

    class Streamed:
        states = None

        def users(self):
            return iter(sorted(STATES.items()))
    assert members(users_of(Folded()), VIPS, ["u-1", "u-3", "nobody"]) == [10, 30]
    assert members(users_of(Streamed()), VIPS, ["u-1", "u-3", "nobody"]) == [10, 30]
    assert members(users_of(Folded()), VIPS, []) == []
