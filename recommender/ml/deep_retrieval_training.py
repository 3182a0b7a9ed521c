"""Fitting a `DeepRetrieval` structure: exact targets, initial paths, and the EM of Gao et al. 2020.

`deep_retrieval_fit` is the one training sequence: build the (query, item) pairs from the exact
top items of each query (see `deep_retrieval` for why), initialise the paths, then alternate the
M-step (`deep_retrieval_network.path_network_train`) and the E-step (`paths_reassign`), ending
with an M-step so the network matches the paths it will serve. No Django here; torch is imported
inside `deep_retrieval_fit` only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .deep_retrieval import (
    DeepRetrieval,
    DeepRetrievalError,
    DeepRetrievalParams,
    PathWeights,
    paths_decode,
    paths_encode,
)
from .similarity import top_k

# Queries per beam-search batch in the E-step: its hidden layer is (chunk, beam, hidden) floats.
E_STEP_QUERY_CHUNK = 2048
# Items whose paths are chosen against the same path sizes in the E-step (sizes update between
# chunks): at most this many, and at most 1/64 of the catalogue, so no chunk can crowd a path alone.
E_STEP_ITEM_CHUNK = 512


def exact_targets(queries: np.ndarray, item_score_vectors: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Each query's exact top-k item rows by inner product, (m, k) int64 (chunked to bound memory)."""
    items = np.asarray(item_score_vectors, dtype=np.float32)
    parts = [
        top_k(np.asarray(queries[start : start + chunk], dtype=np.float32) @ items.T, k)
        for start in range(0, len(queries), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 12) -> np.ndarray:
    """k-means centres (k, s) of points (n, s), Lloyd's iterations from a random sample (empty clusters reseeded)."""
    centres = points[rng.choice(len(points), size=k, replace=len(points) < k)].copy()
    for _ in range(iterations):
        nearest = _nearest(points, centres, 1)[:, 0]
        counts = np.bincount(nearest, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, nearest, points)
        empty = counts == 0
        centres[~empty] = sums[~empty] / counts[~empty, None]
        centres[empty] = points[rng.choice(len(points), size=int(empty.sum()))]
    return centres


def _nearest(points: np.ndarray, centres: np.ndarray, count: int, chunk: int = 8192) -> np.ndarray:
    """The ``count`` nearest centres of each point by Euclidean distance, (n, count) int64, nearest first."""
    squared = (centres * centres).sum(axis=1)
    parts = [
        top_k(2 * points[start : start + chunk] @ centres.T - squared, count) for start in range(0, len(points), chunk)
    ]
    return np.concatenate(parts)


def paths_initialise(item_score_vectors: np.ndarray, params: DeepRetrievalParams) -> np.ndarray:
    """Initial paths (n, J, D) int64: residual quantisation ('kmeans') or uniform at random ('random').

    Residual quantisation runs k-means with K centres on the item vectors for c_1, on what c_1's
    centre leaves for c_2, and so on; an item's j-th path takes its j-th nearest centre at the
    last layer, so the J paths of an item are distinct but close.
    """
    rng = np.random.default_rng(params.seed)
    n, layers, nodes, paths_per_item = len(item_score_vectors), params.layers, params.nodes, params.paths_per_item
    if params.init == "random":
        return rng.integers(0, nodes, size=(n, paths_per_item, layers), dtype=np.int64)
    residual = np.asarray(item_score_vectors, dtype=np.float64).copy()
    paths = np.zeros((n, paths_per_item, layers), dtype=np.int64)
    for d in range(layers):
        centres = _kmeans(residual, nodes, rng)
        nearest = _nearest(residual, centres, min(paths_per_item, nodes) if d == layers - 1 else 1)
        if d == layers - 1:
            paths[:, :, d] = nearest[:, np.arange(paths_per_item) % nearest.shape[1]]
        else:
            paths[:, :, d] = nearest[:, :1]
        residual -= centres[nearest[:, 0]]
    return paths


def _row_argmax(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Per CSR row, the entry of the largest finite value, or -1 when the row has none: (rows,) int64."""
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    order = np.lexsort((-values, rows))
    best = np.full(len(lengths), -1, dtype=np.int64)
    nonempty = lengths > 0
    best[nonempty] = order[indptr[:-1][nonempty]]
    finite = best >= 0
    finite[finite] = np.isfinite(values[best[finite]])
    best[~finite] = -1
    return best


def paths_reassign(
    network: PathWeights,
    *,
    queries: np.ndarray,
    pair_queries: np.ndarray,
    pair_items: np.ndarray,
    paths: np.ndarray,
    params: DeepRetrievalParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """The E-step: each item's J paths with the largest penalised sum of p(c | x) over its queries.

    Parameters
    ----------
    network : PathWeights
        The network after the M-step.
    queries : ndarray of float32, shape (m, s)
        Standardised queries.
    pair_queries, pair_items : ndarray of int64, shape (p,)
        The training pairs: item ``pair_items[i]`` is among query ``pair_queries[i]``'s exact top items.
    paths : ndarray of int64, shape (n, J, D)
        The current paths; an item that is no query's target (or lacks a j-th candidate) keeps them.
    params : DeepRetrievalParams
    rng : numpy Generator
        Orders the items (earlier items see emptier paths, so the order is random).

    Returns
    -------
    ndarray of int64, shape (n, J, D)

    Notes
    -----
    The candidates of item v are the paths the beam search (``e_step_beam``) finds for v's queries,
    scored s(v, c) = sum over v's queries of p(c | x) (the paper's E-step, restricted to the beam as
    the paper does). Items are taken in random order, a chunk at a time, and pick greedily
    log s(v, c) - penalty * (|c| / balanced)^3, where |c| is the path's size so far and balanced =
    max(1, n J / K^D): the marginal cost of the paper's penalty f(|c|) = |c|^4 / 4, scaled so that
    ``penalty`` means the same for any catalogue.
    """
    n, paths_per_item, layers = paths.shape
    nodes, n_paths = params.nodes, params.nodes**params.layers
    beam_numbers, beam_probabilities = [], []
    for start in range(0, len(queries), E_STEP_QUERY_CHUNK):
        found, log_probs = network.beam_search(queries[start : start + E_STEP_QUERY_CHUNK], params.e_step_beam)
        beam_numbers.append(paths_encode(found, nodes))
        beam_probabilities.append(np.exp(log_probs))
    numbers, probabilities = np.concatenate(beam_numbers), np.concatenate(beam_probabilities)
    width = numbers.shape[1]
    query_paths = sp.csr_matrix(
        (probabilities.ravel(), (np.repeat(np.arange(len(queries)), width), numbers.ravel())),
        shape=(len(queries), n_paths),
    )
    item_queries = sp.csr_matrix((np.ones(len(pair_items)), (pair_items, pair_queries)), shape=(n, len(queries)))
    scores = (item_queries @ query_paths).tocsr()  # (n, K^D): s(v, c)

    current = paths_encode(paths, nodes)  # (n, J)
    chosen = current.copy()
    sizes = np.zeros(n_paths, dtype=np.float64)
    covered = np.diff(scores.indptr) > 0
    np.add.at(sizes, current[~covered].ravel(), 1)
    balanced = max(1.0, n * paths_per_item / n_paths)
    order = rng.permutation(np.flatnonzero(covered))
    chunk_size = max(1, min(E_STEP_ITEM_CHUNK, n // 64))
    for chunk in np.array_split(order, max(1, int(np.ceil(len(order) / chunk_size)))):
        block = scores[chunk]
        log_scores = np.log(np.maximum(block.data, 1e-300))
        taken = np.zeros(len(log_scores), dtype=bool)
        for j in range(paths_per_item):
            values = log_scores - params.penalty * (sizes[block.indices] / balanced) ** 3
            values[taken] = -np.inf
            best = _row_argmax(values, block.indptr)
            found_one = best >= 0
            chosen[chunk[found_one], j] = block.indices[best[found_one]]
            taken[best[found_one]] = True
            np.add.at(sizes, chosen[chunk, j], 1)
    return paths_decode(chosen, nodes, layers)


def _queries_with_perturbations(queries: np.ndarray, params: DeepRetrievalParams, rng) -> np.ndarray:
    """The queries and ``perturbed_queries`` noisy copies of each (constant coordinates stay constant)."""
    spread = queries.std(axis=0) * params.perturbation
    copies = [queries + rng.normal(0.0, 1.0, queries.shape) * spread for _ in range(params.perturbed_queries)]
    return np.concatenate([queries, *copies]).astype(np.float32)


def _checked(item_score_vectors, query_vectors) -> tuple[np.ndarray, np.ndarray]:
    items = np.asarray(item_score_vectors, dtype=np.float32)
    queries = np.asarray(query_vectors, dtype=np.float32)
    if items.ndim != 2 or queries.ndim != 2 or items.shape[1] != queries.shape[1] or not len(items) or not len(queries):
        raise DeepRetrievalError(
            f"item vectors {items.shape} and query vectors {queries.shape} must be non-empty (n, s) and (m, s) "
            "arrays in the same layout (e.g. [v, b, 1] items and [u, 1, b] users)."
        )
    if not (np.isfinite(items).all() and np.isfinite(queries).all()):
        raise DeepRetrievalError(
            "item or query vectors are not finite: check the model's factors before indexing them."
        )
    return items, queries


def deep_retrieval_fit(item_score_vectors, query_vectors, params: DeepRetrievalParams | None = None) -> DeepRetrieval:
    """Fit the structure to retrieve each query's exact top items under the inner product.

    Parameters
    ----------
    item_score_vectors : ndarray of float, shape (n, s)
        The vectors to index; retrieval rescores with these, rows are the structure's item rows.
    query_vectors : ndarray of float, shape (m, s)
        Representative queries (a version's user score vectors); ``params.perturbed_queries`` noisy
        copies of each are added.
    params : DeepRetrievalParams, optional

    Returns
    -------
    DeepRetrieval
    """
    params = params or DeepRetrievalParams()
    params.validate()
    items, queries = _checked(item_score_vectors, query_vectors)
    rng = np.random.default_rng(params.seed)
    queries = _queries_with_perturbations(queries, params, rng)
    targets = exact_targets(queries, items, min(params.targets_per_query, len(items)))
    pair_queries = np.repeat(np.arange(len(queries)), targets.shape[1])
    pair_items = targets.ravel()
    mean = queries.mean(axis=0).astype(np.float64)
    scale = queries.std(axis=0).astype(np.float64)
    scale[scale < 1e-8] = 1.0
    standardised = ((queries - mean) / scale).astype(np.float32)
    paths = paths_initialise(items, params)

    import torch

    from .deep_retrieval_network import path_network_arrays, path_network_build, path_network_train

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(params.num_threads)
    try:
        network = path_network_build(
            query_dimension=items.shape[1],
            layers=params.layers,
            nodes=params.nodes,
            code_dimension=params.code_dimension,
            hidden=params.hidden,
            seed=params.seed,
        )
        log = []
        for em_round in range(params.em_rounds + 1):
            loss = path_network_train(
                network,
                queries=standardised,
                pair_queries=pair_queries,
                pair_paths=paths[pair_items],
                epochs=params.epochs,
                batch_size=params.batch_size,
                learning_rate=params.learning_rate,
                seed=params.seed + em_round,
            )
            entry = {"round": em_round, "nll": loss}
            if em_round < params.em_rounds:
                weights = PathWeights(
                    path_network_arrays(network),
                    layers=params.layers,
                    nodes=params.nodes,
                    query_dimension=items.shape[1],
                )
                reassigned = paths_reassign(
                    weights,
                    queries=standardised,
                    pair_queries=pair_queries,
                    pair_items=pair_items,
                    paths=paths,
                    params=params,
                    rng=rng,
                )
                entry["moved"] = float(np.mean(np.any(reassigned != paths, axis=(1, 2))))
                paths = reassigned
            log.append(entry)
        arrays = path_network_arrays(network)
    finally:
        torch.set_num_threads(previous_threads)
    return DeepRetrieval(
        params=params, query_mean=mean, query_scale=scale, weights=arrays, paths=paths, training_log=log
    )
