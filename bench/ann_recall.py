"""ANN recall against exact search, unfiltered and filtered, on the active version and on 100k synthetic items.

For each query set the table reports recall@k of the HNSW answer against the exact (brute
force) answer under the same filters, how often all k rows came back, and the mean latency of
both. Filters keep ~10% and ~1% of the catalogue: on ml-100k a genre feature of about that
frequency (``require_feature_ids``); on the synthetic set a random 10% / 1% of the ids (the
rest in ``exclude_item_ids``, since synthetic ids have no catalogue rows).

Usage: .venv/bin/python bench/ann_recall.py [--queries 200] [--k 10] [--synthetic-items 100000]
                                            [--ef-search N] [--skip-active] [--skip-synthetic]
The synthetic version lives in a throwaway table (version id 900000 + pid % 1000), dropped at the end.
"""

from __future__ import annotations

import argparse
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

from django.db import connection  # noqa: E402  (after django.setup())

from recommender.selectors import active_version  # noqa: E402  (after django.setup())
from recommender.vectors import pgvector, store  # noqa: E402  (after django.setup())
from recommender.vectors.base import AnnFilters  # noqa: E402  (after django.setup())
from recommender.vectors.pgvector import PgvectorIndex  # noqa: E402  (after django.setup())

ROWS: list[tuple] = []


def plan_uses_hnsw(*, version_id: int, column: str, operator: str, query, k: int, filters: AnnFilters) -> str:
    """'hnsw' if the planner answers this query through an HNSW index, else 'exact' (it may rightly prefer a scan)."""
    statement, params = pgvector.nearest_statement(
        version_id=version_id,
        column=column,
        operator=operator,
        query=np.asarray(query, dtype=np.float32),
        k=k,
        filters=filters,
    )
    return "hnsw" if "_hnsw" in pgvector.explain(statement, params, k=k) else "exact"


def measure(label: str, run, queries, k: int, plan: str = "") -> None:
    """run(query, exact) -> [(item_id, score)]; append one table row."""
    recalls, complete, ann_ms, exact_ms = [], 0, [], []
    for query in queries:
        started = time.perf_counter()
        approximate = run(query, False)
        ann_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        exact = run(query, True)
        exact_ms.append((time.perf_counter() - started) * 1000)
        expected = {item_id for item_id, _ in exact[:k]}
        found = {item_id for item_id, _ in approximate[:k]}
        if expected:
            recalls.append(len(found & expected) / len(expected))
        complete += len(approximate) >= min(k, len(exact)) and len(approximate) >= k
    ROWS.append(
        (
            label,
            plan,
            len(queries),
            float(np.mean(recalls)) if recalls else float("nan"),
            float(np.min(recalls)) if recalls else float("nan"),
            complete / len(queries),
            float(np.median(ann_ms)),
            float(np.percentile(ann_ms, 99)),
            float(np.median(exact_ms)),
        )
    )


