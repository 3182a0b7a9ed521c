"""How the two-tower family trains and runs its towers: the training sequence, batched inference.

The loss and the early-stopping rule are described in `two_tower`'s module notes; this module is
their implementation, the one place that calls torch for the family (with `two_tower_network`).
No Django here.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recommender.ml import evaluation
from recommender.ml.families.base import FamilyFitError, Progress
from recommender.ml.families.two_tower_network import Bag, Towers

logger = logging.getLogger(__name__)

_VALIDATION_K = 10
# Validation scores at most this many (user, item) cells an epoch (`evaluation.users_within_budget`).
_VALIDATION_BUDGET_CELLS = 20_000_000
# Rows run through a tower at once at inference: bounds the activations, not the result.
_INFERENCE_ROWS = 4096
# An epoch takes at least this many optimizer steps: on a small catalogue the batch shrinks (to 2
# at the least), or an epoch of a few hundred pairs would be two steps and early stopping would
# pick between almost untrained models (a planted serving catalogue of 774 positives stopped after
# one such epoch and fell below popularity).
MIN_STEPS_PER_EPOCH = 16


def batch_size_for(n_pairs: int, batch_size: int) -> int:
    """The batch size a run uses: ``batch_size``, shrunk so an epoch has ``MIN_STEPS_PER_EPOCH`` steps."""
    return int(max(2, min(batch_size, -(-n_pairs // MIN_STEPS_PER_EPOCH))))


def towers_build(params: dict[str, Any], layout: dict[str, int]) -> Towers:
    """Fresh towers for resolved ``params`` and a ``layout`` (n_items, n_item_side, n_user_side)."""
    return Towers(
        n_items=layout["n_items"],
        n_item_side=layout["n_item_side"],
        n_user_side=layout["n_user_side"],
        embedding_dim=params["embedding_dim"],
        hidden_dim=params["hidden_dim"],
        output_dim=params["output_dim"],
    )


def _rows(matrix: sp.csr_matrix | None, indices: np.ndarray) -> Bag | None:
    return None if matrix is None else Bag.from_csr(matrix[indices])


@torch.no_grad()
def item_vectors(towers: Towers, items: np.ndarray | None, side: sp.csr_matrix | None) -> np.ndarray:
    """Item tower outputs, float32 (m, output_dim): ``items`` (m,) with their ``side`` rows (the
    full side matrix, indexed by ``items``), or, with ``items`` None, feature-only vectors of the
    ``side`` rows themselves."""
    towers.eval()
    if items is not None:
        count = len(items)
    elif side is not None:
        count = side.shape[0]
    else:
        raise ValueError("feature-only item vectors need side-feature rows.")
    parts = []
    for start in range(0, count, _INFERENCE_ROWS):
        chunk = np.arange(start, min(start + _INFERENCE_ROWS, count))
        ids = None if items is None else torch.from_numpy(items[chunk])
        rows = chunk if items is None else items[chunk]
        parts.append(towers.item_vectors(ids, _rows(side, rows)).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, towers.output_dim), np.float32)


@torch.no_grad()
def user_vectors(towers: Towers, history: sp.csr_matrix, side: sp.csr_matrix | None) -> np.ndarray:
    """User tower outputs for every row of ``history`` (weights csr (m, n_items)) and, when given,
    the matching rows of ``side``: float32 (m, output_dim)."""
    towers.eval()
    parts = []
    for start in range(0, history.shape[0], _INFERENCE_ROWS):
        chunk = np.arange(start, min(start + _INFERENCE_ROWS, history.shape[0]))
        parts.append(towers.user_vectors(Bag.from_csr(history[chunk]), _rows(side, chunk)).numpy())
    return np.concatenate(parts)


@torch.no_grad()
def user_vector_one(
    towers: Towers,
    items: np.ndarray,
    weights: np.ndarray,
    side_columns: np.ndarray,
    side_weights: np.ndarray,
    *,
    has_side: bool,
) -> np.ndarray:
    """The user tower on one history (item indices (m,), weights (m,)) and side features (columns,
    L1-normalised weights): float32 (output_dim,). The same as a one-row :func:`user_vectors`
    (repeated items add up in the bag's sum as they do in a csr row)."""
    if towers.training:
        towers.eval()
    history = Bag(
        indices=torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64)),
        offsets=torch.zeros(1, dtype=torch.int64),
        weights=torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)),
        totals=torch.tensor([float(np.sum(weights, dtype=np.float64))], dtype=torch.float32),
    )
    side = None
    if has_side:
        side = Bag(
            indices=torch.from_numpy(np.ascontiguousarray(side_columns, dtype=np.int64)),
            offsets=torch.zeros(1, dtype=torch.int64),
            weights=torch.from_numpy(np.ascontiguousarray(side_weights, dtype=np.float32)),
            totals=torch.tensor([float(np.sum(side_weights, dtype=np.float64))], dtype=torch.float32),
        )
    return towers.user_vectors(history, side)[0].numpy()


