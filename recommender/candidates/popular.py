"""Popular: interactions within a window, each decayed by its age with a half-life."""

from __future__ import annotations

import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection

from catalog.array_selectors import feedback_newest_id, items_decayed_popularity, items_scored_filter

from ._shared import source_filters
from .base import Candidate, Context

# The aggregate is the same for every user: it is memoised per process for this many seconds of
# ``context.now`` and per newest feedback id, so a new interaction invalidates it at once.
CACHE_SECONDS = 60
# The memoised head of the list. Not a limit: when the request's filters leave fewer than n of it,
# the aggregate runs again with the filters inside (one query), so a narrow filter on a large
# catalogue still gets the most popular matching items.
CACHED_ITEMS = 5000


class PopularSource:
    """Score = sum over in-force, non-negative feedback in (now - window, now] of 0.5^(age / half-life).

    The window is relative to ``context.now`` (an offline evaluation passes its split time), and
    is served by the feedback (created_at, item) index. Superseded ratings do not count; kinds
    with a negative training weight (dislikes) are not popularity. Settings
    ``RECOMMENDER_POPULAR_WINDOW_DAYS`` and ``RECOMMENDER_POPULAR_HALF_LIFE_DAYS`` override the
    defaults. Request filters (active, features, seen items) apply to the aggregated top items.
    """

    name = "popular"

    def __init__(self, window_days: float | None = None, half_life_days: float | None = None):
        self.window_days = float(window_days if window_days is not None else settings.RECOMMENDER_POPULAR_WINDOW_DAYS)
        self.half_life_days = float(
            half_life_days if half_life_days is not None else settings.RECOMMENDER_POPULAR_HALF_LIFE_DAYS
        )
        self._cache: dict[tuple, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def decayed_popularity(self, *, now, newest_feedback: int | None = None) -> tuple[list[int], list[float]]:
        """(item ids, scores) of the top CACHED_ITEMS items by decayed popularity at ``now``, best first.

        ``newest_feedback`` is the log's newest id when the caller already read it this request.
        """
        if newest_feedback is None:
            newest_feedback = feedback_newest_id()
        key = (
            connection.settings_dict["NAME"],
            self.window_days,
            self.half_life_days,
            int(now.timestamp()) // CACHE_SECONDS,
            newest_feedback,
        )
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = items_decayed_popularity(
            now=now,
            since=now - timedelta(days=self.window_days),
            half_life_seconds=self.half_life_days * 86400.0,
            limit=CACHED_ITEMS,
        )
        with self._lock:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = result
        return result

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if n < 1:
            return []
        item_ids, scores = self.decayed_popularity(
            now=context.now, newest_feedback=context.memo.get("newest_feedback_id")
        )
        if not item_ids:
            return []
        extra = (context.item_id,) if context.item_id is not None else ()
        filters = source_filters(context)
        # Filter a head of the list first (the filters probe every row they see); only when it
        # filtered too much is the whole cached list filtered.
        head = 4 * (n + len(filters.exclude_item_ids)) + 200
        for size in (head, len(item_ids)) if head < len(item_ids) else (len(item_ids),):
            rows = items_scored_filter(
                item_ids=item_ids[:size], scores=scores[:size], n=n, filters=filters.item_filter(extra)
            )
            if len(rows) >= n:
                break
        if len(rows) < n and len(item_ids) >= CACHED_ITEMS:
            matching, matching_scores = items_decayed_popularity(
                now=context.now,
                since=context.now - timedelta(days=self.window_days),
                half_life_seconds=self.half_life_days * 86400.0,
                limit=n,
                filters=filters.item_filter(extra),
            )
            rows = list(zip(matching, matching_scores, strict=True))
        return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in rows]
