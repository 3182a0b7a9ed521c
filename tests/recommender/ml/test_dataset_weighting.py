"""Value transforms of implicit counts in build_interactions (docs/ml.md, "Weighting rules")."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.ml.dataset import (
    VALUE_TRANSFORMS,
    ValueTransformError,
    build_interactions,
    implicit_event_weights,
    value_transform_codes,
)

NONE, LOG, CONFIDENCE = (VALUE_TRANSFORMS.index(name) for name in ("none", "log", "confidence"))


def _weights(**kwargs) -> np.ndarray:
    return build_interactions(**kwargs).weights.toarray()


def test_without_transforms_the_weights_are_those_of_before():
    arguments = {
        "user_index": [0, 0, 1, 1],
        "item_index": [0, 1, 0, 1],
        "kind_weight": [0.5, 2.0, 1.0, 1.0],
        "value": [7.0, 3.0, 5.0, 4.0],
        "is_explicit": [False, False, True, True],
        "n_users": 2,
        "n_items": 2,
    }
    plain = _weights(**arguments)
    all_none = _weights(**arguments, value_transform=[NONE] * 4)
    np.testing.assert_array_equal(plain, all_none)
    np.testing.assert_allclose(plain, [[0.5, 2.0], [1.0, 0.8]])


def test_log_and_confidence_scale_the_kind_weight_by_the_count():
    weights = _weights(
        user_index=[0, 0, 0],
        item_index=[0, 1, 2],
        kind_weight=[2.0, 2.0, 0.5],
        value=[99.0, 9.0, 9.0],
        is_explicit=[False, False, False],
        n_users=1,
        n_items=3,
        value_transform=[LOG, CONFIDENCE, NONE],
        confidence_alpha=2.0,
        confidence_epsilon=0.5,
    )
    expected = [2.0 * np.log(100.0), 2.0 * (1 + 2.0 * np.log1p(9.0 / 0.5)), 0.5]
    np.testing.assert_allclose(weights[0], expected, rtol=1e-6)


def test_a_count_of_zero_under_log_is_no_positive_but_confidence_keeps_a_floor():
    interactions = build_interactions(
        [0, 0],
        [0, 1],
        [1.0, 1.0],
        [0.0, 0.0],
        [False, False],
        1,
        2,
        value_transform=[LOG, CONFIDENCE],
    )
    assert interactions.positives.toarray().tolist() == [[0.0, 1.0]]
    assert interactions.weights.toarray().tolist() == [[0.0, 1.0]]


def test_transforms_leave_ratings_and_dislike_vetoes_alone():
    interactions = build_interactions(
        [0, 0, 0],
        [0, 1, 1],
        [1.0, 1.0, -1.0],
        [5.0, 300.0, 300.0],
        [True, False, False],
        1,
        2,
        value_transform=[LOG, LOG, LOG],
    )
    assert interactions.weights.toarray().tolist() == [[1.0, 0.0]]
    assert interactions.negatives.toarray().tolist() == [[0.0, 1.0]]


def test_events_on_one_pair_sum_their_transformed_weights():
    weights = _weights(
        user_index=[0, 0],
        item_index=[0, 0],
        kind_weight=[1.0, 0.5],
        value=[np.e - 1, 4.0],
        is_explicit=[False, False],
        n_users=1,
        n_items=1,
        value_transform=[LOG, NONE],
    )
    np.testing.assert_allclose(weights, [[1.5]], rtol=1e-6)


def test_codes_follow_the_callers_name_order():
    # The catalogue may list the names in another order; codes index the caller's names.
    names = ("confidence", "none", "log")
    weights = implicit_event_weights([1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [0, 1, 2], value_transform_names=names)
    np.testing.assert_allclose(weights, [1 + np.log(4.0), 1.0, np.log(4.0)])


def test_bad_transforms_and_counts_raise_named_errors():
    with pytest.raises(ValueTransformError, match="not non-negative counts"):
        implicit_event_weights([1.0], [-2.0], [LOG])
    with pytest.raises(ValueTransformError, match="not non-negative counts"):
        implicit_event_weights([1.0], [np.nan], [CONFIDENCE])
    with pytest.raises(ValueTransformError, match="must lie in"):
        implicit_event_weights([1.0], [1.0], [len(VALUE_TRANSFORMS)])
    with pytest.raises(ValueTransformError, match="unknown value transform"):
        value_transform_codes(["sqrt"])
    with pytest.raises(ValueTransformError, match="positive and finite"):
        implicit_event_weights([1.0], [1.0], [CONFIDENCE], confidence_alpha=0.0)
    # A negative count under "none" is ignored, as before.
    np.testing.assert_allclose(implicit_event_weights([0.5], [-2.0], [NONE]), [0.5])


def test_transform_codes_must_match_the_events_in_length():
    with pytest.raises(ValueError, match="differ in length"):
        build_interactions([0], [0], [1.0], [1.0], [False], 1, 1, value_transform=[LOG, LOG])
