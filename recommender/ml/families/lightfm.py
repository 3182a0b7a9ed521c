"""The LightFM hybrid family: `recommender.ml.training` behind the family interface.

The fitted model is today's `FittedModel` (factors as arrays; users and items are sums of their
feature embeddings, so side features reach cold items). This adapter adds what the interface
asks for: a history fold-in through `recommender.ml.foldin.FoldIn` against the fixed item vectors
and biases, and similar items by cosine of the item representations. Its vectors are the ones
published into pgvector (docs/ml.md, "The bias-coordinate trick").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np

from recommender.ml.dataset import TrainingData
from recommender.ml.foldin import FoldIn
from recommender.ml.similarity import similarity, top_k
from recommender.ml.training import FittedModel, HyperParameterError, HyperParameters, fit

from .base import FamilyFitError, Progress


def hyperparameters(params: dict) -> HyperParameters:
    """``HyperParameters`` from a JSON dict; unknown keys raise with the known ones listed."""
    known = {field.name for field in dataclasses.fields(HyperParameters)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise FamilyFitError(f"unknown LightFM parameters {unknown}; known: {sorted(known)}.")
    try:
        return HyperParameters(**params).validate()
    except HyperParameterError as error:
        raise FamilyFitError(str(error)) from error


class LightFmFamily:
    """A fitted LightFM model; ``model`` is the `FittedModel` serving publishes."""

    name: ClassVar[str] = "lightfm"
    # No search: one fit costs more than the rest of the run, and its defaults are measured (docs/ml.md).
    param_grid: ClassVar[list[dict]] = []

    def __init__(self, model: FittedModel) -> None:
        self.model = model
        self.item_ids = model.item_ids
        self.user_ids = model.user_ids
        self.params = dataclasses.asdict(model.params)
        self._fold_in: FoldIn | None = None

    @classmethod
    def fit(cls, data: TrainingData, params: dict, *, progress: Progress | None = None) -> LightFmFamily:
        """``params``: LightFM's hyperparameters, plus an optional ``fit_seconds`` time budget
        (epochs stop after the one that crosses it; the stack's validation fit passes it)."""
        params = dict(params)
        fit_seconds = params.pop("fit_seconds", None)
        hyper = hyperparameters({**params, "early_stopping_patience": None})

        def on_epoch(epoch: int, total: int, _precision: float | None) -> None:
            if progress is not None:
                progress(epoch, total, f"LightFM epoch {epoch} of {total}")

        return cls(fit(data, hyper, on_epoch=on_epoch, time_budget_seconds=fit_seconds))

    def score_items(self, user_indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.score_items(np.asarray(user_indices, dtype=np.int64)), dtype=np.float32)

    def score_history(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        preferences: np.ndarray | None = None,
    ) -> np.ndarray:
        items = np.asarray(item_indices, dtype=np.int64)
        weights = None if confidences is None else np.asarray(confidences, dtype=np.float64)
        wanted = None if preferences is None else np.asarray(preferences, dtype=np.float64)
        known = items >= 0
        items = items[known]
        weights = None if weights is None else weights[known]
        wanted = None if wanted is None else wanted[known]
        vectors = self.model.item_vectors_with_bias()
        if len(items) == 0:
            # A stranger: the item biases alone (LightFM's learned popularity).
            return np.ascontiguousarray(vectors[:, -2], dtype=np.float32)
        if self._fold_in is None:
            self._fold_in = FoldIn.from_vectors_with_bias(vectors)
        user = self._fold_in.user_vector_with_bias(items, weights, wanted)
        return np.asarray(vectors @ user, dtype=np.float32)

    def similar_items(self, item_index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, embeddings = self.model.item_representations()
        scores = np.asarray(similarity(embeddings[item_index], embeddings, "cosine"), dtype=np.float64)
        scores[item_index] = -np.inf
        order = top_k(scores, min(k, len(scores) - 1))
        return order.astype(np.int64), scores[order].astype(np.float32)

    def save(self, path: Path) -> Path:
        return self.model.save(path)

    @classmethod
    def load(cls, path: Path) -> LightFmFamily:
        return cls(FittedModel.load(path))

    def memory_bytes(self) -> int:
        model = self.model
        arrays = (model.user_embeddings, model.item_embeddings, model.user_biases, model.item_biases)
        sparse = (model.user_features, model.item_features)
        return int(
            sum(array.nbytes for array in arrays)
            + sum(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes for matrix in sparse)
        )
