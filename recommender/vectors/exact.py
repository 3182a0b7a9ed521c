"""`ExactIndex`: the vector index answered in process, exactly, from a copy of a version's vectors.

Serving only. While a version's item vectors fit ``settings.VECTOR_EXACT_INDEX_BUDGET_BYTES``
(the bytes one exact query scans: score vectors and embeddings), each process keeps them as
numpy arrays in a `GenerationMemo` (keyed by the database's ``global`` generation, so never
stale) and answers the personal, item-to-item and scorer queries with numpy and without a round
trip: at ml-100k size the planner scans exactly anyway, so this is the same answer without the
statement. Larger versions are answered by `PgvectorIndex` (HNSW), whose cost grows slower than
a scan's. Feature filters need the catalogue's postings, which this copy does not hold: such
queries go to the fallback index this one was built with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from psycopg import sql

from catalog.sql import ITEM_TABLE
from recommender.memo import GenerationMemo
from recommender.ml.similarity import MEASURES, SimilarityError, similarity, top_k

from .base import AnnFilters, Measure, Neighbours, VectorIndex
from .connection import binary_cursor, raw_connection, vectors_stack
from .store import VersionTables

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionVectors:
    """A version's item vectors as numpy arrays, with each item's ``is_active`` at load time."""

    version_id: int
    item_ids: np.ndarray  # (n,) int64
    row_of: dict[int, int]  # item id -> row
    score_vectors: np.ndarray  # (n, d + 2 | d + 3) float32: [v, b, 1(, MIPS)]
    embeddings: np.ndarray  # (n, d) float32: bare representations
    active: np.ndarray  # (n,) bool

    @property
    def nbytes(self) -> int:
        return int(self.score_vectors.nbytes + self.embeddings.nbytes + self.item_ids.nbytes + self.active.nbytes)

    def rows(self, item_ids) -> tuple[np.ndarray, np.ndarray]:
        """(item ids that have a row, their rows), in the given order."""
        pairs = [(item_id, self.row_of[item_id]) for item_id in item_ids if item_id in self.row_of]
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ids, rows = zip(*pairs, strict=True)
        return np.asarray(ids, dtype=np.int64), np.asarray(rows, dtype=np.int64)


def version_vectors_load(version_id: int, space: str = "", budget_bytes: int | None = None) -> VersionVectors | None:
    """Read a version's vectors of one space (with ``is_active``) in binary; None when they exceed
    ``budget_bytes`` (default ``settings.VECTOR_EXACT_INDEX_BUDGET_BYTES``)."""
    budget = settings.VECTOR_EXACT_INDEX_BUDGET_BYTES if budget_bytes is None else budget_bytes
    started = time.perf_counter()
    table = VersionTables(version_id, space).items
    raw = raw_connection()
    with binary_cursor(raw) as cursor:
        # pgvector keeps a column's dimension in atttypmod: the row width, before reading any row.
        cursor.execute(
            "SELECT coalesce(sum(atttypmod), 0) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attname IN ('score_vector', 'embedding')",
            [table],
        )
        row = cursor.fetchone()
        width = int(row[0]) if row else 0
        row_bytes = 4 * width + 9
        max_rows = budget // max(row_bytes, 1)
        cursor.execute(
            sql.SQL(
                "SELECT v.item_id, v.score_vector, v.embedding, coalesce(i.is_active, false) "
                "FROM {} v LEFT JOIN {} i ON i.id = v.item_id ORDER BY v.item_id LIMIT %s"
            ).format(sql.Identifier(table), sql.Identifier(ITEM_TABLE)),
            [max_rows + 1],
            binary=True,
        )
        rows = cursor.fetchall()
    if len(rows) > max_rows:
        logger.info(
            "vectors.exact_over_budget version=%s rows_over=%s budget_bytes=%s",
            version_id,
            max_rows,
            budget,
        )
        return None
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = VersionVectors(
        version_id=version_id,
        item_ids=ids,
        row_of={int(item_id): row for row, item_id in enumerate(ids.tolist())},
        score_vectors=vectors_stack([row[1] for row in rows]),
        embeddings=vectors_stack([row[2] for row in rows]),
        active=np.fromiter((bool(row[3]) for row in rows), dtype=bool, count=len(rows)),
    )
    logger.info(
        "vectors.exact_loaded version=%s items=%s bytes=%s ms=%.1f",
        version_id,
        len(ids),
        vectors.nbytes,
        1000 * (time.perf_counter() - started),
    )
    return vectors


# One entry per version a process serves (the active one, and the previous one for a moment after
# an activation); over-budget versions are memoised as None so they are not re-read per request.
# Keyed by (version, space): a version with a vector family's space has two entries.
VERSION_VECTORS: GenerationMemo[tuple[int, str], VersionVectors | None] = GenerationMemo(
    "version_vectors", lambda key: version_vectors_load(*key), max_entries=8
)


def version_vectors(*, version_id: int, generation: int | None, space: str = "") -> VersionVectors | None:
    """The memoised vectors of ``version_id`` (in ``space``) for ``generation``; None when the memo may
    not be used (no generation, inside a transaction) or the version is over budget."""
    if not VERSION_VECTORS.usable(generation):
        return None
    return VERSION_VECTORS.get((int(version_id), space), generation=generation)


def _top_rows(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best allowed scores, by score descending then item id (the SQL's order: the
    rows are in ascending item id, so the lower row is the lower id)."""
    if k < 1 or not allowed.any():
        return np.zeros(0, dtype=np.int64)
    return top_k(scores, k, exclude=~allowed)


