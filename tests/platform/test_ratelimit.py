"""The sliding-window rate limit (chatnexus/ratelimit.py: the widget's, sign-in's) on the real
cache (Redis under test), with the clock passed in."""
import itertools

import pytest

from chatnexus.ratelimit import WINDOW_S, address_key, hit, refund

_keys = itertools.count()
START = 1_800_000_000 // WINDOW_S * WINDOW_S  # the start of a window


@pytest.fixture
def key():
    return f"test:{next(_keys)}:{START}"


def test_it_allows_the_limit_and_refuses_the_next(key):
    assert all(hit(key, 5, now=START + 10 + i).allowed for i in range(5))
    refused = hit(key, 5, now=START + 20)
    assert not refused.allowed and refused.retry_after >= 1


def test_no_burst_of_twice_the_limit_across_a_window_boundary(key):
    # 10 events in the last second of a window: a fixed window would allow 10 more at once
    assert all(hit(key, 10, now=START + 59.5).allowed for _ in range(10))
    assert not hit(key, 10, now=START + WINDOW_S + 1).allowed
    # as the old window slides out, room comes back gradually
    assert hit(key, 10, now=START + WINDOW_S + 30).allowed  # 10 * 0.5 + 2 = 7 <= 10


def test_retry_after_says_when_the_estimate_is_back_within_the_limit(key):
    for _ in range(10):
        hit(key, 10, now=START + 30)
    refused = hit(key, 10, now=START + WINDOW_S + 1)  # previous 10, current 1: 10 * 59/60 + 1 > 10
    assert not refused.allowed
    # the next event fits when the previous window weighs (1 - t/60) * 10 + 1 + 1 <= 10: t >= 12 s
    assert refused.retry_after == 12 - 1
    assert hit(key, 10, now=START + WINDOW_S + 1 + refused.retry_after).allowed


def test_retry_after_when_the_current_window_is_full_on_its_own(key):
    for _ in range(11):
        verdict = hit(key, 10, now=START + 15)
    assert not verdict.allowed  # 11 > 10 in one window
    # next window: 11 * (1 - t/60) + 1 <= 10 from t = 120/11 s on; from now: 45 s + 10.9 s
    assert verdict.retry_after == 56
    assert hit(key, 10, now=START + 15 + verdict.retry_after).allowed


def test_a_zero_limit_refuses_everything(key):
    verdict = hit(key, 0, now=START)
    assert not verdict.allowed and verdict.retry_after >= 1


def test_a_refunded_hit_is_taken_back_once(key):
    assert all(hit(key, 3, now=START + 1).allowed for _ in range(2))
    third = hit(key, 3, now=START + 2)
    refund(third)
    refund(third)  # once only
    assert hit(key, 3, now=START + 3).allowed  # the third again: the refunded one did not count
    assert not hit(key, 3, now=START + 4).allowed


def test_a_longer_window_slides_the_same_way(key):
    quarter = 15 * 60
    start = START // quarter * quarter
    assert all(hit(key, 4, now=start + 10, window_s=quarter).allowed for _ in range(4))
    refused = hit(key, 4, now=start + 20, window_s=quarter)
    assert not refused.allowed and WINDOW_S < refused.retry_after <= 2 * quarter
    assert hit(key, 4, now=start + 20).allowed  # a one-minute count under the same key is another counter
    assert not hit(key, 4, now=start + quarter + 60, window_s=quarter).allowed  # 5 * 14/15 + 1 > 4
    assert hit(key, 4, now=start + 2 * quarter + 1, window_s=quarter).allowed  # the full window slid out


@pytest.mark.parametrize("address, counted_as", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2::5", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # any address of the /64: the same key
    ("2001:db8:1:3::5", "2001:db8:1:3::/64"),  # the next /64: another customer
    ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 written as IPv6: the IPv4 address
    ("unknown", "unknown"),  # no address known: as it is
])
def test_an_address_is_counted_as_one_ipv4_address_or_one_ipv6_64(address, counted_as):
    """A host has a whole IPv6 /64 to send from: counted one address at a time, it had no limit."""
    assert address_key(address) == counted_as
