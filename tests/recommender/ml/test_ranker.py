"""The learned scorer's pool features and its two learners (LambdaRank, logistic), plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.ml.ranker import (
    CONTEXT_FEATURES,
    LearnedRanker,
    RankerFitError,
    feature_names,
    feature_overlap,
    pool_features,
)

FAMILIES = ("lightfm", "ease")
NAMES = feature_names(FAMILIES)


def _pool(rng: np.random.Generator, size: int = 40, positives: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One user's pool: noise everywhere except the ``ease`` score, which is high exactly on the positives."""
    labels = np.zeros(size)
    labels[rng.choice(size, positives, replace=False)] = 1.0
    features = pool_features(
        {"lightfm": rng.normal(size=size), "ease": labels * 2.0 + rng.normal(0, 0.3, size)},
        popularity=rng.random(size),
        item_age_days=rng.random(size) * 100,
        user_activity=float(rng.integers(1, 20)),
        overlap=rng.random(size),
    )
    return features, labels


def _pools(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [_pool(rng) for _ in range(n)]


def _positives_first_share(ranker: LearnedRanker, pools) -> float:
    """Mean share of each pool's top-|positives| rows that are positives (1.0 = perfect)."""
    shares = []
    for features, labels in pools:
        n_positive = int(labels.sum())
        top = np.argsort(-ranker.score(features))[:n_positive]
        shares.append(labels[top].mean())
    return float(np.mean(shares))


def test_feature_names_are_three_columns_per_family_then_the_context():
    assert feature_names(FAMILIES) == [
        "lightfm_score",
        "lightfm_rank",
        "lightfm_z",
        "ease_score",
        "ease_rank",
        "ease_z",
        *CONTEXT_FEATURES,
    ]
    assert len(CONTEXT_FEATURES) == 4


def test_pool_features_shape_rank_and_z_columns():
    scores = np.array([0.5, 3.0, -1.0, 2.0])
    features = pool_features(
        {"lightfm": scores, "ease": np.ones(4)},
        popularity=np.arange(4.0),
        item_age_days=np.array([1.0, np.nan, 3.0, 4.0]),
        user_activity=2.5,
        overlap=np.zeros(4),
    )
    assert features.shape == (4, len(NAMES))
    assert features.dtype == np.float64
    column = {name: features[:, i] for i, name in enumerate(NAMES)}
    np.testing.assert_array_equal(column["lightfm_score"], scores)
    # Rank 0 = the family's favourite in the pool.
    np.testing.assert_array_equal(column["lightfm_rank"], [2, 0, 3, 1])
    np.testing.assert_allclose(column["lightfm_z"], (scores - scores.mean()) / scores.std())
    # A constant score carries no order: its z-score is 0, not NaN.
    np.testing.assert_array_equal(column["ease_z"], np.zeros(4))
    np.testing.assert_array_equal(column["user_activity"], np.full(4, 2.5))
    assert np.isnan(column["item_age_days"][1])
    np.testing.assert_array_equal(column["popularity"], np.arange(4.0))


def test_an_empty_pool_has_every_column_and_no_row():
    empty = np.empty(0)
    features = pool_features(
        {"lightfm": empty, "ease": empty}, popularity=empty, item_age_days=empty, user_activity=1.0, overlap=empty
    )
    assert features.shape == (0, len(NAMES))


def test_feature_overlap_is_the_cosine_with_the_history_profile():
    # Items 0 and 1 share genre a; item 2 is genre b; item 3 has no feature at all.
    features = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    overlap = feature_overlap(features, history=np.array([0]), candidates=np.array([1, 2, 3]))
    np.testing.assert_allclose(overlap, [1.0, 0.0, 0.0])
    # A mixed history (profile [1, 1]): a pure genre-a item sits at 45 degrees.
    mixed = feature_overlap(features, history=np.array([0, 2]), candidates=np.array([1, 2]))
    np.testing.assert_allclose(mixed, [1 / np.sqrt(2), 1 / np.sqrt(2)])


def test_feature_overlap_without_features_or_history_is_zero():
    features = sp.csr_matrix(np.eye(3))
    assert feature_overlap(None, np.array([0]), np.array([1, 2])).tolist() == [0.0, 0.0]
    assert feature_overlap(features, np.empty(0, dtype=np.int64), np.array([1, 2])).tolist() == [0.0, 0.0]
    no_columns = sp.csr_matrix((3, 0))
    assert feature_overlap(no_columns, np.array([0]), np.array([1, 2])).tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def lambdarank() -> LearnedRanker:
    # Small trees need few samples per leaf on this small training set.
    return LearnedRanker.fit(_pools(60, seed=0), NAMES, {"min_child_samples": 20}, num_threads=1)


@pytest.fixture(scope="module")
def logistic() -> LearnedRanker:
    return LearnedRanker.fit_logistic(_pools(60, seed=0), NAMES)


@pytest.mark.parametrize("learner", ["lambdarank", "logistic"])
def test_each_learner_finds_the_planted_signal_and_ranks_fresh_positives_first(request, learner):
    ranker = request.getfixturevalue(learner)
    assert ranker.kind == learner
    fresh = _pools(30, seed=99)
    assert _positives_first_share(ranker, fresh) >= 0.9
    # The planted column wins the importances; the noise family barely counts.
    importances = ranker.importances()
    assert next(iter(importances)).startswith("ease_")
    ease_share = sum(share for name, share in importances.items() if name.startswith("ease_"))
    lightfm_share = sum(share for name, share in importances.items() if name.startswith("lightfm_"))
    assert ease_share > 0.5
    assert ease_share > 3 * lightfm_share


@pytest.mark.parametrize("learner", ["lambdarank", "logistic"])
def test_importances_are_shares_summing_to_one_largest_first(request, learner):
    importances = request.getfixturevalue(learner).importances()
    assert set(importances) == set(NAMES)
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-3)
    shares = list(importances.values())
    assert shares == sorted(shares, reverse=True)
    assert min(shares) >= 0.0


