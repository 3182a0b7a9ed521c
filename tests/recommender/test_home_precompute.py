"""Precomputed homepage pools: the same lists as live, used only while fresh, refreshed after feedback.

On a planted catalogue with a trained model: the precomputation stores a pool per user with
feedback; the homepage serves the stored pool (proved by planting an order only the row holds)
while the row's generation equals the user's, and the live pipeline as soon as the user's
generation moves on; `home_list_refresh` brings the row back to the user's generation.
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.models import Max
from psycopg import sql

from catalog.models import Feedback, Item
from recommender import serving
from recommender.generations import generations_fetch, user_generation_bump
from recommender.selectors import home_precompute_coverage, home_precomputed_fetch, home_table
from recommender.services.home_precompute import home_list_refresh, home_lists_precompute
from recommender.serving.context import context_build
from recommender.serving.surfaces import ranked_candidates
from recommender.tasks import home_lists_precompute_task

K = 10


class StepClock:
    """A clock that advances one second per read: a budget of n + 0.5 s lets n users through."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _ids(result) -> list[int]:
    return [entry.item.pk for entry in result.items]


def _stored_order(version_id: int, profile_id: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT item_ids FROM {} WHERE profile_id = %s")
            .format(sql.Identifier(home_table(version_id)))
            .as_string(connection.connection),
            [profile_id],
        )
        return list(cursor.fetchone()[0])


def _plant_order(version_id: int, profile_id: int, item_ids: list[int]) -> None:
    """Rewrite a stored row so its order is one the live pipeline would never produce."""
    scores = [float(len(item_ids) - rank) for rank in range(len(item_ids))]
    candidates = json.dumps([{"sources": {"planted": 1.0}, "reasons": [], "notes": []} for _ in item_ids])
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("UPDATE {} SET item_ids = %s, scores = %s, candidates = %s WHERE profile_id = %s")
            .format(sql.Identifier(home_table(version_id)))
            .as_string(connection.connection),
            [item_ids, scores, candidates, profile_id],
        )


@pytest.fixture
def precomputed(trained):
    cache.clear()
    coverage = home_lists_precompute(version=trained.version)
    return trained, coverage


def test_every_user_with_feedback_gets_the_pool_a_live_request_ranks(precomputed):
    trained, coverage = precomputed
    with_feedback = Feedback.objects.values("user_id").distinct().count()
    assert (coverage.users + coverage.unknown, coverage.of, coverage.stopped_by) == (
        with_feedback,
        with_feedback,
        "complete",
    )
    assert coverage.users > 0
    assert home_precompute_coverage(version_id=trained.version.pk)["users"] == coverage.users
    for profile in trained.catalog.profiles_by_cluster[0][:5]:
        generations = generations_fetch(profile_id=profile.pk)
        stored = home_precomputed_fetch(
            version_id=trained.version.pk, profile_id=profile.pk, user_generation=generations[1]
        )
        live = ranked_candidates(context_build(surface="home", version=trained.version, profile=profile))
        assert stored is not None
        assert [c.item_id for c in stored] == [c.item_id for c in live]
        # The same sources nominated each item (their scores move with time: freshness decays).
        assert [sorted(c.sources) for c in stored] == [sorted(c.sources) for c in live]


def test_the_homepage_serves_the_stored_pool_while_fresh_and_live_once_the_user_moves_on(precomputed):
    trained, _coverage = precomputed
    profile = trained.catalog.profiles_by_cluster[1][0]
    live = _ids(serving.recommend_for_user(profile=profile, k=K, use_cache=False))
    planted = list(reversed(_stored_order(trained.version.pk, profile.pk)))
    _plant_order(trained.version.pk, profile.pk, planted)

    served = serving.recommend_for_user(profile=profile, k=K, use_cache=False)
    assert _ids(served) == planted[:K] != live
    assert all(entry.sources == {"planted": 1.0} for entry in served.items)

    user_generation_bump(profile_id=profile.pk)  # what every feedback event of the user does
    assert _ids(serving.recommend_for_user(profile=profile, k=K, use_cache=False)) == live


def test_a_refresh_after_feedback_stores_the_pool_at_the_users_new_generation(precomputed):
    trained, _coverage = precomputed
    profile = trained.catalog.profiles_by_cluster[0][1]
    _plant_order(trained.version.pk, profile.pk, list(reversed(_stored_order(trained.version.pk, profile.pk))))
    new_generation = user_generation_bump(profile_id=profile.pk)
    assert (
        home_precomputed_fetch(version_id=trained.version.pk, profile_id=profile.pk, user_generation=new_generation)
        is None
    )

    assert home_list_refresh(profile_id=profile.pk) is True
    stored = home_precomputed_fetch(
        version_id=trained.version.pk, profile_id=profile.pk, user_generation=new_generation
    )
    live = ranked_candidates(context_build(surface="home", version=trained.version, profile=profile))
    assert stored is not None and [c.item_id for c in stored] == [c.item_id for c in live]


