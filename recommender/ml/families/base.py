"""The one interface every model family implements (fit / score / similar / fold in / save / load).

A family is one module in this package with a class that satisfies :class:`ModelFamily` and a
``fit(data, params, *, progress=None)`` classmethod. The registry in ``__init__`` maps each
family's ``name`` to its class, so training, evaluation, the candidate sources and the ranker's
features reach every family the same way, and a new family is one new module.

Indices are the positions of :class:`~recommender.ml.dataset.IdMap` (``data.user_ids`` and
``data.item_ids`` of the TrainingData the family was fitted on). Scores are "higher is better"
and only comparable within one user's row.

Histories
    A user's history is a pair of arrays (item indices, confidences): the items she interacted
    with and how strongly (training weights; 1.0 when unknown). ``score_history`` turns any
    history into scores over all items **without refitting**: that is each family's fold-in
    (EASE: the history row times B; ALS: the implicit least-squares solve against fixed item
    factors; LightFM: `recommender.ml.foldin`). Serving calls it with the user's live history, so
    a rating moves every family's scores at the next request.

No Django here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from recommender.ml.dataset import IdMap, TrainingData

# progress(done, total, message): called by long fits (epochs, blocks of an inverse), may be ignored.
Progress = Callable[[int, int, str], None]


class FamilyFitError(ValueError):
    """A family cannot be fitted on this data (too little of it, bad parameters, a memory budget)."""


@runtime_checkable
class ModelFamily(Protocol):
    """A fitted model of one family.

    Attributes
    ----------
    name : str
        The registry key, e.g. ``"ease"``; stable, stored with a version.
    item_ids, user_ids : IdMap
        External ids of the fitted items and users, in index order.
    params : dict
        The hyperparameters it was fitted with (JSON-serialisable), for the Models page.
    param_grid : list of dict
        Partial parameter sets a time-budgeted search tries in order, best measured first
        (`recommender.ml.stack`); empty when a search would cost too much for what it buys.
    """

    name: ClassVar[str]
    param_grid: ClassVar[list[dict]]
    item_ids: IdMap
    user_ids: IdMap
    params: dict

    @classmethod
    def fit(cls, data: TrainingData, params: dict, *, progress: Progress | None = None) -> ModelFamily:
        """Fit on ``data.interactions`` (positives and their weights; vetoed pairs are known too)."""
        ...

    def score_items(self, user_indices: np.ndarray) -> np.ndarray:
        """Scores of fitted users against every item, float32 shape (len(user_indices), n_items)."""
        ...

    def score_history(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        preferences: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fold in one user from a history: scores over every item, float32 shape (n_items,).

        ``preferences`` marks each history item 1 (positive) or 0 (vetoed: a low rating, a
        dislike); None means all positive. Each family uses vetoed items as its fit used them
        (EASE on every rated pair counts them as interactions; ALS ignores them; LightFM's
        fold-in targets them at 0). Unknown indices (< 0) are ignored; an empty history gives a
        row a family may fill with its best guess for a stranger (zeros, or item biases).
        """
        ...

    def similar_items(self, item_index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to one item (itself excluded): (indices int64, scores float32)."""
        ...

    def save(self, path: Path) -> Path:
        """Write an ``np.savez`` archive (no pickles) and return its path."""
        ...

    @classmethod
    def load(cls, path: Path) -> ModelFamily:
        """Read what :meth:`save` wrote (``allow_pickle=False``)."""
        ...

    def memory_bytes(self) -> int:
        """Bytes the fitted arrays hold in memory (what one serving process pays to load it)."""
        ...


@runtime_checkable
class VectorFamily(Protocol):
    """A family whose score is an inner product of a query vector and item vectors, so its items
    can be published to the vector store as their own *space* and searched by ANN
    (`recommender.vectors`), with the query computed at request time from the user's live history.

    Rows follow the store's layout: item score vectors ``[v, b, 1]`` (n, d + 2), queries
    ``[u, 1, c]`` (d + 2,), bare embeddings ``v`` (n, d) for item-to-item similarity, float32.
    A family satisfies this next to :class:`ModelFamily`; LightFM's vectors are the default space
    and are published by training itself.
    """

    name: ClassVar[str]
    item_ids: IdMap

    def item_space(self) -> tuple[np.ndarray, np.ndarray]:
        """(score vectors (n_items, d + 2), embeddings (n_items, d)) of every fitted item, in index order."""
        ...

    def query_vector(
        self,
        item_indices: np.ndarray,
        confidences: np.ndarray | None = None,
        preferences: np.ndarray | None = None,
        side_features: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """The query (d + 2,) for a live history (as in `ModelFamily.score_history`) and the user's
        side features by name (``"type=value"`` → weight; unknown names ignored)."""
        ...

    def item_space_from_features(self, features: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
        """A new item's (score vector (d + 2,), embedding (d,)) from its side features by name,
        without refitting; None when the family cannot place it (no known feature)."""
        ...
