"""WALS-style fold-in: a user vector from fixed item vectors, without retraining.

With the item factors frozen, the weighted matrix-factorisation objective is an ordinary
regularised least-squares problem in the user vector ``u`` (k,)::

    minimise  sum_{i observed} c_i (p_i - b_i - u.v_i)^2
            + w0 * sum_{j unobserved} (0 - b_j - u.v_j)^2  +  lambda * |u|^2

Writing the unobserved sum as "all items minus observed ones" (the implicit-ALS trick of Hu,
Koren & Volinsky) gives the normal equations::

    (w0 G + sum_obs (c_i - w0) v_i v_i^T + lambda I) u
        = -w0 h + sum_obs v_i (c_i (p_i - b_i) + w0 b_i)

with ``G = V^T V`` and ``h = V^T b`` computed once for all users, so one fold-in costs
O(k^2 n_observed + k^3) whatever the catalogue size. Subtracting the item bias from the target
makes ``u`` the first block of the LightFM-shaped user vector ``[u, 1, user_bias]``; the user bias
only shifts all of one user's scores, so it is set to 0 (ranking is unaffected).
"""

from __future__ import annotations

import numpy as np


class FoldInError(ValueError):
    """Inputs to a fold-in are inconsistent (shapes, ranges, non-finite values)."""


class FoldIn:
    """Folds users into a fixed item space, caching the Gram matrix between calls.

    Parameters
    ----------
    item_vectors : ndarray, shape (n_items, k)
        Item representations ``v`` (not the bias-augmented form; see :meth:`from_vectors_with_bias`).
    item_biases : ndarray, shape (n_items,), optional
        Item biases ``b``; zeros when omitted.
    unobserved_weight : float
        ``w0``, the confidence that an item the user never touched is uninteresting. Small
        (0.01-0.1): absence is weak evidence.
    regularization : float
        ``lambda`` > 0 keeps the system well conditioned for users with few observations.
    """

    def __init__(
        self, item_vectors, item_biases=None, *, unobserved_weight: float = 0.05, regularization: float = 0.1
    ) -> None:
        vectors = np.asarray(item_vectors, dtype=np.float64)
        if vectors.ndim != 2:
            raise FoldInError(f"item_vectors must be (n_items, k), got shape {vectors.shape}.")
        biases = np.zeros(len(vectors)) if item_biases is None else np.asarray(item_biases, dtype=np.float64)
        if biases.shape != (len(vectors),):
            raise FoldInError(f"item_biases must have shape ({len(vectors)},), got {biases.shape}.")
        if not (np.isfinite(vectors).all() and np.isfinite(biases).all()):
            raise FoldInError("item vectors or biases hold NaN/Inf; retrain or check the model.")
        if unobserved_weight < 0 or regularization <= 0:
            raise FoldInError("unobserved_weight must be >= 0 and regularization > 0 (it keeps the solve stable).")
        self.item_vectors = vectors
        self.item_biases = biases
        self.unobserved_weight = float(unobserved_weight)
        self.regularization = float(regularization)
        self.gram = vectors.T @ vectors
        self.bias_projection = vectors.T @ biases

    @classmethod
    def from_vectors_with_bias(cls, item_vectors_with_bias, **kwargs) -> FoldIn:
        """Build from ``FittedModel.item_vectors_with_bias()``, shape (n_items, k+2) = [v, b, 1]."""
        augmented = np.asarray(item_vectors_with_bias)
        return cls(augmented[:, :-2], augmented[:, -2], **kwargs)

    @property
    def n_components(self) -> int:
        return self.item_vectors.shape[1]

    def user_vector(self, item_indices, confidences=None, preferences=None) -> np.ndarray:
        """Solve for one user's vector.

        Parameters
        ----------
        item_indices : array_like of int, shape (m,)
            Items the user interacted with; repeated items are merged (confidences add,
            preferences average weighted by confidence).
        confidences : array_like of float, shape (m,), optional
            ``c_i`` > 0, e.g. the sample weights from ``build_interactions``; default 1.
        preferences : array_like of float, shape (m,), optional
            ``p_i``: 1 for positive, 0 for negative feedback; default 1.

        Returns
        -------
        ndarray of float32, shape (k,)
        """
        items = np.asarray(item_indices, dtype=np.int64)
        c = np.ones(len(items)) if confidences is None else np.asarray(confidences, dtype=np.float64)
        p = np.ones(len(items)) if preferences is None else np.asarray(preferences, dtype=np.float64)
        if not (len(items) == len(c) == len(p)):
            raise FoldInError(
                f"item_indices ({len(items)}), confidences ({len(c)}) and preferences ({len(p)}) "
                "must have one entry per observation."
            )
        if len(items) and (items.min() < 0 or items.max() >= len(self.item_vectors)):
            raise FoldInError(f"item indices must lie in [0, {len(self.item_vectors)}).")
        if not (np.isfinite(c).all() and np.isfinite(p).all()) or (c <= 0).any():
            raise FoldInError("confidences must be positive and finite, preferences finite.")
        unique, inverse = np.unique(items, return_inverse=True)
        c_merged = np.bincount(inverse, weights=c, minlength=len(unique))
        p_merged = np.bincount(inverse, weights=c * p, minlength=len(unique)) / np.where(c_merged > 0, c_merged, 1)

        w0 = self.unobserved_weight
        v_obs = self.item_vectors[unique]
        b_obs = self.item_biases[unique]
        k = self.n_components
        lhs = w0 * self.gram + (v_obs.T * (c_merged - w0)) @ v_obs + self.regularization * np.eye(k)
        rhs = -w0 * self.bias_projection + v_obs.T @ (c_merged * (p_merged - b_obs) + w0 * b_obs)
        return np.linalg.solve(lhs, rhs).astype(np.float32)

    def user_vector_with_bias(self, item_indices, confidences=None, preferences=None) -> np.ndarray:
        """``[u, 1, 0]``, float32 shape (k+2,), ready for an inner product with ``[v, b, 1]`` item vectors."""
        u = self.user_vector(item_indices, confidences, preferences)
        return np.concatenate([u, np.asarray([1.0, 0.0], dtype=np.float32)])


def fold_in_user(
    item_vectors,
    item_biases,
    item_indices,
    confidences=None,
    preferences=None,
    *,
    unobserved_weight: float = 0.05,
    regularization: float = 0.1,
) -> np.ndarray:
    """One-off fold-in; see :class:`FoldIn` (reuse that for many users: it caches ``V^T V``).

    Returns
    -------
    ndarray of float32, shape (k,)
    """
    solver = FoldIn(item_vectors, item_biases, unobserved_weight=unobserved_weight, regularization=regularization)
    return solver.user_vector(item_indices, confidences, preferences)
