"""The serving scorer's blend: LightFM's score mixed with signals the pointwise model lacks.

The pipeline's pool is ranked by a weighted sum of per-candidate features, each standardised
within the pool (z-scores), so the weights say how much each signal moves a candidate relative
to the others in the same list, whatever the user's score scale:

``model``
    LightFM's full score (the user score vector · the item score vector).
``item_item``
    Σ over the user's rated items j of B[j, i], where B is an item-item regression (EASE,
    Steck 2019) fitted on *every* rated pair, low ratings included. LightFM learns from positives
    only (a low rating vetoes the pair), so "this user watched j at all" is information it never
    sees; B turns it into evidence about i.
``popularity``
    log(1 + training interactions of the item).

Weights are fitted by L2-regularised logistic regression on a validation split carved out of
the TRAINING interactions (:func:`blend_fit_on_validation`): a model and B are fitted on the rest,
each validation user's candidates (the model's unseen top items plus the most popular) are
labelled by the held-out positives, and the weights are frozen. Nothing here sees a test split.

No Django here; `recommender/blend.py` gathers the features for a served pool.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recommender.ml import evaluation
from recommender.ml.dataset import IdMap, Interactions, TrainingData
from recommender.ml.similarity import top_k

FEATURE_NAMES = ("model", "item_item", "popularity")

DEFAULT_ITEM_ITEM_L2 = 250.0
# Neighbours kept per history item; 200 of 1,682 on ml-100k loses nothing measurable.
DEFAULT_NEIGHBOURS = 200


class BlendFitError(ValueError):
    """The blend cannot be fitted (no validation user, a single label class, bad shapes)."""


def item_item_fit(
    rated: sp.csr_matrix,
    *,
    l2: float = DEFAULT_ITEM_ITEM_L2,
    neighbours: int = DEFAULT_NEIGHBOURS,
    fit_seconds: float | None = None,
) -> sp.csr_matrix:
    """Item-item weights B, float32 csr of shape (n_items, n_items), zero diagonal.

    Row j holds how much having rated j speaks for each other item; a user's item-item score is
    the sum of the rows of her rated items. This is the EASE family (`recommender.ml.families.ease`)
    on every rated pair: exact while its Gram matrix fits the family's memory budget, its
    head-exact/tail-ridge variant above it — no item count decides. Each row keeps its
    ``neighbours`` largest entries by absolute value (EASE's negative weights matter too).

    Parameters
    ----------
    rated : csr_matrix, shape (n_users, n_items)
        Any non-zero entry counts as "rated" (binary).
    l2 : float
        EASE ridge; larger damps rare items.
    neighbours : int
        Entries kept per row.
    """
    from recommender.ml.families import FamilyFitError
    from recommender.ml.families.ease import EaseFamily

    if l2 <= 0 or neighbours < 1:
        raise BlendFitError(f"l2 must be > 0 and neighbours >= 1, got {l2} and {neighbours}.")
    binary = (sp.csr_matrix(rated) != 0).astype(np.float32).tocsr()
    n_users, n_items = binary.shape
    data = TrainingData(
        user_ids=IdMap(np.arange(n_users)),
        item_ids=IdMap(np.arange(n_items)),
        interactions=Interactions(
            positives=binary, weights=binary, negatives=sp.csr_matrix(binary.shape, dtype=np.float32)
        ),
    )
    try:
        family = EaseFamily.fit(data, {"l2": float(l2), "input": "binary", "serving": "sparse",
                                       "serving_budget_bytes": max(1, n_items) * neighbours * 8,
                                       "fit_seconds": fit_seconds})  # fmt: skip
    except FamilyFitError as error:
        raise BlendFitError(str(error)) from error
    weights = family.weights if sp.issparse(family.weights) else sp.csr_matrix(family.weights)
    combined = sp.csr_matrix(weights + family.tail_weights, dtype=np.float64)
    combined.setdiag(0.0)
    combined.eliminate_zeros()
    return _keep_largest(combined, neighbours)


def _keep_largest(matrix: sp.csr_matrix, per_row: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    data, indices, indptr = [], [], [0]
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        values, columns = matrix.data[start:end], matrix.indices[start:end]
        if len(values) > per_row:
            keep = np.argpartition(-np.abs(values), per_row - 1)[:per_row]
            values, columns = values[keep], columns[keep]
        data.append(values)
        indices.append(columns)
        indptr.append(indptr[-1] + len(values))
    out = sp.csr_matrix(
        (np.concatenate(data).astype(np.float32), np.concatenate(indices), np.asarray(indptr)), shape=matrix.shape
    )
    out.sort_indices()
    return out


def item_item_scores(item_item: sp.csr_matrix, history, candidates) -> np.ndarray:
    """Σ_j∈history B[j, c] for each candidate index c, float64 shape (len(candidates),).

    Indices below 0 (items the fit never saw) contribute nothing and score 0.
    """
    history = np.asarray(history, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.int64)
    history = history[history >= 0]
    scores = np.zeros(len(candidates), dtype=np.float64)
    if len(history) == 0 or len(candidates) == 0:
        return scores
    summed = np.asarray(item_item[history].sum(axis=0), dtype=np.float64).ravel()
    known = candidates >= 0
    scores[known] = summed[candidates[known]]
    return scores


def item_popularity(rated: sp.csr_matrix) -> np.ndarray:
    """log(1 + users who rated the item), float32 shape (n_items,)."""
    counts = np.asarray((sp.csr_matrix(rated) != 0).sum(axis=0), dtype=np.float64).ravel()
    return np.log1p(counts).astype(np.float32)


def candidate_features(model_scores, item_item, popularity) -> np.ndarray:
    """Stack the per-candidate signals in :data:`FEATURE_NAMES` order, float64 shape (n, 3)."""
    return np.column_stack(
        [np.asarray(model_scores, np.float64), np.asarray(item_item, np.float64), np.asarray(popularity, np.float64)]
    )


def standardize(features: np.ndarray) -> np.ndarray:
    """Column z-scores within one pool; a constant column becomes 0 (it cannot reorder the pool)."""
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] == 0:
        return features
    spread = features.std(axis=0)
    centred = features - features.mean(axis=0)
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 1e-12)


def logistic_fit(
    features: np.ndarray, labels: np.ndarray, *, l2: float = 1.0, max_iter: int = 100, tol: float = 1e-9
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (IRLS).

    Parameters
    ----------
    features : ndarray of float, shape (n, f)
    labels : ndarray of {0, 1}, shape (n,)
    l2 : float
        Ridge on the weights (not on the intercept); keeps separable data finite.

    Returns
    -------
    (weights (f,), intercept)
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise BlendFitError(f"features {features.shape} and labels {labels.shape} do not match.")
    if labels.min(initial=1) == labels.max(initial=0):
        raise BlendFitError(
            "labels hold a single class; the validation split gave no positive (or no negative) "
            "candidate. Use more data or a larger validation fraction."
        )
    design = np.column_stack([features, np.ones(len(labels))])
    ridge = np.full(design.shape[1], l2)
    ridge[-1] = 0.0
    theta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -35, 35)))
        gradient = design.T @ (p - labels) + ridge * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(ridge) + 1e-10 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < tol:
            break
    return theta[:-1], float(theta[-1])


@dataclass(frozen=True)
class BlendWeights:
    """Frozen blend: ``score = standardize(features) @ weights``, features in ``names`` order."""

    names: tuple[str, ...]
    weights: tuple[float, ...]

    def score(self, features: np.ndarray) -> np.ndarray:
        """Blended scores of one pool, float64 shape (n,); features shape (n, len(names))."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.names):
            raise BlendFitError(
                f"expected features of shape (n, {len(self.names)}) for {self.names}, got {features.shape}."
            )
        return standardize(features) @ np.asarray(self.weights, dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, (round(float(w), 6) for w in self.weights), strict=True))


