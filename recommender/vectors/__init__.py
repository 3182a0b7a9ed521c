"""Vector search: the store of published versions' vectors, and the indexes that query them.

- `store`: publish, fetch, drop and check a version's pgvector tables (and HNSW indexes);
- `base`: the one `VectorIndex` protocol, its filters (`AnnFilters`) and measures;
- `pgvector`: `PgvectorIndex`, HNSW scans in PostgreSQL with the filters inside the scan;
- `exact`: `ExactIndex`, an in-process copy scanned exactly with numpy, within a memory budget.

`index_for` is the one place that picks an index: a request's context calls it once
(``Context.vector_index``), and sources and the scorer use what it returns.
"""

from __future__ import annotations

from .base import VectorIndex
from .exact import ExactIndex, version_vectors
from .pgvector import PgvectorIndex


def index_for(*, version_id: int, generation: int | None, space: str = "") -> VectorIndex:
    """The index a request holding ``generation`` should query for ``version_id`` in ``space``
    ("" for LightFM's vectors, a vector family's name for its own, `store`'s module notes).

    The exact in-process copy when the version fits its budget and the request may use
    per-process copies (`recommender.memo`), else pgvector; the exact index hands feature-filtered
    queries to pgvector itself.
    """
    database = PgvectorIndex(version_id, space=space)
    vectors = version_vectors(version_id=version_id, generation=generation, space=space)
    return database if vectors is None else ExactIndex(vectors, fallback=database)
