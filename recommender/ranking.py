"""One scorer for the merged candidate pool, so candidates from different sources are comparable.

With a user vector, every candidate gets LightFM's full score: the user's score vector
[u, 1, user bias] · the item's score vector [v, item bias, 1], features and biases included
(the same number the personal ANN orders by). When the version has a blend (fitted at training
on a validation split, see `recommender/blend.py`), the score is the blend of that model score
with the item-item and popularity signals instead (z-units within the pool). Without a user
vector (anonymous visitor, related panel), candidates are scored by similarity to the seed item
under ``context.measure``; with neither, by all-time popularity. Items the active version has no
vector for (added after publishing and not embedded yet) keep their place at the bottom of the
list, below every scored item, so a fallback can still show them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from catalog.array_selectors import item_feedback_counts
from recommender.blend import pool_blend_scores
from recommender.candidates.base import Context, PooledCandidate
from recommender.ml.similarity import similarity
from recommender.stacking import pool_stack_scores

logger = logging.getLogger(__name__)


def _assign(pool: list[PooledCandidate], scores_by_item: dict[int, float]) -> list[PooledCandidate]:
    floor = min(scores_by_item.values()) - 1.0 if scores_by_item else 0.0
    for entry in pool:
        entry.score = scores_by_item.get(entry.item_id, floor)
    return sorted(pool, key=lambda entry: (-scores_by_item.get(entry.item_id, floor), entry.item_id))


def _model_scores(context: Context, item_ids: list[int]) -> dict[int, float]:
    ids, score_vectors = context.vector_index.score_vectors(item_ids)
    if len(ids) == 0:
        return {}
    scores = score_vectors.astype(np.float64) @ np.asarray(context.user_vector, dtype=np.float64)
    # The version's blend (recommender/blend.py), when it has one, mixes signals the model lacks
    # into the order; the items without a vector still sink below every scored item.
    # The version's stack (recommender/stacking.py: the learned ranker, or the family the training
    # run chose) comes first; else its blend (recommender/blend.py).
    blended = pool_stack_scores(context=context, item_ids=ids.tolist(), model_scores=scores)
    if blended is None:
        blended = pool_blend_scores(context=context, item_ids=ids.tolist(), model_scores=scores)
    return dict(zip(ids.tolist(), (scores if blended is None else blended).tolist(), strict=True))


def _seed_similarity_scores(context: Context, seed_id: int, item_ids: list[int]) -> dict[int, float] | None:
    # The seed and the pool in one read (the store's ANY(...) gives no order: match rows by id).
    ids, embeddings = context.vector_index.embeddings([seed_id, *item_ids])
    by_id = dict(zip(ids.tolist(), embeddings, strict=True))
    if seed_id not in by_id:
        return None
    pooled = [item_id for item_id in dict.fromkeys(item_ids) if item_id in by_id]
    if not pooled:
        return {}
    scores = similarity(
        by_id[seed_id],
        np.stack([by_id[item_id] for item_id in pooled]),
        context.measure,
        alpha=context.norm_damping_alpha,
    )
    return dict(zip(pooled, np.atleast_1d(scores).tolist(), strict=True))


def _popularity_scores(item_ids: list[int]) -> dict[int, float]:
    """All-time count of in-force, non-negative feedback per pooled item (one query on the (item, kind) index)."""
    counts = item_feedback_counts(item_ids=item_ids)
    return {item_id: float(counts.get(item_id, 0)) for item_id in item_ids}


def pool_score(*, context: Context, pool: list[PooledCandidate]) -> list[PooledCandidate]:
    """Fill every candidate's ``score`` and return the pool sorted by it, best first.

    Sources and reasons are kept untouched for explanations. Vectors of the pooled items only
    are read, from the request's vector index (one query, or none for the in-process index).
    """
    if not pool:
        return []
    item_ids = [entry.item_id for entry in pool]
    if context.version_id is not None and context.user_vector is not None:
        return _assign(pool, _model_scores(context, item_ids))
    if context.version_id is not None and context.item_id is not None:
        scores = _seed_similarity_scores(context, context.item_id, item_ids)
        if scores is not None:
            return _assign(pool, scores)
        logger.info("ranking.seed_without_vector version=%s item=%s", context.version_id, context.item_id)
    return _assign(pool, _popularity_scores(item_ids))


def pool_popularity_rank(*, context: Context, pool: list[PooledCandidate]) -> list[PooledCandidate]:
    """The pool by all-time popularity, the same order for every user: the non-personalised baseline
    an experiment's variant can serve to measure what the model adds (``Variant.scorer``)."""
    if not pool:
        return []
    return _assign(pool, _popularity_scores([entry.item_id for entry in pool]))


Scorer = Callable[..., list[PooledCandidate]]
# Every way a pool can be ordered, by the name a variant stores (`experiments.models.VariantScorer`).
SCORERS: dict[str, Scorer] = {"model": pool_score, "popularity": pool_popularity_rank}