def blend_weights_fit(
    pools: list[tuple[np.ndarray, np.ndarray]], *, names=FEATURE_NAMES, l2: float = 1.0
) -> BlendWeights:
    """Fit weights on labelled pools: a list of (features (n_i, f), labels (n_i,)), one per user.

    Each pool is standardised on its own, exactly as :meth:`BlendWeights.score` will at serving.
    """
    pools = [(features, labels) for features, labels in pools if len(labels)]
    if not pools:
        raise BlendFitError("no labelled pool to fit the blend on.")
    stacked = np.vstack([standardize(features) for features, _ in pools])
    labels = np.concatenate([np.asarray(labels, np.float64) for _, labels in pools])
    weights, _ = logistic_fit(stacked, labels, l2=l2)
    return BlendWeights(names=tuple(names), weights=tuple(float(w) for w in weights))


@dataclass
class BlendModel:
    """What serving needs besides the LightFM artifact: weights, B and item popularity.

    Attributes
    ----------
    weights : BlendWeights
    item_ids : IdMap
        External item ids of B's rows/columns and of ``popularity``.
    item_item : csr_matrix of float32, shape (n_items, n_items)
    popularity : ndarray of float32, shape (n_items,)
    validation : dict
        Precision of the model and of the blend on the validation split the weights came from.
    """

    weights: BlendWeights
    item_ids: IdMap
    item_item: sp.csr_matrix
    popularity: np.ndarray
    validation: dict = dataclasses.field(default_factory=dict)

    def save(self, path) -> Path:
        path = Path(path)
        matrix = sp.csr_matrix(self.item_item)
        arrays = {
            "names": np.asarray(self.weights.names, dtype=str),
            "weights": np.asarray(self.weights.weights, dtype=np.float64),
            **self.item_ids.to_arrays("item"),
            "item_item_data": matrix.data,
            "item_item_indices": matrix.indices,
            "item_item_indptr": matrix.indptr,
            "item_item_shape": np.asarray(matrix.shape, dtype=np.int64),
            "popularity": np.asarray(self.popularity, dtype=np.float32),
            "validation_json": np.asarray(json.dumps(self.validation)),
        }
        with path.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path) -> BlendModel:
        with np.load(Path(path), allow_pickle=False) as arrays:
            matrix = sp.csr_matrix(
                (arrays["item_item_data"], arrays["item_item_indices"], arrays["item_item_indptr"]),
                shape=tuple(arrays["item_item_shape"]),
            )
            return cls(
                weights=BlendWeights(names=tuple(arrays["names"].tolist()), weights=tuple(arrays["weights"].tolist())),
                item_ids=IdMap.from_arrays(arrays, "item"),
                item_item=matrix,
                popularity=arrays["popularity"],
                validation=json.loads(str(arrays["validation_json"])),
            )

    def pool_scores(self, *, model_scores, history_ids, candidate_ids) -> np.ndarray:
        """Blended scores of one served pool, float64 shape (len(candidate_ids),).

        Parameters
        ----------
        model_scores : array_like of float, shape (c,)
            LightFM's score of each candidate.
        history_ids, candidate_ids : array_like of external item ids
            The user's rated items and the pooled items; ids the fit never saw get 0 signals.
        """
        candidates = self.item_ids.index_of(np.asarray(candidate_ids), missing=-1)
        history = (
            self.item_ids.index_of(np.asarray(history_ids), missing=-1)
            if len(history_ids)
            else np.empty(0, dtype=np.int64)
        )
        popularity = np.where(candidates >= 0, self.popularity[np.maximum(candidates, 0)], 0.0)
        features = candidate_features(model_scores, item_item_scores(self.item_item, history, candidates), popularity)
        return self.weights.score(features)


