"""Content-based: items sharing features with what the user liked (or with the seed item), by TF-IDF."""

from __future__ import annotations

from catalog.array_selectors import items_sharing_features

from ._catalogue import catalogue_memo
from ._shared import context_positive_seeds, source_filters
from .base import Candidate, Context

DEFAULT_LIKED_ITEMS = 50
# Only the profile's strongest features fan out to their postings: a user who liked 50 films
# touches every genre, and scanning all of them at 100k items would cost more than it adds.
DEFAULT_MAX_FEATURES = 20


class ContentBasedSource:
    """Score = sum over shared features f of profile(f) · idf(f)² · weight(item, f).

    profile(f) sums f's weight over the liked items (home: the user's recent positive items;
    related: the seed item); idf(f) = ln((1 + N) / (1 + df(f))) + 1 over the catalogue's item
    feature frequency, so a rare shared feature counts more than a common one. Everything is
    aggregated in one statement (`catalog.array_selectors.items_sharing_features`): only the
    postings of the profile's strongest features are read. A serving request computes the same
    from the process's catalogue copy (`_catalogue.CatalogueMemo.content_scores`) when it may.
    """

    name = "content_based"

    def __init__(self, liked_items: int = DEFAULT_LIKED_ITEMS, max_features: int = DEFAULT_MAX_FEATURES):
        self.liked_items = liked_items
        self.max_features = max_features

    def _seeds(self, context: Context) -> list[int]:
        if context.surface == "related":
            return [context.item_id] if context.item_id is not None else []
        if context.profile_id is None:
            return []
        return context_positive_seeds(context, limit=self.liked_items)

    def generate(self, context: Context, n: int) -> list[Candidate]:
        seeds = self._seeds(context)
        if not seeds or n < 1:
            return []
        reason = {"related_to_item_id": context.item_id} if context.surface == "related" else {}
        memo = catalogue_memo(generation=context.generation)
        if memo is not None:
            rows = memo.content_scores(
                seeds=seeds, filters=source_filters(context), max_features=self.max_features, n=n
            )
            return [Candidate(item_id=item_id, source=self.name, score=score, reason=reason) for item_id, score in rows]
        rows = items_sharing_features(
            seed_item_ids=seeds, max_features=self.max_features, n=n, filters=source_filters(context).item_filter()
        )
        return [Candidate(item_id=item_id, source=self.name, score=score, reason=reason) for item_id, score in rows]