class ExactIndex:
    """`VectorIndex` over a `VersionVectors` copy; feature-filtered queries go to ``fallback``."""

    def __init__(self, vectors: VersionVectors, *, fallback: VectorIndex):
        self.vectors = vectors
        self.version_id = vectors.version_id
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"ExactIndex(v{self.version_id}, items={len(self.vectors.item_ids)})"

    def _allowed(self, filters: AnnFilters, extra_excluded_ids=()) -> np.ndarray:
        vectors = self.vectors
        allowed = vectors.active.copy() if filters.active_only else np.ones(len(vectors.item_ids), dtype=bool)
        _, excluded_rows = vectors.rows(tuple(filters.exclude_item_ids) + tuple(extra_excluded_ids))
        allowed[excluded_rows] = False
        return allowed

    def user_neighbours(self, user_vector: np.ndarray, *, k: int, filters: AnnFilters) -> Neighbours:
        if filters.needs_features:
            return self.fallback.user_neighbours(user_vector, k=k, filters=filters)
        vectors = self.vectors
        if k < 1 or len(vectors.item_ids) == 0:
            return []
        scores = vectors.score_vectors.astype(np.float64) @ np.asarray(user_vector, dtype=np.float64)
        rows = _top_rows(scores, self._allowed(filters), k)
        return list(zip(vectors.item_ids[rows].tolist(), scores[rows].tolist(), strict=True))

    def item_neighbours(
        self, seed_ids: list[int], *, k: int, filters: AnnFilters, measure: Measure = "cosine", alpha: float = 0.5
    ) -> dict[int, Neighbours]:
        if measure not in MEASURES:
            raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
        if filters.needs_features:
            return self.fallback.item_neighbours(seed_ids, k=k, filters=filters, measure=measure, alpha=alpha)
        vectors = self.vectors
        seeds = [int(item_id) for item_id in dict.fromkeys(seed_ids)]
        found: dict[int, Neighbours] = {seed: [] for seed in seeds}
        present, seed_rows = vectors.rows(seeds)
        if k < 1 or len(present) == 0:
            return found
        allowed = self._allowed(filters, seeds)
        scores = similarity(vectors.embeddings[seed_rows], vectors.embeddings, measure, alpha=alpha)
        for seed, seed_scores in zip(present.tolist(), np.atleast_2d(scores), strict=True):
            rows = _top_rows(seed_scores, allowed, k)
            found[seed] = list(zip(vectors.item_ids[rows].tolist(), seed_scores[rows].tolist(), strict=True))
        return found

    def score_vectors(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        ids, rows = self.vectors.rows(item_ids)
        return ids, self.vectors.score_vectors[rows]

    def embeddings(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        ids, rows = self.vectors.rows(item_ids)
        return ids, self.vectors.embeddings[rows]
