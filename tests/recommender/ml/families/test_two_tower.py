"""The two-tower family on the planted two-taste catalogue (tests/recommender/ml/conftest.py), CPU torch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recommender.ml.dataset import FeatureShapeError, Interactions, build_feature_matrix
from recommender.ml.families import FAMILIES, FamilyFitError, ModelFamily
from recommender.ml.families.two_tower import TwoTowerArchiveError, TwoTowerFamily, two_tower_params_resolve
from recommender.ml.families.two_tower_training import MIN_STEPS_PER_EPOCH, batch_size_for, candidate_log_counts
from recommender.ml.foldin import FoldInError

# Small towers and fixed epochs keep a fit near a second; early stopping has its own test.
SMALL = {
    "embedding_dim": 16,
    "hidden_dim": 32,
    "output_dim": 16,
    "batch_size": 64,
    "temperature": 0.1,
    "learning_rate": 0.01,
    "epochs": 8,
    "validation_fraction": 0.0,
    "num_threads": 1,
    "random_state": 0,
}


@pytest.fixture(scope="module")
def two_tower(planted) -> TwoTowerFamily:
    return TwoTowerFamily.fit(planted.data, SMALL)


def _own_cluster_share(planted, scores: np.ndarray) -> np.ndarray:
    scores = scores.copy()
    scores[planted.data.interactions.positives.toarray() > 0] = -np.inf
    return planted.item_cluster[np.argsort(-scores, axis=1)[:, :10]] == planted.user_cluster[:, None]


def test_registered_and_satisfies_the_interface(two_tower):
    assert FAMILIES["two_tower"] is TwoTowerFamily
    assert isinstance(two_tower, ModelFamily)


def test_fitted_users_get_their_own_cluster_first(planted, two_tower):
    scores = two_tower.score_items(np.arange(len(planted.user_cluster)))
    assert scores.dtype == np.float32
    assert scores.shape == planted.data.interactions.shape
    own = _own_cluster_share(planted, scores)
    assert own[:, :5].all()
    assert own.mean() >= 0.95


def test_vectors_have_unit_norm(two_tower):
    np.testing.assert_allclose(np.linalg.norm(two_tower.item_vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(two_tower.user_vectors, axis=1), 1.0, atol=1e-5)


def test_score_history_of_a_fitted_users_history_is_her_score_items(planted, two_tower):
    # No user features here, so the user tower sees the same input both ways: the fold-in is exact.
    weights = planted.data.interactions.weights
    fitted = two_tower.score_items(np.arange(weights.shape[0]))
    overlaps = []
    for user in range(weights.shape[0]):
        folded = two_tower.score_history(weights[user].indices, weights[user].data)
        np.testing.assert_allclose(folded, fitted[user], atol=1e-5)
        top = set(np.argsort(-folded)[:10]) & set(np.argsort(-fitted[user])[:10])
        overlaps.append(len(top) / 10)
    assert np.mean(overlaps) >= 0.9


def test_with_user_features_the_fold_in_without_them_still_gets_the_own_cluster_first(planted):
    # User features that name the cluster: a tower could lean on them alone, and a fold-in has none.
    n_users = len(planted.user_cluster)
    user_features = build_feature_matrix(n_users, np.arange(n_users), planted.user_cluster, None, 2)
    data = replace(planted.data, user_features=user_features, user_feature_names=[f"u{i}" for i in range(n_users + 2)])
    model = TwoTowerFamily.fit(data, SMALL)
    assert model.layout["n_user_side"] == 2
    weights = data.interactions.weights
    folded = np.array([model.score_history(weights[u].indices, weights[u].data) for u in range(n_users)])
    assert _own_cluster_share(planted, folded)[:, :5].all()
    assert _own_cluster_share(planted, model.score_items(np.arange(n_users)))[:, :5].all()


@pytest.mark.parametrize("cluster", [0, 1])
def test_new_user_history_gets_its_own_cluster_first(planted, two_tower, cluster):
    history = np.flatnonzero(planted.item_cluster == cluster)[:6]
    scores = two_tower.score_history(history, np.ones(len(history)))
    assert scores.shape == (len(planted.item_cluster),)
    scores[history] = -np.inf
    assert (planted.item_cluster[np.argsort(-scores)[:10]] == cluster).all()


def test_vetoed_and_unknown_history_items_are_left_out(two_tower):
    expected = two_tower.score_history(np.array([0, 2, 4]))
    folded = two_tower.score_history(np.array([0, 2, -1, 4, 1]), preferences=np.array([1, 1, 1, 1, 0]))
    np.testing.assert_allclose(folded, expected, atol=1e-6)


def test_empty_history_gets_the_strangers_vector(two_tower):
    empty = two_tower.score_history(np.array([], dtype=np.int64))
    assert np.isfinite(empty).all()
    np.testing.assert_allclose(two_tower.score_history(np.array([-1, -3])), empty)
    np.testing.assert_allclose(np.linalg.norm(two_tower.user_vector_from_history(np.array([3]), np.zeros(1))), 1.0)


@pytest.mark.parametrize(
    ("items", "weights"),
    [
        (np.array([0, 60]), None),  # beyond the 60-item catalogue
        (np.array([0, 1]), np.array([1.0])),
        (np.array([0, 1]), np.array([1.0, -1.0])),
        (np.array([0, 1]), np.array([1.0, np.nan])),
    ],
)
def test_bad_history_raises(two_tower, items, weights):
    with pytest.raises(FoldInError):
        two_tower.score_history(items, weights)


@pytest.mark.parametrize("cluster", [0, 1])
def test_new_item_from_features_lands_among_its_genres_items(planted, two_tower, cluster):
    # Side columns: 0 = genre:a, 1 = genre:b (the planted clusters), 2..4 = random tags.
    row = sp.csr_matrix(([1.0, 1.0], ([0, 0], [cluster, 2])), shape=(1, planted.n_side_features))
    vector = two_tower.item_vectors_from_features(row)
    assert vector.shape == (1, two_tower.item_vectors.shape[1])
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    nearest = np.argsort(-(two_tower.item_vectors @ vector[0]))[:10]
    assert (planted.item_cluster[nearest] == cluster).mean() >= 0.9


def test_without_item_features_ids_alone_learn_the_clusters_and_new_items_cannot_be_placed(planted):
    data = replace(planted.data, item_features=None, item_feature_names=[])
    model = TwoTowerFamily.fit(data, SMALL)
    assert model.layout["n_item_side"] == 0
    # Measured 99% (one stray slot): the genre feature is the planted truth, ids must infer it.
    assert _own_cluster_share(planted, model.score_items(np.arange(len(planted.user_cluster)))).mean() >= 0.95
    with pytest.raises(FeatureShapeError, match="without item side features"):
        model.item_vectors_from_features(sp.csr_matrix((1, 5)))


def test_feature_rows_of_the_wrong_width_raise(planted, two_tower):
    with pytest.raises(FeatureShapeError, match="without the identity block"):
        two_tower.item_vectors_from_features(sp.csr_matrix((1, planted.data.item_features.shape[1])))


def test_similar_items_share_the_cluster_and_exclude_the_item(planted, two_tower):
    for item in (0, 1, 7):
        indices, scores = two_tower.similar_items(item, 5)
        assert item not in indices
        assert scores.dtype == np.float32
        assert (np.diff(scores) <= 0).all()
        assert (planted.item_cluster[indices] == planted.item_cluster[item]).all()


def test_save_load_round_trip_scores_identically(tmp_path, planted, two_tower):
    path = two_tower.save(tmp_path / "two_tower.npz")
    loaded = TwoTowerFamily.load(path)
    users = np.arange(len(planted.user_cluster))
    np.testing.assert_array_equal(loaded.score_items(users), two_tower.score_items(users))
    history = np.array([0, 2, 4, 6])
    np.testing.assert_array_equal(loaded.score_history(history), two_tower.score_history(history))
    row = sp.csr_matrix(np.array([[1.0, 0.0, 1.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(loaded.item_vectors_from_features(row), two_tower.item_vectors_from_features(row))
    assert loaded.params == two_tower.params
    assert loaded.report == two_tower.report
    np.testing.assert_array_equal(loaded.item_ids.ids, two_tower.item_ids.ids)
    np.testing.assert_array_equal(loaded.user_ids.ids, two_tower.user_ids.ids)
    # No pickles: every array loads with allow_pickle=False (load itself does so too).
    with np.load(path, allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)


def test_load_refuses_another_familys_archive(tmp_path, planted):
    from recommender.ml.families.als import AlsFamily

    path = AlsFamily.fit(planted.data, {"factors": 2, "iterations": 2, "num_threads": 1}).save(tmp_path / "als.npz")
    with pytest.raises(TwoTowerArchiveError, match="not a two-tower archive"):
        TwoTowerFamily.load(path)


def test_log_q_is_the_log_of_each_items_expected_count_among_a_batchs_candidates():
    counts = np.array([3, 1, 0, 4])  # 8 pairs
    np.testing.assert_allclose(candidate_log_counts(counts, 4, 0)[[0, 1, 3]], np.log([1.5, 0.5, 2.0]), rtol=1e-6)
    assert candidate_log_counts(counts, 4, 0)[2] == np.float32(np.log(1e-12))
    # Two uniform extras per batch add 2/4 to every item's expected count.
    np.testing.assert_allclose(candidate_log_counts(counts, 4, 2), np.log([2.0, 1.0, 0.5, 2.5]), rtol=1e-6)


def test_small_catalogues_get_smaller_batches_so_an_epoch_is_enough_steps():
    assert batch_size_for(100_000, 512) == 512
    assert batch_size_for(774, 512) == 49  # ceil(774 / 16)
    assert batch_size_for(3, 512) == 2
    assert -(-774 // batch_size_for(774, 512)) >= MIN_STEPS_PER_EPOCH


def test_fit_is_deterministic_for_a_seed(planted, two_tower):
    again = TwoTowerFamily.fit(planted.data, SMALL)
    np.testing.assert_array_equal(again.item_vectors, two_tower.item_vectors)
    np.testing.assert_array_equal(again.user_vectors, two_tower.user_vectors)
    other = TwoTowerFamily.fit(planted.data, {**SMALL, "random_state": 1, "epochs": 1})
    assert not np.array_equal(other.item_vectors, two_tower.item_vectors)


def test_fit_leaves_torchs_threads_and_random_state_alone(planted):
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    TwoTowerFamily.fit(planted.data, {**SMALL, "epochs": 1, "num_threads": 1})
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_early_stopping_refits_for_the_best_epoch_and_reports_progress(planted):
    messages = []
    params = {**SMALL, "epochs": 30, "patience": 2, "validation_fraction": 0.2, "mixed_negatives": 8}
    model = TwoTowerFamily.fit(planted.data, params, progress=lambda done, total, message: messages.append(message))
    report = model.report
    recalls = report["validation_recalls"]
    assert report["best_epoch"] == int(np.argmax(recalls)) + 1
    assert report["epochs"] == report["best_epoch"]
    assert len(recalls) < 30  # stopped early
    assert len(recalls) - report["best_epoch"] == 2
    assert sum("validation epoch" in message for message in messages) == len(recalls)
    assert sum("final epoch" in message for message in messages) == report["epochs"]
    assert report["validation_recall_at_10"] > 0.3  # chance is 10/60 of a user's held-out items


def test_a_spent_time_budget_stops_after_the_first_epoch(planted):
    model = TwoTowerFamily.fit(planted.data, {**SMALL, "fit_seconds": 1e-9})
    assert model.report["epochs"] == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dimensions": 8}, "unknown two-tower parameter"),
        ({"embedding_dim": 0}, "'embedding_dim' must be an integer >= 1"),
        ({"hidden_dim": 2.5}, "'hidden_dim' must be an integer >= 0"),
        ({"temperature": 0.0}, "'temperature' must be a finite number > 0"),
        ({"learning_rate": float("nan")}, "'learning_rate' must be a finite number"),
        ({"batch_size": 1}, "in-batch negatives need a batch"),
        ({"validation_fraction": 1.0}, "'validation_fraction' must be a finite number >= 0.0 and < 1.0"),
        ({"item_id_dropout": -0.1}, "'item_id_dropout'"),
        ({"log_q_correction": "yes"}, "'log_q_correction' must be true or false"),
        ({"epochs": True}, "'epochs' must be an integer"),
    ],
)
def test_bad_params_raise_with_a_clear_message(planted, params, message):
    with pytest.raises(FamilyFitError, match=message):
        TwoTowerFamily.fit(planted.data, params)


def test_defaults_resolve():
    resolved = two_tower_params_resolve(None)
    assert resolved["log_q_correction"] is True
    assert resolved["mixed_negatives"] == 0


def test_no_positives_raise(planted):
    empty = sp.csr_matrix(planted.data.interactions.shape, dtype=np.float32)
    data = replace(planted.data, interactions=Interactions(empty, empty, empty))
    with pytest.raises(FamilyFitError, match="at least two items"):
        TwoTowerFamily.fit(data, SMALL)


def test_memory_bytes_counts_vectors_and_towers(two_tower):
    vectors = two_tower.item_vectors.nbytes + two_tower.user_vectors.nbytes
    parameters = sum(p.numel() * 4 for p in two_tower.towers.parameters())
    assert two_tower.memory_bytes() >= vectors + parameters


# The vector space (`families.base.VectorFamily`): what the store publishes and serving queries.


def test_is_a_vector_family_whose_published_inner_products_are_its_scores(two_tower):
    from recommender.ml.families import VectorFamily

    assert isinstance(two_tower, VectorFamily)
    score_vectors, embeddings = two_tower.item_space()
    assert score_vectors.shape == (len(two_tower.item_ids), embeddings.shape[1] + 2)
    np.testing.assert_array_equal(score_vectors[:, -2:], np.tile([0.0, 1.0], (len(score_vectors), 1)))
    history, weights, preferences = np.array([0, 2, 4, 5]), np.array([1.0, 2.0, 1.0, 1.0]), np.array([1, 1, 1, 0])
    query = two_tower.query_vector(history, weights, preferences)
    np.testing.assert_array_equal(query[-2:], [1.0, 0.0])
    np.testing.assert_allclose(score_vectors @ query, two_tower.score_history(history, weights, preferences), atol=1e-6)


def test_a_new_item_is_placed_by_feature_name_and_unknown_names_place_nothing(planted, two_tower):
    assert two_tower.item_side_names == ["genre:a", "genre:b", "tag:x", "tag:y", "tag:z"]
    placed = two_tower.item_space_from_features({"genre:b": 1.0, "tag:x": 1.0, "colour:red": 3.0})
    assert placed is not None
    score_vector, embedding = placed
    row = sp.csr_matrix(np.array([[0.0, 1.0, 1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(embedding, two_tower.item_vectors_from_features(row)[0], atol=1e-6)
    np.testing.assert_allclose(score_vector, [*embedding, 0.0, 1.0], atol=1e-6)
    assert two_tower.item_space_from_features({"colour:red": 1.0}) is None


def test_user_side_features_reach_the_query_by_name_and_survive_save_and_load(tmp_path, planted):
    users = len(planted.user_cluster)
    columns = planted.user_cluster  # 0 = "segment:a", 1 = "segment:b": the planted truth
    user_features = build_feature_matrix(users, np.arange(users), columns, None, 2)
    data = replace(
        planted.data,
        user_features=user_features,
        user_feature_names=[f"user:{u}" for u in range(users)] + ["segment:a", "segment:b"],
    )
    model = TwoTowerFamily.fit(data, SMALL)
    assert model.user_side_names == ["segment:a", "segment:b"]
    empty = np.zeros(0, dtype=np.int64)
    as_a, as_b = (model.query_vector(empty, side_features={name: 1.0}) for name in ("segment:a", "segment:b"))
    assert not np.allclose(as_a, as_b)  # the features move the query, with no history at all
    loaded = TwoTowerFamily.load(model.save(tmp_path / "two_tower.npz"))
    assert (loaded.item_side_names, loaded.user_side_names) == (model.item_side_names, model.user_side_names)
    np.testing.assert_array_equal(loaded.query_vector(empty, side_features={"segment:b": 1.0}), as_b)


def test_the_one_row_serving_path_equals_the_batched_tower(planted, two_tower):
    from recommender.ml.families import two_tower_training

    items, weights = np.array([3, 8, 8, 20]), np.array([1.0, 0.5, 2.0, 1.5])
    row = sp.csr_matrix((weights, (np.zeros(4, dtype=np.int64), items)), shape=(1, len(two_tower.item_vectors)))
    batched = two_tower_training.user_vectors(two_tower.towers, row, None)[0]
    np.testing.assert_allclose(two_tower.user_vector_from_history(items, weights), batched, atol=1e-6)
