"""Simulated traffic through a real gunicorn and the real database: visitors of four taste clusters
browse their homepage through the API and click with a known probability, higher on their own
cluster's items. Variant A serves the popular items (the popular source, ordered by popularity);
variant B the trained model, which learned the clusters. The results must call B better at 95%,
with B's click-through rate's interval holding the rate the visitors' probabilities imply."""

from __future__ import annotations

import pytest

from catalog.models import Feedback
from recommender.experiments.models import Experiment
from recommender.experiments.results import experiment_report
from recommender.experiments.services import VariantSpec, experiment_create, experiment_start
from recommender.rerank.models import Impression
from tests.recommender.conftest import build_planted_catalog, wait_for
from tests.recommender.experiments.conftest import browse, tokens_create
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.slow

OWN_CLUSTER_CLICK = 0.35
OTHER_CLICK = 0.03
SESSIONS = 2


def _popular_against_model() -> Experiment:
    return experiment_start(
        experiment=experiment_create(
            name="popular vs model",
            salt="simulated-traffic",  # a fixed split: the same users in each variant on every run
            surface="home",
            variants=[
                VariantSpec(
                    key="A",
                    name="popular",
                    share=50,
                    is_control=True,
                    candidate_sizes={"popular": 50},
                    scorer="popularity",
                ),
                VariantSpec(key="B", name="model", share=50),
            ],
        )
    )


def test_the_model_variant_wins_on_simulated_clicks(gunicorn_on_test_database, settings):
    # One training thread: the same lists on every run, so the same pairs and coins. With lists
    # that moved between runs, the 95% interval would miss the planted rate in 1 run of 20.
    settings.TRAINING_NUM_THREADS = 1
    catalog = build_planted_catalog(clusters=4, users_per_cluster=40, items_per_cluster=30, ratings_per_user=8)
    train_inline()
    cluster_of_user = {
        profile.external_id: cluster
        for cluster, profiles in catalog.profiles_by_cluster.items()
        for profile in profiles
    }
    cluster_of_item = {
        item.external_id: cluster for cluster, items in catalog.items_by_cluster.items() for item in items
    }
    tokens = tokens_create([profile for profiles in catalog.profiles_by_cluster.values() for profile in profiles])
    experiment = _popular_against_model()
    server = gunicorn_on_test_database(workers=1, threads=4)

    def click_probability(user: str, item: str) -> float:
        return OWN_CLUSTER_CLICK if cluster_of_item[item] == cluster_of_user[user] else OTHER_CLICK

    traffic = browse(server, tokens=tokens, click_probability=click_probability, sessions=SESSIONS)

    assert traffic.statuses and set(traffic.statuses) <= {200, 201}, sorted(set(traffic.statuses))
    assert set(traffic.shown) == {"A", "B"}
    shown_pairs = {(user, item) for pairs in traffic.shown.values() for user, item, _ in pairs}
    wait_for(
        lambda: (
            Impression.objects.filter(experiment_id=experiment.pk).values("profile", "item").distinct().count()
            >= len(shown_pairs)
        ),
        timeout=30,
        message="the server's impressions reach the database",
        on_timeout=server.output,
    )
    assert Feedback.objects.filter(kind__code="click").count() == traffic.clicks

    report = experiment_report(experiment)
    by_key = {variant.key: variant for variant in report.variants}
    a, b = by_key["A"], by_key["B"]
    assert a.users + b.users == len(tokens)
    comparison = b.against_control["click_through"]
    assert report.winner_key == "B", (report.verdicts, a.click_through, b.click_through)
    assert comparison.significant and comparison.p_value < 0.05
    assert report.verdicts[0].startswith("model is better"), report.verdicts
    planted = traffic.planted_rate("B")
    assert b.click_through is not None and b.click_through.low <= planted <= b.click_through.high, (
        planted,
        b.click_through,
    )
    # The popular list is the same for everyone, so it is mostly other clusters' items.
    assert traffic.planted_rate("A") < 0.5 * planted
