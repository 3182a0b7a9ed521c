"""Candidates from a vector family's own space: its query computed now, its items found by ANN.

One source per vector family (`families.base.VectorFamily`, e.g. the two-tower model) of the active
version's stack. Training published the family's item vectors as their own pgvector space
(`recommender.vectors.store`); this source asks that space, through the request's vector index
(`Context.space_index`), like the personal ANN asks LightFM's.

- **Homepage:** the family's query tower runs on the user's live history and side features at
  request time, so a rating moves the query at the next request without fold-in or a stored user
  vector; a new user with features and a few ratings gets candidates at once.
- **Related panel:** the seed item's nearest items in the family's space. Items added after
  training are in that space from their features (`recommender.services.realtime`), so they can be
  nominated next to similar items without retraining.

A version without a stack, or whose stack lacks the family, nominates nothing.
"""

from __future__ import annotations

from catalog.array_selectors import user_feature_weights
from recommender.ml.families import VectorFamily

from ._shared import source_filters
from .base import Candidate, Context


class FamilyAnnSource:
    def __init__(self, family: str) -> None:
        self.family = family
        self.name = family

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if context.version_id is None or n < 1:
            return []
        from recommender.stacking import user_history, version_stack

        stack = version_stack(context.version_id)
        family = None if stack is None else stack.families.get(self.family)
        if stack is None or not isinstance(family, VectorFamily):
            return []
        index = context.space_index(self.family)
        filters = source_filters(context)
        if context.surface == "related":
            if context.item_id is None:
                return []
            # The family's vectors have unit norm: 'dot' is their cosine, on the inner-product index.
            nearest = index.item_neighbours([context.item_id], k=n, filters=filters, measure="dot")[context.item_id]
            reason = {"related_to_item_id": context.item_id}
            return [Candidate(item_id=i, source=self.name, score=score, reason=reason) for i, score in nearest]
        if context.profile_id is None:
            return []
        history = user_history(context=context, stack=stack)
        side = user_feature_weights(profile_id=context.profile_id)
        if not (history.preferences > 0).any() and not side:
            return []  # nothing to place the user by: the tower's answer would be everyone's
        query = family.query_vector(history.items, history.confidences, history.preferences, side_features=side)
        context.memo[("family_query", self.family)] = query  # the scorer's column reuses it (stacking)
        nearest = index.user_neighbours(query, k=n, filters=filters)
        return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in nearest]
