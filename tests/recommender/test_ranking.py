"""The pool scorer: LightFM's full score with a user, seed similarity without, popularity last."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from recommender.candidates import Context, candidates_generate
from recommender.candidates.base import PooledCandidate
from recommender.ml.similarity import similarity
from recommender.ranking import pool_score
from recommender.vectors import store
from tests.factories import FeedbackFactory, ItemFactory

pytestmark = pytest.mark.django_db


def test_score_is_the_user_item_inner_product_and_sources_are_kept(trained_lightfm):
    trained = trained_lightfm
    profile = trained.catalog.profiles_by_cluster[0][1]
    user_vector = trained.user_vector(profile.pk)
    context = Context(
        surface="home",
        now=timezone.now(),
        version_id=trained.version.pk,
        profile_id=profile.pk,
        user_vector=user_vector,
    )
    pool = candidates_generate(context, {"personal_ann": 15, "fresh": 10, "because_you_liked": 10})
    ranked = pool_score(context=context, pool=pool)

    item_ids, score_vectors = store.item_vectors_fetch(version_id=trained.version.pk)
    expected = dict(zip(item_ids.tolist(), (score_vectors @ user_vector).tolist(), strict=True))
    assert len(ranked) == len(pool) > 15
    for entry in ranked:
        assert entry.score == pytest.approx(expected[entry.item_id], abs=1e-5)
        assert entry.sources
    assert [entry.score for entry in ranked] == sorted((entry.score for entry in ranked), reverse=True)
    assert any(reason.get("because_item_id") for entry in ranked for reason in entry.reasons)
    # ANN scores and model scores are the same number: that is what makes sources comparable.
    for entry in ranked:
        if "personal_ann" in entry.sources:
            assert entry.sources["personal_ann"] == pytest.approx(entry.score, abs=1e-5)


def test_without_a_user_the_related_pool_is_scored_by_similarity_to_the_seed(trained):
    seed = trained.catalog.items_by_cluster[1][0]
    context = Context(
        surface="related", now=timezone.now(), version_id=trained.version.pk, item_id=seed.pk, measure="euclidean"
    )
    ranked = pool_score(context=context, pool=candidates_generate(context, {"related": 10, "content_based": 10}))

    ids, embeddings = store.item_embeddings_fetch(version_id=trained.version.pk, item_ids=[e.item_id for e in ranked])
    seed_embedding = store.item_embedding_fetch(version_id=trained.version.pk, item_id=seed.pk)
    expected = dict(zip(ids.tolist(), similarity(seed_embedding, embeddings, "euclidean").tolist(), strict=True))
    assert seed.pk not in {entry.item_id for entry in ranked}
    assert [entry.score for entry in ranked] == pytest.approx([expected[entry.item_id] for entry in ranked])
    assert [entry.score for entry in ranked] == sorted((entry.score for entry in ranked), reverse=True)


def test_with_no_model_the_pool_is_ordered_by_popularity():
    now = timezone.now()
    quiet, busy, unseen = ItemFactory.create_batch(3)
    FeedbackFactory(item=quiet, created_at=now - timedelta(days=1))
    FeedbackFactory.create_batch(3, item=busy, created_at=now - timedelta(days=400))
    FeedbackFactory.create_batch(5, item=unseen, kind_code="dislike")  # negative feedback is not popularity
    pool = [PooledCandidate(item_id=item.pk, sources={"fresh": 1.0}) for item in (quiet, unseen, busy)]
    ranked = pool_score(context=Context(surface="home", now=now), pool=pool)

    assert [(entry.item_id, entry.score) for entry in ranked] == [(busy.pk, 3.0), (quiet.pk, 1.0), (unseen.pk, 0.0)]


def test_items_without_a_vector_rank_below_every_scored_item(trained):
    profile = trained.catalog.profiles_by_cluster[0][0]
    newcomer = ItemFactory()  # created after publishing, no cold-start vector yet
    known = trained.catalog.items_by_cluster[1][0]
    context = Context(
        surface="home", now=timezone.now(), version_id=trained.version.pk, user_vector=trained.user_vector(profile.pk)
    )
    ranked = pool_score(
        context=context,
        pool=[
            PooledCandidate(item_id=newcomer.pk, sources={"fresh": 1.0}),
            PooledCandidate(item_id=known.pk, sources={"popular": 1.0}),
        ],
    )

    assert [entry.item_id for entry in ranked] == [known.pk, newcomer.pk]
    assert np.isfinite(ranked[1].score) and ranked[1].score < ranked[0].score
