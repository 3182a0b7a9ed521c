"""Deep Retrieval (Gao et al. 2020) as a retrieval structure over any model family's score vectors.

The structure has D layers of K nodes; each item sits on J paths (c_1..c_D), c_d in [0, K). A path
network (`deep_retrieval_network`) gives p(c | x) = prod_d p(c_d | x, c_<d): layer d's softmax reads
the query concatenated with the embeddings of the codes chosen before it. Retrieval is a beam
search of width B over the layers; the candidates are the items on the B paths found, and they are
**rescored exactly** by inner product with the item score vectors, so the ranking is the model's
own and only the candidate set is approximate (`DeepRetrieval.search` reports how many were scored).

What it learns differs from the paper's. The paper fits the structure to (user, clicked item)
pairs, so it is itself the recommender. Here it indexes a model that already exists: a training
pair is (query vector, item) where the item is one of the query's exact top ``targets_per_query``
items under the inner product of the given item score vectors. The queries are the given query
vectors (a version's users) plus ``perturbed_queries`` noisy copies of each, so queries near but
not at the training users are covered too. Maximising the pairs' likelihood therefore teaches the
beam search to find the brute-force answer of the same scores: recall against brute force is the
training objective, not a by-product.

Training is the paper's EM: the M-step fits the network by maximum likelihood of the items'
current paths (multi-path: log sum_j p(c_j | x)); the E-step gives each item the J paths with the
largest sum of p(c | x) over its queries, among the paths the beam search finds for them, minus a
penalty on crowded paths, penalty * (size / balanced size)^3 (the derivative of the paper's
f(|c|) = |c|^4 / 4, normalised so one ``penalty`` suits any catalogue), so the paths do not
collapse onto a few. The initial paths are a residual quantisation of the item vectors
(k-means per layer on what the previous layers left) or random. No Django here; torch is imported
only inside `deep_retrieval_fit` (serving runs the network as numpy arrays).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .similarity import top_k

INITIALISATIONS = ("kmeans", "random")
ARCHIVE_FORMAT = 1
# The E-step keeps one count per path in a dense array, and codes are int64: K^D is bounded.
MAX_PATHS = 2**24


class DeepRetrievalError(ValueError):
    """Invalid structure parameters, mismatched vector shapes, non-finite vectors or a bad archive."""


@dataclass(frozen=True)
class DeepRetrievalParams:
    """The structure's shape, its training schedule and the default serving beam."""

    layers: int = 2  # D
    nodes: int = 64  # K
    paths_per_item: int = 1  # J
    beam: int = 32  # B at query time
    targets_per_query: int = 100
    perturbed_queries: int = 1
    perturbation: float = 0.3  # noise std, in units of each coordinate's std over the queries
    em_rounds: int = 3
    epochs: int = 2  # M-step epochs per round
    e_step_beam: int = 16
    penalty: float = 0.1
    init: str = "kmeans"
    hidden: int = 128
    code_dimension: int = 16
    batch_size: int = 1024
    learning_rate: float = 3e-3
    num_threads: int = 1
    seed: int = 0

    def validate(self) -> None:
        for name in ("layers", "paths_per_item", "beam", "targets_per_query", "epochs", "e_step_beam"):
            if getattr(self, name) < 1:
                raise DeepRetrievalError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.nodes < 2:
            raise DeepRetrievalError(
                f"nodes must be at least 2 (a layer of one node routes nothing), got {self.nodes}."
            )
        if self.nodes**self.layers > MAX_PATHS:
            raise DeepRetrievalError(
                f"nodes**layers = {self.nodes**self.layers} paths exceeds {MAX_PATHS}: use fewer layers or nodes."
            )
        if self.em_rounds < 0 or self.perturbed_queries < 0 or self.penalty < 0 or self.perturbation < 0:
            raise DeepRetrievalError("em_rounds, perturbed_queries, penalty and perturbation must be non-negative.")
        if self.init not in INITIALISATIONS:
            raise DeepRetrievalError(f"init must be one of {INITIALISATIONS}, got {self.init!r}.")
        if min(self.hidden, self.code_dimension, self.batch_size, self.num_threads) < 1 or self.learning_rate <= 0:
            raise DeepRetrievalError(
                "hidden, code_dimension, batch_size, num_threads and learning_rate must be positive."
            )


