"""Vector families' own spaces of a version: published at training, joined by new items at once.

A family whose score is an inner product (`families.base.VectorFamily`, the two-tower model)
publishes its item vectors as a space of the version (`recommender.vectors.store`, its module
notes), where `recommender.candidates.family_ann` finds them with a request-time query. Items added
after training are placed in each space from their features, without retraining.
"""

from __future__ import annotations

import logging

import numpy as np

from catalog.array_selectors import item_feature_weights
from recommender.ml.families import ModelFamily, Progress, VectorFamily
from recommender.stacking import VECTOR_FAMILY, version_stack
from recommender.vectors import store

from ..models import ModelVersion
from ..selectors import active_version

logger = logging.getLogger(__name__)


def family_spaces_publish(
    *, version_id: int, families: dict[str, ModelFamily], progress: Progress | None = None
) -> list[str]:
    """Publish every vector family's item vectors as its own space of ``version_id``; returns the spaces.

    LightFM is the version's default space, published by training itself. Only a family that
    scores by inner product (`families.base.VectorFamily`) has a space; the others serve from memory.
    """
    published = []
    for name, family in families.items():
        if name == VECTOR_FAMILY or not isinstance(family, VectorFamily):
            continue
        if progress is not None:
            progress(0, 1, f"publishing the {name} vectors")
        score_vectors, embeddings = family.item_space()
        store.vectors_publish(
            version_id=version_id,
            space=name,
            item_ids=np.asarray(family.item_ids.ids, dtype=np.int64),
            item_score_vectors=score_vectors,
            item_embeddings=embeddings,
            progress=None if progress is None else (lambda message: progress(0, 1, message)),
        )
        published.append(name)
    return published


def item_spaces_cold_start(*, item_id: int, version: ModelVersion | None = None) -> list[str]:
    """Place a new item in each vector family's space of the active version, from its features alone.

    The family's item tower (e.g. two-tower's) maps the item's features to a vector without
    retraining; it is inserted into that space's table (and its HNSW indexes) at once, so the
    family's related candidates can nominate it. An item the family was fitted on keeps its trained
    vector. Returns the spaces it was placed in.
    """
    version = version or active_version()
    stack = None if version is None else version_stack(version.pk)
    if version is None or stack is None:
        return []
    placed: list[str] = []
    features = None
    for name, family in stack.families.items():
        if not isinstance(family, VectorFamily) or family.item_ids.index_of([item_id], missing=-1)[0] >= 0:
            continue
        features = item_feature_weights(item_id=item_id) if features is None else features
        vectors = family.item_space_from_features(features)
        if vectors is None:
            logger.info("realtime.item_space_skipped item=%s version=%s space=%s", item_id, version.pk, name)
            continue
        score_vector, embedding = vectors
        store.item_vector_store(
            version_id=version.pk, item_id=item_id, score_vector=score_vector, embedding=embedding, space=name
        )
        placed.append(name)
        logger.info("realtime.item_space_cold_start item=%s version=%s space=%s", item_id, version.pk, name)
    return placed
