"""`PgvectorIndex`: the vector index answered by a version's pgvector tables and ANN indexes.

A version's indexes are HNSW, or IVFFlat when HNSW builds would not fit the publishing time budget
(`recommender.vectors.build`); the statements are the same, and both methods' settings are applied
to every serving connection. Below, "HNSW" reads "HNSW or IVFFlat" ('_ivfflat' index names).

Publishing (`recommender.vectors.store`) owns the tables and indexes; this module only reads them.

Which measure uses which index (``rec_item_vectors_v<N>``):

============  ==========================  ======================================================
query         distance                    index
============  ==========================  ======================================================
user → items  ``score_vector <#> u``      HNSW ``vector_ip_ops`` on score_vector (``_ip_hnsw``)
cosine        ``embedding <=> q``         HNSW ``vector_cosine_ops`` on embedding (``_cos_hnsw``)
norm_damped   cosine pool, then exact     the cosine HNSW: a pool of ``NORM_DAMPED_POOL_FACTOR·k``
              ``|q|^a |v|^a cos`` numpy   (at least ``NORM_DAMPED_MIN_POOL``) is re-scored exactly
dot           ``embedding <#> q``         HNSW ``vector_ip_ops`` on embedding (``_emb_ip_hnsw``;
                                          versions published before it existed: exact scan)
euclidean     ``embedding <-> q``         an HNSW ``vector_l2_ops`` on embedding if present, else
                                          an exact scan
============  ==========================  ======================================================

The planner picks an HNSW index whenever one matches the ORDER BY operator (and the table is big
enough for it to pay), so 'euclidean' would become approximate as soon as publishing built that
index too; no code change here.

Filters run *inside* the index scan: the HNSW scan is the outer side of nested loops that probe
``catalog_item`` (active only) and ``catalog_itemfeature`` (excluded / required features), and
pgvector 0.8's iterative scan (``hnsw.iterative_scan = relaxed_order``) keeps pulling tuples
from the graph until ``k`` rows pass the filters or ``hnsw.max_scan_tuples`` is reached. Relaxed
order may emit a later batch slightly out of order, so the k rows are re-sorted by distance in
an outer query (the MATERIALIZED CTE keeps the planner from merging the two sorts).

Every score returned follows `recommender.ml.similarity`: larger is more similar (inner
product, cosine = 1 - cosine distance, euclidean = minus the distance).
"""

from __future__ import annotations

import logging

import numpy as np
from django.conf import settings
from django.db.backends.signals import connection_created
from psycopg import sql

from catalog.sql import item_filter_clauses
from recommender.ml.similarity import MEASURES, SimilarityError, similarity

from .base import AnnFilters, Measure, Neighbours
from .connection import binary_cursor, raw_connection
from .store import VersionTables, item_embedding_fetch, item_embeddings_fetch, item_vectors_fetch

logger = logging.getLogger(__name__)

# The serving HNSW settings (config/settings/recommender.py, chosen from the curve measured by
# `python -m bench.ann_curve`, docs/operations.md): read once per process, because they
# are applied once per database connection (`connection_settings_apply`).
DEFAULT_EF_SEARCH = int(settings.VECTOR_HNSW_EF_SEARCH)
MAX_SCAN_TUPLES = int(settings.VECTOR_HNSW_MAX_SCAN_TUPLES)
# The index is asked for this many times k rows, re-sorted exactly, and cut to k
# (settings.VECTOR_HNSW_OVERFETCH; a larger pool lifts recall at a small cost, see docs/operations.md).
RELAXED_OVERFETCH = float(settings.VECTOR_HNSW_OVERFETCH)
NORM_DAMPED_POOL_FACTOR = 10
NORM_DAMPED_MIN_POOL = 200
# A short approximate answer is re-asked exactly only for list-sized k (a norm-damped pool asks
# for "everything" with k = 2**31 - 1 and expects whatever exists).
EXACT_RETRY_MAX_K = 10_000
# pgvector refuses ef_search above 1000.
EF_SEARCH_LIMIT = 1000

_DISTANCE_OPERATORS = {"dot": "<#>", "cosine": "<=>", "euclidean": "<->"}


def _scores_from_distances(measure: str, distances: np.ndarray) -> np.ndarray:
    if measure == "dot":
        return -distances  # pgvector's <#> is the negative inner product
    if measure == "cosine":
        return 1.0 - distances
    return -distances  # euclidean


