"""Personal ANN: the user's score vector against every item's score vector (LightFM's score)."""

from __future__ import annotations

from ._shared import source_filters
from .base import Candidate, Context


class PersonalAnnSource:
    """Nearest items by inner product with the bias coordinates, through the request's vector index.

    Needs ``context.user_vector`` (trained or folded in, provided by the pipeline) and an
    active version; returns [] without them.
    """

    name = "personal_ann"

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if context.version_id is None or context.user_vector is None or n < 1:
            return []
        nearest = context.vector_index.user_neighbours(context.user_vector, k=n, filters=source_filters(context))
        return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in nearest]
