"""Reads shared by several sources: the filters a surface implies, and a user's positive seeds."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np
from django.db import connection
from psycopg import sql

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
            f"SELECT item_id FROM catalog_feedback WHERE user_id = %s AND ({_POSITIVE}) "
            "GROUP BY item_id ORDER BY max(created_at) DESC, item_id DESC LIMIT %s",
            [profile_id, POSITIVE_RATING, limit],
        )
        return [row[0] for row in cursor.fetchall()]


_POSITIVE = ("(kind_id = 'rating' AND is_current AND value >= %s) OR (kind_id = 'like' AND is_current) "
             "OR kind_id = 'purchase'")


@dataclass(frozen=True)
class FeedbackSummary:
    """What serving needs from one user's feedback, read in one round trip (`user_feedback_summary`)."""

    seen_item_ids: frozenset[int]  # items with in-force feedback (any kind)
    positive_item_ids: list[int]  # every positive item, newest first (as `positive_seed_items`)
    newest_feedback_id: int  # the whole log's newest id (the popular source's freshness key)
    user_vector: np.ndarray | None = None  # the stored score vector, when a user table was given and has one


def user_feedback_summary(*, profile_id: int, user_vectors_table: str | None = None) -> FeedbackSummary:
    """The user's seen items, all their positive seeds, the log's newest id (and stored vector), in ONE statement.

    Replaces four round trips per homepage request (seen items, positive seeds, newest id, the
    user's vector). One grouped pass over the user's rows on the feedback (user, ...) index; the
    seed order is ranked in SQL so no timestamps travel; the scalars come once, in a header row.
    """
    vector = (sql.SQL("(SELECT score_vector::real[] FROM {} WHERE profile_id = %(profile)s)").format(
        sql.Identifier(user_vectors_table)) if user_vectors_table else sql.SQL("NULL::real[]"))
    statement = sql.SQL(
        "WITH mine AS (SELECT item_id, bool_or(is_current OR is_current IS NULL) AS seen, "
        "  max(created_at) FILTER (WHERE " + _POSITIVE.replace("%s", "%(rating)s") + ") AS liked_at "
        "  FROM catalog_feedback WHERE user_id = %(profile)s GROUP BY item_id) "
        "SELECT item_id, seen, liked, newest, vector FROM ("
        "  SELECT 0 AS part, NULL::timestamptz AS liked_at, NULL::bigint AS item_id, NULL::boolean AS seen, "
        "    false AS liked, (SELECT coalesce(max(id), 0) FROM catalog_feedback) AS newest, {vector} AS vector "
        "  UNION ALL SELECT 1, liked_at, item_id, seen, liked_at IS NOT NULL, NULL, NULL FROM mine"
        ") summary ORDER BY part, liked_at DESC NULLS LAST, item_id DESC").format(vector=vector)
    with connection.cursor() as cursor:
        cursor.execute(statement.as_string(cursor.connection), {"rating": POSITIVE_RATING, "profile": profile_id})
        header, *rows = cursor.fetchall()
    return FeedbackSummary(
        seen_item_ids=frozenset(row[0] for row in rows if row[1]),
        positive_item_ids=[row[0] for row in rows if row[2]],
        newest_feedback_id=int(header[3]),
        user_vector=None if header[4] is None else np.asarray(header[4], dtype=np.float32),
    )


def context_feedback_prime(context: Context, summary: FeedbackSummary) -> None:
    """Put a `FeedbackSummary` into the context's memo: sources then read no feedback themselves."""
    if context.profile_id is not None:
        seeds = _SeedList(summary.positive_item_ids)
        seeds.read_limit = sys.maxsize  # every positive item is in it: never re-read
        context.memo[("positive_seeds", context.profile_id)] = seeds
    context.memo["newest_feedback_id"] = summary.newest_feedback_id


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
