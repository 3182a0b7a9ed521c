"""The recall/latency curve of the active version's pgvector index (HNSW or IVFFlat) against exact top-k.

For a seeded sample of users and items the exact answer is computed once, in numpy, from the
version's own vectors (every active item; the user's rated items excluded, as serving does), and
each point of the curve runs the serving query (`PgvectorIndex`: filters inside the scan,
iterative scan, exact retry when short) at one ``hnsw.ef_search`` (HNSW) or ``ivfflat.probes``
(IVFFlat, ``--probes``):

- user → items: inner product of score vectors, seen items excluded;
- item → items: cosine and inner product of embeddings (related items, "because you liked");
- user → items in one category (~1% of items, ``require_feature_ids``) with seen excluded: the
  filtered case, where the number of rows returned matters as much as recall.

``--builds m:ef_construction,...`` also builds each other pair on a copy of the item table
(timed; dropped afterwards) and runs the same curve on it. The serving defaults are the cheapest
point with recall@k >= the target for user → items and item → items (docs/operations.md).

Usage: python -m bench.ann_curve [--queries 100] [--ef-search 40,100,200,400,1000]
                                 [--probes 10,20,40,80] [--builds 16:64,24:100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

import django  # noqa: E402  (after the sys.path insert: the script runs from any directory)

django.setup()

from django.conf import settings  # noqa: E402  (after django.setup())
from django.db import connection  # noqa: E402  (after django.setup())
from psycopg import sql  # noqa: E402  (after django.setup())

from bench._common import print_table  # noqa: E402  (after django.setup())
from recommender.ml.similarity import top_k  # noqa: E402  (after django.setup())
from recommender.selectors import active_version  # noqa: E402  (after django.setup())
from recommender.vectors import pgvector, store  # noqa: E402  (after django.setup())
from recommender.vectors.base import AnnFilters  # noqa: E402  (after django.setup())
from recommender.vectors.build import hnsw_build_settings  # noqa: E402  (after django.setup())
from recommender.vectors.connection import binary_cursor, raw_connection, vectors_stack  # noqa: E402

TARGET_RECALL = 0.98


def version_arrays(version_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(item ids, score vectors, embeddings, active) of a version, every row, in item id order."""
    table = store.VersionTables(version_id).items
    with binary_cursor(raw_connection()) as cursor:
        cursor.execute(
            sql.SQL(
                "SELECT v.item_id, v.score_vector, v.embedding, coalesce(i.is_active, false) FROM {} v "
                "LEFT JOIN catalog_item i ON i.id = v.item_id ORDER BY v.item_id"
            ).format(sql.Identifier(table)),
            binary=True,
        )
        rows = cursor.fetchall()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    scores = vectors_stack([row[1] for row in rows])
    embeddings = vectors_stack([row[2] for row in rows])
    active = np.fromiter((row[3] for row in rows), dtype=bool, count=len(rows))
    return ids, scores, embeddings, active


def index_method(version_id: int) -> str:
    """The access method ('hnsw' or 'ivfflat') of the version's user -> items index."""
    tables = store.VersionTables(version_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE c.relname IN (%s, %s)",
            [tables.index("ip", "hnsw"), tables.index("ip", "ivfflat")],
        )
        row = cursor.fetchone()
    return str(row[0]) if row else "none"


def index_lists(version_id: int) -> str:
    """The ``lists`` option of the version's IVFFlat user -> items index, as stored."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = %s",
            [store.VersionTables(version_id).index("ip", "ivfflat")],
        )
        row = cursor.fetchone()
    return (row[0] or "").removeprefix("lists=") if row else "?"


def category_near(fraction: float) -> tuple[int, str, float] | None:
    """The item feature whose share of items is closest to ``fraction`` (None without features)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH n AS (SELECT count(*)::float AS items FROM catalog_item WHERE is_active) "
            "SELECT f.id, f.type || '=' || f.value, count(*) / n.items FROM catalog_feature f "
            "JOIN catalog_itemfeature l ON l.feature_id = f.id, n WHERE f.subject = 'item' "
            "GROUP BY f.id, f.type, f.value, n.items ORDER BY abs(ln(count(*) / n.items / %s)) LIMIT 1",
            [fraction],
        )
        return cursor.fetchone()


