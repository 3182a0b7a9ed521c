"""Real time without retraining: fold-in on feedback, item cold start, user cold start, precomputation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.db import connection

from catalog.models import Feature, Item, UserFeature
from catalog.services import feedback_delete, feedback_record, item_create
from recommender import serving
from recommender.ml.training import FittedModel
from recommender.selectors import related_precompute_coverage, related_precomputed_fetch
from recommender.services import precompute, realtime
from recommender.tasks import related_items_precompute_task
from recommender.vectors import store
from tests.factories import UserProfileFactory
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(planted_catalog):
    return planted_catalog, train_inline()


def test_feedback_folds_the_user_in_synchronously_and_changes_the_homepage(served, django_capture_on_commit_callbacks):
    catalog, version = served
    profile = catalog.profiles_by_cluster[0][0]
    before_vector = store.user_vector_fetch(version_id=version.pk, profile_id=profile.pk)
    before = [entry.item.pk for entry in serving.recommend_for_user(profile=profile, k=10).items]
    other_cluster = catalog.items_by_cluster[1]

    started = time.perf_counter()
    with django_capture_on_commit_callbacks(execute=True):
        for item in other_cluster[:8]:
            feedback_record(profile=profile, item=item, kind="rating", value=5)
    after_result = serving.recommend_for_user(profile=profile, k=10)
    elapsed = time.perf_counter() - started

    after_vector = store.user_vector_fetch(version_id=version.pk, profile_id=profile.pk)
    after = [entry.item.pk for entry in after_result.items]
    assert not np.allclose(before_vector, after_vector)
    assert after_vector[-2:].tolist() == [1.0, 0.0]  # the fold-in's [u, 1, 0] shape
    assert not after_result.cached and not after_result.fallback
    assert after != before
    cluster_one = {item.pk for item in other_cluster}
    assert sum(item_id in cluster_one for item_id in after) > sum(item_id in cluster_one for item_id in before)
    assert elapsed < 8 * 1.0  # eight ratings and a page, each well under a second
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT folded_in_at IS NOT NULL FROM rec_user_vectors_v{version.pk} WHERE profile_id = %s", [profile.pk]
        )
        assert cursor.fetchone()[0] is True


def test_fold_in_matches_the_solver_on_the_users_feedback(served):
    catalog, version = served
    profile = catalog.profiles_by_cluster[1][0]
    stored = realtime.user_vector_fold_in(profile_id=profile.pk, version=version)
    model = FittedModel.load(version.artifact_path)
    from recommender.ml.foldin import FoldIn

    solver = FoldIn.from_vectors_with_bias(model.item_vectors_with_bias())
    rated = list(profile.feedback.values_list("item_id", "value"))
    rows = model.item_ids.index_of([item_id for item_id, _ in rated])
    expected = solver.user_vector_with_bias(rows, [value / 5.0 for _, value in rated])
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-5)


def test_deleting_feedback_folds_in_again(served, django_capture_on_commit_callbacks):
    catalog, version = served
    profile = catalog.profiles_by_cluster[0][3]
    with django_capture_on_commit_callbacks(execute=True):
        row = feedback_record(profile=profile, item=catalog.items_by_cluster[1][0], kind="rating", value=5)
    with_rating = store.user_vector_fetch(version_id=version.pk, profile_id=profile.pk)
    with django_capture_on_commit_callbacks(execute=True):
        feedback_delete(feedback=row)
    without = store.user_vector_fetch(version_id=version.pk, profile_id=profile.pk)
    assert not np.allclose(with_rating, without)


def test_new_item_with_features_appears_among_related_items_without_retraining(
    served, django_capture_on_commit_callbacks
):
    catalog, version = served
    seed = catalog.items_by_cluster[0][0]
    coverage = precompute.related_items_precompute(version=version)
    assert (coverage.items, coverage.of, coverage.stopped_by) == (60, 60, "complete")
    assert related_precomputed_fetch(version_id=version.pk, item_id=seed.pk) is not None

    with django_capture_on_commit_callbacks(execute=True):
        new_item = item_create(
            external_id="brand-new", title="Brand new cluster 0 item", features=[("genre", "cluster-0", 1.0)]
        )
    stored_ids, _ = store.item_vectors_fetch(version_id=version.pk, item_ids=[new_item.pk])
    assert stored_ids.tolist() == [new_item.pk]

    related = serving.related_items(item=seed, k=30)
    assert not related.fallback, related.fallback_reason
    assert new_item.pk in [entry.item.pk for entry in related.items]
    assert version.pk == related.version_id


def test_cold_start_vector_of_a_trained_item_reproduces_its_trained_vector(served):
    catalog, version = served
    item = catalog.items_by_cluster[0][5]
    _, before = store.item_vectors_fetch(version_id=version.pk, item_ids=[item.pk])
    assert realtime.item_vector_cold_start(item_id=item.pk, version=version)
    _, after = store.item_vectors_fetch(version_id=version.pk, item_ids=[item.pk])
    np.testing.assert_allclose(before, after, rtol=1e-4, atol=1e-5)


def test_new_user_with_side_features_gets_a_vector_from_them(planted_catalog):
    from recommender.models import TrainingConfig

    config = TrainingConfig.objects.create(name="with users", use_user_features=True, is_default=False)
    version = train_inline(config)
    profile = UserProfileFactory()
    UserFeature.objects.create(profile=profile, feature=Feature.objects.get(subject="user", type="segment", value="1"))

    result = serving.recommend_for_user(profile=profile, k=10)

    assert not result.fallback, result.fallback_reason
    stored = store.user_vector_fetch(version_id=version.pk, profile_id=profile.pk)
    assert stored is not None
    cluster_one = {item.pk for item in planted_catalog.items_by_cluster[1]}
    assert sum(entry.item.pk in cluster_one for entry in result.items) >= 7


def test_precompute_task_serves_related_lists_from_the_table_and_drops_stale_tables(served):
    catalog, version = served
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE rec_related_v999999 (item_id bigint PRIMARY KEY)")
    answer = related_items_precompute_task(version.pk)
    assert (answer["version"], answer["items"], answer["of"]) == (version.pk, 60, 60)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('rec_related_v999999') IS NULL")
        assert cursor.fetchone()[0] is True
    seed = catalog.items_by_cluster[1][2]
    stored = related_precomputed_fetch(version_id=version.pk, item_id=seed.pk)
    served_ids = [entry.item.pk for entry in serving.related_items(item=seed, k=5).items]
    assert served_ids == [candidate.item_id for candidate in stored][:5]
    assert related_items_precompute_task(version.pk + 1000)["skipped"] is True


def test_the_optional_item_cap_keeps_the_most_popular_items_and_the_tail_is_answered_live(served, settings):
    _catalog, version = served
    settings.RELATED_PRECOMPUTE_MAX_ITEMS = 5
    by_popularity = list(Item.objects.filter(is_active=True).order_by("-popularity", "pk").values_list("pk", flat=True))
    coverage = precompute.related_items_precompute(version=version)
    assert (coverage.items, coverage.of, coverage.stopped_by) == (5, 60, "max_items")
    assert all(related_precomputed_fetch(version_id=version.pk, item_id=pk) is not None for pk in by_popularity[:5])
    tail = Item.objects.get(pk=by_popularity[-1])
    assert related_precomputed_fetch(version_id=version.pk, item_id=tail.pk) is None
    related = serving.related_items(item=tail, k=10)
    assert not related.fallback and len(related.items) == 10


def test_a_rerun_replaces_the_table_and_records_its_coverage(served, settings):
    _catalog, version = served
    settings.RELATED_PRECOMPUTE_MAX_ITEMS = 5
    precompute.related_items_precompute(version=version)
    settings.RELATED_PRECOMPUTE_MAX_ITEMS = None
    settings.RELATED_PRECOMPUTE_SECONDS = 0
    assert precompute.related_items_precompute(version=version).items == 0  # 0 s: off, every list live
    assert related_precompute_coverage(version_id=version.pk) == {
        "items": 0,
        "of": 60,
        "seconds": pytest.approx(0.0, abs=1.0),
        "stopped_by": "time_budget",
    }
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM rec_related_v{version.pk}")
        assert cursor.fetchone()[0] == 0
