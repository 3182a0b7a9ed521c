"""The path network of Deep Retrieval in PyTorch: its layers and its M-step (maximum likelihood).

Kept apart from `deep_retrieval` (the structure: assignments, E-step, beam search, archives) so
that module reads as the index and this one as the arithmetic of one training step. Importing this
module imports torch; `deep_retrieval` imports it only while it fits, so serving, which runs the
beam search with the exported arrays in numpy, never pays for torch. No Django here.

Layer d of the network is an MLP whose softmax over the K codes of that layer reads the query
concatenated with the embeddings of the codes chosen at layers 0..d-1 (Gao et al. 2020, section 3):
p(c | x) = prod_d p(c_d | x, c_1..c_{d-1}).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class PathNetwork(nn.Module):
    """D conditional softmaxes over K codes; ``code_embeddings[d]`` embeds layer d's code for the layers after it."""

    def __init__(self, *, query_dimension: int, layers: int, nodes: int, code_dimension: int, hidden: int):
        super().__init__()
        self.layers, self.nodes = layers, nodes
        self.code_embeddings = nn.ModuleList(nn.Embedding(nodes, code_dimension) for _ in range(layers - 1))
        self.mlps = nn.ModuleList(
            nn.Sequential(
                nn.Linear(query_dimension + d * code_dimension, hidden),
                nn.ReLU(),
                nn.Linear(hidden, nodes),
            )
            for d in range(layers)
        )

    def path_log_prob(self, queries: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """log p(path | query) for (batch, s) queries and (batch, J, D) paths → (batch, J)."""
        batch, paths_per_item, _ = paths.shape
        x = queries.repeat_interleave(paths_per_item, dim=0)
        flat = paths.reshape(batch * paths_per_item, self.layers)
        inputs, total = [x], torch.zeros(len(flat), dtype=x.dtype)
        for d, mlp in enumerate(self.mlps):
            log_probs = torch.log_softmax(mlp(torch.cat(inputs, dim=1)), dim=1)
            total = total + log_probs.gather(1, flat[:, d : d + 1]).squeeze(1)
            if d < self.layers - 1:
                inputs.append(self.code_embeddings[d](flat[:, d]))
        return total.reshape(batch, paths_per_item)


def path_network_train(
    network: PathNetwork,
    *,
    queries: np.ndarray,
    pair_queries: np.ndarray,
    pair_paths: np.ndarray,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> float:
    """The M-step: maximise sum over pairs of log sum_j p(c_j(item) | query), in place.

    Parameters
    ----------
    network : PathNetwork
        Trained further from its current weights (EM rounds warm-start each other).
    queries : ndarray of float32, shape (m, s)
        The standardised query vectors.
    pair_queries : ndarray of int64, shape (p,)
        The query row of each (query, item) training pair.
    pair_paths : ndarray of int64, shape (p, J, D)
        The current J paths of each pair's item; the loss is the multi-path likelihood
        log sum_j p(c_j | x) of the paper (any of the item's paths retrieves it).
    epochs, batch_size, learning_rate, seed
        Adam's schedule; ``seed`` fixes the shuffling.

    Returns
    -------
    float
        The mean negative log-likelihood of the last epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
    query_tensor = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    rows = torch.from_numpy(pair_queries.astype(np.int64))
    paths = torch.from_numpy(pair_paths.astype(np.int64))
    last = float("nan")
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            log_probs = network.path_log_prob(query_tensor[rows[batch]], paths[batch])
            loss = -torch.logsumexp(log_probs, dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        last = total / max(count, 1)
    network.eval()
    return last


def path_network_arrays(network: PathNetwork) -> dict[str, np.ndarray]:
    """The network's weights as float32 arrays under the names `deep_retrieval.PathWeights` reads."""
    state = {name: tensor.detach().numpy().astype(np.float32) for name, tensor in network.state_dict().items()}
    arrays: dict[str, np.ndarray] = {}
    for d in range(network.layers):
        arrays[f"hidden_weight_{d}"], arrays[f"hidden_bias_{d}"] = (
            state[f"mlps.{d}.0.weight"],
            state[f"mlps.{d}.0.bias"],
        )
        arrays[f"output_weight_{d}"], arrays[f"output_bias_{d}"] = (
            state[f"mlps.{d}.2.weight"],
            state[f"mlps.{d}.2.bias"],
        )
    for d in range(network.layers - 1):
        arrays[f"code_embedding_{d}"] = state[f"code_embeddings.{d}.weight"]
    return arrays


def path_network_build(
    *, query_dimension: int, layers: int, nodes: int, code_dimension: int, hidden: int, seed: int
) -> PathNetwork:
    """A freshly initialised network (torch's default initialisation under ``seed``)."""
    torch.manual_seed(seed)
    return PathNetwork(
        query_dimension=query_dimension, layers=layers, nodes=nodes, code_dimension=code_dimension, hidden=hidden
    )
