"""`index_for` picks the index once per request: in process while the version fits its budget and the
request may use per-process copies, pgvector otherwise, and both answer alike across the boundary."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import transaction

from recommender.generations import global_generation_bump, global_generation_fetch
from recommender.vectors import index_for
from recommender.vectors.base import AnnFilters
from recommender.vectors.exact import VERSION_VECTORS, ExactIndex, version_vectors_load
from recommender.vectors.pgvector import PgvectorIndex
from recommender.vectors.store import vectors_drop, vectors_publish

VERSION = 900_202
N_ITEMS, DIMENSION = 300, 8
ROW_BYTES = 4 * ((DIMENSION + 2) + DIMENSION) + 9


def _publish() -> np.ndarray:
    rng = np.random.default_rng(5)
    embeddings = rng.standard_normal((N_ITEMS, DIMENSION)).astype(np.float32)
    score_vectors = np.hstack([embeddings, rng.normal(0, 0.1, (N_ITEMS, 1)), np.ones((N_ITEMS, 1))]).astype(np.float32)
    vectors_publish(
        version_id=VERSION,
        item_ids=np.arange(1, N_ITEMS + 1),
        item_score_vectors=score_vectors,
        item_embeddings=embeddings,
        user_ids=np.zeros(0, dtype=np.int64),
        user_score_vectors=np.zeros((0, DIMENSION + 2), dtype=np.float32),
    )
    return score_vectors


@pytest.fixture
def published(transactional_db):
    # Committed, so requests outside a transaction can read it: the memo's own rule.
    score_vectors = _publish()
    VERSION_VECTORS.clear()
    yield score_vectors
    VERSION_VECTORS.clear()
    vectors_drop(version_id=VERSION)


def test_a_version_within_budget_is_answered_in_process_and_alike(published, settings):
    settings.VECTOR_EXACT_INDEX_BUDGET_BYTES = N_ITEMS * ROW_BYTES
    generation = global_generation_fetch()
    index = index_for(version_id=VERSION, generation=generation)
    assert isinstance(index, ExactIndex)
    query = np.append(np.ones(DIMENSION), [1.0, 0.0]).astype(np.float32)
    everything = AnnFilters(active_only=False)
    assert [i for i, _ in index.user_neighbours(query, k=10, filters=everything)] == [
        i for i, _ in PgvectorIndex(VERSION, exact=True).user_neighbours(query, k=10, filters=everything)
    ]


def test_one_row_over_budget_goes_to_pgvector(published, settings):
    settings.VECTOR_EXACT_INDEX_BUDGET_BYTES = N_ITEMS * ROW_BYTES - 1
    assert version_vectors_load(VERSION) is None
    assert isinstance(index_for(version_id=VERSION, generation=global_generation_fetch()), PgvectorIndex)


def test_no_generation_or_a_transaction_means_pgvector(published, settings):
    settings.VECTOR_EXACT_INDEX_BUDGET_BYTES = 10 * N_ITEMS * ROW_BYTES
    assert isinstance(index_for(version_id=VERSION, generation=None), PgvectorIndex)
    with transaction.atomic():
        assert isinstance(index_for(version_id=VERSION, generation=global_generation_fetch()), PgvectorIndex)


def test_a_generation_bump_reloads_the_copy(published, settings):
    settings.VECTOR_EXACT_INDEX_BUDGET_BYTES = 10 * N_ITEMS * ROW_BYTES
    first = index_for(version_id=VERSION, generation=global_generation_fetch())
    assert index_for(version_id=VERSION, generation=global_generation_fetch()).vectors is first.vectors
    generation = global_generation_bump()
    assert index_for(version_id=VERSION, generation=generation).vectors is not first.vectors