def filter_clauses(
    filters: AnnFilters, *, item_column: str = "v.item_id", extra_excluded_ids: tuple[int, ...] = ()
) -> tuple[list[sql.Composable], dict]:
    """SQL predicates (and named parameters) enforcing ``filters`` on the item id in ``item_column``.

    The catalogue spells them (`catalog.sql.item_filter_clauses`); other sources (content-based,
    popular, fresh) use the same ones, so every source filters alike.
    """
    return item_filter_clauses(item_column=item_column, **filters.item_filter(tuple(extra_excluded_ids)))


# Both methods' settings are set on every serving connection: which one a version's indexes use
# (recommender/vectors/build.py) then needs no lookup per query, and the other's GUCs are inert.
_SETTINGS_SQL = (
    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', {local}), "
    "set_config('hnsw.ef_search', %s, {local}), set_config('hnsw.max_scan_tuples', %s, {local}), "
    "set_config('ivfflat.iterative_scan', 'relaxed_order', {local}), "
    "set_config('ivfflat.probes', %s, {local}), set_config('ivfflat.max_probes', %s, {local})"
)
IVFFLAT_PROBES = int(settings.VECTOR_IVFFLAT_PROBES)
IVFFLAT_MAX_PROBES = max(int(settings.VECTOR_IVFFLAT_MAX_PROBES), IVFFLAT_PROBES)


def _settings_params(ef_search: int) -> list[str]:
    return [str(ef_search), str(MAX_SCAN_TUPLES), str(IVFFLAT_PROBES), str(IVFFLAT_MAX_PROBES)]


def _session_settings(cursor, *, ef_search: int, k: int) -> None:
    # set_config(..., true) is SET LOCAL: the settings end with this query's transaction or savepoint.
    cursor.execute(_SETTINGS_SQL.format(local="true"), _settings_params(_ef_search(ef_search, k)))


def _ef_search(ef_search: int, k: int) -> int:
    return min(max(int(ef_search), int(k)), EF_SEARCH_LIMIT)


SESSION_TAG = "_rec_hnsw_session"


def _settings_ensure(raw, *, ef_search: int, k: int) -> bool:
    """True when the serving HNSW settings hold for the whole session of ``raw``.

    Serving sets them once per connection (a plain SET while the connection is idle, so no later
    rollback can undo it; see `connection_settings_apply`) instead of SAVEPOINT + SET LOCAL +
    RELEASE around every query: three round trips less per ANN query. When this returns False
    (a connection first used inside a transaction, as in tests, or a non-default ef_search as in
    benchmarks) the caller sets them transaction-locally around the query.
    """
    from psycopg.pq import TransactionStatus

    wanted = _ef_search(ef_search, k)
    if wanted != _ef_search(DEFAULT_EF_SEARCH, k):
        return False
    if getattr(raw, SESSION_TAG, None) == (wanted, IVFFLAT_PROBES):
        return True
    if raw.info.transaction_status != TransactionStatus.IDLE:
        return False
    _session_apply(raw, ef_search=wanted)
    return True


def _session_apply(raw, *, ef_search: int) -> None:
    with raw.cursor() as cursor:
        cursor.execute(_SETTINGS_SQL.format(local="false"), _settings_params(ef_search))
    # The probes are part of the tag: a benchmark that changes IVFFLAT_PROBES gets them re-applied.
    setattr(raw, SESSION_TAG, (ef_search, IVFFLAT_PROBES))


def serving_settings_ensure() -> None:
    """Apply the serving HNSW settings to Django's connection now, if it is idle and not yet set.

    The pipeline calls this before entering its savepoint, so the first request on a persistent
    connection sets them for the connection's life (one round trip, once) and every ANN query
    runs as a single statement.
    """
    _settings_ensure(raw_connection(), ef_search=DEFAULT_EF_SEARCH, k=1)


def connection_settings_apply(sender=None, connection=None, **kwargs) -> None:
    """``connection_created`` receiver: the serving HNSW settings for every new database connection.

    Runs right after Django connects, before any transaction, so the settings hold for the
    connection's life. Skipped quietly where pgvector is absent (the GUCs are placeholders then,
    which PostgreSQL accepts anyway) or the database is not PostgreSQL.
    """
    if connection is None or connection.vendor != "postgresql":
        return
    from psycopg.pq import TransactionStatus

    raw = connection.connection
    if raw is None or raw.info.transaction_status != TransactionStatus.IDLE:
        return
    _session_apply(raw, ef_search=DEFAULT_EF_SEARCH)


