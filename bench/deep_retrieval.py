"""Deep Retrieval against brute force and pgvector HNSW on the same synthetic score vectors.

A synthetic catalogue in LightFM's layout (items [v, b, 1], users [u, 1, b]; clustered embeddings
with popularity-like norms, as bench/ann_recall.py makes them, users near the same centres) is
indexed three ways: a Deep Retrieval structure per (D, K) setting, fitted on ``--train-users``
users plus ``--item-query-share`` of the items as queries (what `deep_retrieval_build` fits on)
and searched at several beams; brute force with numpy; and pgvector HNSW with the serving
settings (a throwaway version published with `store.vectors_publish` into a scratch database on
the embedded server, both dropped at the end). Every
row is measured on the same ``--queries`` held-out users (drawn like the training users) and as
many users off the training distribution (bench/ann_recall.py's: tastes from N(0, I)): recall@10
and recall@100 against the brute-force answer of the same scores, the share of items scored per query (Deep Retrieval
rescores its candidates exactly; brute force scores all), p50 query time, and build time.

The target the issue sets: recall@100 >= 0.90 with <= 10% of the items rescored per query.

Usage: .venv/bin/python bench/deep_retrieval.py [--quick] [--items 100000] [--dimension 32]
       [--train-users 10000] [--queries 200] [--settings "2x64:64,128,256;3x32:256,512"]
       [--init kmeans] [--skip-pgvector]
The table is printed on stdout and written nowhere else. Set OMP_NUM_THREADS=1 for one-thread numpy.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

from bench._common import print_table, scratch_database  # noqa: E402  (after the sys.path insert)
from recommender.ml.deep_retrieval import DeepRetrievalParams, item_queries  # noqa: E402  (after the sys.path insert)
from recommender.ml.deep_retrieval_training import deep_retrieval_fit, exact_targets  # noqa: E402
from recommender.ml.similarity import top_k  # noqa: E402  (after the sys.path insert)

SCRATCH_DATABASE = "bench_deep_retrieval"
COLUMNS = [
    "index",
    "setting",
    "queries",
    "recall@10",
    "recall@100",
    "scored / query",
    "p50 ms",
    "build s",
]


def synthetic_catalogue(n_items: int, n_users: int, dimension: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item score vectors (n, d + 2), item embeddings (n, d), user score vectors (n_users, d + 2)), float32."""
    centres = rng.standard_normal((200, dimension))
    embeddings = centres[rng.integers(0, len(centres), n_items)] + 0.5 * rng.standard_normal((n_items, dimension))
    embeddings *= rng.lognormal(0.0, 0.3, (n_items, 1))
    items = np.hstack([embeddings, rng.normal(0.0, 0.5, (n_items, 1)), np.ones((n_items, 1))])
    tastes = centres[rng.integers(0, len(centres), n_users)] + 0.7 * rng.standard_normal((n_users, dimension))
    users = np.hstack([tastes, np.ones((n_users, 1)), rng.normal(0.0, 0.5, (n_users, 1))])
    return items.astype(np.float32), embeddings.astype(np.float32), users.astype(np.float32)


def recalls(found: list[np.ndarray], truth: np.ndarray) -> tuple[float, float]:
    """Mean recall@10 and recall@100 of per-query answers (best first) against the exact top 100."""
    at_10 = [
        len(set(rows[:10].tolist()) & set(exact[:10].tolist())) / 10 for rows, exact in zip(found, truth, strict=True)
    ]
    at_100 = [
        len(set(rows[:100].tolist()) & set(exact.tolist())) / 100 for rows, exact in zip(found, truth, strict=True)
    ]
    return float(np.mean(at_10)), float(np.mean(at_100))


def bench_brute_force(items: np.ndarray, query_sets: dict) -> list[list]:
    rows = []
    for name, (queries, truth) in query_sets.items():
        found, times = [], []
        for query in queries:
            started = time.perf_counter()
            scores = items.astype(np.float64) @ query.astype(np.float64)  # as ExactIndex scans
            found.append(top_k(scores, 100))
            times.append(1000 * (time.perf_counter() - started))
        rows.append(["brute force (numpy)", "", name, *recalls(found, truth), 1.0, float(np.median(times)), 0.0])
    return rows


def bench_deep_retrieval(
    items, train_users, query_sets: dict, *, layers, nodes, beams, params, item_training_queries
) -> list[list]:
    params = replace(params, layers=layers, nodes=nodes)
    started = time.perf_counter()
    structure = deep_retrieval_fit(items, np.concatenate([train_users, item_training_queries]), params)
    build_seconds = time.perf_counter() - started
    sizes = structure.path_sizes()
    print(
        f"DR {layers}x{nodes}: fitted in {build_seconds:.0f} s, {len(sizes)} paths used, sizes max {sizes.max()} "
        f"median {int(np.median(sizes))}, log {structure.training_log}",
        file=sys.stderr,
    )
    rows = []
    for (name, (queries, truth)), beam in itertools.product(query_sets.items(), beams):
        found, times, scored = [], [], []
        for query in queries:
            started = time.perf_counter()
            result, _, count = structure.search(query, items, k=100, beam=beam)
            times.append(1000 * (time.perf_counter() - started))
            found.append(result)
            scored.append(count / len(items))
        rows.append(
            [
                "deep retrieval",
                f"D={layers} K={nodes} J={params.paths_per_item} beam={beam} init={params.init} "
                f"EM={params.em_rounds} item queries={len(item_training_queries)}",
                name,
                *recalls(found, truth),
                float(np.mean(scored)),
                float(np.median(times)),
                build_seconds,
            ]
        )
    return rows


