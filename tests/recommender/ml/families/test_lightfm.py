"""The LightFM family adapter on the planted two-taste catalogue (tests/recommender/ml/conftest.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recommender.ml.families import FAMILIES, FamilyFitError, ModelFamily
from recommender.ml.families.lightfm import LightFmFamily
from recommender.ml.similarity import top_k


@pytest.fixture(scope="module")
def family(planted_model) -> LightFmFamily:
    return LightFmFamily(planted_model)


def _top(scores: np.ndarray, exclude: np.ndarray, k: int = 10) -> np.ndarray:
    scores = np.array(scores, dtype=np.float64)
    scores[exclude] = -np.inf
    return top_k(scores, k)


def test_registered_and_satisfies_the_interface(family):
    assert FAMILIES["lightfm"] is LightFmFamily
    assert isinstance(family, ModelFamily)
    assert family.param_grid == []


def test_score_items_equals_the_fitted_models_scores(planted, planted_model, family):
    users = np.arange(len(planted.user_cluster))
    scores = family.score_items(users)
    assert scores.dtype == np.float32
    assert scores.shape == planted.data.interactions.shape
    np.testing.assert_array_equal(scores, planted_model.score_items(users))


def test_fold_in_of_a_fitted_users_own_positives_ranks_like_her_trained_vector(planted, family):
    positives = planted.data.interactions.positives.tocsr()
    weights = planted.data.interactions.weights.tocsr()
    trained = family.score_items(np.arange(positives.shape[0]))
    overlaps, own_cluster = [], []
    for user in range(positives.shape[0]):
        items = positives.indices[positives.indptr[user] : positives.indptr[user + 1]]
        confidences = weights.data[weights.indptr[user] : weights.indptr[user + 1]]
        folded = family.score_history(items, confidences)
        assert folded.dtype == np.float32
        assert folded.shape == (positives.shape[1],)
        seen = np.zeros(positives.shape[1], dtype=bool)
        seen[items] = True
        folded_top, trained_top = _top(folded, seen), _top(trained[user], seen)
        overlaps.append(len(set(folded_top) & set(trained_top)) / 10)
        own_cluster.append(np.mean(planted.item_cluster[folded_top] == planted.user_cluster[user]))
    # The fold-in solves a different (least-squares) objective than WARP, so lists differ in
    # their tail; the planted answer is what both must agree on.
    assert np.mean(overlaps) >= 0.7
    assert np.mean(own_cluster) >= 0.95


@pytest.mark.parametrize("cluster", [0, 1])
def test_a_new_history_gets_its_own_cluster_first(planted, family, cluster):
    history = np.flatnonzero(planted.item_cluster == cluster)[:6]
    scores = family.score_history(history)
    seen = np.zeros(len(scores), dtype=bool)
    seen[history] = True
    assert (planted.item_cluster[_top(scores, seen)] == cluster).all()


def test_unknown_items_are_ignored_and_an_empty_history_scores_by_item_bias(planted_model, family):
    history = np.array([0, 2, 4])
    np.testing.assert_array_equal(family.score_history(np.array([-1, 0, 2, -1, 4])), family.score_history(history))
    stranger = family.score_history(np.empty(0, dtype=np.int64))
    biases, _ = planted_model.item_representations()
    np.testing.assert_allclose(stranger, biases, rtol=1e-6)
    np.testing.assert_array_equal(family.score_history(np.array([-1, -1])), stranger)


def test_save_load_round_trip(tmp_path, planted, family):
    path = family.save(tmp_path / "lightfm.npz")
    with np.load(path, allow_pickle=False) as arrays:
        assert "item_embeddings" in arrays.files
    loaded = LightFmFamily.load(path)
    assert isinstance(loaded, LightFmFamily)
    assert loaded.params == family.params
    users = np.arange(len(planted.user_cluster))
    np.testing.assert_array_equal(loaded.score_items(users), family.score_items(users))
    history = np.array([1, 3, 5, 7])
    np.testing.assert_array_equal(loaded.score_history(history), family.score_history(history))
    assert loaded.memory_bytes() == family.memory_bytes() > 0


def test_similar_items_exclude_the_item_and_stay_in_its_cluster(planted, family):
    n_items = len(planted.item_cluster)
    for item in range(n_items):
        indices, scores = family.similar_items(item, 5)
        assert indices.dtype == np.int64
        assert scores.dtype == np.float32
        assert item not in indices.tolist()
        assert len(indices) == 5
        assert (np.diff(scores) <= 0).all()
        assert (planted.item_cluster[indices] == planted.item_cluster[item]).mean() >= 0.8
    # Asking for the whole catalogue gives every other item once.
    indices, _ = family.similar_items(0, n_items)
    assert sorted(indices.tolist()) == list(range(1, n_items))


def test_fit_through_the_interface_matches_the_params_and_refuses_unknown_ones(planted, fast_params):
    params = {**dataclasses.asdict(fast_params), "epochs": 3}
    fitted = LightFmFamily.fit(planted.data, params)
    assert fitted.params["epochs"] == 3
    assert fitted.params["early_stopping_patience"] is None
    seen: list[tuple[int, int]] = []
    LightFmFamily.fit(planted.data, params, progress=lambda done, total, _message: seen.append((done, total)))
    assert seen[-1] == (3, 3)
    with pytest.raises(FamilyFitError, match="unknown LightFM parameters \\['factors'\\]"):
        LightFmFamily.fit(planted.data, {"factors": 8})
    with pytest.raises(FamilyFitError, match="learning_rate"):
        LightFmFamily.fit(planted.data, {"learning_rate": -1.0})


def test_a_fit_time_budget_starts_no_epoch_that_would_end_past_it():
    from recommender.ml.families.lightfm import LightFmFamily
    from tests.recommender.ml.conftest import make_planted

    planted = make_planted()
    epochs: list[int] = []
    LightFmFamily.fit(
        planted.data, {"epochs": 5, "fit_seconds": 1e-9}, progress=lambda done, total, message: epochs.append(done)
    )
    assert epochs == [1]  # at least one epoch always runs
    epochs.clear()
    LightFmFamily.fit(
        planted.data, {"epochs": 5, "fit_seconds": 1e6}, progress=lambda done, total, message: epochs.append(done)
    )
    assert epochs == [1, 2, 3, 4, 5]
