"""Serving-time nearest-neighbour queries on a published version's pgvector tables.

Publishing (`recommender/vectors.py`) owns the tables and indexes; this module only reads them.

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
from django.db.backends.signals import connection_created
from psycopg import sql

from recommender.candidates.base import AnnFilters, Measure
from recommender.ml.similarity import MEASURES, SimilarityError, similarity
from recommender.vectors import VersionTables, _binary_cursor, _raw_connection

logger = logging.getLogger(__name__)

# Tuned with bench/ann_recall.py (see docs/candidates.md for the measured recall): on 100k
# synthetic items inner-product recall@10 is 0.942 at 400 and 0.994 at 1000 (cosine 0.9985 /
# 1.000), p50 5.6 → 8.4 ms; ml-100k is answered by exact plans either way. pgvector's maximum.
DEFAULT_EF_SEARCH = 1000
# Upper bound of tuples an iterative scan visits before giving up (pgvector's default is 20 000);
# a filter leaving 1% of 100k items needs ~100·k tuples, so this leaves a wide margin.
MAX_SCAN_TUPLES = 50_000
# The index is asked for this many times k rows, re-sorted exactly, and cut to k.
RELAXED_OVERFETCH = 2.0
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

    Written as correlated EXISTS / NOT EXISTS probes on primary-key and (item, feature) indexes so
    that, under an HNSW ORDER BY, they become nested loops on the index scan's output rows.
    Other sources (content-based, popular, fresh) reuse them so every source filters alike.
    """
    item = sql.SQL(item_column)
    clauses: list[sql.Composable] = []
    params: dict = {}
    if filters.active_only:
        clauses.append(sql.SQL("EXISTS (SELECT 1 FROM catalog_item fi WHERE fi.id = {} AND fi.is_active)").format(item))
    if filters.exclude_feature_ids:
        clauses.append(sql.SQL(
            "NOT EXISTS (SELECT 1 FROM catalog_itemfeature fx WHERE fx.item_id = {} "
            "AND fx.feature_id = ANY(%(excluded_features)s::bigint[]))").format(item))
        params["excluded_features"] = list(filters.exclude_feature_ids)
    if filters.require_feature_ids:
        clauses.append(sql.SQL(
            "EXISTS (SELECT 1 FROM catalog_itemfeature fr WHERE fr.item_id = {} "
            "AND fr.feature_id = ANY(%(required_features)s::bigint[]))").format(item))
        params["required_features"] = list(filters.require_feature_ids)
    excluded_ids = tuple(filters.exclude_item_ids) + tuple(extra_excluded_ids)
    if excluded_ids:
        clauses.append(sql.SQL("{} <> ALL(%(excluded_ids)s::bigint[])").format(item))
        params["excluded_ids"] = list(excluded_ids)
    return clauses, params


def _session_settings(cursor, *, ef_search: int, k: int) -> None:
    # set_config(..., true) is SET LOCAL: the settings end with this query's transaction or savepoint.
    cursor.execute(
        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
        "set_config('hnsw.ef_search', %s, true), set_config('hnsw.max_scan_tuples', %s, true)",
        [str(_ef_search(ef_search, k)), str(MAX_SCAN_TUPLES)],
    )


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
    if getattr(raw, SESSION_TAG, None) == wanted:
        return True
    if raw.info.transaction_status != TransactionStatus.IDLE:
        return False
    _session_apply(raw, ef_search=wanted)
    return True


def _session_apply(raw, *, ef_search: int) -> None:
    with raw.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', false), "
            "set_config('hnsw.ef_search', %s, false), set_config('hnsw.max_scan_tuples', %s, false)",
            [str(ef_search), str(MAX_SCAN_TUPLES)])
    setattr(raw, SESSION_TAG, ef_search)


def serving_settings_ensure() -> None:
    """Apply the serving HNSW settings to Django's connection now, if it is idle and not yet set.

    The pipeline calls this before entering its savepoint, so the first request on a persistent
    connection sets them for the connection's life (one round trip, once) and every ANN query
    runs as a single statement.
    """
    _settings_ensure(_raw_connection(), ef_search=DEFAULT_EF_SEARCH, k=1)


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
    extra_excluded_ids: tuple[int, ...] = (),
    with_embedding: bool = False,
) -> tuple[sql.Composed, dict]:
    """The filtered k-NN statement and its parameters (also used by tests and benchmarks to EXPLAIN it)."""
    tables = VersionTables(version_id)
    distance = sql.SQL("v.{} {} %(query)s").format(sql.Identifier(column), sql.SQL(operator))
    # "+ 0" turns the ORDER BY into an expression no index matches: a brute-force scan (recall baseline).
    order = sql.SQL("({}) + 0").format(distance) if exact else distance
    clauses, params = filter_clauses(filters, extra_excluded_ids=extra_excluded_ids)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    statement = sql.SQL(
        "WITH nearest AS MATERIALIZED (SELECT v.item_id, {distance} AS distance{embedding} FROM {table} v{where} "
        "ORDER BY {order} LIMIT %(pool)s) SELECT * FROM nearest ORDER BY distance, item_id LIMIT %(k)s"
    ).format(distance=distance, embedding=sql.SQL(", v.embedding") if with_embedding else sql.SQL(""),
             table=sql.Identifier(tables.items), where=where, order=order)
    # Relaxed order may hand a slightly worse row over before a better one; reading a few more
    # rows than k from the index and keeping the best k after the exact re-sort recovers them.
    pool = int(k) if exact else int(np.ceil(k * RELAXED_OVERFETCH))
    params.update(query=np.asarray(query, dtype=np.float32), k=int(k), pool=pool)
    return statement, params


