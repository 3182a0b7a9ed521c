"""Worker killed mid-training, seen from the API: the same answers before, during and after.

tests/recommender/test_training_worker.py::test_worker_killed_mid_training_leaves_the_active_version_serving
already SIGKILLs a real worker mid-training and checks the active version's vectors, the failed
run and that no duplicate version appears. What it does not check is the API: here the
recommendations endpoint is asked before the run, while the worker trains, right after the
kill and after the run is failed, and must give the same version and the same items each time.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from recommender.models import ModelVersion, TrainingConfig, VersionStatus
from recommender.selectors import active_version
from recommender.services.training import model_training_request, model_versions_fail_stale
from tests.recommender.conftest import build_planted_catalog, celery_worker_process, wait_for  # noqa: F401
from tests.recommender.test_training import train_inline

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _answer(client: Client, user: str) -> tuple[int, bool, list[str]]:
    response = client.get(f"/api/v1/users/{user}/recommendations?k=10")
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    return body["version"], body["fallback"], [item["external_id"] for item in body["items"]]


def test_the_api_keeps_answering_from_the_active_version_while_the_worker_dies(celery_worker_process):  # noqa: F811
    catalog = build_planted_catalog(users_per_cluster=150, items_per_cluster=200, ratings_per_user=40)
    served = train_inline()
    assert served.status == VersionStatus.ACTIVE
    staff = get_user_model().objects.create_user("faults-staff", password="x-pass-1234", is_staff=True)
    client = Client()
    client.force_login(staff)
    users = [catalog.profiles_by_cluster[0][0].external_id, catalog.profiles_by_cluster[1][0].external_id]
    before = {user: _answer(client, user) for user in users}
    assert all(version == served.pk and not fallback for version, fallback, _ in before.values())

    slow = TrainingConfig.objects.create(name="slow-for-kill", epochs=1000)
    version = model_training_request(config=slow)
    wait_for(
        lambda: ModelVersion.objects.filter(pk=version.pk, status=VersionStatus.TRAINING, epoch__gte=2).exists(),
        timeout=120,
        message="training never started",
        on_timeout=celery_worker_process.output,
    )
    assert {user: _answer(client, user) for user in users} == before  # while the worker trains

    celery_worker_process.kill()
    assert {user: _answer(client, user) for user in users} == before  # right after the SIGKILL

    time.sleep(1.5)
    assert model_versions_fail_stale(stale_after=timedelta(seconds=1)) == 1
    assert ModelVersion.objects.get(pk=version.pk).status == VersionStatus.FAILED
    assert {user: _answer(client, user) for user in users} == before  # after the run is failed
    assert active_version().pk == served.pk
    assert ModelVersion.objects.filter(config=slow).count() == 1
