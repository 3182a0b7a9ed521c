import numpy as np
import pytest

from recommender.ml.similarity import SimilarityError, similarity, top_k

QUERY = np.array([1.0, 0.0])
VECTORS = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])


def test_hand_computed_measures():
    root2 = np.sqrt(2.0)
    np.testing.assert_allclose(similarity(QUERY, VECTORS, "dot"), [2, 0, 1, 0])
    np.testing.assert_allclose(similarity(QUERY, VECTORS, "cosine"), [1, 0, 1 / root2, 0])
    np.testing.assert_allclose(similarity(QUERY, VECTORS, "euclidean"), [-1, -root2, -1, -1])
    np.testing.assert_allclose(similarity(QUERY, VECTORS, "norm_damped", alpha=0.5), [root2, 0, 2**0.25 / root2, 0])


def test_norm_damped_interpolates_between_cosine_and_dot():
    rng = np.random.default_rng(0)
    query, vectors = rng.normal(size=5), rng.normal(size=(20, 5))
    np.testing.assert_allclose(similarity(query, vectors, "norm_damped", alpha=1.0), vectors @ query, rtol=1e-10)
    np.testing.assert_allclose(
        similarity(query, vectors, "norm_damped", alpha=0.0), similarity(query, vectors, "cosine"), rtol=1e-10
    )


def test_batched_queries_match_single_queries():
    rng = np.random.default_rng(1)
    queries, vectors = rng.normal(size=(3, 4)), rng.normal(size=(7, 4))
    for measure in ("dot", "cosine", "euclidean", "norm_damped"):
        batched = similarity(queries, vectors, measure)
        assert batched.shape == (3, 7)
        np.testing.assert_allclose(batched[1], similarity(queries[1], vectors, measure), atol=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(SimilarityError, match="measure"):
        similarity(QUERY, VECTORS, "manhattan")
    with pytest.raises(SimilarityError, match="last dimension"):
        similarity(np.ones(3), VECTORS)


def test_top_k_orders_and_excludes():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 2, exclude=[1]).tolist() == [3, 2]
    assert top_k(scores, 2, exclude=scores > 0.6).tolist() == [2, 4]
    assert top_k(scores, 10).tolist() == [1, 3, 2, 4, 0]
    batch = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    assert top_k(batch, 2).tolist() == [[0, 2], [1, 2]]
    assert top_k(batch, 2, exclude=[0]).tolist() == [[2, 1], [1, 2]]
    with pytest.raises(SimilarityError):
        top_k(scores, 0)


def test_top_k_breaks_ties_by_lower_index_like_a_stable_sort():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=(6, 40)).astype(np.float64)  # many ties
    scores[2, 5] = np.nan
    for k in (1, 3, 10, 40):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert top_k(scores, k).tolist() == expected.tolist()
    mask = scores[0] > 2
    allowed = np.flatnonzero(~mask)
    assert (
        top_k(scores[0], 5, exclude=mask).tolist()
        == allowed[np.argsort(-scores[0][allowed], kind="stable")][:5].tolist()
    )


def test_top_k_equals_a_stable_argsort_on_tie_heavy_rows_with_excluded_entries():
    from recommender.ml.similarity import top_k

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = int(rng.integers(1, 60)), int(rng.integers(1, 5))
        k = int(rng.integers(1, n + 1))
        scores = np.round(rng.standard_normal((m, n)), int(rng.integers(0, 2)))  # rounded: many ties
        scores[rng.random((m, n)) < 0.3] = -np.inf
        assert (top_k(scores, k) == np.argsort(-scores, axis=1, kind="stable")[:, :k]).all()
