"""pgvector storage for published model versions.

Each version owns two tables, created and filled while the version is *publishing* and never
written again afterwards (except user rows refreshed by fold-in):

- ``rec_item_vectors_v<N>``: ``item_id`` → ``score_vector`` = [item representation, item bias, 1]
  (inner product with a user's score vector equals LightFM's score) and ``embedding`` = the bare
  item representation, for cosine similarity between items. HNSW indexes: inner product on
  ``score_vector`` (personal recommendations), cosine on ``embedding`` (related items).
- ``rec_user_vectors_v<N>``: ``profile_id`` → ``score_vector`` = [user representation, 1, user bias].

Why one table per version rather than one table with a version column: the pgvector dimension is
fixed per version, an HNSW index is built once over exactly one version's rows, a half-written
version is simply a table nobody points at yet, and retiring a version is a cheap DROP TABLE.
Serving finds the tables through the active ModelVersion row, so activation is one atomic update.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction
from psycopg import sql

logger = logging.getLogger(__name__)

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


class VectorIndexError(RuntimeError):
    """An HNSW index could not be built or is not valid; the version must not be activated."""


@dataclass(frozen=True)
class VersionTables:
    version_id: int

    @property
    def items(self) -> str:
        return f"rec_item_vectors_v{int(self.version_id)}"

    @property
    def users(self) -> str:
        return f"rec_user_vectors_v{int(self.version_id)}"

    @property
    def item_ip_index(self) -> str:
        return f"{self.items}_ip_hnsw"

    @property
    def item_cosine_index(self) -> str:
        return f"{self.items}_cos_hnsw"


def _raw_connection():
    connection.ensure_connection()
    raw = connection.connection
    if not getattr(raw, "_pgvector_registered", False):
        from pgvector.psycopg import register_vector

        register_vector(raw)
        raw._pgvector_registered = True
    return raw


def _copy_rows(table: str, columns: list[str], types: list[str], rows_iter) -> None:
    raw = _raw_connection()
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows_iter:
            copy.write_row(row)


def vectors_publish(
    *,
    version_id: int,
    item_ids: np.ndarray,
    item_score_vectors: np.ndarray,
    item_embeddings: np.ndarray,
    user_ids: np.ndarray,
    user_score_vectors: np.ndarray,
) -> VersionTables:
    """Create, fill and index the tables of one version; raise VectorIndexError if an index is invalid.

    Parameters
    ----------
    item_ids : (n_items,) int64, catalogue Item primary keys.
    item_score_vectors : (n_items, d + 2) float32, [representation, bias, 1].
    item_embeddings : (n_items, d) float32, bare representations.
    user_ids : (n_users,) int64, UserProfile primary keys.
    user_score_vectors : (n_users, d + 2) float32, [representation, 1, bias].
    """
    tables = VersionTables(version_id)
    dimension = int(item_embeddings.shape[1])
    if item_score_vectors.shape != (len(item_ids), dimension + 2):
        raise ValueError(f"item_score_vectors has shape {item_score_vectors.shape}, expected "
                         f"({len(item_ids)}, {dimension + 2})")
    if user_score_vectors.shape != (len(user_ids), dimension + 2):
        raise ValueError(f"user_score_vectors has shape {user_score_vectors.shape}, expected "
                         f"({len(user_ids)}, {dimension + 2})")
    vectors_drop(version_id=version_id)  # a re-run of a crashed publish starts clean
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL(
                "CREATE TABLE {} (item_id bigint PRIMARY KEY, score_vector vector({}) NOT NULL, "
                "embedding vector({}) NOT NULL)"
            ).format(sql.Identifier(tables.items), sql.Literal(dimension + 2), sql.Literal(dimension)).as_string())
            cursor.execute(sql.SQL(
                "CREATE TABLE {} (profile_id bigint PRIMARY KEY, score_vector vector({}) NOT NULL, "
                "folded_in_at timestamptz NULL)"
            ).format(sql.Identifier(tables.users), sql.Literal(dimension + 2)).as_string())
        item_score_vectors = np.ascontiguousarray(item_score_vectors, dtype=np.float32)
        item_embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)
        _copy_rows(tables.items, ["item_id", "score_vector", "embedding"], ["int8", "vector", "vector"],
                   zip(item_ids.tolist(), item_score_vectors, item_embeddings))
        _copy_rows(tables.users, ["profile_id", "score_vector"], ["int8", "vector"],
                   zip(user_ids.tolist(), np.ascontiguousarray(user_score_vectors, dtype=np.float32)))
    _build_indexes(tables)
    logger.info("vectors.published version=%s items=%s users=%s dimension=%s",
                version_id, len(item_ids), len(user_ids), dimension)
    return tables


def _build_indexes(tables: VersionTables) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for index, column, ops in (
            (tables.item_ip_index, "score_vector", "vector_ip_ops"),
            (tables.item_cosine_index, "embedding", "vector_cosine_ops"),
        ):
            cursor.execute(sql.SQL(
                "CREATE INDEX {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})"
            ).format(sql.Identifier(index), sql.Identifier(tables.items), sql.Identifier(column), sql.SQL(ops),
                     sql.Literal(HNSW_M), sql.Literal(HNSW_EF_CONSTRUCTION)).as_string())
        cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(tables.items)).as_string())
        cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(tables.users)).as_string())
    for index in (tables.item_ip_index, tables.item_cosine_index):
        if not index_is_valid(index):
            raise VectorIndexError(f"HNSW index {index} is missing or not valid in pg_index; "
                                   "the version will not be activated.")


def index_is_valid(index_name: str) -> bool:
    """True when ``index_name`` exists and PostgreSQL marks it valid and ready (pg_index)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid AND i.indisready FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s",
            [index_name],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def version_tables_exist(version_id: int) -> bool:
    tables = VersionTables(version_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname IN (%s, %s) AND relkind = 'r'",
                       [tables.items, tables.users])
        return cursor.fetchone()[0] == 2


