"""Where the in-process exact index stops paying: `ExactIndex` against `PgvectorIndex` (HNSW) by catalogue size.

`recommender.vectors.index_for` answers a request in process while a version's vectors fit
``VECTOR_EXACT_INDEX_BUDGET_BYTES``; above it, pgvector's HNSW indexes answer. This benchmark
measures both on the same synthetic versions (LightFM-shaped, 32 components: 34-float score
vectors and 32-float embeddings), with the queries serving sends: the personal top-200 with 50
seen items excluded, and "because you liked" (5 seeds, 24 neighbours each, 'dot'). It prints
p50 latencies, the exact/HNSW ratio and the bytes the budget counts, so the budget's default
can be read off the crossover.

The pgvector side runs with the serving settings (ef_search, iterative scans) on the configured
database. Synthetic items have no catalogue rows, so queries use ``active_only=False``: the HNSW
path is measured without its per-row ``is_active`` probe, which makes it slightly faster here
than in serving. The exact side loads the copy once (its load time is printed too).

Usage: .venv/bin/python -m bench.vector_index [--quick] [--sizes 5000,20000,...] [--queries 100]
Throwaway versions 910000+ are dropped at the end.
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

from django.conf import settings  # noqa: E402  (after django.setup())

from bench._common import print_table  # noqa: E402  (after django.setup())
from recommender.vectors.base import AnnFilters  # noqa: E402  (after django.setup())
from recommender.vectors.exact import ExactIndex, version_vectors_load  # noqa: E402  (after django.setup())
from recommender.vectors.pgvector import PgvectorIndex, serving_settings_ensure  # noqa: E402  (after django.setup())
from recommender.vectors.store import vectors_drop, vectors_publish  # noqa: E402  (after django.setup())

DIMENSION = 32
BASE_VERSION = 910_000


def _publish(version_id: int, n_items: int, rng: np.random.Generator) -> None:
    centres = rng.standard_normal((50, DIMENSION))
    embeddings = centres[rng.integers(0, 50, n_items)] + 0.5 * rng.standard_normal((n_items, DIMENSION))
    embeddings = (embeddings * rng.lognormal(0, 0.3, (n_items, 1))).astype(np.float32)
    score_vectors = np.hstack([embeddings, rng.normal(0, 0.3, (n_items, 1)), np.ones((n_items, 1))]).astype(np.float32)
    vectors_publish(
        version_id=version_id,
        item_ids=np.arange(1, n_items + 1),
        item_score_vectors=score_vectors,
        item_embeddings=embeddings,
        user_ids=np.zeros(0, dtype=np.int64),
        user_score_vectors=np.zeros((0, DIMENSION + 2), dtype=np.float32),
    )


def _p50_ms(run, queries) -> float:
    times = []
    for query in queries:
        started = time.perf_counter()
        run(query)
        times.append(1000 * (time.perf_counter() - started))
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Sizes 5k, 20k, 50k and 50 queries.")
    parser.add_argument("--sizes", default="5000,20000,50000,100000,200000")
    parser.add_argument("--queries", type=int, default=100)
    arguments = parser.parse_args()
    sizes = [int(size) for size in arguments.sizes.split(",")]
    queries = arguments.queries
    if arguments.quick:
        sizes, queries = [size for size in sizes if size <= 50_000], min(queries, 50)
    rng = np.random.default_rng(0)
    serving_settings_ensure()
    # The benchmark decides what to compare; the copy is loaded whatever the configured budget.
    settings.VECTOR_EXACT_INDEX_BUDGET_BYTES = 2**40
    rows = []
    try:
        for offset, n_items in enumerate(sizes):
            version_id = BASE_VERSION + offset
            _publish(version_id, n_items, rng)
            started = time.perf_counter()
            vectors = version_vectors_load(version_id)
            load_ms = 1000 * (time.perf_counter() - started)
            hnsw = PgvectorIndex(version_id)
            exact = ExactIndex(vectors, fallback=hnsw)
            seen = AnnFilters(
                active_only=False, exclude_item_ids=tuple((rng.choice(n_items, 50, replace=False) + 1).tolist())
            )
            users = [
                np.append(rng.standard_normal(DIMENSION), [1.0, rng.normal(0, 0.3)]).astype(np.float32)
                for _ in range(queries)
            ]
            seeds = [list(rng.choice(n_items, 5, replace=False) + 1) for _ in range(queries)]
            personal = [
                _p50_ms(lambda q, index=index, seen=seen: index.user_neighbours(q, k=200, filters=seen), users)
                for index in (exact, hnsw)
            ]
            liked = [
                _p50_ms(
                    lambda s, index=index, seen=seen: index.item_neighbours(
                        [int(i) for i in s], k=24, filters=seen, measure="dot"
                    ),
                    seeds,
                )
                for index in (exact, hnsw)
            ]
            row_bytes = 4 * (2 * DIMENSION + 2) + 9
            rows.append(
                [
                    n_items,
                    f"{n_items * row_bytes / 2**20:.1f}",
                    f"{load_ms:.0f}",
                    personal[0],
                    personal[1],
                    personal[0] / personal[1],
                    liked[0],
                    liked[1],
                    liked[0] / liked[1],
                ]
            )
            vectors_drop(version_id=version_id)
    finally:
        for offset in range(len(sizes)):
            vectors_drop(version_id=BASE_VERSION + offset)
    print_table(
        "In-process exact index against pgvector HNSW (p50 ms per query)",
        [
            "items",
            "budget MiB",
            "copy load ms",
            "personal exact",
            "personal HNSW",
            "exact/HNSW",
            "liked exact",
            "liked HNSW",
            "exact/HNSW",
        ],
        rows,
        note=(
            f"personal: top-200 by score, 50 seen excluded; liked: 5 seeds x 24 neighbours ('dot'). "
            f"Current default budget: {settings_default_mib():.1f} MiB. Ratios below 1: the copy is faster."
        ),
    )


def settings_default_mib() -> float:
    from config.settings import recommender as recommender_settings

    return recommender_settings.VECTOR_EXACT_INDEX_BUDGET_BYTES / 2**20


if __name__ == "__main__":
    main()