def genre_near(fraction: float) -> tuple[int, str, float]:
    """The item feature whose share of active items is closest to ``fraction``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT f.id, f.type || '=' || f.value, "
            "count(*)::float / (SELECT count(*) FROM catalog_item WHERE is_active) "
            "FROM catalog_feature f JOIN catalog_itemfeature l ON l.feature_id = f.id "
            "JOIN catalog_item i ON i.id = l.item_id AND i.is_active WHERE f.subject = 'item' "
            "GROUP BY f.id "
            "ORDER BY abs(ln(count(*)::float / (SELECT count(*) FROM catalog_item WHERE is_active) / %s)) "
            "LIMIT 1",
            [fraction],
        )
        return cursor.fetchone()


def bench_active(n_queries: int, k: int, ef_search: int, rng) -> None:
    version = active_version()
    if version is None:
        print("no active version: skipping the ml-100k part", file=sys.stderr)
        return
    version_id = version.pk
    tables = store.VersionTables(version_id)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT profile_id FROM {tables.users} ORDER BY random() LIMIT %s", [n_queries])
        profiles = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            f"SELECT v.item_id FROM {tables.items} v JOIN catalog_item i ON i.id = v.item_id "
            f"AND i.is_active ORDER BY random() LIMIT %s",
            [n_queries],
        )
        items = [row[0] for row in cursor.fetchall()]
    user_vectors = [store.user_vector_fetch(version_id=version_id, profile_id=p) for p in profiles]
    filter_sets = [("all active", AnnFilters())]
    for fraction in (0.1, 0.01):
        feature_id, name, share = genre_near(fraction)
        filter_sets.append((f"{name} ({share:.1%})", AnnFilters(require_feature_ids=(feature_id,))))
    for filter_name, filters in filter_sets:
        measure(
            f"v{version_id} user->items ip, {filter_name}",
            lambda q, exact, filters=filters: PgvectorIndex(
                version_id, ef_search=ef_search, exact=exact
            ).user_neighbours(q, k=k, filters=filters),
            user_vectors,
            k,
            plan_uses_hnsw(
                version_id=version_id,
                column="score_vector",
                operator="<#>",
                query=user_vectors[0],
                k=k,
                filters=filters,
            ),
        )
        for name, operator in (("cosine", "<=>"), ("dot", "<#>")):
            measure(
                f"v{version_id} item->items {name}, {filter_name}",
                lambda q, exact, name=name, filters=filters: PgvectorIndex(
                    version_id, ef_search=ef_search, exact=exact
                ).item_neighbours([q], k=k, filters=filters, measure=name)[q],
                items,
                k,
                plan_uses_hnsw(
                    version_id=version_id,
                    column="embedding",
                    operator=operator,
                    query=store.item_embedding_fetch(version_id=version_id, item_id=items[0]),
                    k=k,
                    filters=filters,
                ),
            )


def synthetic_vectors(n_items: int, dimension: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item embeddings with popularity-like norms, and LightFM-shaped score vectors.

    The score vectors are in the model's layout [v, b, 1]; `store.vectors_publish` appends the
    MIPS coordinate exactly as it does for a trained version.
    """
    centres = rng.standard_normal((200, dimension))
    embeddings = centres[rng.integers(0, len(centres), n_items)] + 0.5 * rng.standard_normal((n_items, dimension))
    embeddings *= rng.lognormal(0.0, 0.3, (n_items, 1))
    biases = rng.normal(0.0, 0.5, (n_items, 1))
    score_vectors = np.hstack([embeddings, biases, np.ones((n_items, 1))])
    return score_vectors.astype(np.float32), embeddings.astype(np.float32)


