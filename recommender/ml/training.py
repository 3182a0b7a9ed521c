"""Train a LightFM hybrid model and hold its factors as plain arrays.

:class:`FittedModel` is the only thing later stages see: it scores users against items, turns
entities (even new ones, from side features) into vectors whose inner product *is* LightFM's
score, and saves to a pickle-free ``.npz``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recommender.ml.dataset import FeatureShapeError, IdMap, TrainingData
from recommender.ml.evaluation import ranking_metrics

logger = logging.getLogger(__name__)

LOSSES = ("warp", "bpr", "logistic", "warp-kos")


class HyperParameterError(ValueError):
    """A hyperparameter is out of range."""


class NonFiniteFactorsError(RuntimeError):
    """Training produced NaN or infinite factors."""


@dataclass
class HyperParameters:
    """LightFM settings plus the training loop's own.

    The defaults reach precision@10 of about 0.21 on MovieLens 100k (ratings >= 4, genres as item
    features, 80/20 random split), against about 0.12 for popularity; see docs/ml.md.
    """

    loss: str = "warp"
    no_components: int = 32
    learning_rate: float = 0.05
    item_alpha: float = 0.0
    user_alpha: float = 0.0
    epochs: int = 30
    max_sampled: int = 10
    use_item_features: bool = True
    use_user_features: bool = False
    random_state: int = 0
    num_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    early_stopping_patience: int | None = None
    early_stopping_k: int = 10

    def validate(self) -> HyperParameters:
        """Raise :class:`HyperParameterError` naming the first bad value; return self."""

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise HyperParameterError(message)

        def is_int(value) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        def is_number(value) -> bool:
            return (
                isinstance(value, (int, float, np.floating, np.integer))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )

        check(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}.")
        check(
            is_int(self.no_components) and self.no_components >= 1,
            f"no_components must be a positive integer, got {self.no_components!r}.",
        )
        check(
            is_number(self.learning_rate) and self.learning_rate > 0,
            f"learning_rate must be a positive finite number, got {self.learning_rate!r}; try 0.05.",
        )
        for name in ("item_alpha", "user_alpha"):
            value = getattr(self, name)
            check(is_number(value) and value >= 0, f"{name} must be >= 0, got {value!r}; 0 disables it.")
        check(is_int(self.epochs) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs!r}.")
        check(
            is_int(self.max_sampled) and self.max_sampled >= 1,
            f"max_sampled must be a positive integer, got {self.max_sampled!r}.",
        )
        check(
            is_int(self.num_threads) and self.num_threads >= 1,
            f"num_threads must be a positive integer, got {self.num_threads!r}.",
        )
        check(is_int(self.random_state), f"random_state must be an integer, got {self.random_state!r}.")
        check(
            self.early_stopping_patience is None
            or (is_int(self.early_stopping_patience) and self.early_stopping_patience >= 1),
            f"early_stopping_patience must be None (off) or a positive integer, got {self.early_stopping_patience!r}.",
        )
        check(
            is_int(self.early_stopping_k) and self.early_stopping_k >= 1,
            f"early_stopping_k must be a positive integer, got {self.early_stopping_k!r}.",
        )
        return self


def _csr_to_arrays(matrix: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": matrix.data,
        f"{prefix}_indices": matrix.indices,
        f"{prefix}_indptr": matrix.indptr,
        f"{prefix}_shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def _csr_from_arrays(arrays, prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=tuple(arrays[f"{prefix}_shape"]),
    )


@dataclass
class FittedModel:
    """A trained model as arrays.

    Attributes
    ----------
    user_embeddings : ndarray of float32, shape (n_user_columns, k)
        One embedding per user feature column (identity columns first when present).
    user_biases : ndarray of float32, shape (n_user_columns,)
    item_embeddings : ndarray of float32, shape (n_item_columns, k)
    item_biases : ndarray of float32, shape (n_item_columns,)
    user_features : csr_matrix of float32, shape (n_users, n_user_columns)
    item_features : csr_matrix of float32, shape (n_items, n_item_columns)
    user_ids, item_ids : IdMap
    user_feature_names, item_feature_names : list of str
    user_identity, item_identity : bool
        Whether the feature matrix begins with one identity column per entity; side feature
        ``f`` is then column ``n_entities + f``.
    params : HyperParameters
    """

    user_embeddings: np.ndarray
    user_biases: np.ndarray
    item_embeddings: np.ndarray
    item_biases: np.ndarray
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    user_ids: IdMap
    item_ids: IdMap
    user_feature_names: list[str]
    item_feature_names: list[str]
    user_identity: bool
    item_identity: bool
    params: HyperParameters

    def __post_init__(self) -> None:
        self._item_vectors: np.ndarray | None = None
        self._user_vectors: np.ndarray | None = None
        # The live LightFM object (with its AdaGrad state) when this model came from `fit`, so that
        # `fit(..., resume=model)` continues training exactly; never saved.
        self._lightfm = None

    @property
    def n_components(self) -> int:
        return self.item_embeddings.shape[1]

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteFactorsError` if any factor is NaN or infinite."""
        for name in ("user_embeddings", "user_biases", "item_embeddings", "item_biases"):
            values = getattr(self, name)
            if not np.isfinite(values).all():
                raise NonFiniteFactorsError(
                    f"{name} holds {int((~np.isfinite(values)).sum())} non-finite values; lower learning_rate, "
                    "add item_alpha/user_alpha, or check feature weights for huge values."
                )

    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(biases (n_items,), vectors (n_items, k)) as LightFM's ``get_item_representations``."""
        return (self.item_features @ self.item_biases).astype(np.float32), np.asarray(
            self.item_features @ self.item_embeddings, dtype=np.float32
        )

    def user_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(biases (n_users,), vectors (n_users, k)) as LightFM's ``get_user_representations``."""
        return (self.user_features @ self.user_biases).astype(np.float32), np.asarray(
            self.user_features @ self.user_embeddings, dtype=np.float32
        )

    def item_vectors_with_bias(self) -> np.ndarray:
        """float32 (n_items, k+2): ``[representation, item_bias, 1]``.

        Paired with :meth:`user_vectors_with_bias` (``[representation, 1, user_bias]``) the inner
        product is ``u.v + item_bias + user_bias``, exactly LightFM's score, so a plain
        inner-product index ranks as the model does.
        """
        if self._item_vectors is None:
            biases, vectors = self.item_representations()
            self._item_vectors = _with_bias(vectors, biases, bias_first=True)
        return self._item_vectors

    def user_vectors_with_bias(self) -> np.ndarray:
        """float32 (n_users, k+2): ``[representation, 1, user_bias]``."""
        if self._user_vectors is None:
            biases, vectors = self.user_representations()
            self._user_vectors = _with_bias(vectors, biases, bias_first=False)
        return self._user_vectors

    def predict(self, user_index, item_index) -> np.ndarray:
        """Scores of paired (user, item) indices, float32 shape (m,)."""
        user_index, item_index = np.asarray(user_index), np.asarray(item_index)
        users = self.user_vectors_with_bias()[user_index]
        items = self.item_vectors_with_bias()[item_index]
        return np.einsum("ij,ij->i", users, items)

    def score_items(self, user_index) -> np.ndarray:
        """Scores of every item for each user, float32 shape (len(user_index), n_items)."""
        return self.user_vectors_with_bias()[np.asarray(user_index)] @ self.item_vectors_with_bias().T

    def item_vector_from_features(self, feature_indices, weights=None, *, normalize: bool = True) -> np.ndarray:
        """Vector ``[representation, bias, 1]`` (float32, (k+2,)) of a new item from side features only.

        Parameters
        ----------
        feature_indices : array_like of int, shape (f,)
            Side-feature numbers, i.e. columns *after* the identity block (0 = first side feature).
        weights : array_like of float, shape (f,), optional
        normalize : bool
            L1-normalise like :func:`~recommender.ml.dataset.build_feature_matrix` did for training.
        """
        return _vector_from_features(
            self.item_embeddings,
            self.item_biases,
            len(self.item_ids) if self.item_identity else 0,
            feature_indices,
            weights,
            normalize,
            bias_first=True,
            subject="item",
        )

    def user_vector_from_features(self, feature_indices, weights=None, *, normalize: bool = True) -> np.ndarray:
        """Vector ``[representation, 1, bias]`` (float32, (k+2,)) of a new user from side features only."""
        return _vector_from_features(
            self.user_embeddings,
            self.user_biases,
            len(self.user_ids) if self.user_identity else 0,
            feature_indices,
            weights,
            normalize,
            bias_first=False,
            subject="user",
        )

    def save(self, path) -> Path:
        """Write a pickle-free ``.npz``; returns the path written."""
        path = Path(path)
        arrays = {
            "user_embeddings": self.user_embeddings,
            "user_biases": self.user_biases,
            "item_embeddings": self.item_embeddings,
            "item_biases": self.item_biases,
            **_csr_to_arrays(self.user_features, "user_features"),
            **_csr_to_arrays(self.item_features, "item_features"),
            **self.user_ids.to_arrays("user"),
            **self.item_ids.to_arrays("item"),
            "user_feature_names": np.asarray(self.user_feature_names, dtype=str),
            "item_feature_names": np.asarray(self.item_feature_names, dtype=str),
            "identity": np.asarray([self.user_identity, self.item_identity]),
            "params_json": np.asarray(json.dumps(asdict(self.params))),
        }
        with path.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path) -> FittedModel:
        with np.load(Path(path), allow_pickle=False) as arrays:
            identity = arrays["identity"]
            return cls(
                user_embeddings=arrays["user_embeddings"],
                user_biases=arrays["user_biases"],
                item_embeddings=arrays["item_embeddings"],
                item_biases=arrays["item_biases"],
                user_features=_csr_from_arrays(arrays, "user_features"),
                item_features=_csr_from_arrays(arrays, "item_features"),
                user_ids=IdMap.from_arrays(arrays, "user"),
                item_ids=IdMap.from_arrays(arrays, "item"),
                user_feature_names=arrays["user_feature_names"].tolist(),
                item_feature_names=arrays["item_feature_names"].tolist(),
                user_identity=bool(identity[0]),
                item_identity=bool(identity[1]),
                params=HyperParameters(**json.loads(str(arrays["params_json"]))),
            )