def candidate_log_counts(item_counts: np.ndarray, batch_size: int, mixed_negatives: int) -> np.ndarray:
    """The log-Q correction: log of each item's expected count among one batch's candidates.

    Parameters
    ----------
    item_counts : ndarray of int, shape (n_items,)
        Training pairs per item; batches draw pairs uniformly, so a batch slot holds item j with
        probability ``q_j = item_counts[j] / item_counts.sum()``.
    batch_size : int
        B, the pairs per batch (their items are the in-batch candidates).
    mixed_negatives : int
        M uniformly drawn extra candidates per batch.

    Returns
    -------
    ndarray of float32, shape (n_items,)
        ``log(B q_j + M / n_items)``; an item no pair holds and no uniform draw can reach is
        floored at ``log(1e-12)`` (it is never a candidate, so the value is never used).
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    expected = batch_size * counts / max(counts.sum(), 1.0) + mixed_negatives / len(counts)
    return np.log(np.maximum(expected, 1e-12)).astype(np.float32)


class _Batches:
    """The fixed inputs of one training run: pairs, the log-Q table and the feature matrices."""

    def __init__(
        self, history: sp.csr_matrix, item_side: sp.csr_matrix | None, user_side: sp.csr_matrix | None, params: dict
    ) -> None:
        pairs = history.tocoo()
        self.users, self.items = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
        self.weights = pairs.data.astype(np.float32)
        self.history, self.item_side, self.user_side = history, item_side, user_side
        self.params = params
        n_items = history.shape[1]
        if params["log_q_correction"]:
            counts = np.bincount(self.items, minlength=n_items)
            batch = min(params["batch_size"], len(self.users))
            self.log_q = torch.from_numpy(candidate_log_counts(counts, batch, params["mixed_negatives"]))
        else:
            self.log_q = torch.zeros(n_items)

    def loss(self, towers: Towers, order: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Corrected in-batch softmax loss of the pairs at positions ``order``."""
        params = self.params
        users, items, weights = self.users[order], self.items[order], self.weights[order]
        negatives = rng.integers(0, self.history.shape[1], params["mixed_negatives"])
        candidates = np.concatenate([items, negatives])
        user = towers.user_vectors(
            Bag.from_csr(self.history[users]),
            _rows(self.user_side, users),
            leave_out_items=torch.from_numpy(items),
            leave_out_weights=torch.from_numpy(weights),
            keep_side=torch.from_numpy((rng.random(len(users)) >= params["user_feature_dropout"]).astype(np.float32)),
        )
        keep = None  # without side features a dropped id would leave the tower no input at all
        if self.item_side is not None:
            keep = torch.from_numpy((rng.random(len(candidates)) >= params["item_id_dropout"]).astype(np.float32))
        item = towers.item_vectors(torch.from_numpy(candidates), _rows(self.item_side, candidates), keep_id=keep)
        logits = user @ item.T / params["temperature"] - self.log_q[torch.from_numpy(candidates)]
        # Accidental hits: a candidate that is one of the row user's positives (the same item drawn
        # twice, or another item she liked) is no negative; only the row's own column stays.
        hits = self.history[users][:, candidates].toarray() > 0
        hits[np.arange(len(users)), np.arange(len(users))] = False
        logits = logits.masked_fill(torch.from_numpy(hits), float("-inf"))
        per_row = torch.nn.functional.cross_entropy(logits, torch.arange(len(users)), reduction="none")
        sample_weights = torch.from_numpy(weights / max(float(weights.mean()), 1e-12))
        return (per_row * sample_weights).mean()


def _validation_recall(towers: Towers, batches: _Batches, train: sp.csr_matrix, validation: sp.csr_matrix) -> float:
    items = item_vectors(towers, np.arange(train.shape[1]), batches.item_side)
    users = user_vectors(towers, batches.history, batches.user_side)
    metrics = evaluation.ranking_metrics(lambda rows: users[rows] @ items.T, train, validation, _VALIDATION_K)
    return float(metrics["recall"].mean()) if len(metrics["recall"]) else 0.0


