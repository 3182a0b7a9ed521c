"""`DeepRetrievalIndex`: the vector index answered by a Deep Retrieval structure over a version's copy.

The structure (`recommender.ml.deep_retrieval`, fitted by `deep_retrieval_build`) proposes the
candidates: the items on the B paths its beam search finds for the query. Every candidate is then
rescored exactly from the in-process `VersionVectors` copy (inner product of score vectors for a
user, the requested `similarity` measure between embeddings for an item), so scores, order and ties
are the exact index's; only which items are looked at is approximate.

How the contract (`recommender.vectors.base`) is kept:

- **Filters** are applied to the candidate set. When fewer than ``min(k, allowed)`` candidates
  survive them, the query is re-asked exactly over the whole copy (`ExactIndex`), so a list is
  short only when nothing else qualifies. Feature filters need the catalogue's postings, which the
  copy does not hold: those queries go to ``fallback``, as `ExactIndex` sends them.
- **Items the structure never saw** (added to the version after the build, e.g. cold-start items)
  are candidates of every query, so they are never missed; rows of items gone from the copy are
  dropped.
- **Item queries** run the same beam search with the seed as a query [embedding, 0, 0(, 0)] (its
  inner product with a score vector is the 'dot' similarity of the embeddings); the seed's own paths'
  items join the candidates, and all seeds are excluded from every list.

The structure is fitted at publish time for one version (`deep_retrieval_build`), saved beside the
version's artifact with `DeepRetrieval.save`, and loaded by `deep_retrieval_index_load`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection
from psycopg import sql

from recommender.memo import GenerationMemo
from recommender.ml.deep_retrieval import (
    DeepRetrieval,
    DeepRetrievalError,
    DeepRetrievalParams,
    item_queries,
    paths_encode,
)
from recommender.ml.deep_retrieval_training import deep_retrieval_fit
from recommender.ml.similarity import MEASURES, SimilarityError, similarity, top_k

from .base import AnnFilters, Measure, Neighbours, VectorIndex
from .connection import binary_cursor, raw_connection, vectors_stack
from .exact import ExactIndex, VersionVectors, version_vectors_load
from .pgvector import PgvectorIndex
from .store import VersionTables

logger = logging.getLogger(__name__)


def version_user_vectors_load(version_id: int) -> np.ndarray:
    """A version's stored user score vectors (m, d + 2 | d + 3) float32: the structure's training queries."""
    with binary_cursor(raw_connection()) as cursor:
        cursor.execute(
            sql.SQL("SELECT score_vector FROM {} ORDER BY profile_id").format(
                sql.Identifier(VersionTables(version_id).users)
            ),
            binary=True,
        )
        rows = cursor.fetchall()
    return vectors_stack([row[0] for row in rows])


def version_item_queries(vectors: VersionVectors, rows: np.ndarray | None = None) -> np.ndarray:
    """The copy's items (or ``rows`` of it) as queries [embedding, 0, 0(, 0)] (r, score width) float32."""
    embeddings = vectors.embeddings if rows is None else vectors.embeddings[rows]
    return item_queries(embeddings, vectors.score_vectors.shape[1])


def deep_retrieval_build(
    vectors: VersionVectors,
    *,
    query_vectors: np.ndarray,
    params: DeepRetrievalParams | None = None,
    item_query_share: float = 0.2,
    seed: int = 0,
) -> DeepRetrieval:
    """Fit a structure over ``vectors`` for the queries serving sends.

    Parameters
    ----------
    vectors : VersionVectors
        The version's copy; the structure's rows are its rows and it remembers their item ids.
    query_vectors : ndarray of float32, shape (m, score width)
        User score vectors as stored (e.g. `version_user_vectors_load`).
    params : DeepRetrievalParams, optional
    item_query_share : float
        Share of the items added as item queries (see `version_item_queries`), so related-item searches
        are trained too, not only the personal ones.
    seed : int
        Chooses those items.
    """
    rng = np.random.default_rng(seed)
    n_items = len(vectors.item_ids)
    sampled = rng.choice(n_items, size=round(item_query_share * n_items), replace=False)
    queries = np.concatenate(
        [np.asarray(query_vectors, dtype=np.float32), version_item_queries(vectors, np.sort(sampled))]
    )
    structure = deep_retrieval_fit(vectors.score_vectors, queries, params)
    structure.item_ids = vectors.item_ids.copy()
    return structure


def deep_retrieval_index_load(
    path: str | Path, *, vectors: VersionVectors, fallback: VectorIndex, beam: int | None = None
) -> DeepRetrievalIndex:
    """The index of a structure saved at ``path`` (`DeepRetrieval.save`) over the copy ``vectors``."""
    return DeepRetrievalIndex(vectors, DeepRetrieval.load(path), fallback=fallback, beam=beam)


