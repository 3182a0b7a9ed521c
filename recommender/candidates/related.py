"""Related items: the seed item's nearest neighbours by embedding, under ``context.measure``."""

from __future__ import annotations

from ._shared import source_filters
from .base import Candidate, Context


class RelatedSource:
    """Item → items for the related panel; the seed item itself is never returned."""

    name = "related"

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if context.version_id is None or context.item_id is None or n < 1:
            return []
        nearest = context.vector_index.item_neighbours(
            [context.item_id],
            k=n,
            filters=source_filters(context),
            measure=context.measure,
            alpha=context.norm_damping_alpha,
        )[context.item_id]
        reason = {"related_to_item_id": context.item_id}
        return [Candidate(item_id=item_id, source=self.name, score=score, reason=reason) for item_id, score in nearest]
