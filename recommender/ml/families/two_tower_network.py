"""The two towers of the two-tower family, in PyTorch, and the sparse bags they read.

Kept apart from `two_tower` (the family: parameters, training sequence, scoring, archives) so that
module reads as the model's contract and this one as its arithmetic. Importing this module imports
torch; the family imports it only when it fits, folds in or loads, so processes that never touch
the family never pay for torch.

Both towers end in an L2 normalisation, so a score is a cosine in [-1, 1] and the same vectors
serve an inner-product index, cosine neighbours and the temperature-scaled softmax of training.
No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


@dataclass(frozen=True)
class Bag:
    """Rows of a sparse matrix in ``nn.EmbeddingBag``'s flat layout.

    Attributes
    ----------
    indices : LongTensor (nnz,)
        Column indices, row after row.
    offsets : LongTensor (rows,)
        Where each row starts in ``indices``.
    weights : FloatTensor (nnz,)
        The stored values (per-sample weights of a ``mode="sum"`` bag).
    totals : FloatTensor (rows,)
        Each row's sum of weights (the denominator of a weighted mean).
    """

    indices: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    totals: torch.Tensor

    @classmethod
    def from_csr(cls, rows: sp.csr_matrix) -> Bag:
        rows = sp.csr_matrix(rows, dtype=np.float32)
        return cls(
            indices=torch.from_numpy(rows.indices.astype(np.int64)),
            offsets=torch.from_numpy(rows.indptr[:-1].astype(np.int64)),
            weights=torch.from_numpy(np.ascontiguousarray(rows.data, dtype=np.float32)),
            totals=torch.from_numpy(np.asarray(rows.sum(axis=1), dtype=np.float32).ravel()),
        )


def _mlp(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    if hidden_dim == 0:
        return nn.Sequential(nn.Linear(input_dim, output_dim))
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, output_dim))


class Towers(nn.Module):
    """Item tower and user tower.

    Item tower: ``id_embedding[i] + side_features[i] @ W_item_side`` → MLP → L2 normalise. An item
    seen only through its features (a new one) has no id row: its input is the feature term alone.

    User tower: ``weighted mean of history_embedding[j] over the history j + user_side[u] @
    W_user_side`` → MLP → L2 normalise. There is no user id embedding: a user *is* her history (and
    features), so a fitted user's vector and a fold-in of the same history are the same
    computation. The history table is separate from the item id table (YouTube DNN's "watch
    vectors"): an item's id embedding says what the item is, its history embedding what having
    liked it says about the next like; sharing them would tie the two, and its only saving (half
    the id parameters) is not worth the coupling when the item tower already has features for cold
    items.
    """

    def __init__(
        self, *, n_items: int, n_item_side: int, n_user_side: int, embedding_dim: int, hidden_dim: int, output_dim: int
    ) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items, embedding_dim)
        self.history_embedding = nn.Embedding(n_items, embedding_dim)
        # Empty side tables keep the state dict's keys fixed whatever features a catalogue has.
        self.item_side = nn.EmbeddingBag(max(n_item_side, 1), embedding_dim, mode="sum")
        self.user_side = nn.EmbeddingBag(max(n_user_side, 1), embedding_dim, mode="sum")
        self.item_mlp = _mlp(embedding_dim, hidden_dim, output_dim)
        self.user_mlp = _mlp(embedding_dim, hidden_dim, output_dim)
        self.output_dim = output_dim
        self.has_item_side = n_item_side > 0
        self.has_user_side = n_user_side > 0
        for table in (self.item_embedding, self.history_embedding, self.item_side, self.user_side):
            nn.init.normal_(table.weight, std=0.05)

    def item_vectors(
        self, items: torch.Tensor | None, side: Bag | None, *, keep_id: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalised item vectors (rows, output_dim).

        ``items`` None: feature-only vectors (no id row). ``keep_id``: a (rows,) 0/1 mask that
        drops some id embeddings in training, so the tower also learns to place items from their
        features alone.
        """
        parts = []
        if items is not None:
            ids = self.item_embedding(items)
            parts.append(ids if keep_id is None else ids * keep_id[:, None])
        if side is not None and self.has_item_side:
            parts.append(self.item_side(side.indices, side.offsets, per_sample_weights=side.weights))
        if not parts:
            raise ValueError("an item vector needs an item id or side features.")
        return nn.functional.normalize(self.item_mlp(torch.stack(parts).sum(dim=0)), dim=-1)

    def user_vectors(
        self,
        history: Bag,
        side: Bag | None = None,
        *,
        leave_out_items: torch.Tensor | None = None,
        leave_out_weights: torch.Tensor | None = None,
        keep_side: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised user vectors (rows, output_dim) from weighted histories.

        ``leave_out_items``/``leave_out_weights`` (rows,): one history entry per row removed from
        the mean, the training target: without this the tower learns to point at items already in
        the history, not at the next one. An empty history gives the MLP a zero input, which is
        what training showed it for users with a single positive: a stranger's vector.
        ``keep_side``: a (rows,) 0/1 mask that drops some rows' side features in training, so the
        tower also learns to place a user from her history alone (what a fold-in has).
        """
        sums = nn.functional.embedding_bag(
            history.indices, self.history_embedding.weight, history.offsets, mode="sum",
            per_sample_weights=history.weights,
        )  # fmt: skip
        totals = history.totals
        if leave_out_items is not None and leave_out_weights is not None:
            sums = sums - leave_out_weights[:, None] * self.history_embedding(leave_out_items)
            totals = totals - leave_out_weights
        # Rounding can leave a tiny positive total for an emptied history; below 1e-6 it is empty.
        mean = torch.where(totals[:, None] > 1e-6, sums / totals.clamp(min=1e-6)[:, None], torch.zeros_like(sums))
        if side is not None and self.has_user_side:
            features = self.user_side(side.indices, side.offsets, per_sample_weights=side.weights)
            mean = mean + (features if keep_side is None else features * keep_side[:, None])
        return nn.functional.normalize(self.user_mlp(mean), dim=-1)


def state_arrays(towers: Towers) -> dict[str, np.ndarray]:
    """The state dict as float32 numpy arrays keyed ``state:<parameter name>`` (for ``np.savez``)."""
    return {f"state:{name}": tensor.detach().cpu().numpy().copy() for name, tensor in towers.state_dict().items()}


def towers_from_arrays(towers: Towers, arrays) -> Towers:
    """Load ``state:<name>`` arrays (as :func:`state_arrays` wrote them) into ``towers``; strict."""
    state = {name: towers.state_dict()[name] for name in towers.state_dict()}
    loaded = {}
    for name, current in state.items():
        key = f"state:{name}"
        if key not in arrays:
            raise KeyError(f"the archive has no {key!r}; it was written by another two-tower layout.")
        array = np.asarray(arrays[key])
        if tuple(array.shape) != tuple(current.shape):
            raise ValueError(f"{key} has shape {array.shape}, the towers expect {tuple(current.shape)}.")
        loaded[name] = torch.from_numpy(array.copy())
    towers.load_state_dict(loaded, strict=True)
    return towers