def _with_bias(vectors: np.ndarray, biases: np.ndarray, *, bias_first: bool) -> np.ndarray:
    ones = np.ones_like(biases)
    extra = (biases, ones) if bias_first else (ones, biases)
    return np.column_stack([vectors, *extra]).astype(np.float32)


def _vector_from_features(embeddings, biases, offset, feature_indices, weights, normalize, *, bias_first, subject):
    n_side = embeddings.shape[0] - offset
    if n_side == 0:
        raise FeatureShapeError(
            f"the model was trained without {subject} side features; "
            f"set use_{subject}_features=True and pass {subject}_features to fit."
        )
    feature_indices = np.asarray(feature_indices, dtype=np.int64)
    weights = np.ones(len(feature_indices), np.float32) if weights is None else np.asarray(weights, np.float32)
    if len(weights) != len(feature_indices):
        raise FeatureShapeError(f"{len(feature_indices)} feature indices but {len(weights)} weights.")
    if len(feature_indices) == 0:
        raise FeatureShapeError(f"a new {subject} needs at least one side feature to get a vector.")
    if feature_indices.min() < 0 or feature_indices.max() >= n_side:
        raise FeatureShapeError(f"feature indices must lie in [0, {n_side}) (side features, identity excluded).")
    if normalize:
        total = weights.sum()
        if total <= 0:
            raise FeatureShapeError("feature weights must sum to a positive number to be normalised.")
        weights = weights / total
    columns = feature_indices + offset
    vector = (weights[:, None] * embeddings[columns]).sum(axis=0)
    bias = np.float32((weights * biases[columns]).sum())
    tail = [bias, 1.0] if bias_first else [1.0, bias]
    return np.concatenate([vector, np.asarray(tail, dtype=np.float32)]).astype(np.float32)


