"""The vector store: publish, fetch, drop and check the pgvector tables of model versions.

Reading neighbours is the indexes' job (`recommender.vectors.base.VectorIndex`); this module
owns the tables themselves.

Each version owns two tables, created and filled while the version is *publishing* and never
written again afterwards (except user rows refreshed by fold-in):

- ``rec_item_vectors_v<N>``: ``item_id`` → ``score_vector`` = [item representation, item bias, 1]
  (inner product with a user's score vector equals LightFM's score) and ``embedding`` = the bare
  item representation, for similarity between items. HNSW indexes: inner product on
  ``score_vector`` (personal recommendations); cosine and inner product on ``embedding`` (related
  items under the 'cosine' / 'norm_damped' and 'dot' measures).
- ``rec_user_vectors_v<N>``: ``profile_id`` → ``score_vector`` = [user representation, 1, user bias].

Optionally (``mips_augment``, off by default, see `MIPS_AUGMENT` for the measurement) publishing
applies the MIPS → nearest-neighbour reduction: item rows get sqrt(M² − ‖s‖²) appended (M = the
largest norm of the version's [v, b, 1] rows, kept in the table's comment ``mips_max_norm=…``)
and user rows a 0, so inner products are unchanged and every item has norm M. Cold start then
uses the version's M; an item longer than M gets 0 (its scores stay exact). Readers need not
know which layout a version has: scores are inner products of stored rows either way, and
`user_vector_store` / `user_search_vector` pad model-layout user vectors only for augmented tables.

Vector spaces: a family whose score is an inner product (`families.base.VectorFamily`, e.g. the
two-tower model) publishes its own item table in the same layout, ``rec_item_vectors_v<N>__<family>``
(``space`` = the family's name; "" is LightFM's), with the same three ANN indexes and no user
table: its queries are computed at request time from the user's live history. Every function here
takes ``space`` (default ""), retiring a version drops all of its spaces, and activation checks
every space's indexes.

Why one table per version rather than one table with a version column: the pgvector dimension is
fixed per version, an HNSW index is built once over exactly one version's rows, a half-written
version is simply a table nobody points at yet, and retiring a version is a cheap DROP TABLE.
Serving finds the tables through the active ModelVersion row, so activation is one atomic update.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from psycopg import sql

from .build import HNSW, IVFFLAT, AnnPlan, ann_plan_choose, hnsw_build_settings
from .build_progress import BuildStep, BuildWatcher, Report
from .connection import binary_cursor, raw_connection, vectors_stack

logger = logging.getLogger(__name__)

# The MIPS → NN reduction is implemented but OFF by default: measured with pgvector HNSW on
# 30k synthetic items (bench/ann_recall.py's generator, 100 random users, ef_search 400) it
# LOWERED inner-product recall@10 from 0.994 (raw score vectors) to 0.643 (ef 100: 0.929 → 0.308).
# With M the largest norm, most items are dominated by the appended coordinate, and a user query
# (0 there) is nearly orthogonal to every item: the graph's neighbourhoods stop predicting the
# query's answer (Morozov & Babenko, NeurIPS 2018, report the same direction on real data).
MIPS_AUGMENT = False
# Columns the stored score vectors carry beyond the representation: bias, 1 (or 1, bias for
# users) and the MIPS coordinate (0 for users).
SCORE_EXTRA_COLUMNS = 3


class VectorIndexError(RuntimeError):
    """An ANN index could not be built or is not valid; the version must not be activated."""


_SPACE_NAME = re.compile(r"[a-z][a-z0-9_]{0,23}")


@dataclass(frozen=True)
class VersionTables:
    version_id: int
    space: str = ""  # "" = LightFM's vectors; else a vector family's name

    def __post_init__(self) -> None:
        if self.space and not _SPACE_NAME.fullmatch(self.space):
            raise ValueError(
                f"vector space names are lower-case identifiers of at most 24 characters, got {self.space!r}"
            )

    @property
    def items(self) -> str:
        suffix = f"__{self.space}" if self.space else ""
        return f"rec_item_vectors_v{int(self.version_id)}{suffix}"

    @property
    def users(self) -> str:
        suffix = f"__{self.space}" if self.space else ""
        return f"rec_user_vectors_v{int(self.version_id)}{suffix}"

    def index(self, role: str, method: str = HNSW) -> str:
        """The index of ``role`` ('ip', 'cos', 'emb_ip') built with ``method`` ('hnsw', 'ivfflat')."""
        return f"{self.items}_{role}_{method}"

    @property
    def item_ip_index(self) -> str:
        return self.index("ip")

    @property
    def item_cosine_index(self) -> str:
        return self.index("cos")

    @property
    def item_embedding_ip_index(self) -> str:
        return self.index("emb_ip")

    @property
    def required_indexes(self) -> tuple[tuple[str, ...], ...]:
        """What activation checks: per role, the names it may have (one per method). Versions
        published before the embedding inner-product index existed lack it and answer 'dot'
        related items with an exact scan, still correctly."""
        return tuple(tuple(self.index(role, method) for method in (HNSW, IVFFLAT)) for role in ("ip", "cos"))


def _copy_rows(table: str, columns: list[str], types: list[str], rows_iter) -> None:
    raw = raw_connection(write=True)
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
    user_ids: np.ndarray | None = None,
    user_score_vectors: np.ndarray | None = None,
    mips_augment: bool | None = None,
    progress: Report | None = None,
    space: str = "",
) -> VersionTables:
    """Create, fill and index the tables of one version; raise VectorIndexError if an index is invalid.

    ``mips_augment`` (default `MIPS_AUGMENT`) stores the MIPS coordinate (items: d + 3 columns,
    users: a trailing 0); without it score vectors keep the model's d + 2 layout.

    Parameters
    ----------
    item_ids : (n_items,) int64, catalogue Item primary keys.
    item_score_vectors : (n_items, d + 2) float32, [representation, bias, 1] (the model's layout;
        the MIPS coordinate is appended here, see `item_score_vectors_equalise`).
    item_embeddings : (n_items, d) float32, bare representations.
    user_ids : (n_users,) int64, UserProfile primary keys; None for a space without stored users
        (a vector family's, whose queries are computed at request time): no user table.
    user_score_vectors : (n_users, d + 2) float32, [representation, 1, bias] (0 appended here).
    space : "" for LightFM's tables, else the vector family's name (see the module notes).
    progress : callable(message), optional
        Told what is being written, and during each HNSW build how far it got (polled from
        ``pg_stat_progress_create_index`` by another thread: see `build_progress`).
    """
    report = progress or (lambda message: None)
    tables = VersionTables(version_id, space)
    with_users = user_ids is not None
    if user_ids is None or user_score_vectors is None:
        if with_users:
            raise ValueError("user_ids were given without user_score_vectors")
        user_ids = np.zeros(0, dtype=np.int64)
        user_score_vectors = np.zeros((0, int(item_embeddings.shape[1]) + 2), dtype=np.float32)
    dimension = int(item_embeddings.shape[1])
    if item_score_vectors.shape != (len(item_ids), dimension + 2):
        raise ValueError(
            f"item_score_vectors has shape {item_score_vectors.shape}, expected ({len(item_ids)}, {dimension + 2})"
        )
    if user_score_vectors.shape != (len(user_ids), dimension + 2):
        raise ValueError(
            f"user_score_vectors has shape {user_score_vectors.shape}, expected ({len(user_ids)}, {dimension + 2})"
        )
    _tables_drop(tables)  # a re-run of a crashed publish starts clean (its own space only)
    augment = MIPS_AUGMENT if mips_augment is None else mips_augment
    if augment:
        item_score_vectors, max_norm = item_score_vectors_equalise(item_score_vectors)
        user_score_vectors = user_score_vectors_pad(user_score_vectors)
    else:
        item_score_vectors = np.ascontiguousarray(item_score_vectors, dtype=np.float32)
    extra_columns = SCORE_EXTRA_COLUMNS if augment else SCORE_EXTRA_COLUMNS - 1
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE {} (item_id bigint PRIMARY KEY, score_vector vector({}) NOT NULL, "
                    "embedding vector({}) NOT NULL)"
                )
                .format(sql.Identifier(tables.items), sql.Literal(dimension + extra_columns), sql.Literal(dimension))
                .as_string()
            )
            if augment:
                cursor.execute(
                    sql.SQL("COMMENT ON TABLE {} IS {}")
                    .format(sql.Identifier(tables.items), sql.Literal(f"mips_max_norm={max_norm!r}"))
                    .as_string()
                )
            if with_users:
                cursor.execute(
                    sql.SQL(
                        "CREATE TABLE {} (profile_id bigint PRIMARY KEY, score_vector vector({}) NOT NULL, "
                        "folded_in_at timestamptz NULL)"
                    )
                    .format(sql.Identifier(tables.users), sql.Literal(dimension + extra_columns))
                    .as_string()
                )
        item_embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)
        report(f"copying {len(item_ids):,} item vectors")
        _copy_rows(
            tables.items,
            ["item_id", "score_vector", "embedding"],
            ["int8", "vector", "vector"],
            zip(item_ids.tolist(), item_score_vectors, item_embeddings, strict=False),
        )
        if with_users:
            report(f"copying {len(user_ids):,} user vectors")
            _copy_rows(
                tables.users,
                ["profile_id", "score_vector"],
                ["int8", "vector"],
                zip(user_ids.tolist(), np.ascontiguousarray(user_score_vectors, dtype=np.float32), strict=True),
            )
    plan = _build_indexes(
        tables,
        n_items=len(item_ids),
        dimension=int(np.asarray(item_score_vectors).shape[1]),
        report=report,
        with_users=with_users,
    )
    logger.info(
        "vectors.published version=%s space=%r items=%s users=%s dimension=%s index_method=%s",
        version_id,
        space,
        len(item_ids),
        len(user_ids),
        dimension,
        plan.method,
    )
    return tables


def item_score_vectors_equalise(
    score_vectors: np.ndarray, *, max_norm: float | None = None
) -> tuple[np.ndarray, float]:
    """Append the MIPS coordinate sqrt(M² − ‖s‖²) so every item score vector has norm M.

    Parameters
    ----------
    score_vectors : (n, d + 2) float, [representation, bias, 1] rows.
    max_norm : M; None takes the largest row norm (publishing). Cold start passes the version's M,
        and a row longer than M gets 0 (clipped: its inner products stay exact).

    Returns
    -------
    ((n, d + 3) float32 rows, M as a float).
    """
    rows = np.asarray(score_vectors, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[None, :]
    squared = np.einsum("ij,ij->i", rows, rows)
    if max_norm is None:
        max_norm = float(np.sqrt(squared.max())) if len(rows) else 0.0
    extra = np.sqrt(np.clip(max_norm * max_norm - squared, 0.0, None))
    return np.ascontiguousarray(np.hstack([rows, extra[:, None]]), dtype=np.float32), float(max_norm)


def user_search_vector(*, version_id: int, score_vector: np.ndarray) -> np.ndarray:
    """A model-layout user vector [u, 1, b] as the version's ANN queries need it (0 appended when augmented)."""
    vector = np.asarray(score_vector, dtype=np.float32)
    if _score_dimension(VersionTables(version_id).items) == len(vector) + 1:
        return user_score_vectors_pad(vector)
    return vector


def user_score_vectors_pad(score_vectors: np.ndarray) -> np.ndarray:
    """[u, 1, b] rows (n, d + 2) or one row (d + 2,) → with a 0 appended (the MIPS coordinate's partner)."""
    rows = np.asarray(score_vectors, dtype=np.float32)
    padding = np.zeros((*rows.shape[:-1], 1), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate([rows, padding], axis=-1))


def item_max_norm(*, version_id: int, space: str = "") -> float | None:
    """The version's M (set at publish time, kept in the item table's comment); None for a version
    published before the MIPS coordinate existed (score vectors of d + 2)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", [VersionTables(version_id, space).items])
        row = cursor.fetchone()
    comment = (row[0] or "") if row else ""
    if not comment.startswith("mips_max_norm="):
        return None
    return float(comment.split("=", 1)[1])


def _score_dimension(table: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'score_vector'", [table]
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None


# (role, column, operator class) of each ANN index of a version's item table.
_INDEXES = (
    ("ip", "score_vector", "vector_ip_ops"),
    ("cos", "embedding", "vector_cosine_ops"),
    # 'dot' (the pipeline's related-items and because-you-liked measure) on the bare embedding:
    # without it those are exact scans, ~50 ms each at 100k items.
    ("emb_ip", "embedding", "vector_ip_ops"),
)


def _pilot_seconds(cursor, tables: VersionTables, *, n_items: int) -> float | None:
    """Seconds of one HNSW build over a seeded sample of the version's score vectors; None when
    the catalogue is no larger than the sample (its own build is then as cheap as the pilot)."""
    pilot_items = int(settings.VECTOR_INDEX_PILOT_ITEMS)
    if n_items <= pilot_items:
        return None
    share = min(100.0, 100.0 * pilot_items / n_items)
    cursor.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE rec_index_pilot AS SELECT score_vector FROM {} TABLESAMPLE SYSTEM ({}) "
            "REPEATABLE (0) LIMIT {}"
        )
        .format(sql.Identifier(tables.items), sql.Literal(share), sql.Literal(pilot_items))
        .as_string()
    )
    try:
        started = time.perf_counter()
        cursor.execute(
            sql.SQL(
                "CREATE INDEX ON rec_index_pilot USING hnsw (score_vector vector_ip_ops) "
                "WITH (m = {}, ef_construction = {})"
            )
            .format(sql.Literal(settings.VECTOR_HNSW_M), sql.Literal(settings.VECTOR_HNSW_EF_CONSTRUCTION))
            .as_string()
        )
        seconds = time.perf_counter() - started
        cursor.execute("SELECT count(*) FROM rec_index_pilot")
        sampled = int(cursor.fetchone()[0])
    finally:
        cursor.execute("DROP TABLE IF EXISTS rec_index_pilot")
    # The sample may hold a few rows less than asked (block sampling): scale to what it held.
    return seconds * pilot_items / max(sampled, 1)


def _build_indexes(
    tables: VersionTables, *, n_items: int, dimension: int, report: Report, with_users: bool = True
) -> AnnPlan:
    build = hnsw_build_settings(
        n_items=n_items,
        dimension=dimension,
        m=settings.VECTOR_HNSW_M,
        budget_bytes=settings.VECTOR_INDEX_BUILD_MEMORY_BYTES,
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Session settings of this build only (a SET inside the publishing transaction's connection).
        cursor.execute(
            sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(build.maintenance_work_mem)).as_string()
        )
        cursor.execute(
            sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(build.parallel_workers)).as_string()
        )
        if n_items > int(settings.VECTOR_INDEX_PILOT_ITEMS):
            report(f"timing a pilot HNSW build over {int(settings.VECTOR_INDEX_PILOT_ITEMS):,} sampled items")
        plan = ann_plan_choose(
            n_items=n_items,
            n_indexes=len(_INDEXES),
            pilot_seconds=_pilot_seconds(cursor, tables, n_items=n_items),
            pilot_items=int(settings.VECTOR_INDEX_PILOT_ITEMS),
            budget_seconds=float(settings.VECTOR_INDEX_BUILD_SECONDS),
            rows_per_list=int(settings.VECTOR_IVFFLAT_ROWS_PER_LIST),
        )
        logger.info(
            "vectors.index_build table=%s items=%s method=%s reason=%r graph_mib=%.0f maintenance_work_mem=%s "
            "parallel_workers=%s",
            tables.items,
            n_items,
            plan.method,
            plan.reason,
            build.graph_bytes / 2**20,
            build.maintenance_work_mem,
            build.parallel_workers,
        )
        report(f"building {len(_INDEXES)} {plan.method} indexes over {n_items:,} items ({plan.reason})")
        if plan.method == HNSW:
            options = sql.SQL("m = {}, ef_construction = {}").format(
                sql.Literal(settings.VECTOR_HNSW_M), sql.Literal(settings.VECTOR_HNSW_EF_CONSTRUCTION)
            )
        else:
            options = sql.SQL("lists = {}").format(sql.Literal(plan.lists))
        cursor.execute("SELECT pg_backend_pid()")
        backend_pid = int(cursor.fetchone()[0])
        for number, (role, column, ops) in enumerate(_INDEXES, start=1):
            index = tables.index(role, plan.method)
            step = BuildStep(number=number, total=len(_INDEXES), index=index, n_items=n_items, method=plan.method)
            with BuildWatcher(backend_pid, step, report):
                cursor.execute(
                    sql.SQL("CREATE INDEX {} ON {} USING {} ({} {}) WITH ({})")
                    .format(
                        sql.Identifier(index),
                        sql.Identifier(tables.items),
                        sql.SQL(plan.method),
                        sql.Identifier(column),
                        sql.SQL(ops),
                        options,
                    )
                    .as_string()
                )
        cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(tables.items)).as_string())
        if with_users:
            cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(tables.users)).as_string())
        # The session goes on serving other statements (a worker's connection): back to the defaults.
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")
    logger.info(
        "vectors.index_built table=%s method=%s indexes=%s seconds=%.2f",
        tables.items,
        plan.method,
        len(_INDEXES),
        time.perf_counter() - started,
    )
    for role, _, _ in _INDEXES:
        index = tables.index(role, plan.method)
        if not index_is_valid(index):
            raise VectorIndexError(
                f"{plan.method} index {index} is missing or not valid in pg_index; the version will not be activated."
            )
    return plan


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
        cursor.execute(
            "SELECT count(*) FROM pg_class WHERE relname IN (%s, %s) AND relkind = 'r'", [tables.items, tables.users]
        )
        return cursor.fetchone()[0] == 2


def version_spaces(version_id: int) -> list[str]:
    """The vector families' spaces published for a version (LightFM's "" not included), sorted."""
    prefix = VersionTables(version_id).items + "__"
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND starts_with(relname::text, %s)", [prefix])
        return sorted(row[0][len(prefix) :] for row in cursor.fetchall())


def version_indexes_valid(version_id: int) -> bool:
    """Every index activation needs, in LightFM's tables and in every space the version published."""
    return all(
        any(index_is_valid(name) for name in names)
        for space in ("", *version_spaces(version_id))
        for names in VersionTables(version_id, space).required_indexes
    )