@pytest.mark.parametrize("learner", ["lambdarank", "logistic"])
def test_save_load_round_trip_scores_identically_without_pickles(request, tmp_path, learner):
    ranker = request.getfixturevalue(learner)
    path = ranker.save(tmp_path / "ranker.npz")
    with np.load(path, allow_pickle=False) as arrays:
        assert set(arrays.files) == {"names", "model_text", "params_json", "kind"}
    loaded = LearnedRanker.load(path)
    assert loaded.kind == ranker.kind
    assert loaded.names == ranker.names
    assert loaded.params == ranker.params
    features, _ = _pool(np.random.default_rng(5))
    np.testing.assert_array_equal(loaded.score(features), ranker.score(features))
    assert loaded.importances() == ranker.importances()


def test_lambdarank_refuses_pools_without_a_positive():
    pools = [(features, np.zeros_like(labels)) for features, labels in _pools(5, seed=1)]
    with pytest.raises(RankerFitError, match="held-out positive"):
        LearnedRanker.fit(pools, NAMES)
    with pytest.raises(RankerFitError, match="held-out positive"):
        LearnedRanker.fit([], NAMES)


def test_logistic_refuses_pools_without_a_positive():
    pools = [(features, np.zeros_like(labels)) for features, labels in _pools(5, seed=1)]
    with pytest.raises(RankerFitError):
        LearnedRanker.fit_logistic(pools, NAMES)
    with pytest.raises(RankerFitError, match="no labelled pool"):
        LearnedRanker.fit_logistic([], NAMES)


def test_lambdarank_refuses_features_that_do_not_match_the_names():
    with pytest.raises(RankerFitError, match="columns"):
        LearnedRanker.fit(_pools(5, seed=1), NAMES[:-1])


def test_unknown_kind_is_refused_with_the_known_ones():
    with pytest.raises(RankerFitError, match="lambdarank"):
        LearnedRanker(names=NAMES, model_text="{}", kind="forest")


def test_an_empty_pool_scores_to_an_empty_row(lambdarank, logistic):
    empty = np.empty((0, len(NAMES)))
    assert lambdarank.score(empty).shape == (0,)
    assert logistic.score(empty).shape == (0,)
