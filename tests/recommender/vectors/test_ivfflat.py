"""IVFFlat indexes: publishing falls back to them when HNSW builds would not fit the time budget,
activation accepts them, and the serving statements use them with the same answers."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.models import ModelVersion, VersionStatus
from recommender.vectors import pgvector, store
from recommender.vectors.base import AnnFilters
from recommender.vectors.pgvector import PgvectorIndex


def _publish(version_id: int, n_items: int = 2000, dimension: int = 8):
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((n_items, dimension)).astype(np.float32)
    scores = np.hstack([embeddings, rng.standard_normal((n_items, 1)), np.ones((n_items, 1))]).astype(np.float32)
    heard: list[str] = []
    store.vectors_publish(
        version_id=version_id,
        item_ids=np.arange(1, n_items + 1),
        item_score_vectors=scores,
        item_embeddings=embeddings,
        user_ids=np.arange(1, 4),
        user_score_vectors=rng.standard_normal((3, dimension + 2)).astype(np.float32),
        progress=heard.append,
    )
    return scores, embeddings, heard


def _methods(version_id: int) -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s) AND am.amname <> 'btree'",
            [store.VersionTables(version_id).items],
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db
def test_a_pilot_that_predicts_builds_past_the_budget_publishes_ivfflat_that_activation_accepts(settings):
    settings.VECTOR_INDEX_PILOT_ITEMS = 200  # the 2,000 items are ten pilots: a pilot is timed
    settings.VECTOR_INDEX_BUILD_SECONDS = 1e-9  # no HNSW build fits
    settings.VECTOR_IVFFLAT_ROWS_PER_LIST = 100
    version = ModelVersion.objects.create(status=VersionStatus.QUEUED)
    _, _, heard = _publish(version.pk)

    tables = store.VersionTables(version.pk)
    assert _methods(version.pk) == {
        tables.index("ip", "ivfflat"): "ivfflat",
        tables.index("cos", "ivfflat"): "ivfflat",
        tables.index("emb_ip", "ivfflat"): "ivfflat",
    }
    assert "timing a pilot HNSW build over 200 sampled items" in heard
    assert any("IVFFlat, 20 lists" in message for message in heard), heard
    assert any(message.startswith("IVFFlat index 1 of 3") for message in heard), heard
    assert store.version_indexes_valid(version.pk)
    store.vectors_drop(version_id=version.pk)


@pytest.mark.django_db
def test_within_budget_the_same_publish_builds_hnsw(settings):
    settings.VECTOR_INDEX_PILOT_ITEMS = 200
    settings.VECTOR_INDEX_BUILD_SECONDS = 1e9
    version = ModelVersion.objects.create(status=VersionStatus.QUEUED)
    _publish(version.pk)

    assert set(_methods(version.pk).values()) == {"hnsw"}
    store.vectors_drop(version_id=version.pk)


@pytest.mark.django_db
def test_ivfflat_answers_through_the_index_and_agree_with_exact_search(settings):
    settings.VECTOR_INDEX_PILOT_ITEMS = 200
    settings.VECTOR_INDEX_BUILD_SECONDS = 1e-9
    settings.VECTOR_IVFFLAT_ROWS_PER_LIST = 100
    version = ModelVersion.objects.create(status=VersionStatus.QUEUED)
    scores, _, _ = _publish(version.pk)
    query = np.random.default_rng(2).standard_normal(scores.shape[1]).astype(np.float32)

    everything = AnnFilters(active_only=False)
    statement, params = pgvector.nearest_statement(
        version_id=version.pk, column="score_vector", operator="<#>", query=query, k=10, filters=everything
    )
    plan = pgvector.explain(statement, params, k=10)
    assert store.VersionTables(version.pk).index("ip", "ivfflat") in plan
    found = PgvectorIndex(version.pk).user_neighbours(query, k=10, filters=everything)
    exact = np.argsort(-(scores @ query), kind="stable")[:10] + 1
    # 40 of 20 lists probed (the serving default): every list is read, so the answer is exact.
    assert [item_id for item_id, _ in found] == exact.tolist()
    store.vectors_drop(version_id=version.pk)
