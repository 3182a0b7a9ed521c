"""Serving under a running experiment: each user's variant serves them, is labelled, cached apart,
and written on their impressions; rule sets and candidate pools change what a variant gets."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.response import Response
from rest_framework.test import APIClient

from recommender import serving
from recommender.experiments.assignment import unit_bucket, variant_index
from recommender.experiments.models import Experiment, Variant
from recommender.experiments.services import VariantSpec, experiment_create, experiment_start, experiment_stop
from recommender.rerank.models import Impression, Rule, RuleSet
from recommender.serving import impressions_flush
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


def _start(name="home test", *, surface="home", mode="split", variants=None) -> Experiment:
    variants = variants or [
        VariantSpec(key="A", share=50, is_control=True, candidate_sizes={"popular": 50}),
        VariantSpec(key="B", share=50),
    ]
    return experiment_start(experiment=experiment_create(name=name, surface=surface, mode=mode, variants=variants))


def _expected_key(experiment: Experiment, profile_id: int) -> str:
    variants = list(experiment.variants.order_by("position"))
    index = variant_index([v.share for v in variants], unit_bucket(experiment.salt, f"user:{profile_id}"))
    return variants[index].key


def test_each_user_is_served_and_labelled_by_their_hashed_variant(trained):
    experiment = _start()
    profiles = [p for group in trained.catalog.profiles_by_cluster.values() for p in group]
    seen_keys = set()
    for profile in profiles:
        result = serving.recommend_for_user(profile=profile, k=10)
        expected = _expected_key(experiment, profile.pk)
        assert result.experiment == {"id": experiment.pk, "name": "home test", "variant": expected, "mode": "split"}
        assert {entry.variant for entry in result.items} == {expected}
        seen_keys.add(expected)
        if expected == "A":  # only the popular source nominates: nothing from the personal sources
            assert all(set(entry.sources) == {"popular"} for entry in result.items)
    assert seen_keys == {"A", "B"}  # 30 users: both variants get some


def test_impressions_carry_the_experiment_and_variant(trained):
    experiment = _start()
    profile = trained.catalog.profiles_by_cluster[0][0]
    result = serving.recommend_for_user(profile=profile, k=5)
    impressions_flush()
    rows = Impression.objects.filter(profile=profile)
    variant = Variant.objects.get(experiment=experiment, key=result.experiment["variant"])
    assert rows.count() == 5
    assert set(rows.values_list("experiment_id", "variant_id")) == {(experiment.pk, variant.pk)}


def test_stopping_returns_users_to_the_normal_list_with_its_own_cache(trained):
    experiment = _start()
    profile = trained.catalog.profiles_by_cluster[0][0]
    inside = serving.recommend_for_user(profile=profile, k=10)
    experiment_stop(experiment=experiment)
    after = serving.recommend_for_user(profile=profile, k=10)
    assert inside.experiment is not None
    assert after.experiment is None
    assert after.cache_key != inside.cache_key
    assert all(entry.variant is None for entry in after.items)


def test_a_variants_rule_set_applies_to_it_alone(trained):
    cluster_zero = trained.catalog.items_by_cluster[0]
    rule_set = RuleSet.objects.create(name="hide cluster 0", enabled=False)
    Rule.objects.create(
        name="hide", kind="filter_feature", rule_set=rule_set, params={"feature_type": "genre", "values": ["cluster-0"]}
    )
    experiment = _start(
        variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50, rule_set=rule_set)]
    )
    by_variant: dict[str, set[int]] = {"A": set(), "B": set()}
    for profile in trained.catalog.profiles_by_cluster[0]:
        result = serving.recommend_for_user(profile=profile, k=10)
        by_variant[result.experiment["variant"]] |= {entry.item.pk for entry in result.items}
    cluster_zero_ids = {item.pk for item in cluster_zero}
    assert by_variant["A"] & cluster_zero_ids  # the set is disabled: the control keeps its cluster
    assert by_variant["B"]  # the variant still serves a list, from the other cluster
    assert not by_variant["B"] & cluster_zero_ids  # the variant's set removes cluster 0
    assert experiment.variants.count() == 2


def test_staff_forcing_a_variant_gets_it(trained):
    experiment = _start()
    profile = trained.catalog.profiles_by_cluster[1][0]
    natural = _expected_key(experiment, profile.pk)
    other = "B" if natural == "A" else "A"
    forced = serving.recommend_for_user(profile=profile, k=10, forced_variants={str(experiment.pk): other})
    assert forced.experiment["variant"] == other


def test_interleaving_mixes_both_variants_lists_and_credits_each_item_to_its_team(trained):
    experiment = _start(
        mode="interleave",
        variants=[
            VariantSpec(key="popular", share=50, is_control=True, candidate_sizes={"popular": 50}),
            VariantSpec(key="model", share=50),
        ],
    )
    profile = trained.catalog.profiles_by_cluster[0][0]
    result = serving.recommend_for_user(profile=profile, k=10)
    assert result.experiment["variant"] == "interleaved"
    teams = [entry.variant for entry in result.items]
    assert len(result.items) == 10
    assert abs(teams.count("popular") - teams.count("model")) <= 1  # team draft alternates picks
    impressions_flush()
    variant_ids = set(Impression.objects.filter(profile=profile).values_list("variant_id", flat=True))
    assert variant_ids == set(experiment.variants.values_list("id", flat=True))


def test_related_surface_experiment_records_related_impressions_for_signed_in_visitors(trained):
    experiment = _start(name="related test", surface="related")
    profile = trained.catalog.profiles_by_cluster[0][0]
    item = trained.catalog.items_by_cluster[0][0]
    result = serving.related_items(item=item, k=5, profile=profile)
    anonymous = serving.related_items(item=item, k=5, visitor="cookie-123")
    nobody = serving.related_items(item=item, k=5)
    impressions_flush()
    assert result.experiment["id"] == experiment.pk
    assert anonymous.experiment is not None and nobody.experiment is None
    assert Impression.objects.filter(profile=profile, surface="related", experiment_id=experiment.pk).count() == 5


def test_a_cached_hit_under_an_experiment_is_still_one_round_trip(transactional_db):
    """The experiment adds no round trip: the running experiments are a per-process memo and the
    label is stored with the answer, so a token hit is still the lean path's one statement (the
    impressions are written behind). Transactional: memos are off inside a transaction."""
    catalog = build_planted_catalog(users_per_cluster=10, items_per_cluster=20, ratings_per_user=8)
    train_inline()
    cache.clear()
    profile = catalog.profiles_by_cluster[0][0]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=profile.user)[0].key}")
    url = f"/api/v1/users/{profile.external_id}/recommendations?k=10"

    def hit_statements() -> tuple[int, dict]:
        client.get(url)  # fills the cache (and the stored answer)
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(url)
        assert answer.status_code == 200 and not isinstance(answer, Response)  # the lean path
        return len(queries.captured_queries), answer.json()

    without, plain = hit_statements()
    experiment = _start()
    within, labelled = hit_statements()
    cache.clear()

    assert plain["experiment"] is None and labelled["experiment"]["id"] == experiment.pk
    assert labelled["cached"] is True and {item["variant"] for item in labelled["items"]} == {
        labelled["experiment"]["variant"]
    }
    assert within == without == 1
