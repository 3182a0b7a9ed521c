import math

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.ml.evaluation import (
    auc,
    catalog_coverage,
    evaluate,
    ndcg_at_k,
    popularity_scores,
    precision_at_k,
    random_split,
    ranking_metrics,
    recall_at_k,
    time_split,
    topk_metrics,
    topk_summary,
    users_within_budget,
)

# User 0: item 0 seen in training; test items {1, 3}; after excluding item 0 the ranking is 1, 2, 3, 4.
# User 1: nothing seen; test item {4}, which it ranks last.
# User 2: no test positive, so it must not be evaluated.
SCORES = np.array(
    [
        [9.0, 5.0, 4.0, 3.0, 1.0],
        [5.0, 4.0, 3.0, 2.0, 1.0],
        [0.0, 0.0, 0.0, 9.0, 8.0],
    ]
)
TRAIN = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.float32))
TEST = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=np.float32))


def test_hand_computed_metrics_at_2():
    # user 0: top-2 = [1, 2], one hit; user 1: top-2 = [0, 1], none.
    assert precision_at_k(SCORES, TRAIN, TEST, k=2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(SCORES, TRAIN, TEST, k=2) == pytest.approx((1 / 2 + 0) / 2)
    ndcg_user0 = 1.0 / (1.0 + 1.0 / math.log2(3))
    assert ndcg_at_k(SCORES, TRAIN, TEST, k=2) == pytest.approx(ndcg_user0 / 2)
    # user 0: positives {1, 3} vs negatives {2, 4}: 3 of 4 pairs ordered right; user 1: 0 of 4.
    assert auc(SCORES, TRAIN, TEST) == pytest.approx((0.75 + 0.0) / 2)
    # items in some evaluated top-2: {0, 1, 2} of 5 (user 2's top items 3, 4 do not count).
    assert catalog_coverage(SCORES, TRAIN, TEST, k=2) == pytest.approx(3 / 5)


def test_evaluate_names_keys_after_k_and_matches_single_metrics():
    result = evaluate(lambda users: SCORES[users], TRAIN, TEST, k=2)
    assert set(result) == {"precision_at_2", "recall_at_2", "ndcg_at_2", "auc", "coverage", "n_users"}
    assert result["n_users"] == 2
    assert result["precision_at_2"] == pytest.approx(0.25)
    assert result["auc"] == pytest.approx(0.375)


def test_ties_give_half_auc_and_batches_do_not_change_results():
    flat = np.zeros((3, 5))
    assert auc(flat, TRAIN, TEST) == pytest.approx(0.5)
    one_by_one = ranking_metrics(SCORES, TRAIN, TEST, k=3, batch_size=1)
    together = ranking_metrics(SCORES, TRAIN, TEST, k=3)
    for name in ("precision", "recall", "ndcg", "auc", "top_k"):
        np.testing.assert_array_equal(one_by_one[name], together[name])


def test_training_items_are_never_recommended_nor_targets():
    # A pair in both train and test is dropped from the test side.
    test = TEST + sp.csr_matrix(([1.0], ([0], [0])), shape=TEST.shape)
    metrics = ranking_metrics(SCORES, TRAIN, test, k=4)
    assert 0 not in metrics["top_k"][0]
    assert metrics["recall"][0] == pytest.approx(1.0)


def test_ties_rank_by_lower_item_index_like_a_stable_sort():
    # Popularity ties a lot; which tied item makes the top k must not depend on argpartition.
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (40, 30)).astype(np.float64)
    train = sp.csr_matrix((rng.random((40, 30)) < 0.3).astype(np.float32))
    test = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32))
    metrics = ranking_metrics(scores, train, test, k=7)
    masked = np.where(train.toarray() > 0, -np.inf, scores)[metrics["users"]]
    np.testing.assert_array_equal(metrics["top_k"], np.argsort(-masked, axis=1, kind="stable")[:, :7])
    flat = ranking_metrics(np.zeros((3, 5)), TRAIN, TEST, k=3)["top_k"]
    np.testing.assert_array_equal(flat, [[1, 2, 3], [0, 1, 2]])


def test_topk_metrics_of_given_lists_hand_computed_with_empty_slots():
    # User 0: relevant {1, 3}, list [3, 0] (one slot left empty); user 1: relevant {4}, list [-1, -1, 4].
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
    top = np.array([[3, 0, -1], [-1, -1, 4]])
    metrics = topk_metrics(top, relevant, k=3)
    np.testing.assert_allclose(metrics["precision"], [1 / 3, 1 / 3])
    np.testing.assert_allclose(metrics["recall"], [1 / 2, 1.0])
    ideal_two = 1.0 + 1.0 / math.log2(3)
    np.testing.assert_allclose(metrics["ndcg"], [1.0 / ideal_two, (1.0 / math.log2(4)) / 1.0])
    summary = topk_summary({**metrics, "top_k": top}, n_items=5, k=3)
    assert summary == pytest.approx(
        {
            "precision_at_3": 1 / 3,
            "recall_at_3": 0.75,
            "ndcg_at_3": (1.0 / ideal_two + 0.5) / 2,
            "coverage": 3 / 5,
            "n_users": 2,
        }
    )
    with pytest.raises(ValueError, match="at least one relevant"):
        topk_metrics(top, sp.csr_matrix((2, 5)), k=3)
    with pytest.raises(ValueError, match="m <= k"):
        topk_metrics(top, relevant, k=2)


