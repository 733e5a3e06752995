"""Where the cohorts stage's rekey step reads its rows (``stream.cohorts.rekey_mode.choose``): the identity stage's
batches only where no record of events.accepted can be left unread."""

import pytest

from stream.cohorts.rekey_mode import IN_IDENTITY, READ_BACK, choose


@pytest.mark.parametrize("setting", ["auto", True, False])
def test_a_worker_without_the_dedupe_stage_and_identity_reads_events_accepted_whatever_the_setting(setting):
    assert choose(setting, False, IN_IDENTITY, False, 0) == (
        False, "the rekey step reads events.accepted (this worker does not run the dedupe stage with identity)")


def test_true_and_false_are_obeyed_whatever_the_deployment_did_before():
    assert choose(True, True, READ_BACK, True, 500) == (
        True, "the rekey step takes the identity stage's batches (cohort_state.rekey_in_identity: true)")
    assert choose(False, True, IN_IDENTITY, False, 0) == (
        False, "the rekey step reads events.accepted (cohort_state.rekey_in_identity: false)")


def test_auto_rekeys_in_the_identity_stage_in_a_new_deployment_and_where_it_did_before():
    assert choose("auto", True, None, False, 0) == (
        True, "the rekey step takes the identity stage's batches: a new deployment, events.accepted is empty "
              "(cohort_state.rekey_in_identity: auto)")
    assert choose("auto", True, IN_IDENTITY, False, 1_000) == (
        True, "the rekey step takes the identity stage's batches, as it did when this deployment's cohort state was "
              "made (cohort_state.rekey_in_identity: auto)")


def test_auto_reads_events_accepted_where_a_reader_read_it_or_it_holds_records_not_counted():
    before = (False, "the rekey step reads events.accepted, as it did before in this deployment "
                     "(cohort_state.rekey_in_identity: auto; to switch, see the setting)")
    assert choose("auto", True, READ_BACK, False, 0) == before           # a worker read it since (false, or no dedupe)
    assert choose("auto", True, None, True, 0) == before                 # a version before the marker read it
    assert choose("auto", True, None, False, 1_234) == (                 # a first start beside events already there
        False, "the rekey step reads events.accepted from its beginning, whose 1,234 record(s) the cohort state has "
               "not counted yet (cohort_state.rekey_in_identity: auto)")
