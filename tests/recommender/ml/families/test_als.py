"""The ALS family on the planted two-taste catalogue (tests/recommender/ml/conftest.py), plain numpy."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import threadpoolctl
from implicit.cpu.als import AlternatingLeastSquares

from recommender.ml.dataset import IdMap, Interactions, TrainingData
from recommender.ml.families import FAMILIES, FamilyFitError, ModelFamily
from recommender.ml.families.als import PARAM_GRID, AlsArchiveError, AlsFamily
from recommender.ml.foldin import FoldInError

# The planted taste structure has rank 2. ALS is a least-squares reconstruction, so spare factors
# fit the catalogue's 2% cross-cluster noise (with 8 factors about 1 in 8 top-10 slots goes to the
# other cluster): the planted-answer tests use the true rank, the numeric ones a wider model.
SMALL = {"factors": 2, "regularization": 1.0, "alpha": 3.0, "iterations": 15, "num_threads": 1, "random_state": 0}
WIDE = {**SMALL, "factors": 8}


@pytest.fixture(scope="module")
def als(planted) -> AlsFamily:
    return AlsFamily.fit(planted.data, SMALL)


@pytest.fixture(scope="module")
def als_wide(planted) -> AlsFamily:
    return AlsFamily.fit(planted.data, WIDE)


def _implicit_reference(model: AlsFamily) -> AlternatingLeastSquares:
    """implicit's own model holding our factors, for its recalculate_user path."""
    with threadpoolctl.threadpool_limits(1, "blas"):
        reference = AlternatingLeastSquares(
            factors=model.n_factors, regularization=model.params["regularization"], alpha=1.0, num_threads=1
        )
    reference.item_factors = model.item_factors.copy()
    reference.user_factors = model.user_factors.copy()
    return reference


def _confidence_row(model: AlsFamily, items: np.ndarray, weights: np.ndarray) -> sp.csr_matrix:
    confidence = 1.0 + model.params["alpha"] * weights
    zeros = np.zeros(len(items), dtype=np.int64)
    return sp.csr_matrix((confidence, (zeros, items)), shape=(1, len(model.item_factors)), dtype=np.float32)


def test_registered_and_satisfies_the_interface(als):
    assert FAMILIES["als"] is AlsFamily
    assert isinstance(als, ModelFamily)


def test_fitted_users_get_their_own_cluster_first(planted, als):
    scores = als.score_items(np.arange(len(planted.user_cluster)))
    assert scores.dtype == np.float32
    assert scores.shape == planted.data.interactions.shape
    scores[planted.data.interactions.positives.toarray() > 0] = -np.inf
    own = planted.item_cluster[np.argsort(-scores, axis=1)[:, :10]] == planted.user_cluster[:, None]
    assert own[:, :5].all()
    assert own.mean() >= 0.95


@pytest.mark.parametrize("cluster", [0, 1])
def test_new_user_history_gets_its_own_cluster_first(planted, als, cluster):
    history = np.flatnonzero(planted.item_cluster == cluster)[:6]
    scores = als.score_history(history, np.full(len(history), 2.0))
    assert scores.dtype == np.float32
    assert scores.shape == (len(planted.item_cluster),)
    scores[history] = -np.inf
    top = np.argsort(-scores)[:10]
    assert (planted.item_cluster[top] == cluster).all()


def test_fold_in_matches_implicit_recalculate_user_for_every_training_user(planted, als_wide):
    weights = planted.data.interactions.weights
    ours = np.array(
        [als_wide.user_vector_from_history(weights[u].indices, weights[u].data) for u in range(weights.shape[0])]
    )
    confidence = weights.copy()
    confidence.data = 1.0 + als_wide.params["alpha"] * confidence.data
    with threadpoolctl.threadpool_limits(1, "blas"):
        theirs = _implicit_reference(als_wide).recalculate_user(np.arange(weights.shape[0]), confidence)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max())


