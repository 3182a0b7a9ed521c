"""The two-tower family: a user tower and an item tower whose normalised outputs meet in a dot product.

Model (`two_tower_network.Towers`)
    Item tower: item id embedding + a sparse linear map of the item's side features → MLP → L2
    normalise. User tower: the confidence-weighted mean of the user's history embeddings + a
    sparse linear map of her side features → MLP → L2 normalise. A score is the cosine of the two.
    New items get a vector from their features alone (:meth:`TwoTowerFamily.item_vectors_from_features`),
    and any history gets a user vector at call time (:meth:`TwoTowerFamily.score_history`): that is
    this family's fold-in, with no refit and no solve.

Loss: in-batch sampled softmax with the log-Q correction (Yi et al. 2019, "Sampling-bias-corrected
neural modeling for large corpus item recommendations")
    A batch is B (user, positive item) pairs drawn uniformly from the training positives. Each
    user's target is her own item; the other B - 1 items of the batch are her negatives. Items
    enter batches in proportion to their popularity, so without a correction the softmax learns to
    push popular items down (they are negatives far more often than the full softmax would make
    them). With ``q_j`` the probability that item j is in a batch (here exactly its share of the
    training pairs, not the paper's streaming estimate: the counts are at hand), the logits are::

        s(u, j) = <user(u), item(j)> / temperature - log(B q_j)

    and the loss is the cross-entropy of the target column, weighted by the pair's training weight.
    With ``mixed_negatives`` M > 0 (Yang et al. 2020), M uniformly drawn items join every row's
    negatives and the correction becomes ``log(B q_j + M / n_items)``, the expected count of j among
    the candidates. Accidental hits (a candidate that is another of the row user's positives) are
    masked out, and the target is left out of the history mean it is predicted from.

Training sequence
    A seeded ``validation_fraction`` of the positives is held out; epochs run until validation
    recall@10 (training items excluded) has not improved for ``patience`` epochs. Recall, not the
    sampled loss: the loss depends on which items share a batch and on the temperature, while
    recall@10 is what the family is chosen on. The towers are then refitted from the same seed on
    all positives for the best epoch count, so no positive is lost to validation.

No Django here; torch is imported only by the methods that need the towers.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recommender.ml.dataset import FeatureShapeError, IdMap, TrainingData
from recommender.ml.families.base import FamilyFitError, Progress
from recommender.ml.foldin import FoldInError
from recommender.ml.similarity import top_k

if TYPE_CHECKING:
    from recommender.ml.families.two_tower_network import Towers

DEFAULT_PARAMS: dict[str, Any] = {
    "embedding_dim": 64,  # id, history and feature embeddings: the towers' input width
    "hidden_dim": 128,  # the MLP's one hidden layer; 0 = a single linear map
    "output_dim": 64,  # the published vectors' dimension
    "temperature": 0.05,
    "learning_rate": 0.003,
    "weight_decay": 0.0,
    "batch_size": 512,
    "epochs": 40,  # the most epochs; early stopping usually ends sooner
    "patience": 3,
    "validation_fraction": 0.1,  # 0: no early stopping, all ``epochs`` run on all positives
    "log_q_correction": True,
    "mixed_negatives": 0,
    # Share of items whose id embedding is dropped per batch, so the tower learns to place an item
    # from its features alone (what a new item has). Used only when items have side features.
    "item_id_dropout": 0.1,
    # Share of users whose side features are dropped per batch, so the tower learns to place a user
    # from her history alone: a fold-in (score_history, what serving calls) has no user features.
    # Without it, a planted catalogue whose user features name the cluster served 2 own-cluster
    # items in 10 through the fold-in. Used only when users have side features.
    "user_feature_dropout": 0.5,
    "random_state": 0,
    # torch.set_num_threads during the fit; 0 = torch's default (every core). One by default: the
    # towers' matrices are small, and on ml-100k two intra-op threads on a 2-core machine shared
    # with another job took minutes where one took 15-25 s (docs/ml.md, "Two-tower family").
    "num_threads": 1,
    "fit_seconds": None,  # wall-time budget of the epochs (both phases); None = no bound
}

# No search: one fit (with its refit) costs more than the rest of a stack run's search budget.
PARAM_GRID: list[dict[str, Any]] = []

_ARCHIVE_FAMILY = "two_tower"
_ARCHIVE_VERSION = 1


class TwoTowerArchiveError(ValueError):
    """A file given to :meth:`TwoTowerFamily.load` is not a two-tower archive this code can read."""


def _integer(params: dict[str, Any], key: str, minimum: int) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise FamilyFitError(f"two-tower parameter {key!r} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _real(params: dict[str, Any], key: str, *, low: float, high: float = math.inf, open_low: bool = True) -> float:
    value = params[key]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (open_low and value == low) or value >= high:
        bound = f"{'>' if open_low else '>='} {low}" + ("" if high == math.inf else f" and < {high}")
        raise FamilyFitError(f"two-tower parameter {key!r} must be a finite number {bound}, got {value!r}.")
    return float(value)


def two_tower_params_resolve(params: dict[str, Any] | None) -> dict[str, Any]:
    """The defaults overlaid with ``params``, validated; raises :class:`FamilyFitError` on a bad one."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise FamilyFitError(f"unknown two-tower parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}.")
    merged = {**DEFAULT_PARAMS, **params}
    if not isinstance(merged["log_q_correction"], bool):
        raise FamilyFitError(
            f"two-tower parameter 'log_q_correction' must be true or false, got {merged['log_q_correction']!r}."
        )
    if merged["batch_size"] == 1:
        raise FamilyFitError("two-tower parameter 'batch_size' must be >= 2: in-batch negatives need a batch.")
    return {
        "embedding_dim": _integer(merged, "embedding_dim", 1),
        "hidden_dim": _integer(merged, "hidden_dim", 0),
        "output_dim": _integer(merged, "output_dim", 1),
        # Cosines lie in [-1, 1]: a temperature above ~1 leaves the softmax almost flat.
        "temperature": _real(merged, "temperature", low=0.0),
        "learning_rate": _real(merged, "learning_rate", low=0.0),
        "weight_decay": _real(merged, "weight_decay", low=0.0, open_low=False),
        "batch_size": _integer(merged, "batch_size", 2),
        "epochs": _integer(merged, "epochs", 1),
        "patience": _integer(merged, "patience", 1),
        "validation_fraction": _real(merged, "validation_fraction", low=0.0, high=1.0, open_low=False),
        "log_q_correction": merged["log_q_correction"],
        "mixed_negatives": _integer(merged, "mixed_negatives", 0),
        "item_id_dropout": _real(merged, "item_id_dropout", low=0.0, high=1.0, open_low=False),
        "user_feature_dropout": _real(merged, "user_feature_dropout", low=0.0, high=1.0, open_low=False),
        "random_state": _integer(merged, "random_state", 0),
        "num_threads": _integer(merged, "num_threads", 0),
        "fit_seconds": None if merged["fit_seconds"] is None else _real(merged, "fit_seconds", low=0.0),
    }


