"""Personal ANN: the user's score vector against every item's score vector (LightFM's score)."""
from __future__ import annotations

from recommender import ann, vector_memo

from ._shared import source_filters
from .base import Candidate, Context


class PersonalAnnSource:
    """Nearest items by inner product with the bias coordinates, through the HNSW index.

    Needs ``context.user_vector`` (trained or folded in, provided by the pipeline) and an
    active version; returns [] without them.
    """

    name = "personal_ann"

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if context.version_id is None or context.user_vector is None or n < 1:
            return []
        filters = source_filters(context)
        # Exact in process from the version's memoised vectors when the request may use them (small
        # catalogues, where the planner scans exactly anyway), else through the HNSW index.
        memo = vector_memo.context_vectors(context)
        nearest = None if memo is None else vector_memo.nearest_items_for_user_memo(
            memo=memo, user_vector=context.user_vector, k=n, filters=filters)
        if nearest is None:
            nearest = ann.nearest_items_for_user(version_id=context.version_id, user_vector=context.user_vector, k=n,
                                                 filters=filters)
        return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in nearest]