def feature_items(feature_id: int) -> np.ndarray:
    with connection.cursor() as cursor:
        cursor.execute("SELECT item_id FROM catalog_itemfeature WHERE feature_id = %s", [feature_id])
        return np.asarray([row[0] for row in cursor.fetchall()], dtype=np.int64)


def sample_queries(version_id: int, n: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded sample of ``n`` users of the version and ``n`` active items."""
    tables = store.VersionTables(version_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [seed / 1000.0])
        cursor.execute(f"SELECT profile_id FROM {tables.users} ORDER BY random() LIMIT %s", [n])
        users = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            f"SELECT v.item_id FROM {tables.items} v JOIN catalog_item i ON i.id = v.item_id AND i.is_active "
            "ORDER BY random() LIMIT %s",
            [n],
        )
        items = [row[0] for row in cursor.fetchall()]
    return users, items


def seen_items(profile_id: int) -> tuple[int, ...]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT item_id FROM catalog_feedback WHERE user_id = %s", [profile_id])
        return tuple(row[0] for row in cursor.fetchall())


def _exact(scores: np.ndarray, allowed: np.ndarray, ids: np.ndarray, k: int) -> set[int]:
    masked = np.where(allowed, scores, -np.inf)
    return {int(ids[i]) for i in top_k(masked[None, :], k)[0] if np.isfinite(masked[i])}


def build_copy(
    version_id: int, copy_id: int, m: int, ef_construction: int, n_items: int, dimension: int, user_only: bool = False
) -> float:
    """Copy a version's item table to ``copy_id`` and build its three HNSW indexes; returns build seconds."""
    source, target = store.VersionTables(version_id), store.VersionTables(copy_id)
    build = hnsw_build_settings(
        n_items=n_items, dimension=dimension, m=m, budget_bytes=settings.VECTOR_INDEX_BUILD_MEMORY_BYTES
    )
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(target.items)).as_string())
        cursor.execute(
            sql.SQL("CREATE TABLE {} AS SELECT * FROM {}")
            .format(sql.Identifier(target.items), sql.Identifier(source.items))
            .as_string()
        )
        cursor.execute(f"SET maintenance_work_mem = '{build.maintenance_work_mem}'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {build.parallel_workers}")
        started = time.perf_counter()
        indexes = [
            (target.item_ip_index, "score_vector", "vector_ip_ops"),
            (target.item_cosine_index, "embedding", "vector_cosine_ops"),
            (target.item_embedding_ip_index, "embedding", "vector_ip_ops"),
        ]
        for index, column, ops in indexes[:1] if user_only else indexes:
            cursor.execute(
                sql.SQL("CREATE INDEX {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})")
                .format(
                    sql.Identifier(index),
                    sql.Identifier(target.items),
                    sql.Identifier(column),
                    sql.SQL(ops),
                    sql.Literal(m),
                    sql.Literal(ef_construction),
                )
                .as_string()
            )
        seconds = time.perf_counter() - started
        cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(target.items)).as_string())
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")
    return seconds