def nearest_statement(
    *,
    version_id: int,
    column: str,
    operator: str,
    query: np.ndarray,
    k: int,
    filters: AnnFilters,
    exact: bool = False,
    space: str = "",
    extra_excluded_ids: tuple[int, ...] = (),
    with_embedding: bool = False,
) -> tuple[sql.Composed, dict]:
    """The filtered k-NN statement and its parameters (also used by tests and benchmarks to EXPLAIN it)."""
    tables = VersionTables(version_id, space)
    distance = sql.SQL("v.{} {} %(query)s").format(sql.Identifier(column), sql.SQL(operator))
    # "+ 0" turns the ORDER BY into an expression no index matches: a brute-force scan (recall baseline).
    order = sql.SQL("({}) + 0").format(distance) if exact else distance
    clauses, params = filter_clauses(filters, extra_excluded_ids=extra_excluded_ids)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    statement = sql.SQL(
        "WITH nearest AS MATERIALIZED (SELECT v.item_id, {distance} AS distance{embedding} FROM {table} v{where} "
        "ORDER BY {order} LIMIT %(pool)s) SELECT * FROM nearest ORDER BY distance, item_id LIMIT %(k)s"
    ).format(
        distance=distance,
        embedding=sql.SQL(", v.embedding") if with_embedding else sql.SQL(""),
        table=sql.Identifier(tables.items),
        where=where,
        order=order,
    )
    # Relaxed order may hand a slightly worse row over before a better one; reading a few more
    # rows than k from the index and keeping the best k after the exact re-sort recovers them.
    pool = int(k) if exact else int(np.ceil(k * RELAXED_OVERFETCH))
    params.update(query=np.asarray(query, dtype=np.float32), k=int(k), pool=pool)
    return statement, params


def _rows_fetch(statement, params: dict, *, ef_search: int, k: int, binary: bool = False) -> list[tuple]:
    raw = raw_connection()
    cursor_of = binary_cursor if binary else (lambda connection: connection.cursor())
    if _settings_ensure(raw, ef_search=ef_search, k=k):
        with cursor_of(raw) as cursor:
            cursor.execute(statement, params, binary=binary)
            return cursor.fetchall()
    with raw.transaction(), cursor_of(raw) as cursor:
        _session_settings(cursor, ef_search=ef_search, k=k)
        cursor.execute(statement, params, binary=binary)
        return cursor.fetchall()