def test_fold_in_of_a_weighted_history_matches_implicit_recommend(als_wide):
    # Unknown items (-1) are ignored, repeats sum their weights: implicit gets the merged row.
    items = np.array([0, 2, 4, -1, 6, 2, 8])
    weights = np.array([1.0, 2.0, 3.0, 5.0, 1.0, 0.5, 0.25])
    merged_items, merged_weights = np.array([0, 2, 4, 6, 8]), np.array([1.0, 2.5, 3.0, 1.0, 0.25])
    row = _confidence_row(als_wide, merged_items, merged_weights)
    reference = _implicit_reference(als_wide)
    with threadpoolctl.threadpool_limits(1, "blas"):
        expected_vector = reference.recalculate_user(0, row)
        ids, expected_scores = reference.recommend(
            0, row, N=len(als_wide.item_factors), recalculate_user=True, filter_already_liked_items=False
        )
    np.testing.assert_allclose(als_wide.user_vector_from_history(items, weights), expected_vector, atol=1e-5)
    np.testing.assert_allclose(als_wide.score_history(items, weights)[ids], expected_scores, atol=1e-5)


def test_fold_in_of_a_trained_user_converges_to_the_trained_factor(planted):
    # The trained factor is one half-step behind the final item factors (and implicit's fit uses a
    # few conjugate-gradient steps per solve), so the two agree only as the fit converges.
    weights = planted.data.interactions.weights
    users = np.arange(weights.shape[0])

    def relative_gap(iterations: int) -> float:
        model = AlsFamily.fit(planted.data, {**WIDE, "iterations": iterations})
        folded = np.array([model.user_vector_from_history(weights[u].indices, weights[u].data) for u in users])
        return float(np.linalg.norm(folded - model.user_factors) / np.linalg.norm(model.user_factors))

    early, converged = relative_gap(2), relative_gap(100)
    assert converged < 0.01
    assert converged < early / 5


def test_empty_or_unknown_history_scores_zero(als):
    assert not als.score_history(np.array([], dtype=np.int64)).any()
    assert not als.score_history(np.array([-1, -5]), np.array([1.0, 1.0])).any()
    assert not als.user_vector_from_history(np.array([3]), np.array([0.0])).any()


@pytest.mark.parametrize(
    ("items", "weights"),
    [
        (np.array([0, 60]), None),  # beyond the 60-item catalogue
        (np.array([0, 1]), np.array([1.0])),
        (np.array([0, 1]), np.array([1.0, -1.0])),
        (np.array([0, 1]), np.array([1.0, np.nan])),
    ],
)
def test_bad_history_raises(als, items, weights):
    with pytest.raises(FoldInError):
        als.score_history(items, weights)


def test_score_items_refuses_out_of_range_users(als):
    with pytest.raises(IndexError, match="score_history"):
        als.score_items(np.array([-1]))


def test_similar_items_are_cosine_neighbours_in_the_same_cluster(planted, als):
    for item in (0, 1, 7):
        indices, scores = als.similar_items(item, 5)
        assert indices.dtype == np.int64
        assert scores.dtype == np.float32
        assert len(indices) == 5
        assert item not in indices
        assert (planted.item_cluster[indices] == planted.item_cluster[item]).all()
        assert (np.diff(scores) <= 0).all()
        assert scores.max() <= 1.0 + 1e-6
    indices, _ = als.similar_items(0, 1000)
    assert sorted(indices.tolist()) == list(range(1, len(planted.item_cluster)))


def test_save_load_round_trip_gives_identical_scores(als_wide, tmp_path):
    path = als_wide.save(tmp_path / "als.npz")
    loaded = AlsFamily.load(path)
    assert loaded.params == als_wide.params
    assert np.array_equal(loaded.item_ids.ids, als_wide.item_ids.ids)
    assert np.array_equal(loaded.user_ids.ids, als_wide.user_ids.ids)
    users = np.arange(len(als_wide.user_ids))
    assert np.array_equal(loaded.score_items(users), als_wide.score_items(users))
    history, weights = np.array([1, 3, 5]), np.array([1.0, 0.5, 2.0])
    assert np.array_equal(loaded.score_history(history, weights), als_wide.score_history(history, weights))
    for got, expected in zip(loaded.similar_items(4, 5), als_wide.similar_items(4, 5), strict=True):
        assert np.array_equal(got, expected)
    assert loaded.memory_bytes() == als_wide.memory_bytes()


def test_load_refuses_another_familys_archive(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, family=np.asarray("ease"), version=np.asarray(1))
    with pytest.raises(AlsArchiveError, match="not an ALS archive"):
        AlsFamily.load(path)


