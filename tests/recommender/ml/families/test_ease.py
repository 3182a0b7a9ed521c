"""EASE family: the closed form, the budgets that pick exact or scalable, and the interface contract."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.ml.dataset import IdMap, Interactions, TrainingData
from recommender.ml.families import FAMILIES, FamilyFitError
from recommender.ml.families.ease import (
    EaseFamily,
    EaseParams,
    _Steps,
    _tail_columns,
    exact_peak_bytes,
    fit_plan,
    head_flops,
    head_items_within,
    tail_regressors,
)
from recommender.ml.similarity import top_k
from tests.recommender.ml.conftest import make_planted


def _data_from_dense(matrix: np.ndarray, weights: np.ndarray | None = None) -> TrainingData:
    n_users, n_items = matrix.shape
    positives = sp.csr_matrix((matrix > 0).astype(np.float32))
    weight_matrix = sp.csr_matrix(np.where(matrix > 0, matrix if weights is None else weights, 0).astype(np.float32))
    return TrainingData(
        user_ids=IdMap(np.arange(n_users)),
        item_ids=IdMap(np.arange(n_items) + 100),
        interactions=Interactions(positives, weight_matrix, sp.csr_matrix((n_users, n_items), dtype=np.float32)),
    )


def _closed_form(matrix: np.ndarray, l2: float) -> np.ndarray:
    precision = np.linalg.inv(matrix.T.astype(np.float64) @ matrix + l2 * np.eye(matrix.shape[1]))
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def _random_binary(n_users: int = 40, n_items: int = 30, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n_users, n_items)) < 0.4).astype(np.float64)


def _dense_b(model: EaseFamily) -> np.ndarray:
    main = model.weights if isinstance(model.weights, np.ndarray) else model.weights.toarray()
    return np.asarray(main, dtype=np.float64) + model.tail_weights.toarray()


def _top_lists(model: EaseFamily, train: sp.csr_matrix, k: int = 10) -> np.ndarray:
    scores = model.score_items(np.arange(train.shape[0])).astype(np.float64)
    scores[train.toarray() > 0] = -np.inf
    return top_k(scores, k)


def _overlap(first: np.ndarray, second: np.ndarray) -> float:
    """Mean share of the top-k lists two models have in common."""
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(first, second, strict=True)]))


def test_registered_under_its_name():
    assert FAMILIES["ease"] is EaseFamily
    assert EaseFamily.name == "ease"


@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("n_users", [20, 60])  # fewer and more users than items
def test_closed_form_matches_direct_inverse(solver, n_users):
    matrix = _random_binary(n_users=n_users)
    model = EaseFamily.fit(_data_from_dense(matrix), {"l2": 7.0, "solver": solver})
    assert model.params["variant"] == "exact"
    assert model.params["dtype"] == "float64"
    # The dense serving copy is float32: 1e-6 relative to the largest weight.
    expected = _closed_form(matrix, 7.0)
    np.testing.assert_allclose(_dense_b(model), expected, atol=1e-6 * np.abs(expected).max())


def test_dual_solver_matches_the_closed_form_across_several_row_blocks():
    # 600 items span three of the solver's 256-row blocks, the last one partial.
    matrix = _random_binary(n_users=80, n_items=600, seed=3)
    model = EaseFamily.fit(_data_from_dense(matrix), {"l2": 7.0, "solver": "dual", "serving": "dense"})
    expected = _closed_form(matrix, 7.0)
    np.testing.assert_allclose(_dense_b(model), expected, atol=1e-6 * np.abs(expected).max())


def test_float32_fit_matches_the_closed_form_to_single_precision():
    matrix = _random_binary()
    budget = exact_peak_bytes(30, 4, 40, EaseParams(l2=7.0))
    model = EaseFamily.fit(_data_from_dense(matrix), {"l2": 7.0, "memory_budget_bytes": budget})
    assert model.params["dtype"] == "float32"
    expected = _closed_form(matrix, 7.0)
    np.testing.assert_allclose(_dense_b(model), expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("serving", ["dense", "sparse"])
def test_diagonal_is_zero(serving):
    model = EaseFamily.fit(_data_from_dense(_random_binary()), {"l2": 7.0, "serving": serving})
    assert model.params["serving_layout"] == serving
    assert np.all(np.diag(_dense_b(model)) == 0.0)


def test_sparse_serving_keeps_each_rows_largest_entries_within_the_budget():
    matrix = _random_binary()
    budget = 30 * 5 * 8  # 5 entries of 8 bytes per row
    model = EaseFamily.fit(_data_from_dense(matrix), {"l2": 7.0, "serving_budget_bytes": budget})
    assert (model.params["serving_layout"], model.params["serving_neighbours"]) == ("sparse", 5)
    expected = _closed_form(matrix, 7.0)
    kept = model.weights.toarray()
    for row in range(30):
        largest = np.argsort(-np.abs(expected[row]), kind="stable")[:5]
        np.testing.assert_array_equal(np.flatnonzero(kept[row]), np.sort(largest))
        np.testing.assert_allclose(kept[row, largest], expected[row, largest], rtol=1e-5)


def test_tail_regression_with_every_neighbour_is_the_exact_column():
    # Column i of EASE is the ridge regression of item i on all others: with a full neighbourhood
    # (every pair co-occurs in this dense matrix) the tail solve reproduces it.
    matrix = (np.random.default_rng(1).random((60, 20)) < 0.7).astype(np.float64)
    assert (matrix.T @ matrix > 0).all()
    x = sp.csr_matrix(matrix.astype(np.float32))
    tail, _ = _tail_columns(x, np.arange(20), neighbours=19, l2=5.0, steps=_Steps(None, 1))
    np.testing.assert_allclose(tail.toarray(), _closed_form(matrix, 5.0), atol=1e-5)


def test_planted_clusters_rank_own_cluster_first():
    planted = make_planted()
    model = EaseFamily.fit(planted.data, {"l2": 20.0})
    lists = _top_lists(model, planted.data.interactions.positives)
    own = planted.item_cluster[lists] == planted.user_cluster[:, None]
    assert own.mean() >= 0.95
    similar, _ = model.similar_items(0, 5)
    assert 0 not in similar
    assert (planted.item_cluster[similar] == planted.item_cluster[0]).all()


@pytest.mark.parametrize("input_kind", ["binary", "weights"])
@pytest.mark.parametrize("serving", ["dense", "sparse"])
def test_score_history_equals_score_items_for_a_fitted_users_history(input_kind, serving):
    planted = make_planted()
    model = EaseFamily.fit(planted.data, {"l2": 20.0, "input": input_kind, "serving": serving})
    weights = planted.data.interactions.weights
    for user in (0, 1, 17):
        start, end = weights.indptr[user], weights.indptr[user + 1]
        history = model.score_history(weights.indices[start:end], weights.data[start:end])
        np.testing.assert_allclose(history, model.score_items(np.array([user]))[0], rtol=1e-5, atol=1e-6)
    assert model.score_history(np.array([-1]), np.array([1.0])).tolist() == [0.0] * model.n_items


def test_input_weights_fits_the_closed_form_of_the_weight_matrix():
    matrix = _random_binary()
    weights = matrix * np.random.default_rng(2).uniform(0.2, 1.0, matrix.shape)
    model = EaseFamily.fit(_data_from_dense(matrix, weights), {"l2": 7.0, "input": "weights"})
    expected = _closed_form(weights, 7.0)
    np.testing.assert_allclose(_dense_b(model), expected, atol=1e-6 * np.abs(expected).max())
    binary = EaseFamily.fit(_data_from_dense(matrix, weights), {"l2": 7.0})
    assert not np.allclose(_dense_b(binary), expected, atol=1e-3)


@pytest.mark.parametrize("params", [{}, {"serving": "sparse"}, {"exact_items_cap": 30}])
def test_save_load_round_trip_gives_identical_scores(tmp_path, params):
    planted = make_planted()
    model = EaseFamily.fit(planted.data, {"l2": 20.0, "tail_neighbours": 16, **params})
    path = model.save(tmp_path / "ease.npz")
    loaded = EaseFamily.load(path)
    users = np.arange(10)
    np.testing.assert_array_equal(loaded.score_items(users), model.score_items(users))
    np.testing.assert_array_equal(loaded.score_history(np.array([1, 3])), model.score_history(np.array([1, 3])))
    assert loaded.params == model.params
    assert loaded.similar_items(4, 3)[0].tolist() == model.similar_items(4, 3)[0].tolist()
    assert loaded.memory_bytes() == model.memory_bytes()
    assert loaded.item_ids.ids.tolist() == model.item_ids.ids.tolist()


def test_budget_picks_float64_float32_or_scalable_by_bytes():
    n_users, n_items = 300, 600
    params = EaseParams(serving="sparse", serving_budget_bytes=n_items * 50 * 8)
    float64_bytes = exact_peak_bytes(n_items, 8, n_users, params)
    float32_bytes = exact_peak_bytes(n_items, 4, n_users, params)
    assert float64_bytes - float32_bytes == n_items * n_items * 4 + (n_users * n_items * 4)  # dual also holds Y

    def plan(budget):
        return fit_plan(n_items, n_users, replace(params, memory_budget_bytes=budget))

    assert (plan(float64_bytes).variant, plan(float64_bytes).dtype) == ("exact", "float64")
    assert (plan(float64_bytes - 1).variant, plan(float64_bytes - 1).dtype) == ("exact", "float32")
    below = plan(float32_bytes - 1)
    assert below.variant == "scalable"
    assert below.predicted_peak_bytes <= float32_bytes - 1
    assert n_items - 10 <= below.exact_items < n_items  # one byte short costs a few items, not a cliff


def _skewed_planted(n_users: int = 300, n_items: int = 600, seed: int = 0):
    """Two taste clusters (parity of the index) with Zipf-like item popularity, as real catalogues have.

    Returns (data, user_cluster, item_cluster); the most popular half of the items holds ~80% of
    the positives.
    """
    rng = np.random.default_rng(seed)
    user_cluster, item_cluster = np.arange(n_users) % 2, np.arange(n_items) % 2
    popularity = (1.0 + np.arange(n_items) // 2) ** -0.8
    popularity *= 0.1 / popularity.mean()
    same = user_cluster[:, None] == item_cluster[None, :]
    liked = rng.random((n_users, n_items)) < np.where(same, np.minimum(popularity, 0.9), 0.005)
    return _data_from_dense(liked.astype(np.float64)), user_cluster, item_cluster


def _with_cold_items(data: TrainingData, n_cold: int) -> TrainingData:
    """The catalogue plus ``n_cold`` items seen once each (by users 0, 7, 14, ...)."""
    n_users = data.interactions.shape[0]
    cold = sp.csr_matrix(
        (np.ones(n_cold), (np.arange(n_cold) * 7 % n_users, np.arange(n_cold))), shape=(n_users, n_cold)
    )
    positives = sp.csr_matrix(sp.hstack([data.interactions.positives, cold]), dtype=np.float32)
    return TrainingData(
        user_ids=data.user_ids,
        item_ids=IdMap(np.append(data.item_ids.ids, -1 - np.arange(n_cold))),
        interactions=Interactions(positives, positives.copy(), sp.csr_matrix(positives.shape, dtype=np.float32)),
    )


@pytest.mark.parametrize(("n_cold", "min_overlap"), [(1, 0.95), (20, 0.85)])  # measured 0.98 and 0.90
def test_crossing_the_budget_with_cold_items_barely_moves_the_lists(n_cold, min_overlap):
    data, user_cluster, item_cluster = _skewed_planted()
    params = {"l2": 20.0, "serving": "sparse", "serving_budget_bytes": 620 * 60 * 8}
    exact_budget = exact_peak_bytes(600, 4, 300, EaseParams(**params))
    exact = EaseFamily.fit(data, {**params, "memory_budget_bytes": exact_budget})
    assert (exact.params["variant"], exact.params["dtype"]) == ("exact", "float32")

    # The same budget with a few more items, each seen once: the scalable variant takes over and
    # only the least popular few items leave the exact head.
    padded = _with_cold_items(data, n_cold)
    scalable = EaseFamily.fit(padded, {**params, "memory_budget_bytes": exact_budget})
    assert scalable.params["variant"] == "scalable"
    assert scalable.params["predicted_peak_bytes"] <= exact_budget
    assert scalable.params["exact_items"] >= 595
    exact_lists = _top_lists(exact, data.interactions.positives)
    scalable_lists = _top_lists(scalable, padded.interactions.positives)
    assert _overlap(exact_lists, scalable_lists) >= min_overlap
    own = item_cluster[np.minimum(scalable_lists, 599)] == user_cluster[:, None]
    assert own.mean() >= 0.99


def test_scalable_top_k_agrees_with_exact_on_a_planted_catalogue():
    data, user_cluster, item_cluster = _skewed_planted()
    exact = EaseFamily.fit(data, {"l2": 20.0})
    lists = _top_lists(exact, data.interactions.positives)
    assert (item_cluster[lists] == user_cluster[:, None]).mean() == 1.0
    # Measured overlap: 0.83 with half the items exact, 0.72 with a fifth, 0.76 with 5%.
    for cap in (300, 120, 30):
        scalable = EaseFamily.fit(data, {"l2": 20.0, "exact_items_cap": cap})
        assert (scalable.params["variant"], scalable.params["exact_items"]) == ("scalable", cap)
        scalable_lists = _top_lists(scalable, data.interactions.positives)
        assert _overlap(lists, scalable_lists) >= 0.7
        assert (item_cluster[scalable_lists] == user_cluster[:, None]).mean() >= 0.99


@pytest.mark.parametrize("params", [{"solver": "primal"}, {"solver": "dual"}, {"exact_items_cap": 30}])
def test_progress_reports_every_stage(params):
    calls = []
    planted = make_planted()
    EaseFamily.fit(planted.data, {"l2": 20.0, **params}, progress=lambda *a: calls.append(a))
    assert calls
    assert all(0 < done <= total for done, total, _ in calls)
    assert calls[-1][0] == calls[-1][1]


def test_memory_bytes_counts_the_serving_copy():
    planted = make_planted()
    model = EaseFamily.fit(planted.data, {"l2": 20.0})
    assert model.params["serving_layout"] == "dense"
    assert model.memory_bytes() >= 60 * 60 * 4
    sparse = EaseFamily.fit(planted.data, {"l2": 20.0, "serving_budget_bytes": 60 * 10 * 8})
    assert sparse.memory_bytes() < model.memory_bytes()


@pytest.mark.parametrize(
    ("params", "hint"),
    [
        ({"l2": 0.0}, "l2 must be"),
        ({"l2": float("nan")}, "l2 must be"),
        ({"input": "counts"}, "input must be one of"),
        ({"serving": "compressed"}, "serving must be one of"),
        ({"solver": "qr"}, "solver must be one of"),
        ({"tail_neighbours": 0}, "tail_neighbours must be"),
        ({"memory_budget_bytes": 0}, "memory_budget_bytes must be"),
        ({"lambda": 200}, "unknown EASE parameter"),
        ({"memory_budget_bytes": 1000}, "raise the budget"),
        ({"serving": "dense", "serving_budget_bytes": 100}, "raise the budget or use serving='auto'"),
    ],
)
def test_bad_params_raise_family_fit_error_with_a_hint(params, hint):
    with pytest.raises(FamilyFitError, match=hint.replace("(", r"\(")):
        EaseFamily.fit(make_planted().data, params)


def test_no_positives_raise_with_a_hint():
    empty = _data_from_dense(np.zeros((5, 4)))
    with pytest.raises(FamilyFitError, match="import feedback"):
        EaseFamily.fit(empty, {})


def test_tail_regressors_shrink_smoothly_once_the_tail_would_outgrow_half_the_serving_budget():
    params = EaseParams()  # 256 MiB serving budget, 128 tail neighbours
    boundary = params.serving_budget_bytes // (2 * 8 * 128)  # the last n with the full 128
    assert tail_regressors(boundary, params) == 128
    assert tail_regressors(boundary + 1_000, params) == 127
    sizes = [tail_regressors(n, params) for n in range(100_000, 3_000_001, 100_000)]
    assert sizes == sorted(sizes, reverse=True)
    assert all(after >= before // 2 - 1 for before, after in itertools.pairwise(sizes))  # no step


@pytest.mark.parametrize("n_items", [300_000, 1_000_000, 3_000_000])
def test_a_million_item_plan_fits_the_default_memory_budget(n_items):
    # Before the tail shared the serving budget, 1M items asked for 8 GB and the fit refused.
    plan = fit_plan(n_items, 100_000, EaseParams())
    assert plan.variant == "scalable"
    assert plan.predicted_peak_bytes <= EaseParams().memory_budget_bytes
    assert plan.exact_items > 20_000
    assert plan.tail_regressors == tail_regressors(n_items, EaseParams())


def test_the_head_a_time_budget_allows_grows_with_the_budget_and_the_rate():
    rate = 2e9
    small, large = head_items_within(5, 80_000, rate, 10**6), head_items_within(40, 80_000, rate, 10**6)
    assert 0 < small < large
    assert head_flops(large, 80_000) <= 40 * rate < head_flops(large + 1, 80_000)
    # Few users: the dual solver's flops, so the whole catalogue fits where the primal would not.
    assert head_items_within(5, 50, rate, 5_000) == 5_000


def test_a_fit_time_budget_caps_the_head_and_leaves_the_least_popular_tail_unsolved():
    data, _, _ = _skewed_planted()
    unbounded = EaseFamily.fit(data, {"l2": 20.0, "fit_seconds": 1e6})
    assert unbounded.params["variant"] == "exact"

    # A budget nothing fits in: no head worth inverting, and the deadline passed before any tail block.
    starved = EaseFamily.fit(data, {"l2": 20.0, "fit_seconds": 1e-9})
    assert starved.params["variant"] == "scalable"
    assert starved.params["exact_items"] < 10
    assert starved.params["tail_items_solved"] == 0
    assert starved.tail_weights.nnz == 0

    # The tail is solved most popular first: with a head of 30 and the whole tail solved, the
    # columns are those of the capped fit without a time budget.
    capped = EaseFamily.fit(data, {"l2": 20.0, "exact_items_cap": 30})
    timed = EaseFamily.fit(data, {"l2": 20.0, "exact_items_cap": 30, "fit_seconds": 1e6})
    assert timed.params["tail_items_solved"] == timed.params["tail_items"] == 570
    assert abs(timed.tail_weights - capped.tail_weights).max() == 0
