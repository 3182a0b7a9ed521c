"""End to end with a real Celery worker process on the real broker (the test PostgreSQL)."""

import time
from datetime import timedelta

import pytest

from recommender.models import ModelVersion, TrainingConfig, VersionStatus
from recommender.selectors import active_version
from recommender.services.training import model_training_request, model_versions_fail_stale
from recommender.vectors import store

from .conftest import build_planted_catalog, wait_for
from .test_training import top_items, train_inline

# Transactional: the worker is another process. The rows the migrations seed come back through
# tests/conftest.py (serialized_rollback is not used: after any non-serialized transactional test
# it fails re-inserting content types that post_migrate recreated).
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _finished(version_id: int):
    version = ModelVersion.objects.get(pk=version_id)
    if version.status in (VersionStatus.ACTIVE, VersionStatus.FAILED) or (
        version.status == VersionStatus.READY and version.gate_reason
    ):
        return version
    return None


def test_real_worker_trains_activates_and_ranks_each_cluster_first(celery_worker_process):
    catalog = build_planted_catalog()
    version = model_training_request()

    version = wait_for(
        lambda: _finished(version.pk),
        timeout=120,
        message="training never finished",
        on_timeout=celery_worker_process.output,
    )

    assert version.status == VersionStatus.ACTIVE, version.error or version.gate_reason
    assert version.attempts == 1
    assert active_version().pk == version.pk
    for cluster, profiles in catalog.profiles_by_cluster.items():
        own = {item.pk for item in catalog.items_by_cluster[cluster]}
        for profile in profiles:
            assert set(top_items(version, profile.pk, 10)) <= own


def test_real_worker_trains_the_two_tower_family_and_its_space_becomes_a_candidate_source(celery_worker_process):
    from recommender.candidates import SOURCES
    from recommender.serving.context import context_build

    catalog = build_planted_catalog(users_per_cluster=40, items_per_cluster=30, ratings_per_user=12)
    config = TrainingConfig.objects.create(name="two tower", families="lightfm,two_tower")
    version = model_training_request(config=config)

    version = wait_for(
        lambda: _finished(version.pk),
        timeout=240,
        message="training never finished",
        on_timeout=celery_worker_process.output,
    )

    assert version.status == VersionStatus.ACTIVE, version.error or version.gate_reason
    assert store.version_spaces(version.pk) == ["two_tower"]
    for cluster, profiles in catalog.profiles_by_cluster.items():
        own = {item.pk for item in catalog.items_by_cluster[cluster]}
        context = context_build(surface="home", version=version, profile=profiles[0])
        nominated = [candidate.item_id for candidate in SOURCES["two_tower"].generate(context, 10)]
        assert len(nominated) == 10
        assert len(set(nominated) & own) >= 9


def test_worker_killed_mid_training_leaves_the_active_version_serving(celery_worker_process):
    catalog = build_planted_catalog(users_per_cluster=150, items_per_cluster=200, ratings_per_user=40)
    served = train_inline()
    assert served.status == VersionStatus.ACTIVE
    probe_user = catalog.profiles_by_cluster[0][0].pk
    before = top_items(served, probe_user, 10)

    slow = TrainingConfig.objects.create(name="slow", epochs=1000)
    version = model_training_request(config=slow)
    wait_for(
        lambda: ModelVersion.objects.filter(pk=version.pk, status=VersionStatus.TRAINING, epoch__gte=2).exists(),
        timeout=120,
        message=f"training never started; log:\n{celery_worker_process.output()[-3000:]}",
    )
    celery_worker_process.kill()

    # The served version is untouched and still answers from its own vectors.
    assert active_version().pk == served.pk
    assert top_items(served, probe_user, 10) == before
    assert ModelVersion.objects.get(pk=version.pk).status == VersionStatus.TRAINING

    # The dead run's heartbeat goes stale and the maintenance task fails it: it never stays "training".
    time.sleep(1.5)
    assert model_versions_fail_stale(stale_after=timedelta(seconds=1)) == 1
    version.refresh_from_db()
    assert version.status == VersionStatus.FAILED
    assert "worker" in version.error
    assert not store.version_tables_exist(version.pk) or not version.vectors_published
    assert ModelVersion.objects.filter(config=slow).count() == 1  # no duplicate versions
    assert active_version().pk == served.pk
