"""Offline evaluation: train/test splits and ranking metrics at k.

Protocol (docs/ml.md): split the positive (user, item) pairs, train on one part, and for every
user with at least one test positive rank all items except the user's training positives.
Metrics are averaged over those users. Scores are computed in batches of users so memory stays
bounded by ``batch_size * n_items`` floats.

The top-k metrics are defined once, in :func:`topk_metrics` (ranked lists against held-out
positives) and :func:`topk_summary` (their means, named after k): training's evaluation goes
through them via :func:`ranking_metrics`, and so does ``manage.py evaluate``, for the raw model,
the popularity baseline and the lists the serving pipeline returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from recommender.ml.similarity import top_k

Scorer = Callable[[np.ndarray], np.ndarray]
"""Maps user indices, shape (b,), to scores, shape (b, n_items); larger means recommend first."""

# Cap on floats scored at once; 4M float64 is ~32 MB (float32 scores stay float32: ~16 MB).
MAX_BATCH_CELLS = 4_000_000


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
        raise ValueError(
            "weights must have exactly the sparsity pattern of positives (use Interactions from build_interactions)."
        )
    coo_p, coo_w = positives.tocoo(), weights.tocoo()

    def part(coo, mask):
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=coo.shape, dtype=np.float32)

    return Split(part(coo_p, ~test_mask), part(coo_w, ~test_mask), part(coo_p, test_mask), part(coo_w, test_mask))


def random_split(positives: sp.csr_matrix, weights: sp.csr_matrix, test_fraction: float = 0.2, seed: int = 0) -> Split:
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
    n_test = round(test_fraction * positives.nnz)
    test_mask = np.zeros(positives.nnz, dtype=bool)
    test_mask[np.argsort(times, kind="stable")[positives.nnz - n_test :]] = True
    return _split_by_mask(positives, weights, test_mask)


def users_within_budget(test: sp.csr_matrix, *, budget_cells: int, seed: int = 0) -> sp.csr_matrix:
    """``test`` keeping the held-out rows of at most ``budget_cells // n_items`` users, the others emptied.

    Exact top-k over the whole catalogue costs users × items scores; a fixed budget of cells bounds
    it, so evaluating a catalogue a thousand times larger scores a thousand times fewer users rather
    than taking a thousand times longer. Below the budget every user with a held-out positive is
    kept (the result equals ``test``); above it a uniform sample chosen by ``seed`` is, so the
    estimate's precision shrinks smoothly with the catalogue, with no step at any size.

    Parameters
    ----------
    test : csr_matrix, shape (n_users, n_items)
    budget_cells : int
        Scores one evaluation may compute (users kept × n_items); at least one user is kept.
    seed : int
    """
    test = sp.csr_matrix(test)
    n_items = max(test.shape[1], 1)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    allowed = max(1, int(budget_cells) // n_items)
    if len(users) <= allowed:
        return test
    kept = np.zeros(test.shape[0])
    kept[np.random.default_rng(seed).choice(users, allowed, replace=False)] = 1.0
    sampled = (sp.diags(kept) @ test).tocsr()
    sampled.eliminate_zeros()
    return sampled


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


def topk_metrics(top_k: np.ndarray, relevant: sp.spmatrix, k: int) -> dict[str, np.ndarray]:
    """Per-user precision, recall and binary NDCG at k of ranked lists against held-out positives.

    Parameters
    ----------
    top_k : int ndarray, shape (u, m) with m <= k
        Each evaluated user's ranked item indices, best first. ``-1`` marks an empty slot (a list
        shorter than k); like the slots beyond m, it counts as a miss.
    relevant : sparse matrix, shape (u, n_items)
        Row i holds user i's held-out positives (any nonzero entry); every row has at least one.
    k : int, at least 1

    Returns
    -------
    dict of float64 ndarrays, shape (u,):
        ``precision`` = hits / k, ``recall`` = hits / |relevant|, ``ndcg`` = DCG with gains
        1/log2(rank + 1) over the ideal DCG of min(|relevant|, k) hits.
    """
    if k < 1:
        raise ValueError("k must be at least 1.")
    top_k = np.asarray(top_k, dtype=np.int64)
    relevant = (sp.csr_matrix(relevant) != 0).tocsr()
    if top_k.ndim != 2 or top_k.shape[0] != relevant.shape[0] or top_k.shape[1] > k:
        raise ValueError(
            f"top_k has shape {top_k.shape}; expected ({relevant.shape[0]}, m) with m <= k = {k}, "
            "one row per row of relevant."
        )
    n_relevant = np.diff(relevant.indptr)
    if (n_relevant == 0).any():
        raise ValueError("every user needs at least one relevant item (drop users without held-out positives).")
    n_items = relevant.shape[1]
    rows, columns = relevant.nonzero()
    relevant_keys = rows.astype(np.int64) * n_items + columns
    top_keys = np.arange(len(top_k), dtype=np.int64)[:, None] * n_items + top_k
    hits = (top_k >= 0) & np.isin(top_keys, relevant_keys)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    n_hits = hits.sum(axis=1)
    dcg = (hits * discounts[: hits.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return {"precision": n_hits / k, "recall": n_hits / n_relevant, "ndcg": dcg / ideal}


def topk_summary(metrics: Mapping[str, np.ndarray], *, n_items: int, k: int) -> dict[str, float]:
    """Means of per-user top-k metrics, named after k, and the catalogue coverage of the lists.

    Parameters
    ----------
    metrics : mapping with ``precision``, ``recall``, ``ndcg`` (float64, (u,)) and ``top_k``
        (int, (u, m), -1 for an empty slot), e.g. from :func:`ranking_metrics`, or
        :func:`topk_metrics` plus the lists it was given
    n_items : int
        Catalogue size, the denominator of coverage.
    k : int

    Returns
    -------
    dict: ``precision_at_{k}``, ``recall_at_{k}``, ``ndcg_at_{k}`` (0.0 without users),
    ``coverage`` (share of the catalogue in at least one list) and ``n_users``.
    """
    n_users = len(metrics["precision"])
    top_k = np.asarray(metrics["top_k"])
    return {
        f"precision_at_{k}": float(np.mean(metrics["precision"])) if n_users else 0.0,
        f"recall_at_{k}": float(np.mean(metrics["recall"])) if n_users else 0.0,
        f"ndcg_at_{k}": float(np.mean(metrics["ndcg"])) if n_users else 0.0,
        "coverage": float(len(np.unique(top_k[top_k >= 0])) / n_items) if n_users else 0.0,
        "n_users": n_users,
    }


def ranking_metrics(
    scorer, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10, *, batch_size: int | None = None
) -> dict[str, np.ndarray]:
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
    batch_size = batch_size or max(1, MAX_BATCH_CELLS // max(n_items, 1))
    out: dict[str, list[np.ndarray]] = {name: [] for name in ("precision", "recall", "ndcg", "auc", "top_k")}
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.array(scorer(batch))  # a copy: seen items are overwritten below
        if scores.dtype not in (np.float32, np.float64):
            scores = scores.astype(np.float64)
        if scores.shape != (len(batch), n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(batch), n_items)}.")
        # Seen and relevant entries stay sparse: a dense (batch, n_items) mask of each would cost
        # as much memory traffic as the scores themselves, for a few dozen entries a row.
        seen = train_bool[batch]
        relevant = test_bool[batch]
        scores[_rows_of(seen), seen.indices] = -np.inf
        top = top_k(scores, k)  # -inf (excluded) entries included when too few others remain
        for name, values in topk_metrics(top, relevant, k).items():
            out[name].append(values)
        n_relevant = np.diff(relevant.indptr)
        n_seen = np.diff(seen.indptr)
        # AUC via rank sums; seen items sit at -inf below every candidate, so subtract their count.
        pos_rank_sum = _positive_rank_sums(scores, relevant) - n_relevant * n_seen
        n_negative = n_items - n_seen - n_relevant
        with np.errstate(invalid="ignore", divide="ignore"):
            out["auc"].append((pos_rank_sum - n_relevant * (n_relevant + 1) / 2) / (n_relevant * n_negative))
        out["top_k"].append(top)
    result = {name: (np.concatenate(values) if values else np.zeros(0)) for name, values in out.items()}
    result["users"] = users
    return result


def _rows_of(matrix: sp.csr_matrix) -> np.ndarray:
    """Row index of every stored entry of a csr matrix, aligned with ``matrix.indices``."""
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))


def _positive_rank_sums(scores: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Per row, the sum of the relevant entries' average ranks (1-based, ties averaged), shape (b,).

    Equal to ``np.where(relevant, rankdata(scores, axis=1), 0).sum(axis=1)``, but only the few
    relevant entries are ranked. An entry's average rank is (below + 1 + through) / 2, where
    ``below`` counts the row's scores under it and ``through`` those at or under it. A row with r
    relevant entries takes 2·r comparison passes over its n scores, or one sort and two binary
    searches when that is cheaper (r beyond about log2 n): the same numbers either way.
    """
    n_items = scores.shape[1]
    sort_beyond = max(1.0, np.log2(max(n_items, 2)) / 2)
    sums = np.zeros(len(scores), dtype=np.float64)
    for row in range(len(scores)):
        columns = relevant.indices[relevant.indptr[row] : relevant.indptr[row + 1]]
        if len(columns) == 0:
            continue
        line = scores[row]
        values = line[columns]
        if len(columns) > sort_beyond:
            ordered = np.sort(line)
            below = np.searchsorted(ordered, values, side="left")
            through = np.searchsorted(ordered, values, side="right")
        else:
            below = np.array([np.count_nonzero(line < value) for value in values])
            through = below + np.array([np.count_nonzero(line == value) for value in values])
        sums[row] = float(((below + 1 + through) / 2.0).sum())
    return sums


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
    return topk_summary(ranking_metrics(scorer, train, test, k), n_items=train.shape[1], k=k)["coverage"]


def evaluate(scorer, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    """All metrics in one pass: keys ``precision_at_{k}``, ``recall_at_{k}``, ``ndcg_at_{k}``,
    ``auc``, ``coverage`` and ``n_users`` (the number of evaluated users); see :func:`topk_summary`."""
    metrics = ranking_metrics(scorer, train, test, k)
    summary = topk_summary(metrics, n_items=train.shape[1], k=k)
    summary["auc"] = float(np.nanmean(metrics["auc"])) if summary["n_users"] else float("nan")
    return summary
