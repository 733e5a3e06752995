from stream.agents.contiguous import gap


def test_a_gap_is_the_offsets_between_the_next_expected_and_the_one_that_came():
    assert [gap(None, 5), gap(5, 5), gap(6, 5), gap(3, 5)] == [None, None, None, (3, 5)]
