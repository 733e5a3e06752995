from stream.api.budget import Budget, Claim


def test_claims_grow_within_the_budget_and_give_everything_back():
    b = Budget(100)
    a, c = Claim(b), Claim(b)
    assert a.grow_to(60) and a.grow_to(40) and b.used == 60      # never shrinks while held
    assert not c.grow_to(50) and c.held == 0 and b.used == 60    # nothing taken when it does not fit
    assert c.grow_to(40) and b.used == 100
    assert not a.grow_to(61) and a.held == 60
    a.release()
    assert (b.used, a.held) == (40, 0)
    c.release()
    assert b.used == 0


def test_a_request_larger_than_the_whole_budget_goes_on_when_it_is_the_only_one():
    b = Budget(100)
    big, other = Claim(b), Claim(b)
    assert big.grow_to(150) and b.used == 150                    # alone: answered rather than refused forever
    assert not other.grow_to(1)
    big.release()
    assert other.grow_to(1) and not Claim(b).grow_to(150)        # not alone any more