def side_columns(features: sp.csr_matrix | None, n_entities: int, identity: bool) -> sp.csr_matrix | None:
    """The side-feature columns of a feature matrix (identity block dropped), rows L1-normalised.

    The dataset normalises each row *with* its identity column, so a training item's side features
    sum to less than a new item's; normalising the side part alone gives both the same scale.
    None when there are no side columns.
    """
    if features is None:
        return None
    side = sp.csr_matrix(features[:, n_entities:] if identity else features, dtype=np.float32)
    if side.shape[1] == 0:
        return None
    return _l1_rows(side)


def _l1_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if matrix.nnz and (not np.isfinite(matrix.data).all() or (matrix.data < 0).any()):
        raise FeatureShapeError("feature weights must be finite and non-negative.")
    sums = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0).astype(np.float32)
    normalised = sp.csr_matrix(sp.diags(scale) @ matrix, dtype=np.float32)
    normalised.sort_indices()
    return normalised


def _side_names(names: list[str], n_side: int) -> list[str]:
    """The last ``n_side`` column names (the side block follows any identity block); [] when unknown."""
    return list(names[len(names) - n_side :]) if n_side and len(names) >= n_side else []


def _named_rows(rows: list[Mapping[str, float]], names: list[str]) -> sp.csr_matrix:
    """Feature rows by name → csr (len(rows), len(names)); unknown names are dropped."""
    column_of = {name: column for column, name in enumerate(names)}
    data, indices, indptr = [], [], [0]
    for row in rows:
        for name, weight in row.items():
            if name in column_of:
                indices.append(column_of[name])
                data.append(float(weight))
        indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(data, np.float32), indices, indptr), shape=(len(rows), len(names)))


