"""Broken HNSW index: a build that fails, or an index that is gone, never reaches serving.

tests/recommender/test_training.py already covers an index PostgreSQL marks invalid
(``indisvalid = false``). Here the build itself fails inside the real PostgreSQL (pgvector
rejects the index parameters: the one faked thing is the module constant, a boundary), and an
index disappears after publishing. In both cases the active version keeps serving, through the
ANN and through the API.
"""

from __future__ import annotations

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection
from django.test import Client

from recommender.models import ModelVersion, VersionStatus
from recommender.selectors import active_version
from recommender.services.activation import ActivationRefused, model_version_activate, model_version_apply_gate
from recommender.services.training import model_training_request, model_version_claim, model_version_run
from recommender.vectors import store
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.test_training import top_items, train_inline

# Transactional: production publishes in autocommit, and a failed CREATE INDEX must be seen as it
# is there (inside the test's wrapping transaction it would poison every later statement).
pytestmark = pytest.mark.django_db(transaction=True)


def _api_recommendations(profile_external_id: str) -> dict:
    staff = get_user_model().objects.create_user(f"staff-{profile_external_id}", password="x-pass-1234", is_staff=True)
    client = Client()
    client.force_login(staff)
    response = client.get(f"/api/v1/users/{profile_external_id}/recommendations?k=5")
    assert response.status_code == 200, response.content[:500]
    return response.json()


def test_a_failing_hnsw_build_fails_the_version_and_the_active_one_keeps_serving(settings):
    catalog = build_planted_catalog()
    served = train_inline()
    assert served.status == VersionStatus.ACTIVE
    probe = catalog.profiles_by_cluster[0][0]
    before = top_items(served, probe.pk, 10)

    # pgvector accepts m in [2, 100]: CREATE INDEX … WITH (m = 1) errors in the database itself.
    settings.VECTOR_HNSW_M = 1
    version = model_version_claim(version_id=model_training_request(enqueue=False).pk)
    with pytest.raises(DatabaseError) as raised:
        model_version_run(version=version)
    assert isinstance(raised.value.__cause__, psycopg.errors.InvalidParameterValue)

    version.refresh_from_db()
    assert version.status == VersionStatus.FAILED
    assert version.error.startswith('DataError: value 1 out of bounds for option "m"'), version.error
    assert not version.vectors_published
    assert not store.version_tables_exist(version.pk)  # the half-published tables were dropped
    with pytest.raises(ActivationRefused):
        model_version_activate(version=version)

    assert active_version().pk == served.pk
    assert top_items(served, probe.pk, 10) == before
    answer = _api_recommendations(probe.external_id)
    assert (answer["version"], answer["fallback"]) == (served.pk, False)
    assert len(answer["items"]) == 5


def test_a_version_whose_index_disappeared_is_ready_but_refused():
    catalog = build_planted_catalog()
    served = train_inline()
    candidate = model_version_run(version=model_version_claim(version_id=model_training_request(enqueue=False).pk))
    assert candidate.status == VersionStatus.READY and candidate.vectors_published
    with connection.cursor() as cursor:  # an operator's DROP INDEX, or a restore without indexes
        cursor.execute(f'DROP INDEX "{store.VersionTables(candidate.pk).item_ip_index}"')

    # The automatic path (what the training task does after publishing) refuses too.
    with pytest.raises(ActivationRefused, match="HNSW"):
        model_version_apply_gate(version=candidate)
    candidate.refresh_from_db()
    assert candidate.status == VersionStatus.READY
    assert active_version().pk == served.pk
    assert ModelVersion.objects.filter(status=VersionStatus.ACTIVE).count() == 1
    answer = _api_recommendations(catalog.profiles_by_cluster[1][0].external_id)
    assert (answer["version"], answer["fallback"]) == (served.pk, False)