def rated_matrix(data: TrainingData) -> sp.csr_matrix:
    """Binary (n_users, n_items) csr of every rated pair: positives and vetoed pairs alike."""
    interactions = data.interactions
    return ((interactions.positives != 0) + (interactions.negatives != 0)).astype(np.float32).tocsr()


def _pools(
    model,
    rated: sp.csr_matrix,
    item_item: sp.csr_matrix,
    popularity: np.ndarray,
    users: np.ndarray,
    pool_size: int,
    popular_size: int,
):
    """Per user: (candidate indices, features), candidates = the model's unseen top ``pool_size``
    plus the unseen ``popular_size`` most popular items (the pipeline's ANN and popular sources)."""
    by_popularity = np.argsort(-popularity, kind="stable")
    # Users scored at once keep users × items near the evaluation's batch (memory stays bounded at
    # a million items), and only the pool's top is selected, not every item sorted.
    batch_size = max(1, min(256, evaluation.MAX_BATCH_CELLS // max(rated.shape[1], 1)))
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.asarray(model.score_items(batch), dtype=np.float64)
        seen = rated[batch].toarray() > 0
        masked = np.where(seen, -np.inf, scores)
        top = top_k(masked, min(pool_size, masked.shape[1]))
        for row, user in enumerate(batch):
            unseen_popular = by_popularity[~seen[row][by_popularity]][:popular_size]
            candidates = np.asarray(list(dict.fromkeys(top[row].tolist() + unseen_popular.tolist())), np.int64)
            candidates = candidates[~seen[row][candidates]]
            history = rated.indices[rated.indptr[user] : rated.indptr[user + 1]]
            features = candidate_features(
                scores[row, candidates], item_item_scores(item_item, history, candidates), popularity[candidates]
            )
            yield user, candidates, features


def blend_fit_on_validation(
    data: TrainingData,
    params,
    *,
    fraction: float = 0.2,
    seed: int = 1,
    pool_size: int = 200,
    popular_size: int = 50,
    k: int = 10,
    l2: float = 1.0,
) -> BlendModel:
    """Fit blend weights on a validation split carved out of ``data`` (training interactions only).

    A random ``fraction`` of ``data``'s positives is held out; a LightFM model (``params``) and B are
    fitted on the rest; each user with a held-out positive gets the model's unseen top
    ``pool_size`` plus the unseen ``popular_size`` most popular items as candidates, labelled 1 when
    held out; the weights are fitted by :func:`blend_weights_fit`. Returns a BlendModel whose
    B and popularity come from the same reduced data (the caller refits them on everything it
    may use before serving, see :func:`blend_model_build`) and whose ``validation`` holds
    precision@k of the model and of the blend on that validation split.
    """
    from recommender.ml.training import fit

    interactions = data.interactions
    split = evaluation.random_split(interactions.positives, interactions.weights, fraction, seed)
    reduced = dataclasses.replace(
        data,
        interactions=dataclasses.replace(interactions, positives=split.train_positives, weights=split.train_weights),
    )
    model = fit(reduced, dataclasses.replace(params, early_stopping_patience=None))
    fitted = blend_fit_with_model(
        reduced, model, split.test_positives, pool_size=pool_size, popular_size=popular_size, k=k, l2=l2
    )
    fitted.validation["fraction"] = fraction
    return fitted


def blend_fit_with_model(
    train: TrainingData,
    model,
    held_out_positives: sp.csr_matrix,
    *,
    pool_size: int = 200,
    popular_size: int = 50,
    k: int = 10,
    l2: float = 1.0,
    budget_cells: int | None = None,
    fit_seconds: float | None = None,
) -> BlendModel:
    """Fit blend weights for ``model`` (trained on ``train``) against positives it never saw.

    ``budget_cells`` bounds the users pooled (users × items, `evaluation.users_within_budget`), and
    ``fit_seconds`` the item-item EASE fit, as in the rest of a training run; None: no bound.

    Training calls this with its evaluation model and the protocol's held-out part, which costs no
    extra fit; `blend_fit_on_validation` calls it after carving a validation split out of training
    data, which is what `manage.py evaluate` needs to measure the pipeline on the test part honestly.
    """
    rated = rated_matrix(train)
    item_item = item_item_fit(rated, fit_seconds=fit_seconds)
    popularity = item_popularity(rated)
    held_out = ((held_out_positives != 0).astype(np.float32) - (held_out_positives != 0).multiply(rated)).tocsr()
    held_out.eliminate_zeros()
    if budget_cells is not None:
        held_out = evaluation.users_within_budget(held_out, budget_cells=budget_cells)
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    if len(users) == 0:
        raise BlendFitError("the validation split holds no user with a held-out positive; too little data.")
    pools, lists = [], []
    for user, candidates, features in _pools(model, rated, item_item, popularity, users, pool_size, popular_size):
        labels = np.isin(candidates, held_out.indices[held_out.indptr[user] : held_out.indptr[user + 1]])
        pools.append((features, labels.astype(np.float64)))
        lists.append((candidates, features, labels))
    weights = blend_weights_fit(pools, l2=l2)
    model_only = BlendWeights(names=FEATURE_NAMES, weights=(1.0, 0.0, 0.0))
    validation = {
        f"model_precision_at_{k}": _precision(lists, model_only, k),
        f"blend_precision_at_{k}": _precision(lists, weights, k),
        "users": len(users),
        "pool_size": pool_size,
        "popular_size": popular_size,
    }
    return BlendModel(
        weights=weights, item_ids=train.item_ids, item_item=item_item, popularity=popularity, validation=validation
    )


def _precision(lists, weights: BlendWeights, k: int) -> float:
    hits = []
    for _, features, labels in lists:
        order = np.argsort(-weights.score(features), kind="stable")[:k]
        hits.append(labels[order].sum() / k)
    return float(np.mean(hits))


def blend_model_build(fitted: BlendModel, data: TrainingData, *, fit_seconds: float | None = None) -> BlendModel:
    """The served BlendModel: ``fitted``'s frozen weights with B and popularity refitted on ``data``."""
    rated = rated_matrix(data)
    return BlendModel(
        weights=fitted.weights,
        item_ids=data.item_ids,
        item_item=item_item_fit(rated, fit_seconds=fit_seconds),
        popularity=item_popularity(rated),
        validation=fitted.validation,
    )
