"""The blend's numeric core on synthetic data: known weights come back, B finds co-rated items."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.ml.blend import (
    FEATURE_NAMES,
    BlendFitError,
    BlendModel,
    BlendWeights,
    blend_weights_fit,
    item_item_fit,
    item_item_scores,
    logistic_fit,
    standardize,
)
from recommender.ml.dataset import IdMap


def test_logistic_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20_000, 3))
    true_weights, true_intercept = np.array([1.5, -0.8, 0.0]), -1.0
    p = 1.0 / (1.0 + np.exp(-(features @ true_weights + true_intercept)))
    labels = (rng.random(len(p)) < p).astype(float)

    weights, intercept = logistic_fit(features, labels, l2=1e-3)

    assert weights == pytest.approx(true_weights, abs=0.08)
    assert intercept == pytest.approx(true_intercept, abs=0.08)


def test_blend_weights_fit_recovers_the_direction_of_planted_pool_weights():
    # Labels drawn from standardised pool features with weights (2, 1, 0): the fit ranks like them.
    rng = np.random.default_rng(1)
    planted = np.array([2.0, 1.0, 0.0])
    pools = []
    for _ in range(400):
        raw = rng.normal(size=(60, 3)) * [3.0, 0.2, 5.0] + [10.0, 0.0, 2.0]  # arbitrary scales per pool
        p = 1.0 / (1.0 + np.exp(-(standardize(raw) @ planted - 3.0)))
        pools.append((raw, (rng.random(60) < p).astype(float)))

    fitted = blend_weights_fit(pools, l2=1e-3)

    weights = np.asarray(fitted.weights)
    assert fitted.names == FEATURE_NAMES
    assert weights == pytest.approx(planted, abs=0.15)
    assert weights[0] / weights[1] == pytest.approx(2.0, rel=0.15)


def test_single_class_labels_are_refused_with_a_hint():
    with pytest.raises(BlendFitError, match="single class"):
        logistic_fit(np.ones((5, 2)), np.zeros(5))


def test_standardize_zeroes_constant_columns():
    features = np.array([[1.0, 5.0], [3.0, 5.0]])
    assert standardize(features).tolist() == [[-1.0, 0.0], [1.0, 0.0]]


def test_item_item_links_items_rated_by_the_same_users():
    # Items 0-2 are always rated together, items 3-5 together; nothing crosses the blocks.
    rng = np.random.default_rng(2)
    rows, cols = [], []
    for user in range(200):
        block = user % 2
        for item in rng.choice(3, size=2, replace=False) + 3 * block:
            rows.append(user)
            cols.append(item)
    rated = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(200, 6))

    weights = item_item_fit(rated, l2=10.0, neighbours=5)

    assert weights.shape == (6, 6) and weights.diagonal().tolist() == [0.0] * 6
    scores = item_item_scores(weights, history=[0], candidates=[1, 2, 3, 4, 5, -1])
    assert min(scores[:2]) > max(scores[2:5])
    assert scores[5] == 0.0  # an item the fit never saw


def test_blend_model_round_trips_and_scores_a_pool(tmp_path):
    rated = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32))
    blend = BlendModel(
        weights=BlendWeights(FEATURE_NAMES, (0.0, 1.0, 0.0)),
        item_ids=IdMap([10, 20, 30, 40]),
        item_item=item_item_fit(rated, l2=0.5),
        popularity=np.zeros(4, np.float32),
        validation={"blend_precision_at_10": 0.5},
    )
    loaded = BlendModel.load(blend.save(tmp_path / "m.blend.npz"))

    assert loaded.weights == blend.weights and loaded.validation == blend.validation
    scores = loaded.pool_scores(model_scores=[0.0, 0.0, 0.0], history_ids=[10], candidate_ids=[20, 30, 99])
    assert scores[0] == scores.max() and scores[0] > scores[1]
