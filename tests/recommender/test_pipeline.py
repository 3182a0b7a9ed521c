"""The serving pipeline on a planted catalogue: model path, explanations, fallbacks and the cache."""

from __future__ import annotations

import pytest
from django.db import connection

from catalog.models import Item
from catalog.services import feedback_record
from recommender import generations, serving
from recommender.models import VersionStatus
from recommender.rerank.models import Rule
from recommender.services.activation import model_version_activate
from recommender.serving import home_cache
from recommender.vectors import store
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(planted_catalog):
    version = train_inline()
    assert version.status == VersionStatus.ACTIVE
    return planted_catalog, version


def _ids(result) -> list[int]:
    return [entry.item.pk for entry in result.items]


def test_home_serves_the_users_cluster_by_model_with_sources(served):
    catalog, version = served
    profile = catalog.profiles_by_cluster[0][0]
    result = serving.recommend_for_user(profile=profile, k=10, use_cache=False)

    assert not result.fallback, result.fallback_reason
    assert result.version_id == version.pk
    assert len(result.items) == 10
    own = {item.pk for item in catalog.items_by_cluster[0]}
    assert sum(item_id in own for item_id in _ids(result)) >= 8
    assert all(entry.sources for entry in result.items)
    scores = [entry.score for entry in result.items]
    assert all(score is not None for score in scores)


def test_related_items_of_a_cluster_item_come_from_its_cluster(served):
    catalog, _version = served
    seed = catalog.items_by_cluster[1][0]
    result = serving.related_items(item=seed, k=5)

    assert not result.fallback, result.fallback_reason
    assert seed.pk not in _ids(result)
    own = {item.pk for item in catalog.items_by_cluster[1]}
    assert set(_ids(result)) <= own


def test_no_active_model_serves_popular_and_fresh_marked_as_fallback(planted_catalog):
    profile = planted_catalog.profiles_by_cluster[0][0]
    result = serving.recommend_for_user(profile=profile, k=6)

    assert result.fallback and result.fallback_reason == "no_active_model"
    assert len(result.items) == 6
    assert {name for entry in result.items for name in entry.sources} <= {"fallback_popular", "fallback_fresh"}
    related = serving.related_items(item=planted_catalog.items_by_cluster[0][0], k=4)
    assert related.fallback and related.fallback_reason == "no_active_model" and len(related.items) == 4


def test_dropped_vector_table_falls_back_and_leaves_the_connection_usable(served):
    catalog, version = served
    profile = catalog.profiles_by_cluster[0][1]
    store.vectors_drop(version_id=version.pk)

    result = serving.recommend_for_user(profile=profile, k=5, use_cache=False)
    related = serving.related_items(item=catalog.items_by_cluster[0][0], k=5)

    assert result.fallback and result.fallback_reason == "vector_store_error"
    assert related.fallback and related.fallback_reason == "vector_store_error"
    assert len(result.items) == 5
    assert Item.objects.count() == 60  # the connection still answers after the failed queries


def test_user_unknown_to_the_model_without_features_gets_the_fallback(served):
    from tests.factories import UserProfileFactory

    profile = UserProfileFactory()
    result = serving.recommend_for_user(profile=profile, k=5)
    assert result.fallback and result.fallback_reason == "unknown_user"


def test_anonymous_visitor_gets_popular_and_fresh(served):
    result = serving.recommend_for_user(profile=None, k=5)
    assert result.fallback and result.fallback_reason == "anonymous" and len(result.items) == 5


def test_cache_hit_then_invalidated_by_feedback_rule_change_and_activation(served, django_capture_on_commit_callbacks):
    catalog, version = served
    profile = catalog.profiles_by_cluster[0][2]

    first = serving.recommend_for_user(profile=profile, k=10)
    second = serving.recommend_for_user(profile=profile, k=10)
    assert not first.cached and second.cached
    assert _ids(first) == _ids(second)

    with django_capture_on_commit_callbacks(execute=True):
        feedback_record(profile=profile, item=catalog.items_by_cluster[1][0], kind="rating", value=5)
    assert not serving.recommend_for_user(profile=profile, k=10).cached
    assert serving.recommend_for_user(profile=profile, k=10).cached

    Rule.objects.create(
        name="max 2 per genre", kind="diversity_feature_cap", params={"feature_type": "genre", "max_per_value": 2}
    )
    after_rule = serving.recommend_for_user(profile=profile, k=10)
    assert not after_rule.cached

    with django_capture_on_commit_callbacks(execute=True):
        model_version_activate(version=version)  # already active: no switch, no signal
    assert serving.recommend_for_user(profile=profile, k=10).cached
    with django_capture_on_commit_callbacks(execute=True):
        from recommender.services.activation import model_activated

        model_activated.send(sender=None, version_id=version.pk)
    assert not serving.recommend_for_user(profile=profile, k=10).cached


def test_generations_are_shared_through_the_database_not_the_process():
    key_before = home_cache.home_cache_key_and_generation(profile_id=7, k=10)[0]
    generations.user_generation_bump(profile_id=7)
    assert home_cache.home_cache_key_and_generation(profile_id=7, k=10)[0] != key_before
    other = home_cache.home_cache_key_and_generation(profile_id=8, k=10)[0]
    # Another process sees the same generation: read it straight from the table.
    with connection.cursor() as cursor:
        cursor.execute("SELECT generation FROM rec_cache_generation WHERE scope = 'user:7'")
        assert cursor.fetchone()[0] == 1
    generations.global_generation_bump()
    assert home_cache.home_cache_key_and_generation(profile_id=8, k=10)[0] != other


def test_pipeline_preview_returns_the_list_before_and_after_the_rules(served):
    catalog, _version = served
    profile = catalog.profiles_by_cluster[0][0]
    Rule.objects.create(
        name="max 2 per genre",
        kind="diversity_feature_cap",
        scope="home",
        params={"feature_type": "genre", "max_per_value": 2},
    )
    before, after = serving.pipeline_preview(profile=profile, k=10)
    assert len(before) >= 10
    assert len(after.items) <= 10
    assert after.trace
