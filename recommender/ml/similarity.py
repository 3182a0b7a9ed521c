"""Similarity measures between embeddings and top-k selection.

Dot product favours long (often popular) vectors, cosine ignores length entirely; the
norm-damped measure ``|q|^a |v|^a cos(q, v)`` sits between them (a=1: dot, a=0: cosine), the
compromise suggested for popularity-heavy catalogues. Euclidean is returned as the negative
distance so that for every measure larger means more similar.
"""

from __future__ import annotations

import numpy as np

MEASURES = ("dot", "cosine", "euclidean", "norm_damped")


class SimilarityError(ValueError):
    """Unknown measure or mismatched vector shapes."""


def _norms(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.norm(matrix, axis=1)


def similarity(query, vectors, measure: str = "cosine", *, alpha: float = 0.5) -> np.ndarray:
    """Similarity of each query to each vector.

    Parameters
    ----------
    query : ndarray, shape (k,) or (m, k)
    vectors : ndarray, shape (n, k)
    measure : {'dot', 'cosine', 'euclidean', 'norm_damped'}
    alpha : float
        Exponent of the norms for ``'norm_damped'``, usually in [0, 1].

    Returns
    -------
    ndarray of float64, shape (n,) for a single query, (m, n) otherwise. Zero vectors get
    cosine 0 (they point nowhere).
    """
    if measure not in MEASURES:
        raise SimilarityError(f"measure must be one of {MEASURES}, got {measure!r}.")
    q = np.asarray(query, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    single = q.ndim == 1
    q = np.atleast_2d(q)
    if v.ndim != 2 or q.ndim != 2 or q.shape[1] != v.shape[1]:
        raise SimilarityError(
            f"query {np.shape(query)} and vectors {np.shape(vectors)} must share the last "
            "dimension k; vectors must be (n, k)."
        )
    dot = q @ v.T
    if measure == "dot":
        result = dot
    elif measure == "euclidean":
        squared = (q * q).sum(axis=1)[:, None] + (v * v).sum(axis=1)[None, :] - 2 * dot
        result = -np.sqrt(np.maximum(squared, 0.0))
    else:
        q_norm, v_norm = _norms(q)[:, None], _norms(v)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = np.where((q_norm > 0) & (v_norm > 0), dot / (q_norm * v_norm), 0.0)
        result = cosine if measure == "cosine" else (q_norm**alpha) * (v_norm**alpha) * cosine
    return result[0] if single else result


def top_k(scores, k: int, exclude=None) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first; equal scores rank by lower index.

    The one top-k selection of the project (evaluation's lists, the in-process vector index):
    exactly ``np.argsort(-scores, kind="stable")[..., :k]`` over the allowed entries, at the cost
    of a partition. The entries tied with the k-th score are chosen by index instead of by the
    partition's internal order, so a list never depends on how argpartition broke ties (which
    matters for popularity, whose counts tie a lot).

    Parameters
    ----------
    scores : float ndarray, shape (n,) or (m, n)
    k : int, at least 1
        Clipped to the number of candidates.
    exclude : array_like, optional
        Indices (1-d int) or a boolean mask broadcastable to ``scores`` of entries never returned.

    Returns
    -------
    ndarray of int64, shape (k',) or (m, k'); with exclusions, each row holds at most the number
    of non-excluded entries (for 2-d input, rows are cut to the smallest such count).
    """
    if k < 1:
        raise SimilarityError("k must be at least 1.")
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        # float32 stays float32: converting it would double every pass below and change no order.
        scores = scores.astype(np.float64)
    single = scores.ndim == 1
    scores = np.atleast_2d(scores)
    k = min(int(k), scores.shape[1])
    if exclude is not None:
        allowed = np.ones(scores.shape, dtype=bool)
        exclude = np.asarray(exclude)
        if exclude.dtype == bool:
            allowed &= ~np.broadcast_to(exclude, scores.shape)
        else:
            allowed[:, exclude.astype(np.int64)] = False
        scores = np.where(allowed, scores, -np.inf)
        k = int(min(k, allowed.sum(axis=1).min()))
    if k == 0:
        return np.zeros((0,) if single else (scores.shape[0], 0), dtype=np.int64)
    result = _stable_top(scores, k).astype(np.int64, copy=False)
    return result[0] if single else result


def _stable_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest scores (k <= n), best first, ties by lower index."""
    negated = -scores
    if np.isnan(negated).any():
        # NaN breaks the equality test below; the definition itself ranks it last.
        return np.argsort(negated, axis=1, kind="stable")[:, :k]
    part = np.argpartition(negated, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(negated, part, axis=1).max(axis=1, keepdims=True)
    # Where every entry tied with the k-th made it into the partition, its set is the answer; only
    # rows with more ties than room need the by-index choice (two more passes over the row), which
    # at a million items is most of top_k's cost (the excluded -inf entries tie a lot, scores rarely).
    # (ties with the k-th) > k - (strictly better)  <=>  (at least as good as the k-th) > k: one pass.
    ambiguous = np.flatnonzero((negated <= kth).sum(axis=1) > k)
    columns = np.sort(part, axis=1)
    if len(ambiguous):
        rows = negated[ambiguous]
        better, tied = rows < kth[ambiguous], rows == kth[ambiguous]
        wanted = k - better.sum(axis=1, keepdims=True)
        chosen = better | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= wanted))
        columns[ambiguous] = np.nonzero(chosen)[1].reshape(len(ambiguous), k)  # exactly k per row, in index order
    order = np.argsort(np.take_along_axis(negated, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)