def _feature_matrix(
    features: sp.csr_matrix | None, use: bool, n_entities: int, identity: bool
) -> tuple[sp.csr_matrix, bool]:
    if not use or features is None:
        return sp.identity(n_entities, dtype=np.float32, format="csr"), True
    matrix = sp.csr_matrix(features, dtype=np.float32)
    if not np.isfinite(matrix.data).all():
        raise FeatureShapeError("feature matrix holds non-finite values.")
    return matrix, identity


def fit(
    data: TrainingData,
    params: HyperParameters | None = None,
    *,
    on_epoch: Callable[[int, int, float | None], None] | None = None,
    validation: sp.csr_matrix | None = None,
    resume: FittedModel | None = None,
    time_budget_seconds: float | None = None,
) -> FittedModel:
    """Train LightFM one epoch at a time.

    ``time_budget_seconds`` bounds the epochs' wall time: the next epoch starts only when the
    slowest one so far would end within it (at least one epoch runs). The training run gives the
    served model `TRAINING_LIGHTFM_FIT_SECONDS` and its validation fits the family budget
    (`recommender.ml.families.lightfm`); ``on_epoch`` hears each epoch that ran.

    Parameters
    ----------
    data : TrainingData
    params : HyperParameters, optional (defaults)
    on_epoch : callable ``(epoch, n_epochs, validation_precision or None)``, optional
        Called after every epoch (1-based), e.g. to report progress.
    validation : csr_matrix, shape (n_users, n_items), optional
        Held-out positives; precision@``early_stopping_k`` is computed on them after each epoch.
        With ``early_stopping_patience`` set, training stops after that many epochs without
        improvement and the best epoch's weights are returned.
    resume : FittedModel, optional
        Continue training this model (same feature columns) for ``params.epochs`` more epochs
        instead of starting from random weights: used to fold the held-out part back in after
        evaluation at a fraction of a full refit's cost. Its AdaGrad state is kept when it came
        from this process's ``fit``; otherwise the weights are copied and the state starts afresh.

    Returns
    -------
    FittedModel

    Raises
    ------
    HyperParameterError, FeatureShapeError, NonFiniteFactorsError
    """
    from lightfm import LightFM  # imported here so the rest of ml/ works without the compiled extension

    params = (params or HyperParameters()).validate()
    positives = sp.csr_matrix(data.interactions.positives, dtype=np.float32)
    if positives.nnz == 0:
        raise FeatureShapeError("no positive interactions to train on; check positive_threshold and kind weights.")
    if params.early_stopping_patience is not None and validation is None:
        raise HyperParameterError("early_stopping_patience needs validation positives (pass validation=...).")
    if validation is not None and validation.shape != positives.shape:
        raise FeatureShapeError(f"validation shape {validation.shape} differs from interactions {positives.shape}.")
    n_users, n_items = positives.shape
    user_features, user_identity = _feature_matrix(
        data.user_features, params.use_user_features, n_users, data.user_identity
    )
    item_features, item_identity = _feature_matrix(
        data.item_features, params.use_item_features, n_items, data.item_identity
    )

    interactions = positives.tocoo()
    sample_weight = None
    if params.loss != "warp-kos":  # LightFM's k-OS loss does not implement sample weights
        weights = sp.csr_matrix(data.interactions.weights, dtype=np.float32)
        weights.sort_indices()
        positives.sort_indices()
        same_pattern = np.array_equal(weights.indices, positives.indices) and np.array_equal(
            weights.indptr, positives.indptr
        )
        if not same_pattern:
            raise FeatureShapeError("interaction weights must share the sparsity pattern of positives.")
        interactions = positives.tocoo()
        sample_weight = weights.tocoo()

    model = LightFM(
        no_components=params.no_components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        item_alpha=params.item_alpha,
        user_alpha=params.user_alpha,
        max_sampled=params.max_sampled,
        random_state=params.random_state,
    )
    if resume is not None:
        model = _resumed_lightfm(model, resume, user_features, item_features)

    def snapshot() -> FittedModel:
        return FittedModel(
            user_embeddings=model.user_embeddings.copy(),
            user_biases=model.user_biases.copy(),
            item_embeddings=model.item_embeddings.copy(),
            item_biases=model.item_biases.copy(),
            user_features=user_features,
            item_features=item_features,
            user_ids=data.user_ids,
            item_ids=data.item_ids,
            user_feature_names=list(data.user_feature_names) if params.use_user_features else [],
            item_feature_names=list(data.item_feature_names) if params.use_item_features else [],
            user_identity=user_identity,
            item_identity=item_identity,
            params=params,
        )

    started = time.perf_counter()
    best, best_score, since_best = None, -np.inf, 0
    slowest_epoch, epochs_run = 0.0, 0
    for epoch in range(1, params.epochs + 1):
        elapsed = time.perf_counter() - started
        if time_budget_seconds is not None and epoch > 1 and elapsed + slowest_epoch > time_budget_seconds:
            logger.info(
                "ml.fit.time_budget epochs_run=%d of=%d seconds=%.1f budget=%.1f",
                epochs_run,
                params.epochs,
                elapsed,
                time_budget_seconds,
            )
            break
        epoch_started = time.perf_counter()
        try:
            model.fit_partial(
                interactions,
                user_features=user_features,
                item_features=item_features,
                sample_weight=sample_weight,
                epochs=1,
                num_threads=params.num_threads,
            )
        except ValueError as error:
            # LightFM signals divergence with a bare ValueError; give it our name and hint.
            factors = (model.user_embeddings, model.item_embeddings, model.user_biases, model.item_biases)
            if all(np.isfinite(values).all() for values in factors):
                raise
            raise NonFiniteFactorsError(
                f"training diverged at epoch {epoch} (learning_rate={params.learning_rate}); lower learning_rate, "
                "add item_alpha/user_alpha, or normalise feature values and sample weights."
            ) from error
        epochs_run = epoch
        slowest_epoch = max(slowest_epoch, time.perf_counter() - epoch_started)
        score = None
        if validation is not None:
            current = snapshot()
            metrics = ranking_metrics(current.score_items, positives, validation, params.early_stopping_k)
            score = float(np.mean(metrics["precision"])) if len(metrics["users"]) else 0.0
            if score > best_score:
                best, best_score, since_best = current, score, 0
            else:
                since_best += 1
        if on_epoch is not None:
            on_epoch(epoch, params.epochs, score)
        if params.early_stopping_patience is not None and since_best >= params.early_stopping_patience:
            logger.info("ml.fit.early_stop epoch=%d best_precision=%.4f", epoch, best_score)
            break
    fitted = best if (best is not None and params.early_stopping_patience is not None) else snapshot()
    fitted.check_finite()
    fitted._lightfm = model if fitted is not best else None
    logger.info(
        "ml.fit.done users=%d items=%d positives=%d seconds=%.2f",
        n_users,
        n_items,
        positives.nnz,
        time.perf_counter() - started,
    )
    return fitted


def _resumed_lightfm(fresh, resume: FittedModel, user_features, item_features):
    expected = (user_features.shape[1], item_features.shape[1])
    found = (resume.user_embeddings.shape[0], resume.item_embeddings.shape[0])
    if expected != found or resume.n_components != fresh.no_components:
        raise FeatureShapeError(
            f"cannot resume: the model has {found} user/item feature columns and "
            f"{resume.n_components} components, the data {expected} and {fresh.no_components}."
        )
    if resume._lightfm is not None:
        return resume._lightfm
    fresh._initialize(fresh.no_components, expected[1], expected[0])
    fresh.user_embeddings[:], fresh.user_biases[:] = resume.user_embeddings, resume.user_biases
    fresh.item_embeddings[:], fresh.item_biases[:] = resume.item_embeddings, resume.item_biases
    return fresh
