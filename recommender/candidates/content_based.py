"""Content-based: items sharing features with what the user liked (or with the seed item), by TF-IDF."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
from django.db import connection
from psycopg import sql
from scipy import sparse

from recommender import ann

from ._shared import context_positive_seeds, source_filters
from .base import Candidate, Context

logger = logging.getLogger(__name__)

DEFAULT_LIKED_ITEMS = 50
# Only the profile's strongest features fan out to their postings: a user who liked 50 films
# touches every genre, and scanning all of them at 100k items would cost more than it adds.
DEFAULT_MAX_FEATURES = 20


class ContentBasedSource:
    """Score = sum over shared features f of profile(f) · idf(f)² · weight(item, f).

    profile(f) sums f's weight over the liked items (home: the user's recent positive items;
    related: the seed item); idf(f) = ln((1 + N) / (1 + df(f))) + 1 over the catalogue's item
    feature frequency, so a rare shared feature counts more than a common one. Everything is
    aggregated in one SQL statement on the (feature, item) index: only the postings of the
    profile's strongest features are read.
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
        memo = item_features_memo(generation=context.memo.get("global_generation"))
        if memo is not None:
            rows = memo.scores(seeds=seeds, filters=source_filters(context), max_features=self.max_features, n=n)
            return [Candidate(item_id=item_id, source=self.name, score=score, reason=reason) for item_id, score in rows]
        clauses, params = ann.filter_clauses(source_filters(context), item_column="f.item_id",
                                         extra_excluded_ids=tuple(seeds))
        where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")
        statement = sql.SQL("""
            WITH catalogue AS (SELECT count(*) AS n_items FROM catalog_item), profile AS (
                SELECT f.feature_id, sum(f.weight) AS weight FROM catalog_itemfeature f
                WHERE f.item_id = ANY(%(seeds)s::bigint[]) GROUP BY f.feature_id
            ), weighted AS (
                SELECT p.feature_id,
                       p.weight * power(ln((1.0 + catalogue.n_items) / (1.0 + d.df)) + 1.0, 2) AS weight
                FROM profile p CROSS JOIN catalogue
                CROSS JOIN LATERAL (SELECT count(*) AS df FROM catalog_itemfeature c
                                    WHERE c.feature_id = p.feature_id) d
                ORDER BY weight DESC, p.feature_id LIMIT %(max_features)s
            )
            SELECT f.item_id, sum(w.weight * f.weight) AS score
            FROM weighted w JOIN catalog_itemfeature f ON f.feature_id = w.feature_id
            WHERE {where}
            GROUP BY f.item_id ORDER BY score DESC, f.item_id LIMIT %(n)s
        """).format(where=where)
        with connection.cursor() as cursor:
            params.update(seeds=seeds, max_features=self.max_features, n=n)
            cursor.execute(statement.as_string(cursor.connection), params)
            rows = cursor.fetchall()
        return [Candidate(item_id=item_id, source=self.name, score=float(score), reason=reason)
                for item_id, score in rows]


# --------------------------------------------------------------------------------------------
# The same score in process, from a per-process copy of the item-feature postings
# --------------------------------------------------------------------------------------------
# Up to this many postings (item-feature links) the catalogue's features are kept per process:
# the SQL statement above costs ~3 ms at ml-100k (planning, the df counts, the aggregation),
# the sparse product ~0.2 ms. Larger catalogues keep the SQL path.
MEMO_MAX_POSTINGS = 500_000


