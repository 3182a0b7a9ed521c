"""Offline evaluation: train/test splits and ranking metrics at k.

Protocol (docs/ml.md): split the positive (user, item) pairs, train on one part, and for every
user with at least one test positive rank all items except the user's training positives.
Metrics are averaged over those users. Scores are computed in batches of users so memory stays
bounded by ``batch_size * n_items`` floats.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

Scorer = Callable[[np.ndarray], np.ndarray]
"""Maps user indices, shape (b,), to scores, shape (b, n_items); larger means recommend first."""

# Cap on floats scored at once; 4M float64 is ~32 MB.
_MAX_BATCH_CELLS = 4_000_000


class Split(NamedTuple):
    """Train and test parts; positives are binary float32 csr, weights share their pattern."""

    train_positives: sp.csr_matrix
    train_weights: sp.csr_matrix
    test_positives: sp.csr_matrix
    test_weights: sp.csr_matrix


def _split_by_mask(positives: sp.csr_matrix, weights: sp.csr_matrix, test_mask: np.ndarray) -> Split:
    positives = sp.csr_matrix(positives, dtype=np.float32)
    weights = sp.csr_matrix(weights, dtype=np.float32)
    positives.sort_indices()
    weights.sort_indices()
    if positives.nnz != weights.nnz or not np.array_equal(positives.indices, weights.indices):
        raise ValueError("weights must have exactly the sparsity pattern of positives (use Interactions from "
                         "build_interactions).")
    coo_p, coo_w = positives.tocoo(), weights.tocoo()

    def part(coo, mask):
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=coo.shape, dtype=np.float32)

    return Split(part(coo_p, ~test_mask), part(coo_w, ~test_mask), part(coo_p, test_mask), part(coo_w, test_mask))


def random_split(positives: sp.csr_matrix, weights: sp.csr_matrix, test_fraction: float = 0.2,
                 seed: int = 0) -> Split:
    """Put a random ``test_fraction`` of the positive pairs in the test part.

    Parameters
    ----------
    positives, weights : csr_matrix, shape (n_users, n_items), same sparsity pattern
    test_fraction : float in (0, 1)
    seed : int

    Returns
    -------
    Split
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    test_mask = rng.random(positives.nnz) < test_fraction
    return _split_by_mask(positives, weights, test_mask)