def bench_pgvector(items, embeddings, query_sets: dict) -> list[list]:
    """HNSW rows, on a scratch database (pgvector only, dropped at the end): the numeric part never needs Django."""
    import psycopg

    with scratch_database(SCRATCH_DATABASE) as url:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        os.environ["DATABASE_URL"] = url
        import django

        django.setup()
        try:
            return _pgvector_rows(items, embeddings, query_sets)
        finally:
            from django.db import connections

            connections.close_all()  # before the scratch database is dropped


def _pgvector_rows(items, embeddings, query_sets: dict) -> list[list]:
    from django.conf import settings

    from recommender.vectors import pgvector, store
    from recommender.vectors.base import AnnFilters
    from recommender.vectors.pgvector import PgvectorIndex

    version_id = 920_000 + os.getpid() % 1000
    dimension = embeddings.shape[1]
    started = time.perf_counter()
    store.vectors_publish(
        version_id=version_id,
        item_ids=np.arange(len(items)),
        item_score_vectors=items,
        item_embeddings=embeddings,
        user_ids=np.zeros(0, dtype=np.int64),
        user_score_vectors=np.zeros((0, dimension + 2), dtype=np.float32),
    )
    build_seconds = time.perf_counter() - started
    rows = []
    try:
        index = PgvectorIndex(version_id)
        for name, (queries, truth) in query_sets.items():
            found, times = [], []
            for query in queries:
                search = store.user_search_vector(version_id=version_id, score_vector=query)
                started = time.perf_counter()
                answer = index.user_neighbours(search, k=100, filters=AnnFilters(active_only=False))
                times.append(1000 * (time.perf_counter() - started))
                found.append(np.array([item_id for item_id, _ in answer], dtype=np.int64))
            rows.append(
                [
                    "pgvector HNSW",
                    f"m={settings.VECTOR_HNSW_M} ef_construction={settings.VECTOR_HNSW_EF_CONSTRUCTION} "
                    f"ef_search={pgvector.DEFAULT_EF_SEARCH}",
                    name,
                    *recalls(found, truth),
                    float("nan"),
                    float(np.median(times)),
                    build_seconds,
                ]
            )
    finally:
        store.vectors_drop(version_id=version_id)
    return rows


def settings_parse(text: str) -> list[tuple[int, int, list[int]]]:
    """'2x64:64,128;3x32:256' → [(2, 64, [64, 128]), (3, 32, [256])]."""
    parsed = []
    for part in text.split(";"):
        shape, beams = part.split(":")
        layers, nodes = shape.split("x")
        parsed.append((int(layers), int(nodes), [int(beam) for beam in beams.split(",")]))
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k items, 3000 training users, 100 queries")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=32)
    parser.add_argument("--train-users", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--settings", default="2x64:64,128,256;3x32:256,512,1024")
    parser.add_argument("--paths-per-item", type=int, default=1)
    parser.add_argument("--init", default="kmeans")
    parser.add_argument("--em-rounds", type=int, default=DeepRetrievalParams.em_rounds)
    parser.add_argument("--penalty", type=float, default=DeepRetrievalParams.penalty)
    parser.add_argument("--item-query-share", type=float, default=0.2, help="items added as training queries")
    parser.add_argument("--skip-pgvector", action="store_true")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.items, arguments.train_users = min(arguments.items, 20_000), min(arguments.train_users, 3000)
        arguments.queries = min(arguments.queries, 100)
    rng = np.random.default_rng(0)
    items, embeddings, users = synthetic_catalogue(
        arguments.items, arguments.train_users + arguments.queries, arguments.dimension, rng
    )
    train_users, queries = users[: arguments.train_users], users[arguments.train_users :]
    # Off the training distribution: bench/ann_recall.py's users, tastes from N(0, I) not near any centre.
    gaussian = np.hstack(
        [
            rng.standard_normal((arguments.queries, arguments.dimension)),
            np.ones((arguments.queries, 1)),
            rng.normal(0.0, 0.5, (arguments.queries, 1)),
        ]
    ).astype(np.float32)
    query_sets = {
        "held-out users": (queries, exact_targets(queries, items, 100)),
        "gaussian users": (gaussian, exact_targets(gaussian, items, 100)),
    }
    params = DeepRetrievalParams(
        paths_per_item=arguments.paths_per_item,
        init=arguments.init,
        em_rounds=arguments.em_rounds,
        penalty=arguments.penalty,
    )
    # As `recommender.vectors.deep_retrieval.deep_retrieval_build` adds them (its item_query_share).
    sampled = np.sort(rng.choice(len(items), size=round(arguments.item_query_share * len(items)), replace=False))
    item_training_queries = item_queries(embeddings[sampled], items.shape[1])
    rows = bench_brute_force(items, query_sets)
    for layers, nodes, beams in settings_parse(arguments.settings):
        rows += bench_deep_retrieval(
            items,
            train_users,
            query_sets,
            layers=layers,
            nodes=nodes,
            beams=beams,
            params=params,
            item_training_queries=item_training_queries,
        )
    if not arguments.skip_pgvector:
        rows += bench_pgvector(items, embeddings, query_sets)
    print_table(
        f"Deep Retrieval vs brute force and HNSW: {arguments.items:,} items, d={arguments.dimension}+2, "
        f"{arguments.train_users:,} training users, {arguments.queries} held-out queries, top 100",
        COLUMNS,
        rows,
        note=(
            "recall against the brute-force top 10 / top 100 of the same inner products; 'scored / query' is "
            "the share of items rescored exactly (brute force: all; HNSW: not comparable, nan); p50 is one "
            "query at a time, one thread; build s is training for Deep Retrieval (exact targets, EM) and "
            f"publish + index builds for pgvector. Shared params (D, K, beam per row): {params}."
        ),
    )


if __name__ == "__main__":
    main()