class ItemFeatureMemo:
    """Item-feature weights as a sparse matrix (items x features), with ``is_active`` and df."""

    def __init__(self, *, item_ids: np.ndarray, active: np.ndarray, feature_ids: np.ndarray,
                 matrix: sparse.csr_matrix, n_items: int):
        self.item_ids = item_ids
        self.active = active
        self.feature_ids = feature_ids
        self.row_of = {int(item_id): row for row, item_id in enumerate(item_ids.tolist())}
        self.column_of = {int(feature_id): column for column, feature_id in enumerate(feature_ids.tolist())}
        self.rows_matrix = matrix.tocsr()
        self.columns_matrix = matrix.tocsc()
        self.df = np.diff(self.columns_matrix.indptr).astype(np.float64)
        self.n_items = n_items

    def _has_any(self, feature_ids) -> np.ndarray:
        columns = [self.column_of[int(f)] for f in feature_ids if int(f) in self.column_of]
        if not columns:
            return np.zeros(len(self.item_ids), dtype=bool)
        return self.columns_matrix[:, columns].getnnz(axis=1) > 0

    def scores(self, *, seeds: list[int], filters, max_features: int, n: int) -> list[tuple[int, float]]:
        """`ContentBasedSource`'s statement, computed here: [(item_id, score)] best first, ties by item id."""
        seed_rows = [self.row_of[seed] for seed in seeds if seed in self.row_of]
        if not seed_rows:
            return []
        liked = self.rows_matrix[seed_rows]
        n_features = len(self.feature_ids)
        profile = np.bincount(liked.indices, weights=liked.data, minlength=n_features)
        present = np.flatnonzero(np.bincount(liked.indices, minlength=n_features))
        idf = np.log((1.0 + self.n_items) / (1.0 + self.df[present])) + 1.0
        weights = profile[present] * idf * idf
        order = np.lexsort((self.feature_ids[present], -weights))[:max_features]
        top, top_weights = present[order], weights[order]
        block = self.columns_matrix[:, top]
        score = block @ top_weights
        allowed = block.getnnz(axis=1) > 0
        if filters.active_only:
            allowed &= self.active
        if filters.exclude_feature_ids:
            allowed &= ~self._has_any(filters.exclude_feature_ids)
        if filters.require_feature_ids:
            allowed &= self._has_any(filters.require_feature_ids)
        excluded = [self.row_of[i] for i in tuple(filters.exclude_item_ids) + tuple(seeds) if i in self.row_of]
        allowed[excluded] = False
        candidates = np.flatnonzero(allowed)
        ranked = candidates[np.lexsort((self.item_ids[candidates], -score[candidates]))][:n]
        return list(zip(self.item_ids[ranked].tolist(), score[ranked].tolist()))


_TOO_MANY = object()
_memo: dict = {"key": None, "value": None}
_memo_lock = threading.Lock()


def item_features_memo(*, generation: int | None) -> ItemFeatureMemo | None:
    """The process's `ItemFeatureMemo` for the ``global`` cache ``generation``, or None (use SQL).

    Item saves (features included) bump the generation after they commit, so a copy keyed by it
    is current for a request that read the generation first. None without a generation, inside
    a transaction (its uncommitted writes bumped nothing yet) and above ``MEMO_MAX_POSTINGS``.
    """
    if generation is None or connection.in_atomic_block:
        return None
    key = (connection.settings_dict["NAME"], int(generation))
    with _memo_lock:
        if _memo["key"] == key:
            value = _memo["value"]
            return None if value is _TOO_MANY else value
    value = _memo_load()
    with _memo_lock:
        _memo.update(key=key, value=_TOO_MANY if value is None else value)
    return value


def _memo_load() -> ItemFeatureMemo | None:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT item_id, feature_id, weight FROM catalog_itemfeature LIMIT %s", [MEMO_MAX_POSTINGS + 1])
        postings = cursor.fetchall()
        if len(postings) > MEMO_MAX_POSTINGS:
            logger.info("content_based.memo_skipped reason=too_many_postings")
            return None
        cursor.execute("SELECT id, is_active FROM catalog_item ORDER BY id")
        items = cursor.fetchall()
    item_ids = np.fromiter((row[0] for row in items), dtype=np.int64, count=len(items))
    active = np.fromiter((bool(row[1]) for row in items), dtype=bool, count=len(items))
    row_of = {int(item_id): row for row, item_id in enumerate(item_ids.tolist())}
    feature_ids = np.unique(np.fromiter((row[1] for row in postings), dtype=np.int64, count=len(postings)))
    column_of = {int(feature_id): column for column, feature_id in enumerate(feature_ids.tolist())}
    matrix = sparse.csr_matrix(
        (np.fromiter((row[2] for row in postings), dtype=np.float64, count=len(postings)),
         (np.fromiter((row_of[row[0]] for row in postings), dtype=np.int64, count=len(postings)),
          np.fromiter((column_of[row[1]] for row in postings), dtype=np.int64, count=len(postings)))),
        shape=(len(item_ids), len(feature_ids)))
    memo = ItemFeatureMemo(item_ids=item_ids, active=active, feature_ids=feature_ids, matrix=matrix,
                           n_items=len(item_ids))
    logger.info("content_based.memo_loaded items=%s postings=%s ms=%.1f", len(item_ids), len(postings),
                1000 * (time.perf_counter() - started))
    return memo