def test_a_stored_pool_leaves_out_items_deactivated_since(precomputed):
    trained, _coverage = precomputed
    profile = trained.catalog.profiles_by_cluster[0][2]
    generation = generations_fetch(profile_id=profile.pk)[1]
    first = home_precomputed_fetch(version_id=trained.version.pk, profile_id=profile.pk, user_generation=generation)
    assert first
    Item.objects.filter(pk=first[0].item_id).update(is_active=False)
    again = home_precomputed_fetch(version_id=trained.version.pk, profile_id=profile.pk, user_generation=generation)
    assert [c.item_id for c in again] == [c.item_id for c in first[1:]]


def test_a_limited_read_is_the_first_active_entries_of_the_full_one(precomputed):
    trained, _coverage = precomputed
    profile = trained.catalog.profiles_by_cluster[1][2]
    generation = generations_fetch(profile_id=profile.pk)[1]

    def fetch(limit):
        return home_precomputed_fetch(
            version_id=trained.version.pk, profile_id=profile.pk, user_generation=generation, limit=limit
        )

    full = fetch(None)
    assert len(full) > 6
    Item.objects.filter(pk=full[1].item_id).update(is_active=False)  # inside the first five
    limited = fetch(5)
    expected = [full[0], *full[2:6]]
    assert [(c.item_id, c.score, c.sources) for c in limited] == [(c.item_id, c.score, c.sources) for c in expected]


def test_the_run_stops_at_its_time_budget_most_recently_active_users_first(trained, settings):
    settings.HOME_PRECOMPUTE_SECONDS = 4.5  # reads 2..5 pass: four users
    coverage = home_lists_precompute(version=trained.version, clock=StepClock())
    assert (coverage.users + coverage.unknown, coverage.stopped_by) == (4, "time_budget")
    latest = list(
        Feedback.objects.values("user_id")
        .annotate(last=Max("created_at"))
        .order_by("-last", "user_id")
        .values_list("user_id", flat=True)[:4]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT profile_id FROM {}")
            .format(sql.Identifier(home_table(trained.version.pk)))
            .as_string(connection.connection)
        )
        stored = {profile_id for (profile_id,) in cursor.fetchall()}
    assert stored <= set(latest) and len(stored) == coverage.users

    settings.HOME_PRECOMPUTE_SECONDS = 0  # off: every homepage live
    assert home_lists_precompute(version=trained.version).users == 0


def test_the_task_skips_a_version_that_is_not_active(trained):
    assert home_lists_precompute_task(trained.version.pk + 1000)["skipped"] is True
    assert home_lists_precompute_task(trained.version.pk)["users"] > 0


def _stored_generation(version_id: int, profile_id: int) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [home_table(version_id)])
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            sql.SQL("SELECT user_generation FROM {} WHERE profile_id = %s")
            .format(sql.Identifier(home_table(version_id)))
            .as_string(connection.connection),
            [profile_id],
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_precomputes_after_activation_and_refreshes_after_feedback(celery_worker_process):
    from catalog.services import feedback_record
    from recommender.models import ModelVersion, VersionStatus
    from recommender.services.training import model_training_request
    from tests.recommender.conftest import build_planted_catalog, wait_for

    catalog = build_planted_catalog(users_per_cluster=15, items_per_cluster=30, ratings_per_user=10)
    requested = model_training_request()
    version = wait_for(
        lambda: ModelVersion.objects.filter(pk=requested.pk, status=VersionStatus.ACTIVE).first(),
        timeout=180,
        message="training never activated",
        on_timeout=celery_worker_process.output,
    )
    profile = catalog.profiles_by_cluster[0][0]
    before = wait_for(
        lambda: (
            _stored_generation(version.pk, profile.pk) is not None and home_precompute_coverage(version_id=version.pk)
        ),
        timeout=180,
        message="the activation's homepage precomputation never landed",
        on_timeout=celery_worker_process.output,
    )
    assert before["users"] > 0

    unseen = next(
        item for item in catalog.items_by_cluster[0] if not Feedback.objects.filter(user=profile, item=item).exists()
    )
    feedback_record(profile=profile, item=unseen, kind="rating", value=5)
    generation = generations_fetch(profile_id=profile.pk)[1]
    wait_for(
        lambda: _stored_generation(version.pk, profile.pk) == generation,
        timeout=120,
        message="the refresh after feedback never landed",
        on_timeout=celery_worker_process.output,
    )
    stored = home_precomputed_fetch(version_id=version.pk, profile_id=profile.pk, user_generation=generation)
    assert stored is not None and unseen.pk not in {c.item_id for c in stored}  # the rating is in the row