def time_split(positives: sp.csr_matrix, weights: sp.csr_matrix, timestamps, test_fraction: float = 0.2) -> Split:
    """Put the newest ``test_fraction`` of the positive pairs (globally) in the test part.

    Parameters
    ----------
    positives, weights : csr_matrix, shape (n_users, n_items), same sparsity pattern
    timestamps : csr_matrix with the same pattern, or ndarray aligned with ``positives.data``
        after ``sort_indices`` (e.g. ``Interactions.timestamps``).
    test_fraction : float in (0, 1)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if sp.issparse(timestamps):
        timestamps = sp.csr_matrix(timestamps)
        timestamps.sort_indices()
        times = timestamps.data
    else:
        times = np.asarray(timestamps)
    if len(times) != positives.nnz:
        raise ValueError(f"got {len(times)} timestamps for {positives.nnz} positive pairs.")
    n_test = int(round(test_fraction * positives.nnz))
    test_mask = np.zeros(positives.nnz, dtype=bool)
    test_mask[np.argsort(times, kind="stable")[positives.nnz - n_test:]] = True
    return _split_by_mask(positives, weights, test_mask)


def popularity_scores(train_positives: sp.csr_matrix) -> np.ndarray:
    """Number of training positives per item, float64 shape (n_items,): the baseline scorer."""
    return np.asarray(train_positives.sum(axis=0), dtype=np.float64).ravel()


def as_scorer(scores) -> Scorer:
    """Accept a scorer callable, a dense (n_users, n_items) score matrix, or one (n_items,) row for all."""
    if callable(scores):
        return scores
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return lambda users: np.broadcast_to(scores, (len(users), len(scores)))
    return lambda users: scores[users]


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def ranking_metrics(scorer, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10,
                    *, batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Per-user metrics for every user with at least one test positive.

    Parameters
    ----------
    scorer : Scorer, or score array (see :func:`as_scorer`)
    train, test : csr_matrix, shape (n_users, n_items)
        Training positives are excluded from each user's ranking.
    k : int
    batch_size : int, optional
        Users scored at once; defaults to keep ``batch_size * n_items`` near 4M.

    Returns
    -------
    dict with ``users`` (int64, (u,)), ``precision``, ``recall``, ``ndcg``, ``auc`` (float64, (u,);
    auc is NaN for users with no negative item left) and ``top_k`` (int64, (u, k)).
    """
    if k < 1:
        raise ValueError("k must be at least 1.")
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} shapes differ.")
    scorer = as_scorer(scorer)
    train = sp.csr_matrix(train)
    test = sp.csr_matrix(test)
    n_items = train.shape[1]
    train_bool = (train != 0).astype(np.float64).tocsr()
    test_bool = (test != 0).astype(np.float64).tocsr()
    # A pair in both parts cannot be recommended (it is excluded as seen), so it is not a test target.
    test_bool = (test_bool - test_bool.multiply(train_bool)).tocsr()
    test_bool.eliminate_zeros()
    users = np.flatnonzero(np.diff(test_bool.indptr) > 0)
    batch_size = batch_size or max(1, _MAX_BATCH_CELLS // max(n_items, 1))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = {name: [] for name in ("precision", "recall", "ndcg", "auc", "top_k")}
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        scores = np.array(scorer(batch), dtype=np.float64)
        if scores.shape != (len(batch), n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(batch), n_items)}.")
        seen = train_bool[batch].toarray() > 0
        relevant = test_bool[batch].toarray() > 0
        scores[seen] = -np.inf
        top = _top_k_rows(scores, k)
        hits = np.take_along_axis(relevant, top, axis=1)
        n_relevant = relevant.sum(axis=1)
        out["precision"].append(hits.sum(axis=1) / k)
        out["recall"].append(hits.sum(axis=1) / n_relevant)
        dcg = (hits * discounts[:hits.shape[1]]).sum(axis=1)
        ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
        out["ndcg"].append(dcg / ideal)
        # AUC via rank sums; seen items sit at -inf below every candidate, so subtract their count.
        ranks = rankdata(scores, axis=1) - seen.sum(axis=1, keepdims=True)
        n_negative = n_items - seen.sum(axis=1) - n_relevant
        pos_rank_sum = np.where(relevant, ranks, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["auc"].append((pos_rank_sum - n_relevant * (n_relevant + 1) / 2) / (n_relevant * n_negative))
        out["top_k"].append(top)
    result = {name: (np.concatenate(values) if values else np.zeros(0)) for name, values in out.items()}
    result["users"] = users
    return result


def precision_at_k(scorer, train, test, k: int = 10) -> float:
    """Mean over test users of |top-k ∩ test| / k."""
    return float(np.mean(ranking_metrics(scorer, train, test, k)["precision"]))


def recall_at_k(scorer, train, test, k: int = 10) -> float:
    """Mean over test users of |top-k ∩ test| / |test|."""
    return float(np.mean(ranking_metrics(scorer, train, test, k)["recall"]))


def ndcg_at_k(scorer, train, test, k: int = 10) -> float:
    """Mean binary NDCG@k: DCG with gains 1/log2(rank+1), over the ideal DCG of min(|test|, k) hits."""
    return float(np.mean(ranking_metrics(scorer, train, test, k)["ndcg"]))


def auc(scorer, train, test) -> float:
    """Mean per-user AUC: chance a test positive outranks a non-positive item (train items excluded)."""
    return float(np.nanmean(ranking_metrics(scorer, train, test, 1)["auc"]))


def catalog_coverage(scorer, train, test, k: int = 10) -> float:
    """Fraction of all items that appear in the top-k of at least one evaluated user."""
    top = ranking_metrics(scorer, train, test, k)["top_k"]
    return float(len(np.unique(top)) / train.shape[1])


def evaluate(scorer, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    """All metrics in one pass: keys ``precision_at_{k}``, ``recall_at_{k}``, ``ndcg_at_{k}``,
    ``auc``, ``coverage`` and ``n_users`` (the number of evaluated users)."""
    metrics = ranking_metrics(scorer, train, test, k)
    n_users = len(metrics["users"])
    return {
        f"precision_at_{k}": float(np.mean(metrics["precision"])) if n_users else 0.0,
        f"recall_at_{k}": float(np.mean(metrics["recall"])) if n_users else 0.0,
        f"ndcg_at_{k}": float(np.mean(metrics["ndcg"])) if n_users else 0.0,
        "auc": float(np.nanmean(metrics["auc"])) if n_users else float("nan"),
        "coverage": float(len(np.unique(metrics["top_k"])) / train.shape[1]) if n_users else 0.0,
        "n_users": n_users,
    }
