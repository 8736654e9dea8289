"""The weight arithmetic: exact shares, kept ratios, smallest integers, down at the ends."""

from __future__ import annotations

from fractions import Fraction
from math import gcd
from functools import reduce

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.errors import BadInputError
from nginx_canary.nginx.model import UpstreamServer
from nginx_canary.nginx.split import compute_split, reduce_weights, steered_stable


def share(split) -> Fraction:
    return split.canary_percent()


@pytest.mark.parametrize("percent, canary, stable", [
    (10, (1,), (9,)), (25, (1,), (3,)), (50, (1,), (1,)), (75, (3,), (1,)), (1, (1,), (99,)), (99, (99,), (1,)),
])
def test_one_canary_one_stable_gives_smallest_exact_weights(percent, canary, stable):
    split = compute_split([1], [1], Fraction(percent))
    assert (split.canary_weights, split.stable_weights) == (canary, stable)
    assert share(split) == percent
    assert not split.canary_down and not split.stable_down


def test_ratios_inside_groups_are_kept():
    split = compute_split([2, 4], [3, 3, 6], Fraction(40))
    c, s = split.canary_weights, split.stable_weights
    assert c[1] == 2 * c[0]
    assert s[0] == s[1] and s[2] == 2 * s[0]
    assert share(split) == 40


def test_zero_marks_canary_down_and_keeps_its_weights():
    split = compute_split([5], [2, 4], Fraction(0))
    assert split.canary_down and not split.stable_down
    assert split.canary_weights == (5,)
    assert split.stable_weights == (1, 2)
    assert share(split) == 0


def test_hundred_marks_stable_down():
    split = compute_split([4, 2], [7], Fraction(100))
    assert split.stable_down and not split.canary_down
    assert split.canary_weights == (2, 1)
    assert share(split) == 100


def test_hundred_without_stable_servers_is_fine():
    split = compute_split([3], [], Fraction(100))
    assert split.canary_weights == (1,) and split.stable_weights == ()


@pytest.mark.parametrize("percent", [Fraction(0), Fraction(10), Fraction("99.99")])
def test_split_below_hundred_needs_stable_servers(percent):
    with pytest.raises(BadInputError, match="no stable"):
        compute_split([1], [], percent)


@pytest.mark.parametrize("percent", [Fraction(-1), Fraction(101), Fraction("100.01")])
def test_out_of_range(percent):
    with pytest.raises(BadInputError):
        compute_split([1], [1], percent)


def test_fractional_share_uses_small_weights_within_tolerance():
    split = compute_split([1], [1], Fraction("33.33"))
    assert (split.canary_weights, split.stable_weights) == ((1,), (2,))
    assert abs(share(split) - Fraction("33.33")) <= Fraction(1, 100)


def test_reduce_weights():
    assert reduce_weights([4, 8, 12]) == [1, 2, 3]
    assert reduce_weights([7]) == [1]


weights = st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=5)
percents = st.integers(min_value=0, max_value=10000).map(lambda n: Fraction(n, 100))


@settings(max_examples=300, deadline=None)
@given(canary=weights, stable=weights, percent=percents)
def test_properties(canary, stable, percent):
    split = compute_split(canary, stable, percent)
    got = share(split)
    if percent.denominator == 1:
        assert got == percent
    else:
        assert abs(got - percent) <= Fraction(1, 100)
    assert all(w >= 1 for w in split.canary_weights + split.stable_weights)
    # ratios inside each group are those given
    for given_w, new_w in ((canary, split.canary_weights), (stable, split.stable_weights)):
        assert reduce_weights(list(new_w)) == reduce_weights(given_w)
    if 0 < percent < 100:
        # smallest integers: nothing common left to divide by
        assert reduce(gcd, split.canary_weights + split.stable_weights) == 1
    assert split.canary_down == (percent == 0)
    assert split.stable_down == (percent == 100)


# --- the operator's original weights (origin=) -----------------------------------------


def test_zero_after_a_split_gives_the_original_weights_back():
    """0 % keeps the stable ratios, so the weights the operator wrote come back instead of the smallest ones."""
    split = compute_split([1], [9], Fraction(0), origin=([1], [90]))
    assert split.canary_down and split.canary_weights == (1,) and split.stable_weights == (90,)


def test_hundred_gives_both_groups_their_original_weights():
    split = compute_split([3], [9, 18], Fraction(100), origin=([5], [2, 4]))
    assert split.stable_down and split.canary_weights == (5,) and split.stable_weights == (2, 4)


def test_original_weights_kept_between_the_ends_when_they_give_the_same_share():
    split = compute_split([1], [9], Fraction(10), origin=([10], [90]))
    assert (split.canary_weights, split.stable_weights) == ((10,), (90,))
    assert share(split) == 10


def test_original_weights_that_give_another_share_are_not_used():
    split = compute_split([1], [1], Fraction(10), origin=([1], [90]))
    assert (split.canary_weights, split.stable_weights) == ((1,), (9,))


def test_original_weights_with_other_ratios_are_not_used():
    """A group whose original ratios differ (someone changed the weights since) gets the smallest weights."""
    split = compute_split([1], [1, 1], Fraction(0), origin=([1], [1, 3]))
    assert split.stable_weights == (1, 1)


@settings(max_examples=150, deadline=None)
@given(canary=weights, stable=weights, percent=percents, data=st.data())
def test_properties_with_origin(canary, stable, percent, data):
    """Whatever the original weights, the share and the ratios inside each group are those without them."""
    origin = (data.draw(st.lists(st.integers(1, 60), min_size=len(canary), max_size=len(canary))),
              data.draw(st.lists(st.integers(1, 60), min_size=len(stable), max_size=len(stable))))
    plain = compute_split(canary, stable, percent)
    split = compute_split(canary, stable, percent, origin=origin)
    assert share(split) == share(plain)
    assert (split.canary_down, split.stable_down) == (plain.canary_down, plain.stable_down)
    for new_w, plain_w, original in ((split.canary_weights, plain.canary_weights, origin[0]),
                                     (split.stable_weights, plain.stable_weights, origin[1])):
        assert reduce_weights(list(new_w)) == reduce_weights(list(plain_w))
        assert new_w in (plain_w, tuple(original))


# --- stable servers down before any change ---------------------------------------------


def _server(address: str, down: bool = False) -> UpstreamServer:
    return UpstreamServer(address, ("down",) if down else (), "/etc/nginx/conf.d/up.conf", 2)


def test_resting_stable_servers_are_left_out():
    a, b, m = _server("a:80"), _server("b:80"), _server("m:80", down=True)
    assert steered_stable("app", [a, m, b], [False, True, False], Fraction(10)) == [a, b]


@pytest.mark.parametrize("percent", [Fraction(0), Fraction(10), Fraction("99.99")])
def test_every_stable_server_resting_refuses_a_split_that_needs_them(percent):
    servers = [_server("a:80", down=True), _server("b:80", down=True)]
    with pytest.raises(BadInputError) as caught:
        steered_stable("app", servers, [True, True], percent)
    message = str(caught.value)
    assert "\n" not in message
    assert "every stable server of upstream 'app' was down" in message and "a:80, b:80" in message


def test_every_stable_server_resting_is_fine_at_hundred():
    assert steered_stable("app", [_server("a:80", down=True)], [True], Fraction(100)) == []
    assert steered_stable("app", [], [], Fraction(10)) == []