def _tables_drop(tables: VersionTables) -> None:
    with connection.cursor() as cursor:
        for table in (tables.items, tables.users):
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)).as_string())


def vectors_drop(*, version_id: int) -> None:
    """Drop a version's tables: LightFM's and every vector family's space."""
    for space in ("", *version_spaces(version_id)):
        _tables_drop(VersionTables(version_id, space))


def item_vectors_fetch(
    *, version_id: int, item_ids: list[int] | None = None, space: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Return (item_ids (n,) int64, score_vectors (n, d + 2) float32) of a version (d + 3 when augmented).

    Rows are [representation, bias, 1(, MIPS coordinate)]; their inner product with a stored user
    score vector is LightFM's score (in a vector family's space: its query's score). Read in binary.
    """
    tables = VersionTables(version_id, space)
    query = sql.SQL("SELECT item_id, score_vector FROM {}").format(sql.Identifier(tables.items))
    params: list = []
    if item_ids is not None:
        query += sql.SQL(" WHERE item_id = ANY(%s)")
        params.append(list(item_ids))
    raw = raw_connection()
    with binary_cursor(raw) as cursor:
        cursor.execute(query, params, binary=True)
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    return ids, vectors_stack([row[1] for row in rows])


def user_vector_fetch(*, version_id: int, profile_id: int) -> np.ndarray | None:
    """The stored user score vector [u, 1, b] (d + 2,) float32 ([u, 1, b, 0] when augmented), or None."""
    tables = VersionTables(version_id)
    raw = raw_connection()
    with binary_cursor(raw) as cursor:
        cursor.execute(
            sql.SQL("SELECT score_vector FROM {} WHERE profile_id = %s").format(sql.Identifier(tables.users)),
            [profile_id],
            binary=True,
        )
        row = cursor.fetchone()
    return None if row is None else np.asarray(row[0].to_numpy(), dtype=np.float32)


def user_vector_store(*, version_id: int, profile_id: int, score_vector: np.ndarray) -> np.ndarray:
    """Insert or replace a user's score vector (fold-in); the next publish replaces it.

    ``score_vector`` is in the model's layout (d + 2,) [u, 1, b]; for an augmented version the 0
    MIPS coordinate is appended here. Returns the stored vector, the one ANN queries and the scorer use.
    """
    tables = VersionTables(version_id)
    stored = np.asarray(score_vector, dtype=np.float32)
    if _score_dimension(tables.users) == len(stored) + 1:  # older versions (d + 2) get no padding
        stored = user_score_vectors_pad(stored)
    raw = raw_connection(write=True)
    with raw.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "INSERT INTO {} (profile_id, score_vector, folded_in_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (profile_id) DO UPDATE SET score_vector = EXCLUDED.score_vector, folded_in_at = now()"
            ).format(sql.Identifier(tables.users)),
            [profile_id, stored],
        )
    return stored


def item_vector_store(
    *, version_id: int, item_id: int, score_vector: np.ndarray, embedding: np.ndarray, space: str = ""
) -> None:
    """Insert or replace one item's vectors in a published version (cold start: no retraining).

    ``score_vector`` is in the model's layout (d + 2,) [v, b, 1]; for an augmented version the MIPS
    coordinate sqrt(M² − ‖s‖²) is appended with the version's M, clipped at 0 when the new item is
    longer than M (its inner products stay exact; only its graph recall is that of plain MIPS). HNSW indexes accept
    inserts, so the item is found by ANN queries at once.
    """
    tables = VersionTables(version_id, space)
    max_norm = item_max_norm(version_id=version_id, space=space)
    stored = (
        np.asarray(score_vector, dtype=np.float32)[None, :]
        if max_norm is None  # published before MIPS
        else item_score_vectors_equalise(score_vector, max_norm=max_norm)[0]
    )
    raw = raw_connection(write=True)
    with raw.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "INSERT INTO {} (item_id, score_vector, embedding) VALUES (%s, %s, %s) "
                "ON CONFLICT (item_id) DO UPDATE SET score_vector = EXCLUDED.score_vector, "
                "embedding = EXCLUDED.embedding"
            ).format(sql.Identifier(tables.items)),
            [item_id, stored[0], np.asarray(embedding, dtype=np.float32)],
        )


def item_embedding_fetch(*, version_id: int, item_id: int, space: str = "") -> np.ndarray | None:
    """The bare embedding (d,) float32 of one item, or None if the version has no row for it."""
    ids, embeddings = item_embeddings_fetch(version_id=version_id, item_ids=[item_id], space=space)
    return embeddings[0] if len(ids) else None


def item_embeddings_fetch(*, version_id: int, item_ids: list[int], space: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Return (item_ids (n,) int64, embeddings (n, d) float32) for the given items, in one query."""
    raw = raw_connection()
    with binary_cursor(raw) as cursor:
        cursor.execute(
            sql.SQL("SELECT item_id, embedding FROM {} WHERE item_id = ANY(%s::bigint[])").format(
                sql.Identifier(VersionTables(version_id, space).items)
            ),
            [list(item_ids)],
            binary=True,
        )
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    return ids, vectors_stack([row[1] for row in rows])