def explain(statement: sql.Composed, params: dict, *, ef_search: int = DEFAULT_EF_SEARCH, k: int = 10) -> str:
    """EXPLAIN (ANALYZE) text of a statement from `nearest_statement`, under the serving settings."""
    raw = raw_connection()
    with raw.transaction(), raw.cursor() as cursor:
        _session_settings(cursor, ef_search=ef_search, k=k)
        cursor.execute(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) ") + statement, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _nearest(
    *,
    version_id: int,
    column: str,
    operator: str,
    query: np.ndarray,
    k: int,
    filters: AnnFilters,
    ef_search: int,
    exact: bool,
    extra_excluded_ids: tuple[int, ...] = (),
    with_embedding: bool = False,
    space: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run one filtered k-NN query; return (item_ids (n,) int64, distances (n,) float64, embeddings or None)."""
    if k < 1:
        return np.zeros(0, dtype=np.int64), np.zeros(0), None
    statement, params = nearest_statement(
        version_id=version_id,
        column=column,
        operator=operator,
        query=query,
        k=k,
        filters=filters,
        exact=exact,
        extra_excluded_ids=extra_excluded_ids,
        with_embedding=with_embedding,
        space=space,
    )
    rows = _rows_fetch(statement, params, ef_search=ef_search, k=k, binary=with_embedding)
    if len(rows) < k and not exact and k <= EXACT_RETRY_MAX_K:
        # An approximate scan can come back short (iterative scan limits, a sparse graph region
        # after filtering). The exact answer under the same filters is complete by definition,
        # so a short answer is re-asked exactly: callers get k rows whenever k rows exist.
        statement, params = nearest_statement(
            version_id=version_id,
            column=column,
            operator=operator,
            query=query,
            k=k,
            filters=filters,
            exact=True,
            extra_excluded_ids=extra_excluded_ids,
            with_embedding=with_embedding,
            space=space,
        )
        rows = _rows_fetch(statement, params, ef_search=ef_search, k=k, binary=with_embedding)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    distances = np.fromiter((row[1] for row in rows), dtype=np.float64, count=len(rows))
    embeddings = None
    if with_embedding:
        embeddings = (
            np.stack([row[2].to_numpy() for row in rows]).astype(np.float64)
            if rows
            else np.zeros((0, len(query)), dtype=np.float64)
        )
    return ids, distances, embeddings


class PgvectorIndex:
    """`VectorIndex` over a version's pgvector tables: HNSW scans with filters inside, exact retries.

    Parameters
    ----------
    version_id : the published version whose ``rec_item_vectors_v<N>`` table is queried.
    space : the vector space of that version: "" for LightFM's, a family name for a vector
        family's own table (``rec_item_vectors_v<N>__<family>``, `recommender.vectors.store`).
    ef_search : HNSW candidate list size (serving default `DEFAULT_EF_SEARCH`; benchmarks vary it).
    exact : brute force over every row passing the filters (the recall baseline of bench/ann_recall.py).
    """

    def __init__(self, version_id: int, *, space: str = "", ef_search: int = DEFAULT_EF_SEARCH, exact: bool = False):
        self.version_id = int(version_id)
        self.space = space
        self.ef_search = int(ef_search)
        self.exact = bool(exact)

    def __repr__(self) -> str:
        space = f", space={self.space!r}" if self.space else ""
        return f"PgvectorIndex(v{self.version_id}{space}, ef_search={self.ef_search}, exact={self.exact})"

    def user_neighbours(self, user_vector: np.ndarray, *, k: int, filters: AnnFilters) -> Neighbours:
        """Top-k items by LightFM score (user score vector · item score vector), best first.

        ``user_vector`` is [user representation, 1, user bias] (plus a 0 for MIPS-augmented
        versions); filters are applied inside the HNSW scan (iterative scan).
        """
        ids, distances, _ = _nearest(
            version_id=self.version_id,
            column="score_vector",
            operator="<#>",
            query=user_vector,
            k=k,
            filters=filters,
            ef_search=self.ef_search,
            exact=self.exact,
            space=self.space,
        )
        return [(int(item_id), float(-distance)) for item_id, distance in zip(ids, distances, strict=True)]

    def vector_neighbours(
        self,
        query: np.ndarray,
        *,
        k: int,
        filters: AnnFilters,
        measure: Measure = "cosine",
        alpha: float = 0.5,
        exclude_item_ids: tuple[int, ...] = (),
    ) -> Neighbours:
        """Top-k items whose embedding is most similar to ``query`` (d,) by ``measure``."""
        if measure not in MEASURES:
            raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
        if measure == "norm_damped":
            # No index orders by |q|^a|v|^a cos; cosine neighbours are its best pool because the
            # damped norm factor only re-weights within a pool of similar directions.
            # The exact baseline re-scores every row that passes the filters.
            pool = 2**31 - 1 if self.exact else max(k * NORM_DAMPED_POOL_FACTOR, NORM_DAMPED_MIN_POOL)
            ids, _, embeddings = _nearest(
                version_id=self.version_id,
                column="embedding",
                operator="<=>",
                query=query,
                k=pool,
                filters=filters,
                ef_search=max(self.ef_search, min(pool, EF_SEARCH_LIMIT)),
                exact=self.exact,
                extra_excluded_ids=exclude_item_ids,
                with_embedding=True,
                space=self.space,
            )
            if len(ids) == 0:
                return []
            scores = similarity(query, embeddings, "norm_damped", alpha=alpha)
            order = np.lexsort((ids, -scores))[:k]
            return [(int(ids[i]), float(scores[i])) for i in order]
        ids, distances, _ = _nearest(
            version_id=self.version_id,
            column="embedding",
            operator=_DISTANCE_OPERATORS[measure],
            query=query,
            k=k,
            filters=filters,
            ef_search=self.ef_search,
            exact=self.exact,
            extra_excluded_ids=exclude_item_ids,
            space=self.space,
        )
        scores = _scores_from_distances(measure, distances)
        return [(int(item_id), float(score)) for item_id, score in zip(ids, scores, strict=True)]

    def item_neighbours(
        self, seed_ids: list[int], *, k: int, filters: AnnFilters, measure: Measure = "cosine", alpha: float = 0.5
    ) -> dict[int, Neighbours]:
        """Each seed's k nearest items by embedding, every seed excluded from every list.

        One seed is one k-NN statement. Several seeds are ONE statement: a LATERAL join runs one
        (HNSW or exact) k-NN scan per seed inside a single round trip, which is what "because you
        liked" needs for its 5 seeds. Seeds without a vector map to []. A seed whose approximate
        list came back short is re-asked exactly (see `_nearest`). 'norm_damped' has no SQL
        operator and runs one `vector_neighbours` per seed.
        """
        seeds = [int(item_id) for item_id in dict.fromkeys(seed_ids)]
        if measure not in MEASURES:
            raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
        if not seeds or k < 1:
            return {seed: [] for seed in seeds}
        if measure == "norm_damped" or len(seeds) == 1:
            found = {}
            for seed in seeds:
                query = item_embedding_fetch(version_id=self.version_id, item_id=seed, space=self.space)
                if query is None:
                    logger.info("vectors.seed_without_vector version=%s item=%s", self.version_id, seed)
                found[seed] = (
                    []
                    if query is None
                    else self.vector_neighbours(
                        query, k=k, filters=filters, measure=measure, alpha=alpha, exclude_item_ids=tuple(seeds)
                    )
                )
            return found
        rows = _rows_fetch(
            *_many_statement(self.version_id, seeds, measure, k, filters, self.exact, space=self.space),
            ef_search=self.ef_search,
            k=k,
        )
        found = _rows_by_seed(seeds, rows, measure)
        short = [seed for seed, neighbours in found.items() if len(neighbours) < k]
        if short and not self.exact:
            rows = _rows_fetch(
                *_many_statement(self.version_id, short, measure, k, filters, True, excluded=seeds, space=self.space),
                ef_search=self.ef_search,
                k=k,
            )
            found.update(
                {seed: neighbours for seed, neighbours in _rows_by_seed(short, rows, measure).items() if neighbours}
            )
        return found

    def score_vectors(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return item_vectors_fetch(version_id=self.version_id, item_ids=item_ids, space=self.space)

    def embeddings(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return item_embeddings_fetch(version_id=self.version_id, item_ids=item_ids, space=self.space)


def _many_statement(
    version_id: int,
    seeds: list[int],
    measure: str,
    k: int,
    filters: AnnFilters,
    exact: bool,
    excluded: list[int] | None = None,
    space: str = "",
) -> tuple[sql.Composed, dict]:
    table = sql.Identifier(VersionTables(version_id, space).items)
    distance = sql.SQL("v.embedding {} s.query").format(sql.SQL(_DISTANCE_OPERATORS[measure]))
    order = sql.SQL("({}) + 0").format(distance) if exact else distance
    clauses, params = filter_clauses(filters, extra_excluded_ids=tuple(excluded or seeds))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    statement = sql.SQL(
        "WITH s AS MATERIALIZED (SELECT q.item_id AS seed_id, q.embedding AS query FROM {table} q "
        "WHERE q.item_id = ANY(%(seeds)s::bigint[])) "
        "SELECT s.seed_id, n.item_id, n.distance FROM s CROSS JOIN LATERAL ("
        "  SELECT m.item_id, m.distance FROM (SELECT v.item_id, {distance} AS distance FROM {table} v{where} "
        "  ORDER BY {order} LIMIT %(pool)s) m ORDER BY m.distance, m.item_id LIMIT %(k)s) n "
        "ORDER BY s.seed_id, n.distance, n.item_id"
    ).format(table=table, distance=distance, where=where, order=order)
    pool = int(k) if exact else int(np.ceil(k * RELAXED_OVERFETCH))
    params.update(seeds=list(seeds), k=int(k), pool=pool)
    return statement, params


def _rows_by_seed(seeds: list[int], rows: list[tuple], measure: str) -> dict[int, list[tuple[int, float]]]:
    found: dict[int, list[tuple[int, float]]] = {seed: [] for seed in seeds}
    for seed_id, item_id, distance in rows:
        score = float(_scores_from_distances(measure, np.asarray([distance], dtype=np.float64))[0])
        found[int(seed_id)].append((int(item_id), score))
    return found


connection_created.connect(
    connection_settings_apply, dispatch_uid="recommender.vectors.pgvector.connection_settings_apply"
)
