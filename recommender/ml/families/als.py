"""The ALS family: implicit-feedback matrix factorisation (Hu, Koren & Volinsky), fitted by ``implicit``.

Model
    Every (user, item) pair has a preference ``p`` (1 for a training positive, 0 otherwise) and a
    confidence ``c``. The positives carry their training weight ``w`` (the importer has already
    transformed counts, e.g. ``log1p``), and we use the paper's linear confidence::

        c = 1 + alpha * w   for a positive,      c = 1   for every other pair

    and minimise ``sum_ui c_ui (p_ui - u_u . v_i)^2 + lambda (|U|^2 + |V|^2)``. implicit 0.7 reads
    its ``user_items`` matrix as that confidence (it adds ``(c - 1) v vᵀ`` to the normal equations
    and ``c v`` to the right-hand side, with ``p = 1`` for a positive entry), and multiplies it by its
    own ``alpha``. So we hand it ``C = 1 + alpha * weights`` on the pattern of the positives and set
    implicit's ``alpha`` to 1: the same number then means the same thing here, in implicit and in
    the fold-in below. Vetoed pairs (``negatives``) are not used in the fit; they stay ordinary
    unobserved pairs (``p = 0, c = 1``) and serving filters them.

Fold-in
    With the item factors ``V`` (n_items, f) fixed, one user's vector is the least-squares solve::

        u = (VᵀV + Vᵀ (C_u - I) V + lambda I)⁻¹ Vᵀ C_u p_u

    where only the user's history contributes to the second term and the right-hand side, so with
    the Gram matrix ``VᵀV`` cached it costs O(f² |history| + f³), whatever the catalogue size. This
    is exactly the user half-step of training (implicit's ``recalculate_user``), so a trained user's
    factor and its fold-in agree once the fit has converged. Scores are ``u · v_i``: item and user
    vectors are ready for an inner-product index.

No Django here.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import threadpoolctl

from recommender.ml.dataset import IdMap, TrainingData
from recommender.ml.families.base import FamilyFitError, Progress
from recommender.ml.foldin import FoldInError
from recommender.ml.similarity import similarity, top_k

logger = logging.getLogger(__name__)

# Measured (docs/ml.md, "ALS family"): 80/20 random split, seed 0, P@10 / NDCG@10 with training
# items excluded. implicit does not scale the regularization by the data, so it is an absolute
# weight against VᵀV + Vᵀ(C - I)V: 0.01-1 overfit both catalogues (ml-100k P@10 0.17 at 64
# factors), 30 was best on both, 100 with alpha 1 collapses to popularity (coverage < 3%).
DEFAULT_PARAMS: dict[str, Any] = {
    "factors": 64,
    "regularization": 30.0,
    "alpha": 3.0,
    "iterations": 15,
    # A fixed seed by default: two fits of the same data give the same factors (see num_threads).
    "random_state": 0,
    # 0 = all cores. implicit solves each user (item) independently, so threads do not reorder any
    # sum and the factors came out identical across runs; 1 is still the setting to use when
    # comparing runs across machines or leaving cores to other work.
    "num_threads": 0,
    # Wall-time budget of the iterations (None: all of them). An iteration starts only while the
    # slowest so far would end within it; the training run passes TRAINING_FAMILY_FIT_SECONDS.
    # A fit of one iteration at a time equals one fit of them all (implicit warm-starts from the
    # factors it holds: checked bit for bit), so a budget that is not reached changes nothing.
    "fit_seconds": None,
}

PARAM_GRID: list[dict[str, Any]] = [
    # ml-100k 0.236 / 0.330, lastfm-2k 0.192 / 0.245: the best mean over both.
    {"factors": 64, "regularization": 30.0, "alpha": 3.0},
    # Ties the first (0.234 / 0.329, 0.194 / 0.244) at half the fit time and memory.
    {"factors": 32, "regularization": 30.0, "alpha": 3.0},
    # Large weights (log1p of play counts, mean 5.5) already give a large confidence at alpha 1:
    # lastfm-2k's best at 64 factors (0.199 / 0.257; ml-100k 0.203 / 0.281).
    {"factors": 64, "regularization": 30.0, "alpha": 1.0},
    # Weaker regularization, for catalogues smaller or sparser than these two.
    {"factors": 64, "regularization": 10.0, "alpha": 1.0},
    # More factors pay only with strong regularization (lastfm-2k 0.200 / 0.259, twice the fit time).
    {"factors": 128, "regularization": 30.0, "alpha": 1.0},
]
"""Parameter sets for a time-budgeted search to try in order, best measured first (docs/ml.md).

