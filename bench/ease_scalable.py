"""EASE: exact against the scalable variant (head exact, tail ridge) at forced fit budgets.

Protocol: 80/20 random split of the positive pairs with seed 0 (``random_split``), training
positives excluded from each ranking, P@10 / recall@10 / NDCG@10 from ``evaluate``.

* ml-100k: u.data ratings >= 4 are positives (weight rating / 5), loaded by bench/ml_quality.py.
* hetrec2011-lastfm-2k: every (user, artist) pair of user_artists.dat is positive, weight
  log(1 + plays) (the raw play counts span 1 to 350k).

Each fit runs in its own subprocess, so its peak RSS (VmHWM after the fit minus VmHWM before it,
data already loaded) is its own. The exact share of the items is forced through
``exact_items_cap`` (a budget alone cannot: below the exact fit, the tail's own workspace
and the serving copy dominate on these small catalogues).

Usage: .venv/bin/python bench/ease_scalable.py [--datasets ml-100k,lastfm] [--no-lambda-grid] [--primal]
Reads MOVIELENS_DIR and LASTFM_DIR, else ../shared/datasets/{ml-100k,hetrec2011-lastfm-2k}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import movielens_dir, print_table  # noqa: E402  (after the sys.path insert)
from bench.ml_quality import load_movielens  # noqa: E402  (after the sys.path insert)
from recommender.ml.dataset import IdMap, Interactions, TrainingData, build_interactions  # noqa: E402  (after the sys.path insert)
from recommender.ml.evaluation import evaluate, random_split  # noqa: E402  (after the sys.path insert)
from recommender.ml.families.ease import (  # noqa: E402  (after the sys.path insert)
    DEFAULT_L2,
    LAMBDA_GRID,
    EaseFamily,
)

SHARED = REPO.parent / "shared" / "datasets"
EXACT_SHARES = (1.0, 0.5, 0.2, 0.05)


def lastfm_dir() -> Path | None:
    directory = Path(os.environ.get("LASTFM_DIR") or SHARED / "hetrec2011-lastfm-2k")
    return directory if (directory / "user_artists.dat").exists() else None


def load_lastfm(directory: Path) -> TrainingData:
    rows = np.loadtxt(directory / "user_artists.dat", dtype=np.int64, skiprows=1)  # tab-separated, CRLF
    users, artists, plays = rows[:, 0], rows[:, 1], rows[:, 2].astype(np.float64)
    user_ids, item_ids = IdMap.from_ids(np.unique(users)), IdMap.from_ids(np.unique(artists))
    interactions = build_interactions(
        user_ids.index_of(users),
        item_ids.index_of(artists),
        np.log1p(plays),
        np.zeros(len(plays)),
        np.zeros(len(plays), dtype=bool),
        len(user_ids),
        len(item_ids),
    )
    return TrainingData(user_ids=user_ids, item_ids=item_ids, interactions=interactions)


def dataset_dirs() -> dict[str, Path | None]:
    return {"ml-100k": movielens_dir(), "lastfm": lastfm_dir()}


def load(name: str) -> TrainingData:
    directory = dataset_dirs()[name]
    assert directory is not None
    return load_movielens(directory) if name == "ml-100k" else load_lastfm(directory)


def peak_rss_bytes() -> int:
    """VmHWM of this process: the peak resident set, LAPACK's buffers included (tracemalloc misses them)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(name: str, params: dict, exact_share: float) -> dict:
    """Fit one configuration on the split and return its metrics, fit seconds and peak RSS delta."""
    data = load(name)
    split = random_split(data.interactions.positives, data.interactions.weights, test_fraction=0.2, seed=0)
    train = replace(
        data, interactions=Interactions(split.train_positives, split.train_weights, data.interactions.negatives)
    )
    n_items = split.train_positives.shape[1]
    if exact_share < 1.0:
        params = {**params, "exact_items_cap": round(exact_share * n_items)}
    before = peak_rss_bytes()
    started = time.perf_counter()
    model = EaseFamily.fit(train, params)
    fit_seconds = time.perf_counter() - started
    peak = peak_rss_bytes() - before
    metrics = evaluate(model.score_items, split.train_positives, split.test_positives, k=10)
    return {
        **{key: metrics[key] for key in ("precision_at_10", "recall_at_10", "ndcg_at_10")},
        "fit_seconds": fit_seconds,
        "peak_rss_bytes": peak,
        "n_items": n_items,
        "plan": {
            key: model.params[key]
            for key in (
                "variant",
                "dtype",
                "solver",
                "exact_items",
                "serving_layout",
                "serving_neighbours",
                "predicted_peak_bytes",
            )
        },
    }


def run(name: str, params: dict, exact_share: float = 1.0) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--params", json.dumps(params), "--share", str(exact_share)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(label: str, result: dict) -> list:
    plan = result["plan"]
    return [
        label,
        f"{plan['exact_items']}/{result['n_items']}",
        f"{plan['dtype']} {plan['solver']}",
        f"{plan['serving_layout']} N={plan['serving_neighbours']}",
        result["precision_at_10"],
        result["recall_at_10"],
        result["ndcg_at_10"],
        round(result["fit_seconds"], 2),
        round(result["peak_rss_bytes"] / 2**20),
        round(plan["predicted_peak_bytes"] / 2**20),
    ]


COLUMNS = [
    "fit",
    "exact items",
    "head",
    "serving",
    "P@10",
    "recall@10",
    "NDCG@10",
    "fit s",
    "peak RSS MiB",
    "predicted MiB",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,lastfm")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2)
    parser.add_argument("--no-lambda-grid", action="store_true")
    parser.add_argument("--primal", action="store_true", help="Also time the primal (n×n Cholesky) solver.")
    parser.add_argument("--quick", action="store_true", help="For `make bench`: ml-100k only, no λ grid.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--share", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.params), args.share)))
        return 0
    names = ["ml-100k"] if args.quick else args.datasets.split(",")
    for name in names:
        if dataset_dirs().get(name) is None:
            print(f"{name} not found; set MOVIELENS_DIR / LASTFM_DIR to run it. Skipped.")
            continue
        base = {"l2": args.l2}
        exact = run(name, base)
        rows = [row("exact", exact)]
        for share in EXACT_SHARES[1:]:
            result = run(name, base, share)
            rows.append(row(f"scalable {share:.0%}", result))
            if share == EXACT_SHARES[-1]:
                worst = result
        rows.append(row("exact, input=weights", run(name, {**base, "input": "weights"})))
        if args.primal:
            rows.append(row("exact, solver=primal", run(name, {**base, "solver": "primal"})))
        loss = 1 - worst["ndcg_at_10"] / exact["ndcg_at_10"]
        print_table(
            f"EASE on {name}: exact vs scalable (λ={args.l2:g}, 80/20 random split, seed 0)",
            COLUMNS,
            rows,
            note=f"NDCG@10 lost at {EXACT_SHARES[-1]:.0%} exact: {loss:.1%}. Peak RSS is the fit's own (VmHWM delta).",
        )
        if not (args.no_lambda_grid or args.quick):
            grid = [row(f"λ={l2:g}", run(name, {"l2": float(l2)})) for l2 in LAMBDA_GRID]
            print_table(f"Exact EASE on {name}: λ grid", COLUMNS, grid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