def _score_rows(vectors: np.ndarray, *, bias_first: bool) -> np.ndarray:
    """Append the store's two extra columns to unit vectors: items [v, 0, 1], queries [u, 1, 0]."""
    extra = np.zeros((len(vectors), 2), dtype=np.float32)
    extra[:, 1 if bias_first else 0] = 1.0
    return np.ascontiguousarray(np.hstack([np.asarray(vectors, np.float32), extra]))


class TwoTowerFamily:
    """A fitted two-tower model: the towers, plus every fitted item's and user's vector.

    Parameters
    ----------
    towers : Towers
        The torch module (kept for fold-ins and feature-only item vectors).
    item_vectors : ndarray of float32, shape (n_items, output_dim), rows of unit norm
    user_vectors : ndarray of float32, shape (n_users, output_dim), rows of unit norm
    item_ids, user_ids : IdMap
    params : dict
        Resolved parameters (:func:`two_tower_params_resolve`).
    layout : dict
        ``n_items``, ``n_item_side``, ``n_user_side``: what rebuilding the towers needs.
    item_side_names, user_side_names : list of str
        The side-feature columns' names (``"type=value"``, identity block excluded), so a new item
        or a user's live features are placed by name (:meth:`item_space_from_features`,
        :meth:`query_vector`). Empty for an archive written before they were kept.
    report : dict
        What training measured (epochs, best validation recall), for the Models page.
    """

    name: ClassVar[str] = "two_tower"
    param_grid: ClassVar[list[dict]] = PARAM_GRID

    def __init__(
        self,
        *,
        towers: Towers,
        item_vectors: np.ndarray,
        user_vectors: np.ndarray,
        item_ids: IdMap,
        user_ids: IdMap,
        params: dict[str, Any],
        layout: dict[str, int],
        report: dict[str, Any],
        item_side_names: list[str] | None = None,
        user_side_names: list[str] | None = None,
    ) -> None:
        item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        if (len(item_vectors), len(user_vectors)) != (len(item_ids), len(user_ids)):
            raise FamilyFitError(
                f"{len(item_vectors)} item and {len(user_vectors)} user vectors for "
                f"{len(item_ids)} item and {len(user_ids)} user ids."
            )
        if not (np.isfinite(item_vectors).all() and np.isfinite(user_vectors).all()):
            raise FamilyFitError(
                "two-tower training produced non-finite vectors; lower learning_rate or raise temperature "
                f"(learning_rate={params.get('learning_rate')}, temperature={params.get('temperature')})."
            )
        self.towers = towers
        self.item_vectors = item_vectors
        self.user_vectors = user_vectors
        self.item_ids = item_ids
        self.user_ids = user_ids
        self.params = dict(params)
        self.layout = dict(layout)
        self.report = dict(report)
        self.item_side_names = list(item_side_names or [])
        self.user_side_names = list(user_side_names or [])

    @classmethod
    def fit(cls, data: TrainingData, params: dict, *, progress: Progress | None = None) -> TwoTowerFamily:
        """Fit on ``data.interactions.weights`` and the side features (see the module notes).

        Parameters
        ----------
        data : TrainingData
            ``interactions.weights`` (float32 csr (n_users, n_items)), the id maps, and the
            non-identity columns of ``item_features`` / ``user_features`` when present.
        params : dict
            Any subset of :data:`DEFAULT_PARAMS`.
        progress : callable, optional
            ``progress(done, total, message)`` after each epoch of either phase.

        Raises
        ------
        FamilyFitError
            Bad parameters, too little data (no positives, fewer than two items), or non-finite vectors.
        """
        from recommender.ml.families import two_tower_training

        resolved = two_tower_params_resolve(params)
        weights = sp.csr_matrix(data.interactions.weights, dtype=np.float32)
        weights.sort_indices()
        n_users, n_items = weights.shape
        if weights.nnz == 0 or n_items < 2:
            raise FamilyFitError(
                f"two-tower needs positives over at least two items ({n_users} users, {n_items} items, "
                f"{weights.nnz} positives): in-batch negatives are the other items."
            )
        if not np.isfinite(weights.data).all() or (weights.data < 0).any():
            raise FamilyFitError(
                "training weights must be finite and non-negative; check the importer's kind transform."
            )
        item_side = side_columns(data.item_features, n_items, data.item_identity)
        user_side = side_columns(data.user_features, n_users, data.user_identity)
        layout = {
            "n_items": n_items,
            "n_item_side": 0 if item_side is None else item_side.shape[1],
            "n_user_side": 0 if user_side is None else user_side.shape[1],
        }
        towers, user_vectors, item_vectors, report = two_tower_training.towers_fit(
            weights, item_side, user_side, resolved, layout, progress=progress
        )
        return cls(
            towers=towers,
            item_vectors=item_vectors,
            user_vectors=user_vectors,
            item_ids=data.item_ids,
            user_ids=data.user_ids,
            params=resolved,
            layout=layout,
            report=report,
            item_side_names=_side_names(data.item_feature_names, layout["n_item_side"]),
            user_side_names=_side_names(data.user_feature_names, layout["n_user_side"]),
        )

    def score_items(self, user_indices: np.ndarray) -> np.ndarray:
        """Cosines of fitted users with every item: float32 shape (len(user_indices), n_items)."""
        users = np.asarray(user_indices, dtype=np.int64).reshape(-1)
        if len(users) and (users.min() < 0 or users.max() >= len(self.user_vectors)):
            raise IndexError(
                f"user indices must lie in [0, {len(self.user_vectors)}); fold in unknown users with score_history."
            )
        return self.user_vectors[users] @ self.item_vectors.T

    def user_vector_from_history(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        side_features: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """The user tower on one history: float32 shape (output_dim,), unit norm.

        Parameters
        ----------
        item_indices : array_like of int, shape (m,)
            Indices < 0 (unknown items) are ignored; repeats add their confidences, as training does.
        confidences : array_like of float, shape (m,), optional
            Training weights (1.0 when omitted): the weights of the history mean.
        side_features : mapping of str to float, optional
            The user's side features by name (``"type=value"`` → weight); names the fit did not
            see are ignored. `score_history` passes none (the family interface has no features),
            so a fitted user with side features scores a little differently there than in
            :meth:`score_items`; serving's :meth:`query_vector` passes them.
        """
        from recommender.ml.families import two_tower_training

        items = np.asarray(item_indices, dtype=np.int64).reshape(-1)
        weights = np.ones(len(items)) if confidences is None else np.asarray(confidences, dtype=np.float64).reshape(-1)
        if len(weights) != len(items):
            raise FoldInError(f"{len(items)} item indices but {len(weights)} confidences; pass one per item.")
        if len(items) and items.max() >= len(self.item_vectors):
            raise FoldInError(f"item indices must be < {len(self.item_vectors)}; map external ids with IdMap.index_of.")
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise FoldInError("confidences (training weights) must be finite and non-negative.")
        known = items >= 0
        side_columns, side_weights = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if side_features and self.user_side_names:
            side = _l1_rows(_named_rows([side_features], self.user_side_names))
            side_columns, side_weights = side.indices.astype(np.int64), side.data
        # One row, on the serving path: the tower is fed the arrays directly (no sparse matrices),
        # which is most of a request's cost of this method (measured 0.74 → 0.4 ms).
        return two_tower_training.user_vector_one(
            self.towers, items[known], weights[known], side_columns, side_weights, has_side=bool(self.user_side_names)
        )

    def score_history(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        preferences: np.ndarray | None = None,
    ) -> np.ndarray:
        """Cosines of a folded-in history with every item: float32 shape (n_items,).

        Vetoed items (preference 0) are left out, as the fit left them out; an empty history gets
        the stranger's vector (the tower's output for no history, trained on one-positive users).
        """
        items = np.asarray(item_indices, dtype=np.int64)
        if preferences is not None:
            positive = np.asarray(preferences, dtype=np.float64) > 0
            items = items[positive]
            confidences = None if confidences is None else np.asarray(confidences)[positive]
        return self.item_vectors @ self.user_vector_from_history(items, confidences)

    def item_vectors_from_features(self, feature_rows: sp.csr_matrix) -> np.ndarray:
        """Vectors of new items from side features alone: float32 shape (m, output_dim), unit rows.

        Parameters
        ----------
        feature_rows : csr_matrix, shape (m, n_item_side)
            Side-feature columns only (column 0 = the first side feature, as in
            ``item_vector_from_features`` of LightFM); rows are L1-normalised as training did.

        Raises
        ------
        FeatureShapeError
            The model has no item side features, or the width differs from training's.
        """
        from recommender.ml.families import two_tower_training

        width = self.layout["n_item_side"]
        rows = sp.csr_matrix(feature_rows, dtype=np.float32)
        if width == 0:
            raise FeatureShapeError(
                "this two-tower model was fitted without item side features; it cannot place new items."
            )
        if rows.shape[1] != width:
            raise FeatureShapeError(
                f"feature rows have {rows.shape[1]} columns, the model's item side features {width} "
                "(pass side-feature columns only, without the identity block)."
            )
        return two_tower_training.item_vectors(self.towers, None, _l1_rows(rows))

    def similar_items(self, item_index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items with the largest cosine to ``item_index`` (itself excluded); the
        vectors have unit norm, so the cosine is their dot product."""
        if not 0 <= item_index < len(self.item_vectors):
            raise IndexError(f"item_index must lie in [0, {len(self.item_vectors)}), got {item_index}.")
        scores = self.item_vectors @ self.item_vectors[item_index]
        indices = top_k(scores, k, exclude=np.array([item_index]))
        return indices, scores[indices].astype(np.float32)

    # The vector space (`families.base.VectorFamily`): the published rows are [v, 0, 1] and queries
    # [u, 1, 0], so inner products are the cosines `score_history` gives, in the store's layout.

    def item_space(self) -> tuple[np.ndarray, np.ndarray]:
        """Every fitted item's (score vector [v, 0, 1] (n, d + 2), embedding v (n, d)), float32.

        Built once and kept: serving scores a request's query against every item with it.
        """
        rows = self.__dict__.get("_item_space_rows")
        if rows is None:
            rows = self.__dict__["_item_space_rows"] = _score_rows(self.item_vectors, bias_first=True)
        return rows, self.item_vectors

    def query_vector(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        preferences: np.ndarray | None = None,
        side_features: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """The user tower on a live history and side features, as a query [u, 1, 0]: float32 (d + 2,).

        Vetoed items (preference 0) are left out, as in :meth:`score_history`.
        """
        items = np.asarray(item_indices, dtype=np.int64)
        if preferences is not None:
            positive = np.asarray(preferences, dtype=np.float64) > 0
            items = items[positive]
            confidences = None if confidences is None else np.asarray(confidences)[positive]
        vector = self.user_vector_from_history(items, confidences, side_features)
        return _score_rows(vector[None, :], bias_first=False)[0]

    def item_space_from_features(self, features: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
        """A new item's (score vector (d + 2,), embedding (d,)) from its side features by name; None
        when the model has no item side features or knows none of the names."""
        if not self.item_side_names or not any(name in self.item_side_names for name in features):
            return None
        vector = self.item_vectors_from_features(_named_rows([features], self.item_side_names))[0]
        return _score_rows(vector[None, :], bias_first=True)[0], vector

    def save(self, path: Path) -> Path:
        """Write an ``np.savez`` archive: the towers' state dict as arrays, the vectors and JSON
        configuration; no pickles. Returns ``path``."""
        from recommender.ml.families.two_tower_network import state_arrays

        path = Path(path)
        arrays = {
            "family": np.asarray(_ARCHIVE_FAMILY),
            "version": np.asarray(_ARCHIVE_VERSION),
            "item_vectors": self.item_vectors,
            "user_vectors": self.user_vectors,
            **self.item_ids.to_arrays("item"),
            **self.user_ids.to_arrays("user"),
            "params_json": np.asarray(json.dumps(self.params)),
            "layout_json": np.asarray(json.dumps(self.layout)),
            "report_json": np.asarray(json.dumps(self.report)),
            "side_names_json": np.asarray(json.dumps({"item": self.item_side_names, "user": self.user_side_names})),
            **state_arrays(self.towers),
        }
        with path.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> TwoTowerFamily:
        """Read what :meth:`save` wrote (``allow_pickle=False``) and rebuild the towers."""
        from recommender.ml.families import two_tower_training
        from recommender.ml.families.two_tower_network import towers_from_arrays

        with np.load(Path(path), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        family = str(arrays["family"]) if "family" in arrays else None
        if family != _ARCHIVE_FAMILY or int(arrays["version"]) != _ARCHIVE_VERSION:
            raise TwoTowerArchiveError(
                f"{path} is not a two-tower archive version {_ARCHIVE_VERSION} (family={family!r}); "
                "load it with the class of the family that saved it."
            )
        params = json.loads(str(arrays["params_json"]))
        side_names = json.loads(str(arrays["side_names_json"])) if "side_names_json" in arrays else {}
        layout = json.loads(str(arrays["layout_json"]))
        try:
            towers = towers_from_arrays(two_tower_training.towers_build(params, layout), arrays)
        except (KeyError, ValueError) as error:
            raise TwoTowerArchiveError(f"{path}: {error}") from error
        return cls(
            towers=towers,
            item_vectors=arrays["item_vectors"],
            user_vectors=arrays["user_vectors"],
            item_ids=IdMap.from_arrays(arrays, "item"),
            user_ids=IdMap.from_arrays(arrays, "user"),
            params=params,
            layout=layout,
            report=json.loads(str(arrays["report_json"])),
            item_side_names=side_names.get("item", []),
            user_side_names=side_names.get("user", []),
        )

    def memory_bytes(self) -> int:
        """Bytes of the vectors (with the served item-space rows :meth:`item_space` keeps), the towers'
        parameters and the id arrays."""
        arrays = (self.item_vectors, self.user_vectors, self.item_ids.ids, self.user_ids.ids)
        parameters = sum(tensor.numel() * tensor.element_size() for tensor in self.towers.state_dict().values())
        space_rows = self.item_vectors.shape[0] * (self.item_vectors.shape[1] + 2) * 4
        return int(sum(array.nbytes for array in arrays) + parameters + space_rows)