class PathWeights:
    """The path network as numpy arrays: scoring and beam search without torch.

    The first linear map of layer d is split into its query part and one part per earlier code, the
    latter premultiplied by the code embeddings ((K, hidden) tables), so a beam step is a lookup and
    a sum rather than a concatenation and a product.
    """

    def __init__(self, arrays: dict[str, np.ndarray], *, layers: int, nodes: int, query_dimension: int):
        self.arrays, self.layers, self.nodes = arrays, layers, nodes
        self.query_weights, self.code_tables = [], []
        for d in range(layers):
            hidden_weight = arrays[f"hidden_weight_{d}"].astype(np.float64)
            self.query_weights.append(hidden_weight[:, :query_dimension].T)  # (s, hidden)
            tables = []
            for j in range(d):
                embedding = arrays[f"code_embedding_{j}"].astype(np.float64)  # (K, e)
                width = embedding.shape[1]
                start = query_dimension + j * width
                tables.append(embedding @ hidden_weight[:, start : start + width].T)  # (K, hidden)
            self.code_tables.append(tables)

    def _layer_log_probs(self, d: int, query_hidden: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        """log p(c_d | x, prefix) for (m, h) query parts and (m, b, d) prefixes → (m, b, K)."""
        hidden = query_hidden[:, None, :] + self.arrays[f"hidden_bias_{d}"]
        for j, table in enumerate(self.code_tables[d]):
            hidden = hidden + table[prefixes[:, :, j]]
        logits = np.maximum(hidden, 0.0) @ self.arrays[f"output_weight_{d}"].T.astype(np.float64)
        logits += self.arrays[f"output_bias_{d}"]
        logits -= logits.max(axis=2, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))

    def beam_search(self, queries: np.ndarray, beam: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``beam`` most probable paths of each standardised query.

        Parameters
        ----------
        queries : ndarray of float, shape (m, s)
        beam : int
            Paths kept after each layer (at most K^D are returned).

        Returns
        -------
        paths : ndarray of int64, shape (m, B, D), most probable first
        log_probs : ndarray of float64, shape (m, B)
        """
        m = len(queries)
        prefixes = np.zeros((m, 1, 0), dtype=np.int64)
        scores = np.zeros((m, 1))
        for d in range(self.layers):
            query_hidden = np.asarray(queries, dtype=np.float64) @ self.query_weights[d]
            total = (scores[:, :, None] + self._layer_log_probs(d, query_hidden, prefixes)).reshape(m, -1)
            chosen = top_k(total, min(beam, total.shape[1]))  # (m, B'), best first
            parents, codes = chosen // self.nodes, chosen % self.nodes
            prefixes = np.concatenate(
                [np.take_along_axis(prefixes, parents[:, :, None], axis=1), codes[:, :, None]], axis=2
            )
            scores = np.take_along_axis(total, chosen, axis=1)
        return prefixes, scores


def item_queries(embeddings: np.ndarray, width: int) -> np.ndarray:
    """Items as queries: embeddings (r, d) padded with zeros to (r, width) float32.

    Against score vectors [v, b, 1(, ...)] such a query scores v . v', the 'dot' similarity of the
    embeddings: how an item-to-item search uses a structure trained on user queries, and the extra
    training queries that teach the structure those searches.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    queries = np.zeros((len(embeddings), width), dtype=np.float32)
    queries[:, : embeddings.shape[1]] = embeddings
    return queries


def paths_encode(paths: np.ndarray, nodes: int) -> np.ndarray:
    """(..., D) codes → (...,) int64 path numbers, c_1 most significant."""
    layers = paths.shape[-1]
    return (paths.astype(np.int64) * (nodes ** np.arange(layers - 1, -1, -1, dtype=np.int64))).sum(axis=-1)


def paths_decode(numbers: np.ndarray, nodes: int, layers: int) -> np.ndarray:
    """(...,) int64 path numbers → (..., D) codes."""
    powers = nodes ** np.arange(layers - 1, -1, -1, dtype=np.int64)
    return (np.asarray(numbers, dtype=np.int64)[..., None] // powers) % nodes


@dataclass
class DeepRetrieval:
    """A fitted structure: the path network, the standardisation of queries and each item's J paths.

    Attributes
    ----------
    params : DeepRetrievalParams
    query_mean, query_scale : ndarray of float64, shape (s,)
        Queries are standardised as (x - mean) / scale before the network reads them.
    weights : dict of str to float32 ndarray
        The network's arrays (see `PathWeights`).
    paths : ndarray of int64, shape (n_items, J, D)
        Item row i (the row of the item score vectors it was fitted on) sits on ``paths[i]``.
    training_log : list of dict
        Per EM round: the M-step's negative log-likelihood and the share of items the E-step moved.
    item_ids : ndarray of int64, shape (n_items,), optional
        What the rows stand for (a caller's ids, e.g. catalogue item ids), kept in the archive so
        a caller can check the rows still mean the same items.
    """

    params: DeepRetrievalParams
    query_mean: np.ndarray
    query_scale: np.ndarray
    weights: dict[str, np.ndarray]
    paths: np.ndarray
    training_log: list[dict] = field(default_factory=list)
    item_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.network = PathWeights(
            self.weights, layers=self.params.layers, nodes=self.params.nodes, query_dimension=len(self.query_mean)
        )
        numbers = paths_encode(self.paths, self.params.nodes).ravel()  # (n * J,)
        order = np.argsort(numbers, kind="stable")
        self._sorted_numbers = numbers[order]
        self._sorted_rows = order // self.params.paths_per_item

    @property
    def n_items(self) -> int:
        return len(self.paths)

    def path_sizes(self) -> np.ndarray:
        """(number of non-empty paths,) int64: items on each occupied path."""
        return np.unique(self._sorted_numbers, return_counts=True)[1]

    def beam_paths(self, queries: np.ndarray, *, beam: int | None = None) -> np.ndarray:
        """Path numbers (m, B) int64 of the beam search for raw queries (m, s) or (s,)."""
        x = (np.atleast_2d(np.asarray(queries, dtype=np.float64)) - self.query_mean) / self.query_scale
        if x.shape[1] != len(self.query_mean):
            raise DeepRetrievalError(
                f"queries have {x.shape[1]} columns, the structure was fitted on {len(self.query_mean)}."
            )
        paths, _ = self.network.beam_search(x, beam or self.params.beam)
        return paths_encode(paths, self.params.nodes)

    def path_rows(self, numbers: np.ndarray) -> np.ndarray:
        """Item rows (c,) int64, ascending and unique, on any of the given path numbers."""
        numbers = np.asarray(numbers, dtype=np.int64).ravel()
        starts = np.searchsorted(self._sorted_numbers, numbers, side="left")
        ends = np.searchsorted(self._sorted_numbers, numbers, side="right")
        pieces = [self._sorted_rows[start:end] for start, end in zip(starts, ends, strict=True) if end > start]
        return np.unique(np.concatenate(pieces)) if pieces else np.zeros(0, dtype=np.int64)

    def candidate_rows(self, query: np.ndarray, *, beam: int | None = None) -> np.ndarray:
        """Item rows (c,) int64, ascending, on the ``beam`` paths found for one query (s,)."""
        return self.path_rows(self.beam_paths(query, beam=beam)[0])

    def search(
        self, query: np.ndarray, item_score_vectors: np.ndarray, *, k: int, beam: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Top-k item rows for one query: beam search, then exact inner products of the candidates.

        Parameters
        ----------
        query : ndarray, shape (s,)
        item_score_vectors : ndarray, shape (n_items, s)
            The vectors the structure was fitted on (rows in the same order).
        k : int
        beam : int, optional
            Defaults to ``params.beam``.

        Returns
        -------
        rows : ndarray of int64, shape (k',), best first, ties by lower row
        scores : ndarray of float64, shape (k',)
        scored : int
            How many items were rescored (the candidate set's size).
        """
        if len(item_score_vectors) != self.n_items:
            raise DeepRetrievalError(
                f"{len(item_score_vectors)} item vectors given, the structure holds {self.n_items} items: refit it."
            )
        candidates = self.candidate_rows(query, beam=beam)
        if len(candidates) == 0 or k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0), len(candidates)
        scores = item_score_vectors[candidates].astype(np.float64) @ np.asarray(query, dtype=np.float64)
        best = top_k(scores, k)
        return candidates[best], scores[best], len(candidates)

    def save(self, path) -> None:
        """Write an ``np.savez`` archive (arrays plus a JSON config; loadable with ``allow_pickle=False``)."""
        config = {"format": ARCHIVE_FORMAT, "params": asdict(self.params), "training_log": self.training_log}
        arrays: dict[str, Any] = {f"weight__{name}": array for name, array in self.weights.items()}
        arrays.update(
            config=np.array(json.dumps(config)),
            query_mean=self.query_mean,
            query_scale=self.query_scale,
            paths=self.paths,
        )
        if self.item_ids is not None:
            arrays["item_ids"] = np.asarray(self.item_ids, dtype=np.int64)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> DeepRetrieval:
        with np.load(path, allow_pickle=False) as archive:
            try:
                config = json.loads(str(archive["config"]))
                if config.get("format") != ARCHIVE_FORMAT:
                    raise DeepRetrievalError(
                        f"archive format {config.get('format')}, expected {ARCHIVE_FORMAT}: rebuild it."
                    )
                return cls(
                    params=DeepRetrievalParams(**config["params"]),
                    query_mean=archive["query_mean"],
                    query_scale=archive["query_scale"],
                    weights={name[8:]: archive[name] for name in archive.files if name.startswith("weight__")},
                    paths=archive["paths"],
                    training_log=config["training_log"],
                    item_ids=archive["item_ids"] if "item_ids" in archive.files else None,
                )
            except (KeyError, TypeError, json.JSONDecodeError) as error:
                raise DeepRetrievalError(f"{path} is not a Deep Retrieval archive ({error}): rebuild it.") from error