Each is a partial ``params`` dict (iterations, threads and seed keep their defaults)."""

_ARCHIVE_FAMILY = "als"
_ARCHIVE_VERSION = 1


class AlsArchiveError(ValueError):
    """A file given to :meth:`AlsFamily.load` is not an ALS archive this code can read."""


def _integer(params: dict[str, Any], key: str, minimum: int) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise FamilyFitError(f"ALS parameter {key!r} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _real(params: dict[str, Any], key: str, *, strictly_positive: bool) -> float:
    value = params[key]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (strictly_positive and value == 0):
        bound = "> 0" if strictly_positive else ">= 0"
        raise FamilyFitError(f"ALS parameter {key!r} must be a finite number {bound}, got {value!r}.")
    return float(value)


def als_params_resolve(params: dict[str, Any] | None) -> dict[str, Any]:
    """The defaults overlaid with ``params``, validated; raises :class:`FamilyFitError` on a bad one.

    ``regularization`` must be > 0: it is what keeps the fold-in solvable for a one-item history.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise FamilyFitError(f"unknown ALS parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}.")
    merged = {**DEFAULT_PARAMS, **params}
    random_state = merged["random_state"]
    return {
        "factors": _integer(merged, "factors", 1),
        "regularization": _real(merged, "regularization", strictly_positive=True),
        "alpha": _real(merged, "alpha", strictly_positive=False),
        "iterations": _integer(merged, "iterations", 1),
        "random_state": None if random_state is None else _integer(merged, "random_state", 0),
        "num_threads": _integer(merged, "num_threads", 0),
        "fit_seconds": None if merged["fit_seconds"] is None else _real(merged, "fit_seconds", strictly_positive=True),
    }


