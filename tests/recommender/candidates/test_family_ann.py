"""The two-tower family served from its own pgvector space: published at training, queried with a
request-time user tower on the homepage, and joined by new items from their features alone."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.services import feedback_record, item_create
from recommender import serving
from recommender.candidates import SOURCES
from recommender.models import TrainingConfig, VersionStatus
from recommender.serving.context import context_build
from recommender.stacking import user_history, version_stack
from recommender.vectors import store
from recommender.vectors.base import AnnFilters
from recommender.vectors.pgvector import PgvectorIndex
from tests.factories import UserProfileFactory
from tests.recommender.conftest import PlantedCatalog, build_planted_catalog
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(db, settings):
    settings.TRAINING_NUM_THREADS = 1  # one LightFM thread: the same version every run
    catalog = build_planted_catalog(users_per_cluster=40, items_per_cluster=30, ratings_per_user=12)
    config = TrainingConfig.objects.create(name="two tower", families="lightfm,two_tower")
    version = train_inline(config=config)
    assert version.status == VersionStatus.ACTIVE
    return catalog, version


def _own(catalog: PlantedCatalog, cluster: int) -> set[int]:
    return {item.pk for item in catalog.items_by_cluster[cluster]}


def test_training_publishes_the_two_tower_items_as_their_own_indexed_space(served):
    _, version = served
    family = version_stack(version.pk).families["two_tower"]

    assert store.version_spaces(version.pk) == ["two_tower"]
    ids, score_vectors = store.item_vectors_fetch(version_id=version.pk, space="two_tower")
    expected_vectors, _ = family.item_space()
    order = family.item_ids.index_of(ids)
    assert sorted(ids.tolist()) == sorted(family.item_ids.ids.tolist())
    np.testing.assert_allclose(score_vectors, expected_vectors[order], atol=1e-6)
    # Its HNSW indexes are part of what activation checks, and retiring drops the space with the rest.
    assert store.version_indexes_valid(version.pk)
    store.vectors_drop(version_id=version.pk)
    assert store.version_spaces(version.pk) == []
    assert not store.version_tables_exist(version.pk)


def test_a_new_user_with_features_and_three_ratings_gets_two_tower_candidates_at_request_time(served):
    catalog, version = served
    family = version_stack(version.pk).families["two_tower"]
    cluster = 1
    profile = UserProfileFactory(external_id="newcomer", features=[("segment", str(cluster))])
    rated = catalog.items_by_cluster[cluster][:3]
    for item in rated:
        feedback_record(profile=profile, item=item, kind="rating", value=5)

    context = context_build(surface="home", version=version, profile=profile)
    candidates = SOURCES["two_tower"].generate(context, 20)

    ids = [candidate.item_id for candidate in candidates]
    assert len(ids) == 20
    assert not {item.pk for item in rated} & set(ids)
    assert len(set(ids) & _own(catalog, cluster)) >= 18
    # The query is the user tower on the live history and side features, found through the space's ANN.
    history = user_history(context=context, stack=version_stack(version.pk))
    query = family.query_vector(
        history.items, history.confidences, history.preferences, side_features={"segment=1": 1.0}
    )
    expected = PgvectorIndex(version.pk, space="two_tower", exact=True).user_neighbours(
        query, k=20, filters=AnnFilters(exclude_item_ids=tuple(item.pk for item in rated))
    )
    assert ids == [item_id for item_id, _ in expected]

    # The homepage serves them: two-tower is one of the sources of the list.
    result = serving.recommend_for_user(profile=profile, k=10)
    assert not result.fallback, result.fallback_reason
    assert any("two_tower" in entry.sources for entry in result.items)


def test_a_rating_moves_the_two_tower_query_at_the_next_request(served):
    catalog, version = served
    profile = UserProfileFactory(external_id="switcher")
    for item in catalog.items_by_cluster[0][:3]:
        feedback_record(profile=profile, item=item, kind="rating", value=5)
    before = SOURCES["two_tower"].generate(context_build(surface="home", version=version, profile=profile), 10)
    assert len({c.item_id for c in before} & _own(catalog, 0)) >= 9

    for item in catalog.items_by_cluster[1][:8]:
        feedback_record(profile=profile, item=item, kind="rating", value=5)
    after = SOURCES["two_tower"].generate(context_build(surface="home", version=version, profile=profile), 10)

    # No retraining and no stored user vector in between: the query moved to the new taste.
    assert len({c.item_id for c in after} & _own(catalog, 1)) > len({c.item_id for c in before} & _own(catalog, 1))


def test_a_stranger_with_no_history_and_no_features_gets_no_two_tower_candidates(served):
    _, version = served
    profile = UserProfileFactory(external_id="stranger")
    context = context_build(surface="home", version=version, profile=profile)
    assert SOURCES["two_tower"].generate(context, 10) == []


def test_a_new_item_with_features_only_gets_an_item_tower_vector_and_appears_in_related_items(
    served, django_capture_on_commit_callbacks
):
    catalog, version = served
    family = version_stack(version.pk).families["two_tower"]
    seed = catalog.items_by_cluster[0][0]

    with django_capture_on_commit_callbacks(execute=True):
        new_item = item_create(
            external_id="brand-new", title="Brand new cluster 0 item", features=[("genre", "cluster-0", 1.0)]
        )

    ids, score_vectors = store.item_vectors_fetch(version_id=version.pk, item_ids=[new_item.pk], space="two_tower")
    assert ids.tolist() == [new_item.pk]
    expected, _ = family.item_space_from_features({"genre=cluster-0": 1.0})
    np.testing.assert_allclose(score_vectors[0], expected, atol=1e-6)
    assert type(version).objects.get(pk=version.pk).status == VersionStatus.ACTIVE  # no retraining

    # The family's related candidates for a cluster-0 item nominate it from the space's index.
    context = context_build(surface="related", version=version, item=seed)
    nominated = [candidate.item_id for candidate in SOURCES["two_tower"].generate(context, 30)]
    assert new_item.pk in nominated
    assert set(nominated) - {new_item.pk} <= _own(catalog, 0)

    related = serving.related_items(item=seed, k=30)
    assert not related.fallback, related.fallback_reason
    entry = next(entry for entry in related.items if entry.item.pk == new_item.pk)
    assert "two_tower" in entry.sources