def test_ranking_metrics_are_topk_metrics_of_its_own_lists():
    # One definition: scoring then ranking gives the same numbers as handing the lists over.
    metrics = ranking_metrics(SCORES, TRAIN, TEST, k=3)
    given = topk_metrics(metrics["top_k"], TEST[metrics["users"]], k=3)
    for name in ("precision", "recall", "ndcg"):
        np.testing.assert_array_equal(given[name], metrics[name])
    summary = topk_summary(metrics, n_items=5, k=3)
    assert {key: value for key, value in evaluate(SCORES, TRAIN, TEST, k=3).items() if key != "auc"} == summary


def test_popularity_counts_training_positives():
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1]], dtype=np.float32))
    np.testing.assert_array_equal(popularity_scores(train), [3, 1, 1])


def _random_positives(seed=0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((40, 30)) < 0.3).astype(np.float32)
    positives = sp.csr_matrix(dense)
    weights = positives.copy()
    weights.data = rng.random(weights.nnz).astype(np.float32) + 0.5
    return positives, weights


def test_random_split_partitions_rows_reproducibly():
    positives, weights = _random_positives()
    split = random_split(positives, weights, test_fraction=0.25, seed=3)
    assert split.train_positives.nnz + split.test_positives.nnz == positives.nnz
    assert split.train_positives.multiply(split.test_positives).nnz == 0
    np.testing.assert_allclose((split.train_weights + split.test_weights).toarray(), weights.toarray())
    assert abs(split.test_positives.nnz / positives.nnz - 0.25) < 0.06
    again = random_split(positives, weights, test_fraction=0.25, seed=3)
    assert (again.test_positives != split.test_positives).nnz == 0
    other = random_split(positives, weights, test_fraction=0.25, seed=4)
    assert (other.test_positives != split.test_positives).nnz > 0
    with pytest.raises(ValueError, match="test_fraction"):
        random_split(positives, weights, test_fraction=1.0)


def test_time_split_puts_newest_pairs_in_test():
    positives, weights = _random_positives()
    times = positives.copy()
    times.data = np.arange(positives.nnz, dtype=np.float64)[::-1]  # first stored pair is the newest
    split = time_split(positives, weights, times, test_fraction=0.1)
    n_test = round(0.1 * positives.nnz)
    assert split.test_positives.nnz == n_test
    test_times = times.multiply(split.test_positives).data
    train_times = times.multiply(split.train_positives)
    assert test_times.min() > train_times.max()


def test_users_within_budget_keeps_everyone_below_the_budget_and_a_seeded_sample_above():
    rng = np.random.default_rng(3)
    test = sp.csr_matrix((rng.random((40, 25)) < 0.2).astype(np.float32))
    users = np.flatnonzero(np.diff(test.indptr) > 0)

    assert (users_within_budget(test, budget_cells=len(users) * 25) != test).nnz == 0
    sampled = users_within_budget(test, budget_cells=10 * 25 + 24, seed=1)
    kept = np.flatnonzero(np.diff(sampled.indptr) > 0)
    assert len(kept) == 10  # budget // items users, whatever the remainder
    assert set(kept) <= set(users)
    # Kept rows are whole: every held-out positive of a sampled user stays.
    assert (sampled[kept] != test[kept]).nnz == 0
    again = users_within_budget(test, budget_cells=10 * 25, seed=1)
    assert np.array_equal(np.flatnonzero(np.diff(again.indptr) > 0), kept)
    assert len(np.flatnonzero(np.diff(users_within_budget(test, budget_cells=1).indptr) > 0)) == 1


def test_positive_rank_sums_equal_rankdata_with_ties_and_excluded_items():
    from scipy.stats import rankdata

    from recommender.ml.evaluation import _positive_rank_sums

    rng = np.random.default_rng(3)
    scores = np.round(rng.standard_normal((7, 500)), 1)  # rounded: many ties
    scores[:, :40] = -np.inf  # excluded (seen) items
    relevant = rng.random((7, 500)) < 0.05
    relevant[:, :40] = False
    relevant[6] = False  # a row without relevant items sums to 0
    # Rows with few relevant entries are ranked by counting, rows with many by one sort: both exact.
    relevant[5] = False
    relevant[5, [41, 42]] = True
    relevant[4, 40:] = rng.random(460) < 0.5
    expected = np.where(relevant, rankdata(scores, axis=1), 0.0).sum(axis=1)
    assert np.allclose(_positive_rank_sums(scores, sp.csr_matrix(relevant)), expected)
    float32 = scores.astype(np.float32)
    assert np.allclose(_positive_rank_sums(float32, sp.csr_matrix(relevant)), expected)
