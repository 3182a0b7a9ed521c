"""A/A tests: two variants that serve the same thing are "not significant" in at least 95 of 100 runs.

Each seeded run writes, straight into the tables the results read, the impressions and clicks of
``USERS`` simulated users split by the real assignment functions under a fresh salt. The users
differ: each has their own click propensity drawn from Beta(ALPHA_PRIOR, BETA_PRIOR) and sees
their own number of items, so the clicks of one user are correlated and only a variance over
users (the delta method in `stats.ratio_estimate`) is honest. Both checks below can fail: a
verdict that treats impressions as independent, or an interval too narrow, declares or excludes
a difference that is not there far more often than 5 runs in 100.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from catalog.models import Item, UserProfile
from recommender.experiments.assignment import unit_bucket, variant_index
from recommender.experiments.models import Experiment
from recommender.experiments.results import experiment_report
from recommender.experiments.services import VariantSpec, experiment_create
from tests.factories import feedback_kind_for

pytestmark = pytest.mark.django_db

RUNS = 100
USERS = 400
ITEMS = 60
ALPHA_PRIOR, BETA_PRIOR = 1.5, 6.0  # mean propensity 0.2, strongly heterogeneous across users
MEAN_SHOWN = 12  # items a user sees: 1 + Poisson(MEAN_SHOWN - 1), distinct

_IMPRESSIONS_INSERT = """
INSERT INTO recommender_impression (profile_id, item_id, surface, shown_at, experiment_id, variant_id)
SELECT profile, item, 'home', %(shown_at)s, %(experiment)s, variant
FROM unnest(%(profiles)s::bigint[], %(items)s::bigint[], %(variants)s::bigint[]) AS shown(profile, item, variant)
"""
_CLICKS_INSERT = """
INSERT INTO catalog_feedback (user_id, item_id, kind_id, value, created_at, is_current)
SELECT profile, item, 'click', 1.0, %(clicked_at)s, NULL
FROM unnest(%(profiles)s::bigint[], %(items)s::bigint[]) AS clicked(profile, item)
"""


def _population() -> tuple[list[int], list[int]]:
    feedback_kind_for("click")
    users = get_user_model().objects.bulk_create([get_user_model()(username=f"aa-{n}") for n in range(USERS)])
    profiles = UserProfile.objects.bulk_create(
        [UserProfile(user=user, external_id=f"aa-{n}") for n, user in enumerate(users)]
    )
    items = Item.objects.bulk_create([Item(external_id=f"aa-item-{n}", title=f"Item {n}") for n in range(ITEMS)])
    return [profile.pk for profile in profiles], [item.pk for item in items]


def _run_write(experiment: Experiment, profile_ids: list[int], item_ids: list[int], rng: np.random.Generator) -> None:
    """One run's traffic: every user assigned by the experiment's salt, shown items, and their clicks."""
    variants = list(experiment.variants.order_by("position"))
    shares = [variant.share for variant in variants]
    shown_profiles, shown_items, shown_variants, clicked_profiles, clicked_items = [], [], [], [], []
    for profile_id in profile_ids:
        variant = variants[variant_index(shares, unit_bucket(experiment.salt, f"user:{profile_id}"))]
        propensity = rng.beta(ALPHA_PRIOR, BETA_PRIOR)
        count = min(ITEMS, 1 + int(rng.poisson(MEAN_SHOWN - 1)))
        shown = rng.choice(item_ids, size=count, replace=False)
        clicks = shown[rng.random(count) < propensity]
        shown_profiles += [profile_id] * count
        shown_items += shown.tolist()
        shown_variants += [variant.pk] * count
        clicked_profiles += [profile_id] * len(clicks)
        clicked_items += clicks.tolist()
    shown_at = timezone.now() - timezone.timedelta(hours=2)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM recommender_impression")
        cursor.execute("DELETE FROM catalog_feedback")
        cursor.execute(
            _IMPRESSIONS_INSERT,
            {
                "shown_at": shown_at,
                "experiment": experiment.pk,
                "profiles": shown_profiles,
                "items": shown_items,
                "variants": shown_variants,
            },
        )
        cursor.execute(
            _CLICKS_INSERT,
            {
                "clicked_at": shown_at + timezone.timedelta(minutes=5),
                "profiles": clicked_profiles,
                "items": clicked_items,
            },
        )


def test_an_aa_experiment_is_not_significant_in_at_least_95_of_100_runs():
    profile_ids, item_ids = _population()
    significant, interval_covers_zero, both_variants_used = 0, 0, 0
    for seed in range(RUNS):
        experiment = experiment_create(
            name=f"A/A {seed}",
            surface="home",
            mode="split",
            salt=f"aa-salt-{seed}",
            variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)],
        )
        _run_write(experiment, profile_ids, item_ids, np.random.default_rng(seed))
        report = experiment_report(experiment)
        control, treatment = report.variants
        both_variants_used += control.users > 0 and treatment.users > 0
        comparison = treatment.against_control["click_through"]
        significant += comparison.significant
        # The fixed-horizon 95% interval of the difference from the same variances.
        half = 1.959964 * math.sqrt(control.click_through.variance + treatment.click_through.variance)
        interval_covers_zero += abs(comparison.difference) <= half
        if comparison.significant:
            assert report.winner_key in (None, "B")
        else:
            assert report.winner_key is None
            assert report.verdicts[0].startswith("Not significant")

    assert both_variants_used == RUNS
    assert significant <= RUNS - 95, f"{significant} of {RUNS} A/A runs were called significant"
    # The variance itself: an interval from a per-impression variance would miss far more often.
    assert interval_covers_zero >= 90, f"the 95% interval of the difference covered 0 in {interval_covers_zero}/{RUNS}"