def _rows_fetch(statement, params: dict, *, ef_search: int, k: int, binary: bool = False) -> list[tuple]:
    raw = _raw_connection()
    cursor_of = _binary_cursor if binary else (lambda connection: connection.cursor())
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
    raw = _raw_connection()
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run one filtered k-NN query; return (item_ids (n,) int64, distances (n,) float64, embeddings or None)."""
    if k < 1:
        return np.zeros(0, dtype=np.int64), np.zeros(0), None
    statement, params = nearest_statement(
        version_id=version_id, column=column, operator=operator, query=query, k=k, filters=filters, exact=exact,
        extra_excluded_ids=extra_excluded_ids, with_embedding=with_embedding)
    rows = _rows_fetch(statement, params, ef_search=ef_search, k=k, binary=with_embedding)
    if len(rows) < k and not exact and k <= EXACT_RETRY_MAX_K:
        # An approximate scan can come back short (iterative scan limits, a sparse graph region
        # after filtering). The exact answer under the same filters is complete by definition,
        # so a short answer is re-asked exactly: callers get k rows whenever k rows exist.
        statement, params = nearest_statement(
            version_id=version_id, column=column, operator=operator, query=query, k=k, filters=filters, exact=True,
            extra_excluded_ids=extra_excluded_ids, with_embedding=with_embedding)
        rows = _rows_fetch(statement, params, ef_search=ef_search, k=k, binary=with_embedding)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    distances = np.fromiter((row[1] for row in rows), dtype=np.float64, count=len(rows))
    embeddings = None
    if with_embedding:
        embeddings = (np.stack([row[2].to_numpy() for row in rows]).astype(np.float64) if rows
                      else np.zeros((0, len(query)), dtype=np.float64))
    return ids, distances, embeddings


def nearest_items_for_user(
    *,
    version_id: int,
    user_vector: np.ndarray,
    k: int,
    filters: AnnFilters | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
    exact: bool = False,
) -> list[tuple[int, float]]:
    """Top-k items by LightFM score (user score vector · item score vector), best first.

    Parameters
    ----------
    user_vector : (d + 2,) float, [user representation, 1, user bias].
    filters : applied inside the HNSW scan (iterative scan), so k rows come back when enough pass.
    exact : brute force over every row (the recall baseline of bench/ann_recall.py).

    Returns
    -------
    list of (item_id, score) with score = the full LightFM score, descending.
    """
    ids, distances, _ = _nearest(version_id=version_id, column="score_vector", operator="<#>", query=user_vector,
                                 k=k, filters=filters or AnnFilters(), ef_search=ef_search, exact=exact)
    return [(int(item_id), float(-distance)) for item_id, distance in zip(ids, distances)]


def item_embedding_fetch(*, version_id: int, item_id: int) -> np.ndarray | None:
    """The bare embedding (d,) float32 of one item, or None if the version has no row for it."""
    raw = _raw_connection()
    with raw.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT embedding FROM {} WHERE item_id = %s").format(
            sql.Identifier(VersionTables(version_id).items)), [item_id])
        row = cursor.fetchone()
    return None if row is None else np.asarray(row[0].to_numpy(), dtype=np.float32)


def item_embeddings_fetch(*, version_id: int, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Return (item_ids (n,) int64, embeddings (n, d) float32) for the given items, in one query."""
    raw = _raw_connection()
    with _binary_cursor(raw) as cursor:
        cursor.execute(sql.SQL("SELECT item_id, embedding FROM {} WHERE item_id = ANY(%s::bigint[])").format(
            sql.Identifier(VersionTables(version_id).items)), [list(item_ids)], binary=True)
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    return ids, np.stack([np.asarray(row[1].to_numpy(), dtype=np.float32) for row in rows])


