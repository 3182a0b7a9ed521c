"""Assignment: shares land where they should, and a (salt, unit) always gets the same bucket.

Pure: no database. The buckets below were computed once from SHA-256; a change of hash, of the
"<salt>:<unit>" format or of the bucket count reshuffles every running experiment's users, and
fails here first.
"""

from __future__ import annotations

from collections import Counter

import pytest

from recommender.experiments.assignment import BUCKETS, unit_bucket, variant_index

USERS = 10_000


def _shares_landed(shares: list[int], salt: str) -> list[float]:
    counts = Counter(variant_index(shares, unit_bucket(salt, f"user:{n}")) for n in range(USERS))
    return [100 * counts[index] / USERS for index in range(len(shares))]


@pytest.mark.parametrize("shares", [[50, 50], [20, 30, 50]])
@pytest.mark.parametrize("salt", ["0123456789abcdef", "another-experiment"])
def test_shares_over_ten_thousand_users_land_within_two_points(shares, salt):
    landed = _shares_landed(shares, salt)
    assert all(abs(got - wanted) <= 2 for got, wanted in zip(landed, shares, strict=True)), landed


@pytest.mark.parametrize(
    ("salt", "unit", "bucket"),
    [
        ("salt", "user:1", 2318),
        ("salt", "user:2", 4841),
        ("0123456789abcdef", "user:42", 872),
        ("exp-7", "visitor:cookie-123", 1280),
        ("", "user:0", 6586),
    ],
)
def test_buckets_are_the_known_stable_values(salt, unit, bucket):
    assert BUCKETS == 10_000
    assert unit_bucket(salt, unit) == bucket


def test_variant_runs_of_slots_follow_the_shares_in_order():
    assert [variant_index([50, 50], bucket) for bucket in (0, 4999, 5000, 9999)] == [0, 0, 1, 1]
    assert [variant_index([20, 30, 50], bucket) for bucket in (1999, 2000, 4999, 5000)] == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="sum to 100"):
        variant_index([50, 40], 0)


def test_a_new_salt_reshuffles_users():
    first = [variant_index([50, 50], unit_bucket("salt-a", f"user:{n}")) for n in range(1000)]
    second = [variant_index([50, 50], unit_bucket("salt-b", f"user:{n}")) for n in range(1000)]
    agreeing = sum(a == b for a, b in zip(first, second, strict=True))
    assert 400 <= agreeing <= 600  # independent splits agree about half the time
