"""The one interface every vector index implements, and the filters and measures it takes.

A *vector index* answers nearest-neighbour questions over one published model version's item
vectors (see `recommender.vectors.store` for what a version stores). Candidate sources and the
scorer only ever call this protocol, through ``context.vector_index``; which implementation
answers is decided once per request by `recommender.vectors.index_for`. Implementations are one
module each: `pgvector` (HNSW indexes in PostgreSQL) and `exact` (an in-process copy scanned
with numpy). A new index kind is a new module implementing `VectorIndex`.

The contract every implementation keeps (tests/recommender/vectors/test_contract.py runs the
same checks against each):

- **k rows, or a stated shortfall.** A query returns ``min(k, n)`` rows, where n is the number
  of items passing the filters: a list shorter than k means nothing else qualifies. An
  approximate index that comes back short re-asks exactly. The one stated exception is pgvector's
  for k above ``EXACT_RETRY_MAX_K`` (10 000, far beyond any list size): such an answer is what the
  approximate scan reached.
- **Scores follow `recommender.ml.similarity`**: larger is more similar. User queries score by
  inner product of stored score vectors (LightFM's full score).
- **Order**: by score descending, ties by item id ascending.
- **Seeds**: an item query never returns any of its seeds, in any seed's list; a seed without a
  vector maps to [].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Measure = Literal["dot", "cosine", "euclidean", "norm_damped"]
Neighbours = list[tuple[int, float]]  # [(item id, score)], best first


@dataclass
class AnnFilters:
    """Filters that must hold inside the index scan (pgvector iterative scans), so k results still come back."""

    active_only: bool = True
    exclude_feature_ids: tuple[int, ...] = ()
    exclude_item_ids: tuple[int, ...] = ()
    # Keep only items carrying at least one of these features (e.g. "same genre only"); () = no restriction.
    require_feature_ids: tuple[int, ...] = ()

    @property
    def needs_features(self) -> bool:
        return bool(self.exclude_feature_ids or self.require_feature_ids)

    def item_filter(self, extra_excluded_ids: tuple[int, ...] = ()) -> dict:
        """These filters as the catalogue's item-filter keywords (`catalog.sql.item_filter_clauses`)."""
        return {
            "active_only": self.active_only,
            "exclude_feature_ids": tuple(self.exclude_feature_ids),
            "require_feature_ids": tuple(self.require_feature_ids),
            "exclude_item_ids": tuple(self.exclude_item_ids) + tuple(extra_excluded_ids),
        }


class VectorIndex(Protocol):
    """Nearest-neighbour queries over one version's item vectors (see the module docstring)."""

    version_id: int

    def user_neighbours(self, user_vector: np.ndarray, *, k: int, filters: AnnFilters) -> Neighbours:
        """Top-k items by inner product of their score vectors with ``user_vector`` (d + 2,) or (d + 3,)."""
        ...

    def item_neighbours(
        self, seed_ids: list[int], *, k: int, filters: AnnFilters, measure: Measure = "cosine", alpha: float = 0.5
    ) -> dict[int, Neighbours]:
        """Each seed's k nearest items by embedding under ``measure``; every seed excluded from every list."""
        ...

    def score_vectors(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(item ids that have a row (n,) int64, their score vectors (n, d + 2 | d + 3) float32)."""
        ...

    def embeddings(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(item ids that have a row (n,) int64, their bare embeddings (n, d) float32)."""
        ...