def curve(
    *,
    table_version: int,
    arrays,
    users: list[int],
    items: list[int],
    ef_values: list[int],
    k: int,
    build: str,
    overfetches: list[float],
    user_only: bool = False,
    probe_values: list[int] | None = None,
) -> list[dict]:
    """One row per (query kind, ef_search): recall@k mean and min, share of full answers, p50/p99 ms."""
    version = active_version()
    probe_values = probe_values or [pgvector.IVFFLAT_PROBES]
    ids, score_vectors, embeddings, active = arrays
    row_of = {int(item_id): row for row, item_id in enumerate(ids.tolist())}
    user_vectors = {p: store.user_vector_fetch(version_id=version.pk, profile_id=p) for p in users}
    seen = {p: seen_items(p) for p in users}
    category = category_near(0.01)
    in_category = np.zeros(len(ids), dtype=bool)
    if category is not None:
        members = [row_of[i] for i in feature_items(category[0]).tolist() if i in row_of]
        in_category[members] = True
    norms = np.linalg.norm(embeddings, axis=1)
    norms[norms == 0] = 1.0
    unit = embeddings / norms[:, None]

    def seen_mask(profile_id: int) -> np.ndarray:
        mask = np.ones(len(ids), dtype=bool)
        mask[[row_of[i] for i in seen[profile_id] if i in row_of]] = False
        return mask

    # Exact answers, once per query: (query, filters, expected ids).
    cases: dict[str, list] = {"user->items ip, seen excluded": [], "item->items cosine": [], "item->items dot": []}
    category_case = "" if category is None else f"user->items ip, {category[1]} ({category[2]:.1%}), seen excluded"
    if category_case:
        cases[category_case] = []
    for profile_id in users:
        vector = user_vectors[profile_id]
        if vector is None:
            continue
        allowed = active & seen_mask(profile_id)
        scores = score_vectors @ vector
        filters = AnnFilters(exclude_item_ids=seen[profile_id])
        cases["user->items ip, seen excluded"].append((vector, filters, _exact(scores, allowed, ids, k)))
        if category is not None:
            filtered = AnnFilters(exclude_item_ids=seen[profile_id], require_feature_ids=(category[0],))
            expected = _exact(scores, allowed & in_category, ids, k)
            cases[category_case].append((vector, filtered, expected))
    for item_id in items:
        row = row_of[item_id]
        allowed = active.copy()
        allowed[row] = False
        cases["item->items cosine"].append((item_id, AnnFilters(), _exact(unit @ unit[row], allowed, ids, k)))
        cases["item->items dot"].append((item_id, AnnFilters(), _exact(embeddings @ embeddings[row], allowed, ids, k)))

    results = []
    points = [(ef, over, probes) for over in overfetches for probes in probe_values for ef in ef_values]
    for ef_search, overfetch, probes in points:
        index = pgvector.PgvectorIndex(table_version, ef_search=ef_search)
        pgvector.RELAXED_OVERFETCH = overfetch  # read by nearest_statement at each query
        pgvector.IVFFLAT_PROBES = probes  # read when the session settings are applied
        for name, queries in cases.items():
            if user_only and not name.startswith("user"):
                continue  # that copy has no embedding indexes: its item queries would be exact scans
            recalls, full, times = [], 0, []
            for query, filters, expected in queries:
                started = time.perf_counter()
                if name.startswith("user"):
                    found = index.user_neighbours(query, k=k, filters=filters)
                else:
                    measure = "cosine" if "cosine" in name else "dot"
                    found = index.item_neighbours([query], k=k, filters=filters, measure=measure)[query]
                times.append((time.perf_counter() - started) * 1000)
                got = {item_id for item_id, _ in found[:k]}
                full += len(found) >= min(k, len(expected))
                if expected:
                    recalls.append(len(got & expected) / len(expected))
            results.append(
                {
                    "build": build,
                    "query": name,
                    "ef_search": ef_search,
                    "probes": probes,
                    "overfetch": overfetch,
                    "n": len(queries),
                    "recall": float(np.mean(recalls)) if recalls else float("nan"),
                    "min_recall": float(np.min(recalls)) if recalls else float("nan"),
                    "full_answers": full / max(len(queries), 1),
                    "p50_ms": float(np.median(times)) if times else float("nan"),
                    "p99_ms": float(np.percentile(times, 99)) if times else float("nan"),
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="30 queries, three ef_search values")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--ef-search", default="40,100,200,400,1000", help="Comma-separated hnsw.ef_search values, or 'serving'."
    )
    parser.add_argument(
        "--probes", default="serving", help="Comma-separated ivfflat.probes values (IVFFlat versions), or 'serving'."
    )
    parser.add_argument("--overfetch", default="2", help="Comma-separated pool factors (rows read = factor x k).")
    parser.add_argument("--builds", default="", help="Other m:ef_construction pairs to build and measure, e.g. 24:100.")
    parser.add_argument(
        "--builds-user-only", action="store_true", help="Build only the score-vector index (user -> items) per pair."
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default="", help="Also write the rows to this file.")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.ef_search = min(args.queries, 30), "100,400,1000"
    version = active_version()
    if version is None:
        print("no active version: nothing to measure")
        return 0
    overfetches = (
        [pgvector.RELAXED_OVERFETCH]
        if args.ef_search == "serving"
        else [float(value) for value in args.overfetch.split(",") if value]
    )
    # "serving": the one point serving uses (bench.scale's recall rows).
    ef_values = (
        [pgvector.DEFAULT_EF_SEARCH]
        if args.ef_search == "serving"
        else [int(value) for value in args.ef_search.split(",") if value]
    )
    probe_values = [pgvector.IVFFLAT_PROBES]
    if args.probes != "serving":
        probe_values = [int(value) for value in args.probes.split(",") if value]
    method = index_method(version.pk)
    if method != "ivfflat":
        probe_values = probe_values[:1]  # inert on HNSW indexes: one pass
    else:
        ef_values = ef_values[:1]  # inert on IVFFlat indexes
    started = time.perf_counter()
    arrays = version_arrays(version.pk)
    users, items = sample_queries(version.pk, args.queries, args.seed)
    print(f"loaded {len(arrays[0]):,} vectors in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    dimension = int(arrays[1].shape[1])
    rows = curve(
        table_version=version.pk,
        arrays=arrays,
        users=users,
        items=items,
        ef_values=ef_values,
        k=args.k,
        build=(
            f"ivfflat lists={index_lists(version.pk)} (published)"
            if method == "ivfflat"
            else f"m={settings.VECTOR_HNSW_M} efc={settings.VECTOR_HNSW_EF_CONSTRUCTION} (published)"
        ),
        overfetches=overfetches,
        probe_values=probe_values,
    )
    build_seconds = {}
    for pair in [value for value in args.builds.split(",") if value]:
        m, ef_construction = (int(part) for part in pair.split(":"))
        copy_id = 900_000 + os.getpid() % 1000
        try:
            seconds = build_copy(
                version.pk, copy_id, m, ef_construction, len(arrays[0]), dimension, args.builds_user_only
            )
            label = f"m={m} efc={ef_construction}"
            build_seconds[label] = seconds
            print(f"built {label} in {seconds:.0f} s", file=sys.stderr)
            rows += curve(
                table_version=copy_id,
                arrays=arrays,
                users=users,
                items=items,
                ef_values=ef_values,
                k=args.k,
                build=label,
                overfetches=overfetches,
                user_only=args.builds_user_only,
            )
        finally:
            store.vectors_drop(version_id=copy_id)
    print_table(
        f"{method} recall@{args.k} against exact top-{args.k} of the same vectors, v{version.pk}, "
        f"{len(arrays[0]):,} items (serving query: filters in the scan, iterative scan, "
        f"max_scan_tuples={pgvector.MAX_SCAN_TUPLES})",
        [
            *["index", "query", "ef_search", "probes", "overfetch", "n"],
            *["recall", "min", "full answers", "p50 ms", "p99 ms"],
        ],
        [
            [
                r["build"],
                r["query"],
                r["ef_search"] if method != "ivfflat" else "",
                r["probes"] if method == "ivfflat" else "",
                r["overfetch"],
                r["n"],
                r["recall"],
                r["min_recall"],
                r["full_answers"],
                r["p50_ms"],
                r["p99_ms"],
            ]
            for r in rows
        ],
        note="Exact answers from numpy over the version's own vectors with the same filters. Index build seconds "
        + (", ".join(f"{label}: {seconds:.0f} s" for label, seconds in build_seconds.items()) or "(none built here)")
        + f". Target: recall >= {TARGET_RECALL} for user -> items and item -> items.",
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "build_seconds": build_seconds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
