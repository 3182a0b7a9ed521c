import numpy as np
import pytest

from recommender.ml.foldin import FoldIn, FoldInError, fold_in_user


def _brute_force(vectors, biases, items, confidences, preferences, w0, regularization):
    """The same objective solved densely over every item: O(n_items k^2), no Gram-matrix trick."""
    n_items, k = vectors.shape
    weight = np.full(n_items, w0)
    target = -biases.copy()
    weight[items] = confidences
    target[items] = preferences - biases[items]
    lhs = (vectors.T * weight) @ vectors + regularization * np.eye(k)
    return np.linalg.solve(lhs, (vectors.T * weight) @ target)


def test_gram_trick_matches_dense_weighted_least_squares():
    rng = np.random.default_rng(0)
    vectors, biases = rng.normal(size=(200, 6)), rng.normal(scale=0.3, size=200)
    items = np.array([3, 17, 50, 199])
    confidences = np.array([1.0, 2.0, 0.5, 3.0])
    preferences = np.array([1.0, 1.0, 0.0, 1.0])
    solver = FoldIn(vectors, biases, unobserved_weight=0.05, regularization=0.2)
    expected = _brute_force(vectors, biases, items, confidences, preferences, 0.05, 0.2)
    np.testing.assert_allclose(solver.user_vector(items, confidences, preferences), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        fold_in_user(vectors, biases, items, confidences, preferences, unobserved_weight=0.05, regularization=0.2),
        expected,
        rtol=1e-4,
        atol=1e-5,
    )


def test_repeated_items_are_merged():
    rng = np.random.default_rng(1)
    solver = FoldIn(rng.normal(size=(30, 4)), rng.normal(size=30))
    merged = solver.user_vector([2, 2, 5], [1.0, 1.0, 1.0])
    single = solver.user_vector([2, 5], [2.0, 1.0])
    np.testing.assert_allclose(merged, single, rtol=1e-6)


def _top_unseen(scores, seen, k):
    scores = scores.copy()
    scores[seen] = -np.inf
    return set(np.argsort(-scores)[:k])


def test_fold_in_of_training_users_recovers_their_top_k(planted, planted_model):
    items = planted_model.item_vectors_with_bias()
    users = planted_model.user_vectors_with_bias()
    solver = FoldIn.from_vectors_with_bias(items)
    positives, weights = planted.data.interactions.positives, planted.data.interactions.weights
    overlaps = []
    for user in range(positives.shape[0]):
        seen = positives[user].indices
        folded = solver.user_vector_with_bias(seen, weights[user].data)
        assert folded.shape == (planted_model.n_components + 2,)
        overlaps.append(len(_top_unseen(items @ folded, seen, 10) & _top_unseen(items @ users[user], seen, 10)) / 10)
    assert np.mean(overlaps) >= 0.7


def test_adding_ratings_moves_ranking_toward_the_rated_items_neighbours(planted, planted_model):
    items = planted_model.item_vectors_with_bias()
    solver = FoldIn.from_vectors_with_bias(items)
    user = 0  # a cluster-A user
    seen = planted.data.interactions.positives[user].indices
    other_cluster = np.flatnonzero(planted.item_cluster != planted.user_cluster[user])
    added = np.setdiff1d(other_cluster, seen)[:3]
    neighbours = np.setdiff1d(other_cluster, np.concatenate([seen, added]))

    def mean_rank_of_neighbours(vector):
        order = np.argsort(-(items @ vector))
        ranks = np.empty(len(order), dtype=int)
        ranks[order] = np.arange(len(order))
        return ranks[neighbours].mean()

    before = solver.user_vector_with_bias(seen)
    after = solver.user_vector_with_bias(np.concatenate([seen, added]), np.r_[np.ones(len(seen)), np.full(3, 3.0)])
    assert mean_rank_of_neighbours(after) < mean_rank_of_neighbours(before) - 5


def test_negative_feedback_lowers_the_item(planted, planted_model):
    items = planted_model.item_vectors_with_bias()
    solver = FoldIn.from_vectors_with_bias(items)
    seen = planted.data.interactions.positives[0].indices
    disliked = np.setdiff1d(np.flatnonzero(planted.item_cluster == 0), seen)[0]
    neutral = solver.user_vector_with_bias(seen)
    with_dislike = solver.user_vector_with_bias(
        np.r_[seen, disliked], np.r_[np.ones(len(seen)), 5.0], np.r_[np.ones(len(seen)), 0.0]
    )
    assert items[disliked] @ with_dislike < items[disliked] @ neutral


def test_invalid_inputs_raise():
    solver = FoldIn(np.eye(3), np.zeros(3))
    with pytest.raises(FoldInError, match=r"\[0, 3\)"):
        solver.user_vector([3])
    with pytest.raises(FoldInError, match="one entry per observation"):
        solver.user_vector([0, 1], [1.0])
    with pytest.raises(FoldInError, match="positive"):
        solver.user_vector([0], [0.0])
    with pytest.raises(FoldInError, match="item_biases"):
        FoldIn(np.eye(3), np.zeros(2))
    with pytest.raises(FoldInError, match="NaN"):
        FoldIn(np.full((2, 2), np.nan))