def _confidence_matrix(weights: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """``1 + alpha * w`` on the stored entries, float32 (n_users, n_items); refuses non-finite results."""
    confidence = sp.csr_matrix(weights, dtype=np.float32, copy=True)
    confidence.sort_indices()
    if not np.isfinite(confidence.data).all() or (confidence.data < 0).any():
        raise FamilyFitError("training weights must be finite and non-negative; check the importer's kind transform.")
    with np.errstate(over="ignore"):
        confidence.data = (1.0 + alpha * confidence.data.astype(np.float64)).astype(np.float32)
    if not np.isfinite(confidence.data).all():
        raise FamilyFitError(f"alpha={alpha} times the largest weight overflows float32; lower alpha (10-40 is usual).")
    return confidence


class AlsFamily:
    """A fitted implicit-ALS model: user and item factors whose dot product is the score.

    Parameters
    ----------
    item_factors : ndarray of float32, shape (n_items, f)
    user_factors : ndarray of float32, shape (n_users, f)
    item_ids, user_ids : IdMap
        External ids in index order, lengths n_items and n_users.
    params : dict
        The resolved parameters (:func:`als_params_resolve`), JSON-serialisable.
    """

    name: ClassVar[str] = "als"
    param_grid: ClassVar[list[dict]] = PARAM_GRID

    def __init__(
        self,
        *,
        item_factors: np.ndarray,
        user_factors: np.ndarray,
        item_ids: IdMap,
        user_ids: IdMap,
        params: dict[str, Any],
    ) -> None:
        item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
        if item_factors.ndim != 2 or user_factors.ndim != 2 or item_factors.shape[1] != user_factors.shape[1]:
            raise FamilyFitError(
                f"factors must be (n_items, f) and (n_users, f), got {item_factors.shape} and {user_factors.shape}."
            )
        if (len(item_factors), len(user_factors)) != (len(item_ids), len(user_ids)):
            raise FamilyFitError(
                f"{len(item_factors)} item and {len(user_factors)} user factors for "
                f"{len(item_ids)} item and {len(user_ids)} user ids."
            )
        if not (np.isfinite(item_factors).all() and np.isfinite(user_factors).all()):
            raise FamilyFitError(
                "ALS produced non-finite factors; lower alpha or raise regularization "
                f"(alpha={params.get('alpha')}, regularization={params.get('regularization')})."
            )
        self.item_factors = item_factors
        self.user_factors = user_factors
        self.item_ids = item_ids
        self.user_ids = user_ids
        self.params = dict(params)
        # VᵀV in float64, once: every fold-in starts from it (the "all items are unobserved" term).
        item_factors_64 = item_factors.astype(np.float64)
        self.gram = item_factors_64.T @ item_factors_64

    @property
    def n_factors(self) -> int:
        return self.item_factors.shape[1]

    @classmethod
    def fit(cls, data: TrainingData, params: dict, *, progress: Progress | None = None) -> AlsFamily:
        """Fit on the confidence matrix ``1 + alpha * data.interactions.weights`` (see the module notes).

        Parameters
        ----------
        data : TrainingData
            Only ``interactions.weights`` (float32 csr, (n_users, n_items), the pattern of the
            positives) and the id maps are read.
        params : dict
            Any subset of :data:`DEFAULT_PARAMS`.
        progress : callable, optional
            ``progress(done, total, message)`` after each ALS iteration.

        Raises
        ------
        FamilyFitError
            No positives, bad parameters, bad weights, or non-finite factors.
        """
        resolved = als_params_resolve(params)
        weights = sp.csr_matrix(data.interactions.weights)
        n_users, n_items = weights.shape
        if n_users == 0 or n_items == 0 or weights.nnz == 0:
            raise FamilyFitError(
                f"no positive interactions to fit ALS on ({n_users} users, {n_items} items, {weights.nnz} positives)."
            )
        confidence = _confidence_matrix(weights, resolved["alpha"])
        iterations = resolved["iterations"]
        budget = resolved["fit_seconds"]
        done = 0

        def on_iteration(iteration: int, elapsed: float, loss: float | None) -> None:
            if progress is not None:
                number = done + iteration + 1
                progress(number, iterations, f"ALS iteration {number}/{iterations} ({elapsed:.2f} s)")

        # implicit runs its own threads (num_threads); a multi-threaded BLAS under them oversubscribes
        # the cores and, by implicit's own warning, can be 10x slower. The model checks the BLAS
        # configuration when it is built, so both the constructor and fit sit inside the limit.
        # Imported here, not at the top: serving loads and scores saved factors with numpy alone, and
        # the registry imports this module in every process, which then need not import implicit.
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.recommender_base import ModelFitError

        with threadpoolctl.threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=resolved["factors"],
                regularization=resolved["regularization"],
                alpha=1.0,  # the confidence is already 1 + alpha * w; implicit would scale it again
                dtype=np.float32,
                # One iteration a call under a budget (the same factors, see DEFAULT_PARAMS).
                iterations=iterations if budget is None else 1,
                calculate_training_loss=False,
                num_threads=resolved["num_threads"],
                random_state=resolved["random_state"],
            )
            started, slowest = time.perf_counter(), 0.0
            try:
                while done < iterations:
                    if budget is not None and done and time.perf_counter() - started + slowest > budget:
                        logger.info("als.fit.time_budget iterations=%d of=%d budget=%.1f", done, iterations, budget)
                        break
                    began = time.perf_counter()
                    model.fit(confidence, show_progress=False, callback=on_iteration)
                    slowest = max(slowest, time.perf_counter() - began)
                    done += model.iterations
            except ModelFitError as error:
                raise FamilyFitError(
                    f"ALS diverged ({error}); lower alpha or raise regularization "
                    f"(alpha={resolved['alpha']}, regularization={resolved['regularization']})."
                ) from error
        return cls(
            item_factors=model.item_factors,
            user_factors=model.user_factors,
            item_ids=data.item_ids,
            user_ids=data.user_ids,
            params=resolved,
        )

    def score_items(self, user_indices: np.ndarray) -> np.ndarray:
        """``U[users] @ Vᵀ``: float32 shape (len(user_indices), n_items)."""
        users = np.asarray(user_indices, dtype=np.int64).reshape(-1)
        if len(users) and (users.min() < 0 or users.max() >= len(self.user_factors)):
            raise IndexError(
                f"user indices must lie in [0, {len(self.user_factors)}); fold in unknown users with score_history."
            )
        return self.user_factors[users] @ self.item_factors.T

    def user_vector_from_history(self, item_indices: np.ndarray, confidences: np.ndarray | None = None) -> np.ndarray:
        """The exact ALS fold-in of one history against the fixed item factors.

        Parameters
        ----------
        item_indices : array_like of int, shape (m,)
            Items the user interacted with; indices < 0 (unknown items) are ignored, repeats merge.
        confidences : array_like of float, shape (m,), optional
            Training weights ``w`` (1.0 when omitted), turned into ``c = 1 + alpha * w``. Repeated
            items sum their weights, as training does; a zero weight is no interaction.

        Returns
        -------
        ndarray of float32, shape (f,)
            ``u`` with ``u · v_i`` the score of item i (zeros for an empty history).

        Raises
        ------
        FoldInError
            Mismatched lengths, an index beyond the catalogue, or a negative or non-finite weight.
        """
        items = np.asarray(item_indices, dtype=np.int64).reshape(-1)
        weights = np.ones(len(items)) if confidences is None else np.asarray(confidences, dtype=np.float64).reshape(-1)
        if len(weights) != len(items):
            raise FoldInError(f"{len(items)} item indices but {len(weights)} confidences; pass one per item.")
        if len(items) and items.max() >= len(self.item_factors):
            raise FoldInError(f"item indices must be < {len(self.item_factors)}; map external ids with IdMap.index_of.")
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise FoldInError("confidences (training weights) must be finite and non-negative.")
        known = items >= 0
        unique_items, inverse = np.unique(items[known], return_inverse=True)
        merged = np.bincount(inverse, weights=weights[known], minlength=len(unique_items))
        observed = merged > 0
        unique_items, merged = unique_items[observed], merged[observed]
        if len(unique_items) == 0:
            return np.zeros(self.n_factors, dtype=np.float32)
        confidence = 1.0 + self.params["alpha"] * merged
        vectors = self.item_factors[unique_items].astype(np.float64)  # (m', f)
        system = self.gram + (vectors.T * (confidence - 1.0)) @ vectors
        system[np.diag_indices_from(system)] += self.params["regularization"]
        # Symmetric positive definite (Gram plus non-negative terms plus lambda I): solve is exact.
        user = np.linalg.solve(system, vectors.T @ confidence)
        return user.astype(np.float32)

    def score_history(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        preferences: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores over every item for a folded-in history: float32 shape (n_items,); see
        :meth:`user_vector_from_history` for the arguments. Vetoed items (preference 0) are left
        out, as the fit left them out."""
        items = np.asarray(item_indices, dtype=np.int64)
        if preferences is not None:
            positive = np.asarray(preferences, dtype=np.float64) > 0
            items = items[positive]
            confidences = None if confidences is None else np.asarray(confidences)[positive]
        return self.item_factors @ self.user_vector_from_history(items, confidences)

    def similar_items(self, item_index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items with the largest cosine to ``item_index`` (itself excluded).

        Cosine, not dot: an item's norm grows with how much confident data it has, so the dot
        product would rank the most popular items first for every seed. "Related" should mean
        "liked by the same people", which is the direction of the vector, not its length.

        Returns
        -------
        (indices int64 (k',), scores float32 (k',)) with k' = min(k, n_items - 1)
        """
        if not 0 <= item_index < len(self.item_factors):
            raise IndexError(f"item_index must lie in [0, {len(self.item_factors)}), got {item_index}.")
        scores = similarity(self.item_factors[item_index], self.item_factors, "cosine")
        indices = top_k(scores, k, exclude=np.array([item_index]))
        return indices, scores[indices].astype(np.float32)

    def save(self, path: Path) -> Path:
        """Write an ``np.savez`` archive (no pickles); returns ``path``."""
        path = Path(path)
        arrays = {
            "family": np.asarray(_ARCHIVE_FAMILY),
            "version": np.asarray(_ARCHIVE_VERSION),
            "item_factors": self.item_factors,
            "user_factors": self.user_factors,
            **self.item_ids.to_arrays("item"),
            **self.user_ids.to_arrays("user"),
            "params_json": np.asarray(json.dumps(self.params)),
        }
        with path.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> AlsFamily:
        """Read what :meth:`save` wrote (``allow_pickle=False``)."""
        with np.load(Path(path), allow_pickle=False) as arrays:
            family = str(arrays["family"]) if "family" in arrays.files else None
            if family != _ARCHIVE_FAMILY or int(arrays["version"]) != _ARCHIVE_VERSION:
                raise AlsArchiveError(
                    f"{path} is not an ALS archive version {_ARCHIVE_VERSION} (family={family!r}); "
                    "load it with the class of the family that saved it."
                )
            return cls(
                item_factors=arrays["item_factors"],
                user_factors=arrays["user_factors"],
                item_ids=IdMap.from_arrays(arrays, "item"),
                user_ids=IdMap.from_arrays(arrays, "user"),
                params=json.loads(str(arrays["params_json"])),
            )

    def memory_bytes(self) -> int:
        """Bytes of the factors, the cached Gram matrix and the id arrays."""
        arrays = (self.item_factors, self.user_factors, self.gram, self.item_ids.ids, self.user_ids.ids)
        return int(sum(array.nbytes for array in arrays))
