"""The strong external baseline every quality claim is measured against: plain exact EASE.

Steck (2019), closed form ``B = I − P / diag(P)``, ``P = (XᵀX + λI)⁻¹``, with **no pruning** of B
(the serving copy is dense) and λ the best of ``LAMBDA_GRID`` on a validation split carved out of
the training part (never the test split). X is every training interaction as binary; on explicit
data the positives-only input is tried too and the better of the two on validation is kept.
`manage.py evaluate --ease-baseline` and `bench.quality_matrix` report it next to the pipeline.
No Django here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.ml import evaluation
from recommender.ml.dataset import TrainingData
from recommender.ml.families.ease import LAMBDA_GRID, EaseFamily


@dataclass
class EaseBaseline:
    """The refitted baseline and how its λ and input were chosen."""

    family: EaseFamily
    report: dict = field(default_factory=dict)

    def score_items(self, user_indices: np.ndarray) -> np.ndarray:
        return self.family.score_items(user_indices)


def _exact_params(n_items: int, l2: float, input_kind: str) -> dict:
    # A dense serving copy: the baseline scores with the full B, never a top-N pruning of it.
    return {"l2": float(l2), "input": input_kind, "serving": "dense", "serving_budget_bytes": 4 * n_items * n_items + 1}


def ease_exact_baseline(
    train: TrainingData,
    *,
    exclude: sp.csr_matrix,
    k: int = 10,
    validation_fraction: float = 0.2,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> EaseBaseline:
    """Choose λ (and the input) on a validation split of ``train``, then refit on all of ``train``.

    ``exclude`` holds the pairs never recommended (the training interactions), as in evaluation.
    """
    interactions = train.interactions
    split = evaluation.random_split(interactions.positives, interactions.weights, validation_fraction, seed)
    reduced = dataclasses.replace(
        train,
        interactions=dataclasses.replace(interactions, positives=split.train_positives, weights=split.train_weights),
    )
    reduced_rated = ((split.train_positives != 0) + (interactions.negatives != 0)).astype(np.float64).tocsr()
    n_items = interactions.positives.shape[1]
    inputs = ["rated", "binary"] if interactions.negatives.nnz else ["rated"]
    table: list[dict] = []
    for input_kind in inputs:
        for l2 in LAMBDA_GRID:
            started = time.perf_counter()
            family = EaseFamily.fit(reduced, _exact_params(n_items, l2, input_kind))
            metrics = evaluation.evaluate(family.score_items, reduced_rated, split.test_positives, k=k)
            table.append(
                {
                    "input": input_kind,
                    "l2": l2,
                    f"precision_at_{k}": round(metrics[f"precision_at_{k}"], 5),
                    f"ndcg_at_{k}": round(metrics[f"ndcg_at_{k}"], 5),
                    "seconds": round(time.perf_counter() - started, 2),
                    "variant": family.params.get("variant"),
                }
            )
            if progress is not None:
                progress(f"EASE baseline validation: {table[-1]}")
    best = max(table, key=lambda row: row[f"precision_at_{k}"])
    started = time.perf_counter()
    family = EaseFamily.fit(train, _exact_params(n_items, best["l2"], best["input"]))
    return EaseBaseline(
        family=family,
        report={
            "l2": best["l2"],
            "input": best["input"],
            "variant": family.params.get("variant"),
            "fit_seconds": round(time.perf_counter() - started, 2),
            "validation": table,
        },
    )
