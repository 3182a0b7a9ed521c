"""The experiment statistics (pure numpy): delta-method intervals cover, the always-valid test
keeps its level under repeated looks, detects a real difference, and the verdict reads right."""

from __future__ import annotations

import math

import numpy as np

from recommender.experiments import stats


def _users(rng, n, rate, *, shown=10, spread=20.0):
    """n users, each with a click propensity from Beta around ``rate``, shown ``shown`` items."""
    propensity = rng.beta(rate * spread, (1 - rate) * spread, size=n)
    shown_counts = np.full(n, shown)
    return rng.binomial(shown_counts, propensity).astype(float), shown_counts.astype(float)


def test_ratio_estimate_is_the_pooled_rate_with_a_delta_method_interval():
    clicked = np.array([1.0, 0.0, 3.0, 2.0])
    shown = np.array([10.0, 5.0, 10.0, 5.0])
    estimate = stats.ratio_estimate(clicked, shown)
    assert estimate.value == 6 / 30
    # By hand: linearised values (c - R n) / mean(n), their sample variance over the users.
    linear = (clicked - 0.2 * shown) / shown.mean()
    assert math.isclose(estimate.variance, linear.var(ddof=1) / 4)
    assert estimate.low < 0.2 < estimate.high


def test_users_without_impressions_do_not_count():
    estimate = stats.ratio_estimate(np.array([1.0, 0.0]), np.array([4.0, 0.0]))
    assert estimate.users == 1


def test_the_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        clicked, shown = _users(rng, 300, 0.12)
        estimate = stats.ratio_estimate(clicked, shown)
        covered += estimate.low <= 0.12 <= estimate.high
    assert 0.92 <= covered / 400 <= 0.98  # 400 runs: the binomial standard error is 1.1%


def test_a_plain_impression_level_interval_would_undercover_clustered_users():
    """Why the unit is the user: with heterogeneous users, treating impressions as independent
    gives intervals that are too narrow; the delta method's are wider, as they should be."""
    rng = np.random.default_rng(3)
    clicked, shown = _users(rng, 400, 0.2, shown=30, spread=2.0)
    estimate = stats.ratio_estimate(clicked, shown)
    naive_variance = estimate.value * (1 - estimate.value) / shown.sum()
    assert estimate.variance > 2 * naive_variance


def test_the_always_valid_p_value_keeps_its_level_under_daily_looks():
    """A/A experiments looked at 10 times each: far fewer than 5% ever show significance."""
    rng = np.random.default_rng(11)
    ever_significant = 0
    runs = 300
    for _ in range(runs):
        clicked_a, shown_a = _users(rng, 1000, 0.1)
        clicked_b, shown_b = _users(rng, 1000, 0.1)
        for look in range(100, 1001, 100):
            a = stats.ratio_estimate(clicked_a[:look], shown_a[:look])
            b = stats.ratio_estimate(clicked_b[:look], shown_b[:look])
            if stats.compare(a, b).significant:
                ever_significant += 1
                break
    assert ever_significant / runs <= 0.05


def test_a_real_difference_is_detected_and_called_better():
    rng = np.random.default_rng(5)
    a = stats.ratio_estimate(*_users(rng, 400, 0.10))
    b = stats.ratio_estimate(*_users(rng, 400, 0.15))
    comparison = stats.compare(a, b)
    assert comparison.significant
    assert comparison.difference > 0
    assert stats.verdict("A", "B", comparison, metric="click-through") == (
        "B is better than A on click-through at 95%."
    )


def test_a_worse_treatment_is_called_worse():
    rng = np.random.default_rng(6)
    a = stats.ratio_estimate(*_users(rng, 400, 0.15))
    b = stats.ratio_estimate(*_users(rng, 400, 0.10))
    assert stats.verdict("A", "B", stats.compare(a, b), metric="click-through").startswith("B is worse than A")


def test_not_significant_yet_says_how_many_more_users_and_that_number_is_enough():
    rng = np.random.default_rng(8)
    a = stats.ratio_estimate(*_users(rng, 60, 0.10))
    b = stats.ratio_estimate(*_users(rng, 60, 0.12))
    comparison = stats.compare(a, b)
    assert not comparison.significant
    assert comparison.users_needed is not None and comparison.users_needed > 0
    sentence = stats.verdict("A", "B", comparison, metric="click-through")
    assert sentence.startswith("Not significant yet")
    assert f"{comparison.users_needed:,} more users per variant" in sentence


def test_users_needed_plans_for_80_percent_power_of_the_always_valid_test():
    rng = np.random.default_rng(9)
    # The per-user variances of the two arms, known well from a large sample.
    a_big = stats.ratio_estimate(*_users(rng, 20000, 0.10))
    b_big = stats.ratio_estimate(*_users(rng, 20000, 0.12))
    needed = stats.users_needed(
        effect=0.02,
        unit_variance=a_big.unit_variance + b_big.unit_variance,
        mixing_sd=stats.MIXING_RELATIVE_EFFECT * 0.11,  # what `compare` uses: 10% of the pooled rate
        alpha=0.05,
        users_now=0,
    )
    assert needed is not None
    declared = sum(
        stats.compare(
            stats.ratio_estimate(*_users(rng, needed, 0.10)), stats.ratio_estimate(*_users(rng, needed, 0.12))
        ).significant
        for _ in range(200)
    )
    assert 0.70 <= declared / 200 <= 0.90  # 200 runs: the standard error at 80% is 2.8%


def test_mixture_p_value_edges():
    assert stats.mixture_p_value(0.0, 1e-4, 0.01) == 1.0
    assert stats.mixture_p_value(math.nan, 1e-4, 0.01) == 1.0
    assert stats.mixture_p_value(0.1, 1e-6, 0.01) < 1e-6
    assert stats.mixture_p_value(0.1, 1e-4, 0.0) == 1.0  # no scale: no evidence either way


def test_empty_and_single_user_estimates_are_undefined_not_errors():
    empty = stats.ratio_estimate(np.array([]), np.array([]))
    single = stats.mean_estimate(np.array([1.0]))
    assert not empty.defined and empty.users == 0
    assert single.users == 1 and math.isinf(single.high)
    comparison = stats.compare(empty, single)
    assert not comparison.significant and comparison.users_needed is None
    assert "too few users" in stats.verdict("A", "B", comparison, metric="click-through")
