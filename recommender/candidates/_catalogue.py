"""A per-process copy of the catalogue that serving sources scan in memory: items (active,
published) and their feature postings, for as long as the ``global`` cache generation holds.

At ml-100k the content-based statement costs ~3 ms (planning, df counts, aggregation) and the
fresh one ~1 ms; the same answers from this copy cost a fraction of a millisecond. Every item
change (features and ``is_active`` included) bumps the generation after it commits, so a copy
keyed by it is current for a request that read the generation first (`recommender.memo`).
Inside a transaction (tests, evaluation, ATOMIC_REQUESTS) and above
``settings.CATALOGUE_COPY_BUDGET_BYTES`` the sources keep their SQL.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from django.conf import settings
from scipy import sparse

from catalog.array_selectors import item_feature_postings, item_states
from recommender.memo import GenerationMemo
from recommender.ml.similarity import top_k

logger = logging.getLogger(__name__)


class CatalogueMemo:
    """Every item (``is_active``, ``published_at``) and the item-feature weights as a sparse matrix."""

    def __init__(
        self,
        *,
        item_ids: np.ndarray,
        active: np.ndarray,
        published: np.ndarray,
        feature_ids: np.ndarray,
        matrix: sparse.csr_matrix,
        n_items: int,
    ):
        self.item_ids = item_ids  # (n,) int64, ascending
        self.active = active  # (n,) bool
        self.published = published  # (n,) float64 unix seconds, NaN when unpublished
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

    def allowed(self, filters, excluded_ids=()) -> np.ndarray:
        """Rows passing ``filters`` (as `catalog.sql.item_filter_clauses`) and not in ``excluded_ids``."""
        allowed = self.active.copy() if filters.active_only else np.ones(len(self.item_ids), dtype=bool)
        if filters.exclude_feature_ids:
            allowed &= ~self._has_any(filters.exclude_feature_ids)
        if filters.require_feature_ids:
            allowed &= self._has_any(filters.require_feature_ids)
        excluded = [self.row_of[i] for i in tuple(filters.exclude_item_ids) + tuple(excluded_ids) if i in self.row_of]
        allowed[excluded] = False
        return allowed

    def content_scores(self, *, seeds: list[int], filters, max_features: int, n: int) -> list[tuple[int, float]]:
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
        allowed = (block.getnnz(axis=1) > 0) & self.allowed(filters, seeds)
        ranked = _best(np.where(allowed, score, -np.inf), allowed, n)  # rows are in item id order
        return list(zip(self.item_ids[ranked].tolist(), score[ranked].tolist(), strict=True))

    def fresh(self, *, now_epoch: float, filters, excluded_ids=(), n: int) -> list[tuple[int, float]]:
        """`FreshSource`'s statement, computed here: newest published (not after now) first, ties by id desc."""
        with np.errstate(invalid="ignore"):
            allowed = self.allowed(filters, excluded_ids) & (self.published <= now_epoch)  # NaN compares False
        # Ties by id descending: ranked over the rows reversed, where a lower index is a larger id.
        reversed_rows = _best(np.where(allowed, self.published, -np.inf)[::-1], allowed[::-1], n)
        ranked = len(allowed) - 1 - reversed_rows
        ages = (now_epoch - self.published[ranked]) / 86400.0
        return list(zip(self.item_ids[ranked].tolist(), (1.0 / (1.0 + ages)).tolist(), strict=True))


def _best(scores: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` largest allowed scores, best first, ties by lower row: a selection, not a
    sort of every candidate (at a million items a lexsort of the candidates cost ~40 ms a request)."""
    if n < 1 or not allowed.any():
        return np.zeros(0, dtype=np.int64)
    chosen = top_k(scores, min(int(n), int(allowed.sum())))
    return chosen[allowed[chosen]]


def catalogue_copy_load(_key: None = None) -> CatalogueMemo | None:
    """Read every item and posting into a `CatalogueMemo`; None when they exceed the budget."""
    started = time.perf_counter()
    budget = settings.CATALOGUE_COPY_BUDGET_BYTES
    # Per item: id, active flag, publication time and its row entries; per posting: its weight and
    # indices, once in CSR and once in CSC.
    states = item_states(limit=budget // ITEM_BYTES)
    postings = item_feature_postings(limit=budget // POSTING_BYTES) if states is not None else None
    if states is None or postings is None or len(states[0]) * ITEM_BYTES + len(postings[0]) * POSTING_BYTES > budget:
        logger.info("candidates.catalogue_copy_over_budget budget_bytes=%s", budget)
        return None
    item_ids, active, published = states
    posting_items, posting_features, posting_weights = postings
    # An item created between the two reads has postings but no row yet: left out until the next
    # generation (its creation bumps it).
    rows = np.searchsorted(item_ids, posting_items)
    known = (
        (rows < len(item_ids)) & (item_ids[np.minimum(rows, len(item_ids) - 1)] == posting_items)
        if len(item_ids)
        else np.zeros(len(posting_items), dtype=bool)
    )
    feature_ids, columns = np.unique(posting_features[known], return_inverse=True)
    matrix = sparse.csr_matrix(
        (posting_weights[known], (rows[known], columns)), shape=(len(item_ids), len(feature_ids))
    )
    memo = CatalogueMemo(
        item_ids=item_ids,
        active=active,
        published=published,
        feature_ids=feature_ids,
        matrix=matrix,
        n_items=len(item_ids),
    )
    logger.info(
        "candidates.catalogue_copy_loaded items=%s postings=%s ms=%.1f",
        len(item_ids),
        int(known.sum()),
        1000 * (time.perf_counter() - started),
    )
    return memo


ITEM_BYTES = 8 + 1 + 8 + 2 * 8
POSTING_BYTES = 2 * (8 + 8 + 8)
CATALOGUE_COPY = GenerationMemo("catalogue_copy", catalogue_copy_load, max_entries=1)


def catalogue_memo(*, generation: int | None) -> CatalogueMemo | None:
    """The process's `CatalogueMemo` for the ``global`` cache ``generation``, or None (use SQL).

    Item saves (features included) bump the generation after they commit, so a copy keyed by it
    is current for a request that read the generation first. None without a generation, inside
    a transaction (its uncommitted writes bumped nothing yet) and above the
    ``CATALOGUE_COPY_BUDGET_BYTES`` budget.
    """
    if not CATALOGUE_COPY.usable(generation):
        return None
    return CATALOGUE_COPY.get(None, generation=generation)
