"""Exact nearest-neighbour answers in process, over a memoised copy of a version's item vectors.

Serving only. Up to ``MEMO_MAX_ITEMS`` items, each process keeps the active version's item
vectors as numpy arrays (one copy, keyed by the database's ``global`` cache generation, so it
is never stale) and answers the personal-ANN and because-you-liked queries, and the scorer's
lookups, exactly and without a round trip. Same contracts as the SQL functions of
`recommender.ann`, which every caller falls back to when this returns None (a feature filter,
a transaction, too many items).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from recommender.candidates.base import AnnFilters, Measure
from recommender.ml.similarity import MEASURES, SimilarityError, similarity
from recommender.vectors import VersionTables, _binary_cursor, _raw_connection

logger = logging.getLogger(__name__)

# Up to this many items a version's vectors are kept per process and scanned exactly with numpy:
# five "because you liked" seeds cost ~0.1 ms instead of five SQL round trips (~3 ms at ml-100k,
# where the planner picks exact scans anyway), and the scorer needs no vector query. Larger
# catalogues use the SQL path (HNSW indexes), whose cost grows slower than a per-process copy's
# memory and reload.
MEMO_MAX_ITEMS = 20_000


@dataclass(frozen=True)
class VersionVectors:
    """A version's item vectors as numpy arrays, with each item's ``is_active`` at load time."""

    version_id: int
    item_ids: np.ndarray  # (n,) int64
    row_of: dict[int, int]  # item id -> row
    score_vectors: np.ndarray  # (n, d + 2 | d + 3) float32: [v, b, 1(, MIPS)]
    embeddings: np.ndarray  # (n, d) float32: bare representations
    active: np.ndarray  # (n,) bool

    def rows(self, item_ids) -> tuple[np.ndarray, np.ndarray]:
        """(item ids that have a row, their rows), in the given order."""
        pairs = [(item_id, self.row_of[item_id]) for item_id in item_ids if item_id in self.row_of]
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ids, rows = zip(*pairs)
        return np.asarray(ids, dtype=np.int64), np.asarray(rows, dtype=np.int64)


_TOO_MANY = object()
_vectors_memo: dict = {"key": None, "value": None}
_vectors_memo_lock = threading.Lock()


def version_vectors(*, version_id: int, generation: int | None) -> VersionVectors | None:
    """The memoised vectors of ``version_id`` for the ``global`` cache ``generation``, or None.

    Every change that can alter an item vector or an item's ``is_active`` (cold start, item
    save, activation) bumps the generation after it commits, so a copy keyed by it is never
    stale for a caller that read the generation first. None (use SQL) when no generation was
    read, inside a transaction (its own uncommitted writes have not bumped anything yet: tests,
    evaluation, ATOMIC_REQUESTS) and above ``MEMO_MAX_ITEMS`` items.
    """
    from django.db import connection

    if generation is None or connection.in_atomic_block:
        return None
    key = (connection.settings_dict["NAME"], int(version_id), int(generation))
    with _vectors_memo_lock:
        if _vectors_memo["key"] == key:
            value = _vectors_memo["value"]
            return None if value is _TOO_MANY else value
    value = _version_vectors_load(int(version_id))
    with _vectors_memo_lock:
        _vectors_memo.update(key=key, value=_TOO_MANY if value is None else value)
    return value


def _version_vectors_load(version_id: int) -> VersionVectors | None:
    started = time.perf_counter()
    table = sql.Identifier(VersionTables(version_id).items)
    raw = _raw_connection()
    with _binary_cursor(raw) as cursor:
        cursor.execute(sql.SQL("SELECT v.item_id, v.score_vector, v.embedding, coalesce(i.is_active, false) "
                               "FROM {} v LEFT JOIN catalog_item i ON i.id = v.item_id ORDER BY v.item_id "
                               "LIMIT %s").format(table), [MEMO_MAX_ITEMS + 1], binary=True)
        rows = cursor.fetchall()
    if len(rows) > MEMO_MAX_ITEMS:
        logger.info("ann.vectors_memo_skipped version=%s reason=too_many_items", version_id)
        return None
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    memo = VersionVectors(
        version_id=version_id, item_ids=ids, row_of={int(item_id): row for row, item_id in enumerate(ids.tolist())},
        score_vectors=_stack([row[1] for row in rows]), embeddings=_stack([row[2] for row in rows]),
        active=np.fromiter((bool(row[3]) for row in rows), dtype=bool, count=len(rows)))
    logger.info("ann.vectors_memo_loaded version=%s items=%s ms=%.1f", version_id, len(ids),
                1000 * (time.perf_counter() - started))
    return memo


def _stack(values) -> np.ndarray:
    if not values:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([value.to_numpy() for value in values]).astype(np.float32, copy=False)


def context_vectors(context) -> VersionVectors | None:
    """`version_vectors` for a request's Context (generation from ``context.memo``), looked up once."""
    if context.version_id is None:
        return None
    key = ("version_vectors", context.version_id)
    if key not in context.memo:
        context.memo[key] = version_vectors(version_id=context.version_id,
                                            generation=context.memo.get("global_generation"))
    return context.memo[key]