def nearest_items_to_vector(
    *,
    version_id: int,
    query: np.ndarray,
    k: int,
    filters: AnnFilters | None = None,
    measure: Measure = "cosine",
    alpha: float = 0.5,
    ef_search: int = DEFAULT_EF_SEARCH,
    exact: bool = False,
    exclude_item_ids: tuple[int, ...] = (),
) -> list[tuple[int, float]]:
    """Top-k items whose embedding is most similar to ``query`` (d,) by ``measure``; [(item_id, score)]."""
    if measure not in MEASURES:
        raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
    filters = filters or AnnFilters()
    if measure == "norm_damped":
        # No index orders by |q|^a|v|^a cos; cosine neighbours are its best pool because the
        # damped norm factor only re-weights within a pool of similar directions.
        # The exact baseline re-scores every row that passes the filters.
        pool = 2**31 - 1 if exact else max(k * NORM_DAMPED_POOL_FACTOR, NORM_DAMPED_MIN_POOL)
        ids, _, embeddings = _nearest(version_id=version_id, column="embedding", operator="<=>", query=query,
                                      k=pool, filters=filters, ef_search=max(ef_search, min(pool, EF_SEARCH_LIMIT)),
                                      exact=exact, extra_excluded_ids=exclude_item_ids, with_embedding=True)
        if len(ids) == 0:
            return []
        scores = similarity(query, embeddings, "norm_damped", alpha=alpha)
        order = np.lexsort((ids, -scores))[:k]
        return [(int(ids[i]), float(scores[i])) for i in order]
    ids, distances, _ = _nearest(version_id=version_id, column="embedding", operator=_DISTANCE_OPERATORS[measure],
                                 query=query, k=k, filters=filters, ef_search=ef_search, exact=exact,
                                 extra_excluded_ids=exclude_item_ids)
    scores = _scores_from_distances(measure, distances)
    return [(int(item_id), float(score)) for item_id, score in zip(ids, scores)]


def nearest_items_to_item(
    *,
    version_id: int,
    item_id: int,
    k: int,
    filters: AnnFilters | None = None,
    measure: Measure = "cosine",
    alpha: float = 0.5,
    ef_search: int = DEFAULT_EF_SEARCH,
    exact: bool = False,
) -> list[tuple[int, float]]:
    """Related items: the k items most similar to ``item_id``'s embedding, the seed itself excluded.

    Returns [] when the version has no vector for the seed (an item added after publishing that
    cold start has not embedded yet); the caller decides the fallback.
    """
    query = item_embedding_fetch(version_id=version_id, item_id=item_id)
    if query is None:
        logger.info("ann.seed_without_vector version=%s item=%s", version_id, item_id)
        return []
    return nearest_items_to_vector(version_id=version_id, query=query, k=k, filters=filters, measure=measure,
                                   alpha=alpha, ef_search=ef_search, exact=exact, exclude_item_ids=(int(item_id),))


def nearest_items_to_items(
    *,
    version_id: int,
    item_ids: list[int],
    k: int,
    filters: AnnFilters | None = None,
    measure: Measure = "cosine",
    alpha: float = 0.5,
    ef_search: int = DEFAULT_EF_SEARCH,
    exact: bool = False,
) -> dict[int, list[tuple[int, float]]]:
    """Each seed's k nearest items by embedding, every seed excluded from every list, in ONE statement.

    A LATERAL join runs one (HNSW or exact) k-NN scan per seed inside a single round trip, which
    is what "because you liked" needs for its 5 seeds. Seeds without a vector map to []. A seed
    whose approximate list came back short is re-asked exactly (see `_nearest`). 'norm_damped'
    has no SQL operator and falls back to one `nearest_items_to_vector` call per seed.

    Returns
    -------
    {seed item id: [(item_id, score), ...] best first}
    """
    seeds = [int(item_id) for item_id in dict.fromkeys(item_ids)]
    if measure not in MEASURES:
        raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
    if not seeds or k < 1:
        return {seed: [] for seed in seeds}
    filters = filters or AnnFilters()
    if measure == "norm_damped":
        found = {}
        for seed in seeds:
            query = item_embedding_fetch(version_id=version_id, item_id=seed)
            found[seed] = [] if query is None else nearest_items_to_vector(
                version_id=version_id, query=query, k=k, filters=filters, measure=measure, alpha=alpha,
                ef_search=ef_search, exact=exact, exclude_item_ids=tuple(seeds))
        return found
    rows = _rows_fetch(*_many_statement(version_id, seeds, measure, k, filters, exact), ef_search=ef_search, k=k)
    found = _rows_by_seed(seeds, rows, measure)
    short = [seed for seed, neighbours in found.items() if len(neighbours) < k]
    if short and not exact:
        rows = _rows_fetch(*_many_statement(version_id, short, measure, k, filters, True, excluded=seeds),
                           ef_search=ef_search, k=k)
        found.update({seed: neighbours for seed, neighbours in _rows_by_seed(short, rows, measure).items()
                      if neighbours})
    return found


def _many_statement(version_id: int, seeds: list[int], measure: str, k: int, filters: AnnFilters, exact: bool,
                    excluded: list[int] | None = None) -> tuple[sql.Composed, dict]:
    table = sql.Identifier(VersionTables(version_id).items)
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


connection_created.connect(connection_settings_apply, dispatch_uid="recommender.ann.connection_settings_apply")
