"""Vector search: the store of published versions' vectors, and the indexes that query them.

- `store`: publish, fetch, drop and check a version's pgvector tables (and HNSW indexes);
- `base`: the one `VectorIndex` protocol, its filters (`AnnFilters`) and measures;
- `pgvector`: `PgvectorIndex`, HNSW scans in PostgreSQL with the filters inside the scan;
- `exact`: `ExactIndex`, an in-process copy scanned exactly with numpy, within a memory budget;
- `deep_retrieval`: `DeepRetrievalIndex`, a learned structure's beam search proposes candidates from
  an in-process copy, rescored exactly (seed 001, docs/deep_retrieval.md).

`index_for` is the one place that picks an index: a request's context calls it once
(``Context.vector_index``), and sources and the scorer use what it returns.
"""

from __future__ import annotations

from django.conf import settings

from .base import VectorIndex
from .deep_retrieval import deep_retrieval_index
from .exact import ExactIndex, version_vectors
from .pgvector import PgvectorIndex


def index_for(*, version_id: int, generation: int | None, space: str = "") -> VectorIndex:
    """The index a request holding ``generation`` should query for ``version_id`` in ``space``
    ("" for LightFM's vectors, a vector family's name for its own, `store`'s module notes).

    The exact in-process copy when the version fits its budget and the request may use
    per-process copies (`recommender.memo`); above it, with ``VECTOR_INDEX_KIND = "deep_retrieval"``,
    the version's Deep Retrieval structure (`deep_retrieval`, LightFM's space only) when one was
    built and its copy fits its own budget; else pgvector. The in-process kinds hand
    feature-filtered queries to pgvector themselves.
    """
    database = PgvectorIndex(version_id, space=space)
    vectors = version_vectors(version_id=version_id, generation=generation, space=space)
    if vectors is not None:
        return ExactIndex(vectors, fallback=database)
    if settings.VECTOR_INDEX_KIND == "deep_retrieval" and not space:
        structure = deep_retrieval_index(version_id=version_id, generation=generation)
        if structure is not None:
            return structure
    return database