def _epochs(
    history: sp.csr_matrix,
    item_side: sp.csr_matrix | None,
    user_side: sp.csr_matrix | None,
    params: dict[str, Any],
    layout: dict[str, int],
    *,
    epochs: int,
    validation: sp.csr_matrix | None,
    started: float,
    progress: Progress | None,
    phase: str,
) -> tuple[Towers, int, list[float]]:
    """One seeded training run of up to ``epochs``: (towers, epochs that count, validation recalls).

    With ``validation`` the towers of the best epoch are returned and the run stops after
    ``patience`` epochs without a better recall; without it, the last epoch's towers.
    """
    params = {**params, "batch_size": batch_size_for(history.nnz, params["batch_size"])}
    torch.manual_seed(params["random_state"])
    rng = np.random.default_rng(params["random_state"])
    towers = towers_build(params, layout)
    optimizer = torch.optim.Adam(towers.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"])
    batches = _Batches(history, item_side, user_side, params)
    train_positives = sp.csr_matrix((np.ones(history.nnz, np.float32), history.indices, history.indptr), history.shape)
    batch_size, budget = params["batch_size"], params["fit_seconds"]
    best_recall, best_epoch, best_state, recalls, slowest = -1.0, 0, None, [], 0.0
    for epoch in range(1, epochs + 1):
        if budget is not None and epoch > 1 and time.perf_counter() - started + slowest > budget:
            logger.info("two_tower.fit.time_budget phase=%s epochs=%d budget=%.1f", phase, epoch - 1, budget)
            break
        began = time.perf_counter()
        towers.train()
        order = rng.permutation(len(batches.users))
        total = 0.0
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if len(chunk) < 2:
                continue  # a batch of one has no in-batch negatives
            optimizer.zero_grad()
            loss = batches.loss(towers, chunk, rng)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(chunk)
        if not np.isfinite(total):
            raise FamilyFitError(
                f"two-tower loss became non-finite in epoch {epoch}; lower learning_rate "
                f"({params['learning_rate']}) or raise temperature ({params['temperature']})."
            )
        message = f"two-tower {phase} epoch {epoch}/{epochs}, loss {total / len(order):.4f}"
        if validation is not None:
            recalls.append(_validation_recall(towers, batches, train_positives, validation))
            message += f", validation recall@{_VALIDATION_K} {recalls[-1]:.4f}"
            if recalls[-1] > best_recall:
                best_recall, best_epoch, best_state = recalls[-1], epoch, copy.deepcopy(towers.state_dict())
        else:
            best_epoch = epoch
        slowest = max(slowest, time.perf_counter() - began)
        logger.info("two_tower.fit.epoch phase=%s epoch=%d loss=%.4f", phase, epoch, total / len(order))
        if progress is not None:
            progress(epoch, epochs, message)
        if validation is not None and epoch - best_epoch >= params["patience"]:
            break
    if best_state is not None:
        towers.load_state_dict(best_state)
    return towers, best_epoch, recalls


def towers_fit(
    weights: sp.csr_matrix,
    item_side: sp.csr_matrix | None,
    user_side: sp.csr_matrix | None,
    params: dict[str, Any],
    layout: dict[str, int],
    *,
    progress: Progress | None = None,
) -> tuple[Towers, np.ndarray, np.ndarray, dict[str, Any]]:
    """Early-stop on a validation split, refit on all positives: (towers, user vectors, item
    vectors, report). ``weights``: float32 csr (n_users, n_items) with sorted indices."""
    previous_threads = torch.get_num_threads()
    if params["num_threads"]:
        torch.set_num_threads(params["num_threads"])
    started = time.perf_counter()
    report: dict[str, Any] = {}
    try:
        # fork_rng: seeding for this fit leaves the caller's torch random state as it was.
        with torch.random.fork_rng(devices=[]):
            epochs = params["epochs"]
            fraction = params["validation_fraction"]
            positives = sp.csr_matrix(
                (np.ones(weights.nnz, np.float32), weights.indices, weights.indptr), weights.shape
            )
            split = evaluation.random_split(positives, weights, fraction, params["random_state"]) if fraction else None
            if split is not None and split.test_positives.nnz and split.train_positives.nnz:
                validation = evaluation.users_within_budget(
                    split.test_positives, budget_cells=_VALIDATION_BUDGET_CELLS, seed=params["random_state"]
                )
                _, epochs, recalls = _epochs(
                    split.train_weights, item_side, user_side, params, layout,
                    epochs=epochs, validation=validation, started=started, progress=progress, phase="validation",
                )  # fmt: skip
                report.update(validation_recall_at_10=max(recalls), validation_recalls=recalls, best_epoch=epochs)
            towers, epochs, _ = _epochs(
                weights, item_side, user_side, params, layout,
                epochs=epochs, validation=None, started=started, progress=progress, phase="final",
            )  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)
    report.update(
        epochs=epochs,
        batch_size=batch_size_for(weights.nnz, params["batch_size"]),
        fit_seconds=round(time.perf_counter() - started, 2),
    )
    users = user_vectors(towers, weights, user_side)
    items = item_vectors(towers, np.arange(weights.shape[1]), item_side)
    return towers, users, items, report
