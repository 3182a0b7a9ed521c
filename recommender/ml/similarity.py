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
    """Indices of the ``k`` largest scores, best first.

    Parameters
    ----------
    scores : ndarray, shape (n,) or (m, n)
    k : int
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
    scores = np.array(scores, dtype=np.float64)  # copy: exclusions are written into it
    single = scores.ndim == 1
    scores = np.atleast_2d(scores)
    allowed = np.ones(scores.shape, dtype=bool)
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.dtype == bool:
            allowed &= ~np.broadcast_to(exclude, scores.shape)
        else:
            allowed[:, exclude.astype(np.int64)] = False
    scores[~allowed] = -np.inf
    k = int(min(k, allowed.sum(axis=1).min()))
    if k == 0:
        return np.zeros((0,) if single else (scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    result = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return result[0] if single else result
