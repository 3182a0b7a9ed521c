"""Fresh: the newest published items, so new items get exposure before anyone interacts with them."""

from __future__ import annotations

from catalog.array_selectors import items_newest

from ._catalogue import catalogue_memo
from ._shared import source_filters
from .base import Candidate, Context


class FreshSource:
    """Items by ``published_at`` descending (never in the future of ``context.now``).

    Score = 1 / (1 + age in days), so the newest item scores near 1. Served by the
    ``published_at`` index read backwards.
    """

    name = "fresh"

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if n < 1:
            return []
        extra = (context.item_id,) if context.item_id is not None else ()
        memo = catalogue_memo(generation=context.generation)
        if memo is not None:  # the same answer from the process's catalogue copy (see _catalogue)
            rows = memo.fresh(
                now_epoch=context.now.timestamp(), filters=source_filters(context), excluded_ids=extra, n=n
            )
            return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in rows]
        rows = items_newest(now=context.now, n=n, filters=source_filters(context).item_filter(extra))
        return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in rows]
