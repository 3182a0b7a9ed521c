"""Deep Retrieval wired in: built by a training run when ``VECTOR_INDEX_KIND = "deep_retrieval"``,
chosen by `index_for` above the exact budget, serving the homepage; a failed build never blocks activation."""

from __future__ import annotations

import pytest

from recommender import serving
from recommender.generations import global_generation_fetch
from recommender.models import VersionStatus
from recommender.serving.context import context_build
from recommender.vectors import deep_retrieval, index_for
from recommender.vectors.base import AnnFilters
from recommender.vectors.deep_retrieval import DeepRetrievalIndex, deep_retrieval_path
from recommender.vectors.exact import VERSION_VECTORS
from recommender.vectors.pgvector import PgvectorIndex
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.test_training import train_inline

# Committed rows: the per-process memos are used only outside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def deep_retrieval_on(settings):
    settings.VECTOR_INDEX_KIND = "deep_retrieval"
    settings.TRAINING_NUM_THREADS = 1
    deep_retrieval._INDEXES.clear()
    VERSION_VECTORS.clear()
    yield settings
    deep_retrieval._INDEXES.clear()
    VERSION_VECTORS.clear()


def test_a_run_builds_the_structure_and_serving_goes_through_it_above_the_exact_budget(deep_retrieval_on):
    catalog = build_planted_catalog()
    version = train_inline()
    assert version.status == VersionStatus.ACTIVE
    assert deep_retrieval_path(version.pk).exists()

    deep_retrieval_on.VECTOR_EXACT_INDEX_BUDGET_BYTES = 1  # the version is "too large" for the exact copy
    index = index_for(version_id=version.pk, generation=global_generation_fetch())
    assert isinstance(index, DeepRetrievalIndex)
    brute_force = PgvectorIndex(version.pk, exact=True)
    for profiles in catalog.profiles_by_cluster.values():
        context = context_build(surface="home", version=version, profile=profiles[0])
        filters = AnnFilters(exclude_item_ids=tuple(sorted(context.seen_item_ids)))
        found = index.user_neighbours(context.user_vector, k=10, filters=filters)
        expected = brute_force.user_neighbours(context.user_vector, k=10, filters=filters)
        assert [item for item, _ in found] == [item for item, _ in expected]

    result = serving.recommend_for_user(profile=catalog.profiles_by_cluster[1][0], k=10)
    assert not result.fallback, result.fallback_reason
    own = {item.pk for item in catalog.items_by_cluster[1]}
    assert {entry.item.pk for entry in result.items} <= own


def test_with_the_setting_off_no_structure_is_built_and_pgvector_serves(settings):
    settings.TRAINING_NUM_THREADS = 1
    build_planted_catalog()
    version = train_inline()
    assert not deep_retrieval_path(version.pk).exists()
    settings.VECTOR_EXACT_INDEX_BUDGET_BYTES = 1
    VERSION_VECTORS.clear()
    assert isinstance(index_for(version_id=version.pk, generation=global_generation_fetch()), PgvectorIndex)


def test_a_failed_build_leaves_the_version_activated_and_served_by_pgvector(deep_retrieval_on, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("planted build failure")

    monkeypatch.setattr(deep_retrieval, "deep_retrieval_publish", broken)
    build_planted_catalog()
    version = train_inline()
    assert version.status == VersionStatus.ACTIVE
    assert not deep_retrieval_path(version.pk).exists()
    deep_retrieval_on.VECTOR_EXACT_INDEX_BUDGET_BYTES = 1
    assert isinstance(index_for(version_id=version.pk, generation=global_generation_fetch()), PgvectorIndex)