def version_indexes_valid(version_id: int) -> bool:
    tables = VersionTables(version_id)
    return index_is_valid(tables.item_ip_index) and index_is_valid(tables.item_cosine_index)


def vectors_drop(*, version_id: int) -> None:
    tables = VersionTables(version_id)
    with connection.cursor() as cursor:
        for table in (tables.items, tables.users):
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)).as_string())


def item_vectors_fetch(*, version_id: int, item_ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (item_ids (n,) int64, score_vectors (n, d+2) float32) of a version."""
    tables = VersionTables(version_id)
    query = sql.SQL("SELECT item_id, score_vector FROM {}").format(sql.Identifier(tables.items))
    params: list = []
    if item_ids is not None:
        query += sql.SQL(" WHERE item_id = ANY(%s)")
        params.append(list(item_ids))
    raw = _raw_connection()
    with raw.cursor() as cursor:
        cursor.execute(query, params)
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.stack([np.asarray(row[1].to_numpy(), dtype=np.float32) for row in rows])
    return ids, vectors


def user_vector_fetch(*, version_id: int, profile_id: int) -> np.ndarray | None:
    tables = VersionTables(version_id)
    raw = _raw_connection()
    with raw.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT score_vector FROM {} WHERE profile_id = %s").format(
            sql.Identifier(tables.users)), [profile_id])
        row = cursor.fetchone()
    return None if row is None else np.asarray(row[0].to_numpy(), dtype=np.float32)


def user_vector_store(*, version_id: int, profile_id: int, score_vector: np.ndarray) -> None:
    """Insert or replace a user's score vector (fold-in); the next publish replaces it."""
    tables = VersionTables(version_id)
    raw = _raw_connection()
    with raw.cursor() as cursor:
        cursor.execute(sql.SQL(
            "INSERT INTO {} (profile_id, score_vector, folded_in_at) VALUES (%s, %s, now()) "
            "ON CONFLICT (profile_id) DO UPDATE SET score_vector = EXCLUDED.score_vector, folded_in_at = now()"
        ).format(sql.Identifier(tables.users)), [profile_id, np.asarray(score_vector, dtype=np.float32)])


def item_vector_store(*, version_id: int, item_id: int, score_vector: np.ndarray, embedding: np.ndarray) -> None:
    """Insert or replace one item's vectors in a published version (cold start: no retraining).

    HNSW indexes accept inserts, so the item is found by ANN queries at once.
    """
    tables = VersionTables(version_id)
    raw = _raw_connection()
    with raw.cursor() as cursor:
        cursor.execute(sql.SQL(
            "INSERT INTO {} (item_id, score_vector, embedding) VALUES (%s, %s, %s) "
            "ON CONFLICT (item_id) DO UPDATE SET score_vector = EXCLUDED.score_vector, embedding = EXCLUDED.embedding"
        ).format(sql.Identifier(tables.items)),
            [item_id, np.asarray(score_vector, dtype=np.float32), np.asarray(embedding, dtype=np.float32)])


def items_nearest_by_score(
    *, version_id: int, query: np.ndarray, k: int, exact: bool = False, ef_search: int = 100
) -> list[tuple[int, float]]:
    """Top-k items by inner product with a user's score vector: [(item_id, score)], best first.

    ``exact=True`` disables the index for a brute-force answer (the ANN benchmark's baseline).
    """
    tables = VersionTables(version_id)
    raw = _raw_connection()
    query = np.asarray(query, dtype=np.float32)
    with raw.transaction(), raw.cursor() as cursor:
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        else:
            cursor.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(ef_search, k))))
        cursor.execute(sql.SQL(
            "SELECT item_id, -(score_vector <#> %s) AS score FROM {} ORDER BY score_vector <#> %s LIMIT %s"
        ).format(sql.Identifier(tables.items)), [query, query, k])
        return [(int(item_id), float(score)) for item_id, score in cursor.fetchall()]
