"""Offline quality of the default model on MovieLens 100k, against popularity.

Protocol: u.data ratings >= 4 are positives (weight rating / 5), an 80/20 random split of the
positive pairs with seed 0, the 19 genres of u.item as item features, default HyperParameters.

Usage: .venv/bin/python bench/ml_quality.py [--epochs N] [--no-item-features]
Reads MOVIELENS_DIR, else ../shared/datasets/ml-100k relative to the repository.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# After the sys.path insert, so that `python bench/ml_quality.py` works from any directory.
from bench._common import print_table  # noqa: E402  (after the sys.path insert)
from recommender.ml.dataset import (  # noqa: E402  (after the sys.path insert)
    IdMap,
    Interactions,
    TrainingData,
    build_feature_matrix,
    build_interactions,
)
from recommender.ml.evaluation import evaluate, popularity_scores, random_split  # noqa: E402  (after the sys.path insert)
from recommender.ml.training import HyperParameters, fit  # noqa: E402  (after the sys.path insert)


def load_movielens(directory: Path) -> TrainingData:
    ratings = np.loadtxt(directory / "u.data", dtype=np.int64)
    users, items, values = ratings[:, 0], ratings[:, 1], ratings[:, 2].astype(np.float64)
    genre_names = [
        line.split("|")[0]
        for line in (directory / "u.genre").read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    item_rows = [
        line.split("|") for line in (directory / "u.item").read_text(encoding="latin-1").splitlines() if line.strip()
    ]
    catalogue_ids = np.array([int(row[0]) for row in item_rows])
    genre_flags = np.array([[int(flag) for flag in row[5 : 5 + len(genre_names)]] for row in item_rows])

    user_ids = IdMap.from_ids(np.sort(np.unique(users)))
    item_ids = IdMap.from_ids(catalogue_ids)
    interactions = build_interactions(
        user_ids.index_of(users),
        item_ids.index_of(items),
        np.ones(len(values)),
        values,
        np.ones(len(values), dtype=bool),
        len(user_ids),
        len(item_ids),
        positive_threshold=4.0,
    )
    item_rows_index, genre_index = np.nonzero(genre_flags)
    item_features = build_feature_matrix(len(item_ids), item_rows_index, genre_index, None, len(genre_names))
    names = [f"item:{i}" for i in item_ids.ids] + [f"genre:{g}" for g in genre_names]
    return TrainingData(
        user_ids=user_ids,
        item_ids=item_ids,
        interactions=interactions,
        item_features=item_features,
        item_feature_names=names,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--no-item-features", action="store_true")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="Accepted for `make bench`; this one is already quick.")
    args = parser.parse_args()
    directory = Path(os.environ.get("MOVIELENS_DIR") or REPO.parent / "shared" / "datasets" / "ml-100k")
    if not (directory / "u.data").exists():
        print(f"MovieLens 100k not found at {directory}; set MOVIELENS_DIR to run this benchmark.")
        return 0

    data = load_movielens(directory)
    split = random_split(data.interactions.positives, data.interactions.weights, test_fraction=0.2, seed=0)
    train_data = replace(
        data, interactions=Interactions(split.train_positives, split.train_weights, data.interactions.negatives)
    )
    params = HyperParameters()
    if args.epochs is not None:
        params.epochs = args.epochs
    if args.no_item_features:
        params.use_item_features = False

    started = time.perf_counter()
    model = fit(train_data, params)
    fit_seconds = time.perf_counter() - started
    rows = {
        "model": evaluate(model.score_items, split.train_positives, split.test_positives, k=args.k),
        "popularity": evaluate(
            popularity_scores(split.train_positives), split.train_positives, split.test_positives, k=args.k
        ),
    }
    print(
        f"ml-100k: {data.interactions.positives.nnz} positives, {split.test_positives.nnz} in test; "
        f"loss={params.loss} components={params.no_components} epochs={params.epochs} "
        f"item_features={params.use_item_features} threads={params.num_threads}"
    )
    keys = [key for key in rows["model"] if key != "n_users"]
    print_table(
        "Offline quality on ml-100k (ratings >= 4, 80/20 random split, seed 0)",
        ["scorer", *keys],
        [[name, *(metrics[key] for key in keys)] for name, metrics in rows.items()],
        note=f"fit wall time: {fit_seconds:.2f} s ({rows['model']['n_users']} users evaluated); "
        f"precision ratio model/popularity = "
        f"{rows['model'][keys[0]] / rows['popularity'][keys[0]]:.2f}x",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
