"""Candidates from a model family of the active version's stack (`recommender/stacking.py`).

One source per non-vector family (EASE, ALS, …): the family folds in the user's live history
(`ModelFamily.score_history`) and nominates its top unseen items. The scores are kept in the
request memo, so the scorer reuses them for the ranker's features instead of computing them
twice. A version without a stack, or whose stack lacks the family, nominates nothing.
"""

from __future__ import annotations

import numpy as np

from catalog.array_selectors import items_scored_filter
from recommender.ml.similarity import top_k

from ._catalogue import catalogue_memo
from ._shared import source_filters
from .base import Candidate, Context

# Nominations over-fetched before the catalogue's filters (inactive, provider…) drop some.
_OVERFETCH = 3


class FamilySource:
    def __init__(self, family: str) -> None:
        self.family = family
        self.name = family

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if context.version_id is None or context.profile_id is None or context.surface != "home":
            return []
        from recommender.stacking import user_history, version_stack

        stack = version_stack(context.version_id)
        if stack is None or stack.families.get(self.family) is None:
            return []
        history = user_history(context=context, stack=stack)
        if not (history.preferences > 0).any():
            return []
        scores = stack.family_scores(self.family, history, context.memo)
        item_ids = stack.item_ids.ids
        exclude = np.zeros(len(scores), dtype=bool)
        if context.seen_item_ids:
            seen = stack.item_ids.index_of(np.fromiter(context.seen_item_ids, dtype=np.int64), missing=-1)
            exclude[seen[seen >= 0]] = True
        filters = source_filters(context)
        memo = catalogue_memo(generation=context.generation)
        if memo is not None:
            # The process's catalogue copy answers the filters without a round trip.
            allowed = memo.allowed(filters)
            rows_of = stack.catalogue_rows(memo.item_ids)
            exclude |= rows_of < 0
            exclude[rows_of >= 0] |= ~allowed[rows_of[rows_of >= 0]]
            chosen = top_k(scores, n, exclude=exclude)
            # .tolist() converts in C; indexing element by element cost ~1 ms a request for 300.
            pairs = zip(item_ids[chosen].tolist(), scores[chosen].tolist(), strict=True)
            return [Candidate(item_id, self.name, score) for item_id, score in pairs]
        chosen = top_k(scores, n * _OVERFETCH, exclude=exclude)
        rows = items_scored_filter(
            item_ids=item_ids[chosen].tolist(),
            scores=scores[chosen].tolist(),
            n=n,
            filters=filters.item_filter(),
        )
        return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in rows]