def bench_synthetic(
    n_items: int,
    n_queries: int,
    k: int,
    ef_search: int,
    rng,
    dimension: int = 32,
    filtered: bool = True,
    mips_augment: bool = False,
) -> None:
    version_id = 900_000 + os.getpid() % 1000
    score_vectors, embeddings = synthetic_vectors(n_items, dimension, rng)
    started = time.perf_counter()
    store.vectors_publish(
        version_id=version_id,
        item_ids=np.arange(1, n_items + 1),
        item_score_vectors=score_vectors,
        item_embeddings=embeddings,
        user_ids=np.zeros(0, dtype=np.int64),
        user_score_vectors=np.zeros((0, dimension + 2), dtype=np.float32),
        mips_augment=mips_augment,
    )
    print(
        f"synthetic v{version_id}: {n_items} items published and indexed in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    try:
        users = np.hstack(
            [rng.standard_normal((n_queries, dimension)), np.ones((n_queries, 1)), rng.normal(0, 0.5, (n_queries, 1))]
        ).astype(np.float32)
        # As stored for this version ([u, 1, b], or [u, 1, b, 0] with --mips-augment).
        users = np.stack([store.user_search_vector(version_id=version_id, score_vector=user) for user in users])
        items = rng.choice(np.arange(1, n_items + 1), n_queries, replace=False).tolist()
        all_ids = np.arange(1, n_items + 1)
        filter_sets = [("all", AnnFilters(active_only=False))]
        for fraction in (0.1, 0.01) if filtered else ():
            kept = np.zeros(n_items, dtype=bool)
            kept[rng.choice(n_items, int(n_items * fraction), replace=False)] = True
            filter_sets.append(
                (
                    f"random {fraction:.0%} of ids",
                    AnnFilters(active_only=False, exclude_item_ids=tuple(all_ids[~kept].tolist())),
                )
            )
        for filter_name, filters in filter_sets:
            measure(
                f"synthetic {n_items} user->items ip, {filter_name}",
                lambda q, exact, filters=filters: PgvectorIndex(
                    version_id, ef_search=ef_search, exact=exact
                ).user_neighbours(q, k=k, filters=filters),
                list(users),
                k,
                plan_uses_hnsw(
                    version_id=version_id, column="score_vector", operator="<#>", query=users[0], k=k, filters=filters
                ),
            )
            for name, operator in (("cosine", "<=>"), ("dot", "<#>")):
                measure(
                    f"synthetic {n_items} item->items {name}, {filter_name}",
                    lambda q, exact, name=name, filters=filters: PgvectorIndex(
                        version_id, ef_search=ef_search, exact=exact
                    ).item_neighbours([q], k=k, filters=filters, measure=name)[q],
                    items,
                    k,
                    plan_uses_hnsw(
                        version_id=version_id,
                        column="embedding",
                        operator=operator,
                        query=embeddings[items[0] - 1],
                        k=k,
                        filters=filters,
                    ),
                )
    finally:
        store.vectors_drop(version_id=version_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="`make bench --quick`: 50 queries, 20k synthetic items")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--synthetic-items", type=int, default=100_000)
    parser.add_argument("--ef-search", type=int, default=pgvector.DEFAULT_EF_SEARCH)
    parser.add_argument("--skip-active", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--synthetic-unfiltered-only", action="store_true")
    parser.add_argument(
        "--mips-augment",
        action="store_true",
        help="publish the synthetic version with the MIPS coordinate (store.MIPS_AUGMENT)",
    )
    parser.add_argument(
        "--force-index",
        action="store_true",
        help="SET enable_seqscan = off: measure the HNSW path even where the planner would "
        "rightly choose an exact scan (small catalogues, very selective filters)",
    )
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.queries = min(arguments.queries, 50)
        arguments.synthetic_items = min(arguments.synthetic_items, 20_000)
    if arguments.force_index:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
    rng = np.random.default_rng(0)
    if not arguments.skip_active:
        bench_active(arguments.queries, arguments.k, arguments.ef_search, rng)
    if not arguments.skip_synthetic:
        bench_synthetic(
            arguments.synthetic_items,
            arguments.queries,
            arguments.k,
            arguments.ef_search,
            rng,
            filtered=not arguments.synthetic_unfiltered_only,
            mips_augment=arguments.mips_augment,
        )
    print(
        f"ANN recall@{arguments.k} vs exact (ef_search={arguments.ef_search}, "
        f"iterative_scan=relaxed_order, overfetch={pgvector.RELAXED_OVERFETCH}, "
        f"max_scan_tuples={pgvector.MAX_SCAN_TUPLES}"
        f"{', seq scans disabled' if arguments.force_index else ''})"
    )
    header = ("query set", "plan", "n", "recall", "min", "all k", "ann p50 ms", "ann p99 ms", "exact p50 ms")
    print(
        f"{header[0]:<62} {header[1]:>5} {header[2]:>4} {header[3]:>7} {header[4]:>5} {header[5]:>7} "
        f"{header[6]:>10} {header[7]:>10} {header[8]:>12}"
    )
    for label, plan, n, recall, worst, complete, p50, p99, exact_p50 in ROWS:
        print(
            f"{label:<62} {plan:>5} {n:>4} {recall:>7.4f} {worst:>5.2f} {complete:>7.1%} {p50:>10.2f} {p99:>10.2f} "
            f"{exact_p50:>12.2f}"
        )


if __name__ == "__main__":
    main()
