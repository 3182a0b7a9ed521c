"""Deep Retrieval on a planted clustered catalogue: recall against brute force of the same scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recommender.ml.deep_retrieval import DeepRetrieval, DeepRetrievalError, DeepRetrievalParams
from recommender.ml.deep_retrieval_training import deep_retrieval_fit, exact_targets

torch = pytest.importorskip("torch")

N_ITEMS, DIMENSION, CLUSTERS = 2000, 8, 25
SMALL = DeepRetrievalParams(layers=2, nodes=12, beam=5, em_rounds=2, epochs=2, hidden=48, targets_per_query=100)


def _catalogue(seed: int = 0):
    """Clustered items [v, b, 1] and users [u, 1, b] near the same centres: a query's top items share its cluster."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((CLUSTERS, DIMENSION))
    embeddings = centres[rng.integers(0, CLUSTERS, N_ITEMS)] + 0.4 * rng.standard_normal((N_ITEMS, DIMENSION))
    items = np.hstack([embeddings, rng.normal(0, 0.3, (N_ITEMS, 1)), np.ones((N_ITEMS, 1))]).astype(np.float32)

    def users(m):
        tastes = centres[rng.integers(0, CLUSTERS, m)] + 0.5 * rng.standard_normal((m, DIMENSION))
        return np.hstack([tastes, np.ones((m, 1)), rng.normal(0, 0.3, (m, 1))]).astype(np.float32)

    return items, users(600), users(100)


@pytest.fixture(scope="module")
def catalogue():
    torch.set_num_threads(1)
    return _catalogue()


@pytest.fixture(scope="module")
def fitted(catalogue):
    items, train, _ = catalogue
    return deep_retrieval_fit(items, train, SMALL)


def _recall(structure: DeepRetrieval, items, queries, *, beam=None) -> tuple[float, float, float]:
    """Mean recall@10, recall@100 against the exact answer, and the mean fraction of items scored."""
    truth = exact_targets(queries, items, 100)
    recall_10, recall_100, scored = [], [], []
    for query, expected in zip(queries, truth, strict=True):
        rows, _, count = structure.search(query, items, k=100, beam=beam)
        recall_10.append(len(set(rows[:10].tolist()) & set(expected[:10].tolist())) / 10)
        recall_100.append(len(set(rows.tolist()) & set(expected.tolist())) / 100)
        scored.append(count / len(items))
    return float(np.mean(recall_10)), float(np.mean(recall_100)), float(np.mean(scored))


def test_recall_against_brute_force_is_high_while_scoring_a_small_fraction(catalogue, fitted):
    items, _, held_out = catalogue
    recall_10, recall_100, scored = _recall(fitted, items, held_out)
    assert recall_10 >= 0.93
    assert recall_100 >= 0.90
    assert scored <= 0.15
    rows, scores, _ = fitted.search(held_out[0], items, k=100)
    np.testing.assert_allclose(scores, items[rows].astype(np.float64) @ held_out[0].astype(np.float64))
    assert list(scores) == sorted(scores, reverse=True)


def test_em_reassignment_improves_recall_over_the_initial_assignment(catalogue):
    items, train, held_out = catalogue
    params = replace(SMALL, init="random")
    initial = deep_retrieval_fit(items, train, replace(params, em_rounds=0))
    learned = deep_retrieval_fit(items, train, params)
    # Compared at about the same share of items scored (EM gathers each query's items on fewer
    # paths, so the initial random paths get twice the beam): recall per item scored is what EM buys.
    _, initial_recall, initial_scored = _recall(initial, items, held_out, beam=2 * params.beam)
    _, learned_recall, learned_scored = _recall(learned, items, held_out)
    assert learned_scored <= 1.5 * initial_scored
    assert learned_recall >= initial_recall + 0.5
    assert all(entry["moved"] > 0 for entry in learned.training_log[:-1])


def test_the_path_size_penalty_keeps_paths_from_collapsing(catalogue, fitted):
    items, train, _ = catalogue
    unpenalised = deep_retrieval_fit(items, train, replace(SMALL, penalty=0.0))
    assert fitted.params.penalty > 0
    assert fitted.path_sizes().max() < 0.6 * unpenalised.path_sizes().max()
    assert len(fitted.path_sizes()) > len(unpenalised.path_sizes())


def test_two_paths_per_item_put_each_item_on_two_paths_and_still_recall(catalogue):
    items, train, held_out = catalogue
    structure = deep_retrieval_fit(items, train, replace(SMALL, paths_per_item=2))
    assert structure.paths.shape == (N_ITEMS, 2, SMALL.layers)
    distinct = np.any(structure.paths[:, 0] != structure.paths[:, 1], axis=1)
    assert distinct.mean() >= 0.9
    item = int(np.flatnonzero(distinct)[0])
    for path in structure.paths[item]:
        number = int(path[0] * SMALL.nodes + path[1])
        assert item in structure.path_rows(np.array([number])).tolist()
    _, recall_100, scored = _recall(structure, items, held_out)
    assert recall_100 >= 0.90
    assert scored <= 0.3


def test_save_and_load_give_identical_answers(catalogue, fitted, tmp_path):
    items, _, held_out = catalogue
    path = tmp_path / "structure.npz"
    fitted.save(path)
    loaded = DeepRetrieval.load(path)
    assert loaded.params == fitted.params
    assert loaded.training_log == fitted.training_log
    np.testing.assert_array_equal(loaded.paths, fitted.paths)
    for query in held_out[:20]:
        expected_rows, expected_scores, expected_count = fitted.search(query, items, k=50)
        rows, scores, count = loaded.search(query, items, k=50)
        assert rows.tolist() == expected_rows.tolist() and count == expected_count
        np.testing.assert_array_equal(scores, expected_scores)


def test_a_file_that_is_not_an_archive_raises_the_named_error(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(DeepRetrievalError, match="not a Deep Retrieval archive"):
        DeepRetrieval.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layers": 0}, "layers must be at least 1"),
        ({"nodes": 1}, "nodes must be at least 2"),
        ({"paths_per_item": 0}, "paths_per_item must be at least 1"),
        ({"beam": 0}, "beam must be at least 1"),
        ({"nodes": 4096, "layers": 3}, "exceeds"),
        ({"init": "spectral"}, "init must be one of"),
        ({"penalty": -1.0}, "non-negative"),
    ],
)
def test_bad_params_raise_the_named_error(catalogue, change, message):
    items, train, _ = catalogue
    with pytest.raises(DeepRetrievalError, match=message):
        deep_retrieval_fit(items, train, replace(SMALL, **change))


def test_mismatched_or_non_finite_vectors_raise_the_named_error(catalogue, fitted):
    items, train, _ = catalogue
    with pytest.raises(DeepRetrievalError, match="same layout"):
        deep_retrieval_fit(items, train[:, :-1], SMALL)
    broken = items.copy()
    broken[3, 0] = np.nan
    with pytest.raises(DeepRetrievalError, match="not finite"):
        deep_retrieval_fit(broken, train, SMALL)
    with pytest.raises(DeepRetrievalError, match="refit"):
        fitted.search(train[0], items[:-1], k=10)