def test_single_thread_fit_with_a_fixed_seed_is_reproducible(planted):
    first = AlsFamily.fit(planted.data, WIDE)
    second = AlsFamily.fit(planted.data, WIDE)
    other_seed = AlsFamily.fit(planted.data, {**WIDE, "random_state": 1})
    assert np.array_equal(first.item_factors, second.item_factors)
    assert np.array_equal(first.user_factors, second.user_factors)
    assert not np.allclose(first.item_factors, other_seed.item_factors)


def test_progress_is_reported_once_per_iteration(planted):
    calls: list[tuple[int, int]] = []
    AlsFamily.fit(planted.data, {**SMALL, "iterations": 4}, progress=lambda done, total, _: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_fit_keeps_blas_single_threaded_so_implicit_does_not_warn(planted, monkeypatch):
    # implicit checks the BLAS thread pool once per process, when a model is built.
    monkeypatch.setattr("implicit.utils._checked_blas_config", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AlsFamily.fit(planted.data, {**SMALL, "iterations": 1})
    assert [str(w.message) for w in caught if "threads" in str(w.message)] == []


@pytest.mark.parametrize(
    "params",
    [
        {"factors": 0},
        {"factors": 2.5},
        {"factors": True},
        {"regularization": 0},
        {"regularization": float("inf")},
        {"alpha": -1.0},
        {"alpha": float("nan")},
        {"iterations": 0},
        {"num_threads": -1},
        {"random_state": "zero"},
        {"factorz": 8},
    ],
)
def test_bad_params_raise(planted, params):
    with pytest.raises(FamilyFitError):
        AlsFamily.fit(planted.data, params)


def test_empty_data_raises(planted):
    empty = sp.csr_matrix(planted.data.interactions.shape, dtype=np.float32)
    data = replace(planted.data, interactions=Interactions(empty, empty.copy(), empty.copy()))
    with pytest.raises(FamilyFitError, match="no positive interactions"):
        AlsFamily.fit(data, SMALL)
    no_items = sp.csr_matrix((3, 0), dtype=np.float32)
    data = TrainingData(IdMap(["a", "b", "c"]), IdMap([]), Interactions(no_items, no_items, no_items))
    with pytest.raises(FamilyFitError, match="no positive interactions"):
        AlsFamily.fit(data, SMALL)


@pytest.mark.parametrize("alpha", [1e30, 1e39])
def test_diverging_confidence_raises_with_a_hint(planted, alpha):
    # 1e30: the solve overflows to NaN; 1e39: the confidence itself is beyond float32.
    with pytest.raises(FamilyFitError, match="lower alpha"):
        AlsFamily.fit(planted.data, {**SMALL, "alpha": alpha})


def test_param_grid_is_small_and_valid(planted):
    assert 1 <= len(PARAM_GRID) <= 6
    for params in PARAM_GRID:
        AlsFamily.fit(planted.data, {**params, "iterations": 1, "num_threads": 1})


def test_default_params_rank_the_planted_clusters_first(planted):
    model = AlsFamily.fit(planted.data, {"num_threads": 1})
    scores = model.score_items(np.arange(len(planted.user_cluster)))
    scores[planted.data.interactions.positives.toarray() > 0] = -np.inf
    own = planted.item_cluster[np.argsort(-scores, axis=1)[:, :10]] == planted.user_cluster[:, None]
    assert own.mean() >= 0.95


def test_a_fit_time_budget_stops_the_iterations_and_an_unreached_one_changes_nothing(planted):
    heard: list[int] = []
    AlsFamily.fit(
        planted.data, {"iterations": 6, "fit_seconds": 1e-9}, progress=lambda done, total, message: heard.append(done)
    )
    assert heard == [1]  # at least one iteration always runs

    plain = AlsFamily.fit(planted.data, {"iterations": 6, "num_threads": 1})
    heard.clear()
    budgeted = AlsFamily.fit(
        planted.data,
        {"iterations": 6, "num_threads": 1, "fit_seconds": 1e6},
        progress=lambda done, total, message: heard.append(done),
    )
    assert heard == [1, 2, 3, 4, 5, 6]
    # One iteration a call warm-starts from the factors: bit for bit the same fit.
    assert np.array_equal(plain.item_factors, budgeted.item_factors)
    assert np.array_equal(plain.user_factors, budgeted.user_factors)
