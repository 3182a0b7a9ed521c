"""The one interface every candidate source implements, and the pool they fill together.

A source is one module in this package with a class that has a ``name`` and
``generate(context, n) -> list[Candidate]``. Sources only *nominate*: `recommender/ranking.py`
scores the merged pool with the active model so that candidates from different sources are
comparable, and `recommender/rerank/` applies the business rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Literal, Protocol

import numpy as np

from recommender.vectors import index_for
from recommender.vectors.base import AnnFilters, Measure, VectorIndex

Surface = Literal["home", "related"]


@dataclass
class Context:
    """Everything a source may need for one request.

    version_id is the active ModelVersion's id (None: no model, only model-free sources run).
    user_vector is the user's score vector [u, 1, user_bias] (trained or folded in), or None.
    item_id is the seed item for the related surface.
    generation is the ``global`` cache generation the request read first (None: not read), which
    lets stages use per-process copies (`recommender.memo`); ``vector_index`` is chosen from it once.
    """

    surface: Surface
    now: datetime
    version_id: int | None = None
    profile_id: int | None = None
    item_id: int | None = None
    user_vector: np.ndarray | None = None
    measure: Measure = "dot"
    norm_damping_alpha: float = 0.5
    filters: AnnFilters = field(default_factory=AnnFilters)
    seen_item_ids: frozenset[int] = frozenset()
    generation: int | None = None
    # Per-request reads shared by several sources (e.g. the user's positive seeds), so each runs once.
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def vector_index(self) -> VectorIndex:
        """The index every source and the scorer query for this request; only a context with a version has one."""
        if self.version_id is None:
            raise LookupError("A context without a model version has no vector index.")
        return index_for(version_id=self.version_id, generation=self.generation)

    def space_index(self, space: str) -> VectorIndex:
        """The index over a vector family's own space of this version (`recommender.vectors.store`),
        chosen once per request like `vector_index`; "" is `vector_index` itself."""
        if not space:
            return self.vector_index
        if self.version_id is None:
            raise LookupError("A context without a model version has no vector index.")
        key = ("space_index", space)
        if key not in self.memo:
            self.memo[key] = index_for(version_id=self.version_id, generation=self.generation, space=space)
        return self.memo[key]


@dataclass(slots=True)  # hundreds per request: slots make them cheaper to build and read
class Candidate:
    item_id: int
    source: str
    score: float
    # Why this source nominated it, e.g. {"because_item_id": 42} for "because you liked".
    reason: dict = field(default_factory=dict)


class CandidateSource(Protocol):
    name: str

    def generate(self, context: Context, n: int) -> list[Candidate]: ...


@dataclass(slots=True)
class PooledCandidate:
    """One item in the merged pool, with every source that nominated it."""

    item_id: int
    sources: dict[str, float]  # source name -> that source's score
    reasons: list[dict] = field(default_factory=list)
    score: float | None = None  # filled by ranking.py: the model's full score
    notes: list[str] = field(default_factory=list)  # what re-ranking rules did to it, for explanations


def candidates_merge(lists: list[list[Candidate]]) -> list[PooledCandidate]:
    """De-duplicate nominations into one pool, keeping every source's score and reason (first-seen order)."""
    pool: dict[int, PooledCandidate] = {}
    for candidates in lists:
        for candidate in candidates:
            entry = pool.get(candidate.item_id)
            if entry is None:
                entry = pool[candidate.item_id] = PooledCandidate(candidate.item_id, {})
            previous = entry.sources.get(candidate.source)
            if previous is None or not previous > candidate.score:  # max(), as the source's best
                entry.sources[candidate.source] = candidate.score
            if candidate.reason:
                entry.reasons.append({"source": candidate.source, **candidate.reason})
    return list(pool.values())