class DeepRetrievalIndex:
    """`VectorIndex` over a `VersionVectors` copy with a fitted Deep Retrieval structure (module docstring)."""

    def __init__(
        self, vectors: VersionVectors, structure: DeepRetrieval, *, fallback: VectorIndex, beam: int | None = None
    ):
        if structure.query_mean.shape[0] != vectors.score_vectors.shape[1]:
            raise DeepRetrievalError(
                f"the structure reads {structure.query_mean.shape[0]} columns, version {vectors.version_id}'s score "
                f"vectors have {vectors.score_vectors.shape[1]}: it was built for another version; rebuild it."
            )
        if structure.item_ids is None and structure.n_items != len(vectors.item_ids):
            raise DeepRetrievalError(
                f"the structure holds {structure.n_items} rows without item ids, the copy "
                f"{len(vectors.item_ids)}: rebuild it."
            )
        self.vectors, self.structure, self.fallback = vectors, structure, fallback
        self.version_id = vectors.version_id
        self.beam = beam or structure.params.beam
        self.exact = ExactIndex(vectors, fallback=fallback)
        known = np.asarray(vectors.item_ids if structure.item_ids is None else structure.item_ids, dtype=np.int64)
        self._copy_row = np.array([vectors.row_of.get(int(item_id), -1) for item_id in known], dtype=np.int64)
        unseen = np.ones(len(vectors.item_ids), dtype=bool)
        unseen[self._copy_row[self._copy_row >= 0]] = False
        self._unseen_rows = np.flatnonzero(unseen)
        # Copy row -> structure row, -1 for the items the structure never saw.
        self._structure_row = np.full(len(vectors.item_ids), -1, dtype=np.int64)
        self._structure_row[self._copy_row[self._copy_row >= 0]] = np.flatnonzero(self._copy_row >= 0)

    def __repr__(self) -> str:
        return f"DeepRetrievalIndex(v{self.version_id}, items={len(self.vectors.item_ids)}, beam={self.beam})"

    def _allowed(self, filters: AnnFilters, extra_excluded_ids=()) -> np.ndarray:
        return self.exact._allowed(filters, extra_excluded_ids)  # the same copy, the same rows

    def _copy_rows(self, structure_rows: np.ndarray) -> np.ndarray:
        """Copy rows (ascending, unique) of structure rows, plus the items the structure never saw."""
        rows = self._copy_row[structure_rows]
        return np.union1d(rows[rows >= 0], self._unseen_rows)

    def candidate_rows(self, query: np.ndarray) -> np.ndarray:
        """Copy rows the beam search proposes for one query (s,), before filters."""
        return self._copy_rows(self.structure.candidate_rows(query, beam=self.beam))

    def user_neighbours(self, user_vector: np.ndarray, *, k: int, filters: AnnFilters) -> Neighbours:
        if filters.needs_features or k < 1 or len(self.vectors.item_ids) == 0:
            return self.exact.user_neighbours(user_vector, k=k, filters=filters)
        allowed = self._allowed(filters)
        candidates = self.candidate_rows(user_vector)
        candidates = candidates[allowed[candidates]]
        if len(candidates) < min(k, int(allowed.sum())):
            logger.debug(
                "vectors.deep_retrieval_reask version=%s k=%s candidates=%s", self.version_id, k, len(candidates)
            )
            return self.exact.user_neighbours(user_vector, k=k, filters=filters)
        # Same arithmetic as the exact scan, so equal items get bit-equal scores and ties break alike.
        scores = self.vectors.score_vectors[candidates].astype(np.float64) @ np.asarray(user_vector, dtype=np.float64)
        chosen = top_k(scores, k)
        return list(zip(self.vectors.item_ids[candidates[chosen]].tolist(), scores[chosen].tolist(), strict=True))

    def item_neighbours(
        self, seed_ids: list[int], *, k: int, filters: AnnFilters, measure: Measure = "cosine", alpha: float = 0.5
    ) -> dict[int, Neighbours]:
        if measure not in MEASURES:
            raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
        vectors = self.vectors
        seeds = [int(item_id) for item_id in dict.fromkeys(seed_ids)]
        present, seed_rows = vectors.rows(seeds)
        if filters.needs_features or k < 1 or len(present) == 0:
            return self.exact.item_neighbours(seeds, k=k, filters=filters, measure=measure, alpha=alpha)
        found: dict[int, Neighbours] = {seed: [] for seed in seeds}
        allowed = self._allowed(filters, seeds)
        wanted = min(k, int(allowed.sum()))
        beam_numbers = self.structure.beam_paths(version_item_queries(vectors, seed_rows), beam=self.beam)
        structure_rows = self._structure_row[seed_rows]
        short = []
        for seed, seed_row, numbers, structure_row in zip(
            present.tolist(), seed_rows, beam_numbers, structure_rows, strict=True
        ):
            own = (
                paths_encode(self.structure.paths[structure_row], self.structure.params.nodes)
                if structure_row >= 0
                else np.zeros(0, dtype=np.int64)
            )
            candidates = self._copy_rows(self.structure.path_rows(np.concatenate([numbers, own])))
            candidates = candidates[allowed[candidates]]
            if len(candidates) < wanted:
                short.append(seed)
                continue
            if wanted == 0:
                continue
            scores = similarity(vectors.embeddings[seed_row], vectors.embeddings[candidates], measure, alpha=alpha)
            chosen = top_k(scores, k)
            found[seed] = list(zip(vectors.item_ids[candidates[chosen]].tolist(), scores[chosen].tolist(), strict=True))
        if short:
            logger.debug("vectors.deep_retrieval_reask version=%s k=%s seeds=%s", self.version_id, k, len(short))
            # Every seed stays excluded from the re-asked lists too.
            every_seed = replace(filters, exclude_item_ids=tuple(filters.exclude_item_ids) + tuple(seeds))
            found.update(self.exact.item_neighbours(short, k=k, filters=every_seed, measure=measure, alpha=alpha))
        return found

    def score_vectors(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.exact.score_vectors(item_ids)

    def embeddings(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.exact.embeddings(item_ids)


# Serving through the structure (settings.VECTOR_INDEX_KIND = "deep_retrieval"): built at publish
# time for LightFM's space, kept per process like the exact copy (by the `global` generation).


def deep_retrieval_path(version_id: int) -> Path:
    """Where a version's structure is saved: per database, like the artifacts (a test database's v3
    never reads the development database's)."""
    return Path(settings.MODEL_ARTIFACT_DIR) / connection.settings_dict["NAME"] / f"deep_retrieval_v{version_id}.npz"


def deep_retrieval_discard(version_id: int) -> None:
    """Remove a structure left at this version's path (an id reused by a recreated database) and
    forget loaded ones; publishing calls it whether or not it builds a new one."""
    deep_retrieval_path(version_id).unlink(missing_ok=True)
    _INDEXES.clear()


def deep_retrieval_publish(*, version_id: int, seed: int = 0) -> Path | None:
    """Fit and save the structure of a published version's LightFM space; None when its copy would
    exceed ``VECTOR_DEEP_RETRIEVAL_COPY_BUDGET_BYTES`` (serving could not hold it: pgvector serves).

    Training calls this after publishing the vectors when the setting asks for it; a structure left
    at the path by an earlier database's version of the same id is removed first.
    """
    deep_retrieval_discard(version_id)
    path = deep_retrieval_path(version_id)
    vectors = version_vectors_load(version_id, budget_bytes=settings.VECTOR_DEEP_RETRIEVAL_COPY_BUDGET_BYTES)
    if vectors is None:
        logger.warning("vectors.deep_retrieval_skipped version=%s reason=copy_over_budget", version_id)
        return None
    started = time.perf_counter()
    structure = deep_retrieval_build(vectors, query_vectors=version_user_vectors_load(version_id), seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    structure.save(path)
    logger.info(
        "vectors.deep_retrieval_built version=%s items=%s seconds=%.1f path=%s",
        version_id,
        len(vectors.item_ids),
        time.perf_counter() - started,
        path,
    )
    return path


def _index_load(version_id: int) -> DeepRetrievalIndex | None:
    path = deep_retrieval_path(version_id)
    if not path.exists():
        return None
    vectors = version_vectors_load(version_id, budget_bytes=settings.VECTOR_DEEP_RETRIEVAL_COPY_BUDGET_BYTES)
    if vectors is None:
        return None
    try:
        return deep_retrieval_index_load(
            path, vectors=vectors, fallback=PgvectorIndex(version_id), beam=settings.VECTOR_DEEP_RETRIEVAL_BEAM
        )
    except DeepRetrievalError as error:
        logger.warning("vectors.deep_retrieval_unusable version=%s error=%s", version_id, error)
        return None


_INDEXES: GenerationMemo[int, DeepRetrievalIndex | None] = GenerationMemo("deep_retrieval", _index_load, max_entries=2)


def deep_retrieval_index(*, version_id: int, generation: int | None) -> DeepRetrievalIndex | None:
    """The memoised index of ``version_id`` for ``generation``; None without a structure, over the
    copy's budget, or when the memo may not be used (no generation, inside a transaction)."""
    if not _INDEXES.usable(generation):
        return None
    return _INDEXES.get(int(version_id), generation=generation)
