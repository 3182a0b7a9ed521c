"""Reads shared by several sources: the filters a surface implies, and a user's positive seeds."""

from __future__ import annotations

import sys
from dataclasses import replace

from catalog.array_selectors import UserFeedbackSummary, user_positive_item_ids
from recommender.vectors.base import AnnFilters

from .base import Context


def source_filters(context: Context) -> AnnFilters:
    """The request's filters plus, on the homepage, the items the user has already seen.

    Pushing seen items into the index scan (rather than dropping them after) is what keeps
    a heavy rater's personal list full: 200 nearest items of a user who rated 300 are mostly seen.
    """
    if context.surface != "home" or not context.seen_item_ids:
        return context.filters
    return replace(
        context.filters, exclude_item_ids=tuple(context.filters.exclude_item_ids) + tuple(sorted(context.seen_item_ids))
    )


def context_feedback_prime(context: Context, summary: UserFeedbackSummary) -> None:
    """Put a user's feedback summary into the context's memo: sources then read no feedback themselves."""
    if context.profile_id is not None:
        seeds = _SeedList(summary.positive_item_ids)
        seeds.read_limit = sys.maxsize  # every positive item is in it: never re-read
        context.memo[("positive_seeds", context.profile_id)] = seeds
    context.memo["newest_feedback_id"] = summary.newest_feedback_id


# Sources ask for different numbers of seeds (5, 50): one read of the largest serves them all.
SEEDS_READ = 50


def context_positive_seeds(context: Context, *, limit: int) -> list[int]:
    """`user_positive_item_ids` for the context's user, read once per request (memoised on the context)."""
    if context.profile_id is None:
        return []
    key = ("positive_seeds", context.profile_id)
    seeds = context.memo.get(key)
    if seeds is None or (len(seeds) < limit and seeds.read_limit < limit):
        read_limit = max(limit, SEEDS_READ)
        seeds = _SeedList(user_positive_item_ids(profile_id=context.profile_id, limit=read_limit))
        seeds.read_limit = read_limit
        context.memo[key] = seeds
    return list(seeds[:limit])


class _SeedList(list):
    read_limit: int = 0
