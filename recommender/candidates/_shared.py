"""Reads shared by several sources: the filters a surface implies, and a user's positive seeds."""
from __future__ import annotations

from dataclasses import replace

from django.db import connection

from .base import AnnFilters, Context

# Positive feedback: a current rating of at least this value, a current like, or any purchase.
POSITIVE_RATING = 4.0


def source_filters(context: Context) -> AnnFilters:
    """The request's filters plus, on the homepage, the items the user has already seen.

    Pushing seen items into the index scan (rather than dropping them after) is what keeps
    a heavy rater's personal list full: 200 nearest items of a user who rated 300 are mostly seen.
    """
    if context.surface != "home" or not context.seen_item_ids:
        return context.filters
    return replace(context.filters,
                   exclude_item_ids=tuple(context.filters.exclude_item_ids) + tuple(sorted(context.seen_item_ids)))


def positive_seed_items(*, profile_id: int, limit: int) -> list[int]:
    """Items the user recently reacted to positively, newest first (at most ``limit``).

    Served by the feedback (user, -created_at) index; a re-rating below the threshold
    supersedes the old rating (``is_current``), so it no longer counts.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT item_id FROM catalog_feedback WHERE user_id = %s AND ("
            "  (kind_id = 'rating' AND is_current AND value >= %s) OR (kind_id = 'like' AND is_current)"
            "  OR kind_id = 'purchase') "
            "GROUP BY item_id ORDER BY max(created_at) DESC, item_id DESC LIMIT %s",
            [profile_id, POSITIVE_RATING, limit],
        )
        return [row[0] for row in cursor.fetchall()]


# Sources ask for different numbers of seeds (5, 50): one read of the largest serves them all.
SEEDS_READ = 50


def context_positive_seeds(context: Context, *, limit: int) -> list[int]:
    """`positive_seed_items` for the context's user, read once per request (memoised on the context)."""
    if context.profile_id is None:
        return []
    key = ("positive_seeds", context.profile_id)
    seeds = context.memo.get(key)
    if seeds is None or (len(seeds) < limit and seeds.read_limit < limit):
        read_limit = max(limit, SEEDS_READ)
        seeds = _SeedList(positive_seed_items(profile_id=context.profile_id, limit=read_limit))
        seeds.read_limit = read_limit
        context.memo[key] = seeds
    return list(seeds[:limit])


class _SeedList(list):
    read_limit: int = 0