def _memo_allowed(memo: VersionVectors, filters: AnnFilters, extra_excluded_ids=()) -> np.ndarray | None:
    """Rows passing ``filters`` (as `filter_clauses`), or None when a filter needs features (SQL path)."""
    if filters.exclude_feature_ids or filters.require_feature_ids:
        return None
    allowed = memo.active.copy() if filters.active_only else np.ones(len(memo.item_ids), dtype=bool)
    _, excluded_rows = memo.rows(tuple(filters.exclude_item_ids) + tuple(extra_excluded_ids))
    allowed[excluded_rows] = False
    return allowed


def _top_rows(scores: np.ndarray, ids: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best allowed scores, ordered by score descending then item id (as the SQL)."""
    candidates = np.flatnonzero(allowed)
    if len(candidates) > k:
        # Partition to the k-th best, then keep every tie of it so the id tie-break stays exact.
        kth = np.partition(scores[candidates], len(candidates) - k)[len(candidates) - k]
        candidates = candidates[scores[candidates] >= kth]
    order = np.lexsort((ids[candidates], -scores[candidates]))[:k]
    return candidates[order]


def nearest_items_for_user_memo(
    *, memo: VersionVectors, user_vector: np.ndarray, k: int, filters: AnnFilters | None = None,
) -> list[tuple[int, float]] | None:
    """`nearest_items_for_user` answered exactly from a `VersionVectors` memo; None when it cannot be.

    At ml-100k size the planner answers the filtered top-200 with an exact scan anyway (no HNSW
    scan), so this is the same answer without the round trip, the statement and its parsing.
    """
    allowed = _memo_allowed(memo, filters or AnnFilters())
    if allowed is None:
        return None
    if k < 1 or len(memo.item_ids) == 0:
        return []
    scores = memo.score_vectors.astype(np.float64) @ np.asarray(user_vector, dtype=np.float64)
    rows = _top_rows(scores, memo.item_ids, allowed, k)
    return list(zip(memo.item_ids[rows].tolist(), scores[rows].tolist()))


def nearest_items_to_items_memo(
    *, memo: VersionVectors, item_ids: list[int], k: int, filters: AnnFilters | None = None,
    measure: Measure = "cosine", alpha: float = 0.5,
) -> dict[int, list[tuple[int, float]]] | None:
    """`nearest_items_to_items` answered exactly from a `VersionVectors` memo; None when it cannot be.

    Same contract: every seed excluded from every list, seeds without a vector map to [], scores
    follow `recommender.ml.similarity` (larger is more similar), ties broken by item id.
    """
    if measure not in MEASURES:
        raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
    seeds = [int(item_id) for item_id in dict.fromkeys(item_ids)]
    filters = filters or AnnFilters()
    allowed = _memo_allowed(memo, filters, seeds)
    if allowed is None:
        return None
    found: dict[int, list[tuple[int, float]]] = {seed: [] for seed in seeds}
    present, seed_rows = memo.rows(seeds)
    if k < 1 or len(present) == 0:
        return found
    scores = similarity(memo.embeddings[seed_rows], memo.embeddings, measure, alpha=alpha)
    for seed, seed_scores in zip(present.tolist(), np.atleast_2d(scores)):
        rows = _top_rows(seed_scores, memo.item_ids, allowed, k)
        found[seed] = list(zip(memo.item_ids[rows].tolist(), seed_scores[rows].tolist()))
    return found
