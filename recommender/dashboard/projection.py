"""2D projection of item embeddings for the embedding map. Numeric only: no Django imports.

PCA through numpy's SVD rather than t-SNE or UMAP: it is exact and deterministic (same vectors,
same picture, so a version's map can be cached and compared), takes milliseconds for thousands of
items, and keeps global distances meaningful (clusters far apart in the model stay far apart on
the map). t-SNE separates local clusters more sharply but costs seconds to minutes and changes
with its seed; see docs/dashboard.md.
"""

from __future__ import annotations

import numpy as np


class ProjectionError(ValueError):
    """The vectors cannot be projected (wrong shape or non-finite values)."""


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project vectors onto their first two principal components, scaled into [0, 1].

    Parameters
    ----------
    vectors : np.ndarray
        (n, d) float array, one row per item.

    Returns
    -------
    coordinates : np.ndarray
        (n, 2) float64 in [0, 1] on both axes (a common scale, so the aspect ratio is kept; the
        narrower axis is centred).
    explained : np.ndarray
        (2,) float64, the share of the total variance each axis explains.

    Raises
    ------
    ProjectionError
        When ``vectors`` is not a 2-D array or holds NaN/inf.

    Notes
    -----
    The sign of a singular vector is arbitrary; each component is flipped so that its largest
    loading is positive (as scikit-learn's ``svd_flip``), which makes the picture reproducible.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ProjectionError(f"expected an (n, d) array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ProjectionError("the vectors hold NaN or inf; retrain the version (its factors diverged)")
    n, d = vectors.shape
    if n == 0:
        return np.zeros((0, 2)), np.zeros(2)
    centered = vectors - vectors.mean(axis=0)
    if n == 1 or d == 0:
        return np.full((n, 2), 0.5), np.zeros(2)
    _, singular, components = np.linalg.svd(centered, full_matrices=False)
    components = components[:2]
    flip = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    flip[flip == 0] = 1.0
    components = components * flip[:, None]
    coordinates = centered @ components.T
    if coordinates.shape[1] == 1:  # d == 1: a line
        coordinates = np.column_stack([coordinates[:, 0], np.zeros(n)])
    variance = singular**2
    total = variance.sum()
    explained = np.zeros(2)
    explained[: min(2, len(variance))] = variance[:2] / total if total > 0 else 0.0
    low = coordinates.min(axis=0)
    span = float((coordinates.max(axis=0) - low).max())
    if span <= 0:
        return np.full((n, 2), 0.5), explained
    scaled = (coordinates - low) / span
    scaled += (1.0 - scaled.max(axis=0)) / 2  # centre the narrower axis instead of hugging the bottom
    return scaled, explained
