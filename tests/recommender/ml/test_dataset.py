import numpy as np
import pytest

from recommender.ml.dataset import (
    FeatureShapeError,
    IdMap,
    Interactions,
    TrainingData,
    UnknownIdError,
    build_feature_matrix,
    build_interactions,
)


class TestIdMap:
    def test_from_ids_deduplicates_in_first_appearance_order(self):
        id_map = IdMap.from_ids(["b", "a", "b", "c", "a"])
        assert id_map.ids.tolist() == ["b", "a", "c"]
        assert len(id_map) == 3

    def test_index_of_is_vectorised_and_inverts_ids(self):
        id_map = IdMap.from_ids([30, 10, 20])
        assert id_map.index_of([20, 30, 20, 10]).tolist() == [2, 0, 2, 1]
        assert id_map.ids[id_map.index_of([10, 20])].tolist() == [10, 20]

    def test_unknown_ids_raise_or_are_flagged(self):
        id_map = IdMap.from_ids(["x", "y"])
        with pytest.raises(UnknownIdError, match="missing=-1"):
            id_map.index_of(["y", "nope"])
        assert id_map.index_of(["y", "nope", "x"], missing=-1).tolist() == [1, -1, 0]
        assert "x" in id_map and "zz" not in id_map

    def test_duplicates_rejected_by_constructor(self):
        with pytest.raises(ValueError, match="from_ids"):
            IdMap([1, 1])

    def test_arrays_roundtrip(self, tmp_path):
        id_map = IdMap.from_ids(np.array(["u1", "u22", "u3"], dtype=object))
        np.savez(tmp_path / "m.npz", **id_map.to_arrays("user"))
        with np.load(tmp_path / "m.npz", allow_pickle=False) as arrays:
            loaded = IdMap.from_arrays(arrays, "user")
        assert loaded.ids.tolist() == ["u1", "u22", "u3"]
        assert loaded.index_of(["u3"]).tolist() == [2]


class TestBuildFeatureMatrix:
    def test_identity_plus_weighted_side_features_l1_normalised(self):
        matrix = build_feature_matrix(3, [0, 0, 2], [0, 1, 1], [1.0, 3.0, 1.0], 2)
        assert matrix.shape == (3, 5)
        assert matrix.dtype == np.float32
        np.testing.assert_allclose(
            matrix.toarray(),
            [
                [0.2, 0, 0, 0.2, 0.6],
                [0, 1, 0, 0, 0],
                [0, 0, 0.5, 0, 0.5],
            ],
            rtol=1e-6,
        )

    def test_without_identity_or_normalisation(self):
        matrix = build_feature_matrix(2, [0, 0, 1], [1, 1, 0], [2.0, 1.0, 4.0], 3, identity=False, normalize=False)
        assert matrix.shape == (2, 3)
        np.testing.assert_allclose(matrix.toarray(), [[0, 3, 0], [4, 0, 0]])

    def test_out_of_range_feature_and_length_mismatch_raise(self):
        with pytest.raises(FeatureShapeError, match=r"\[0, 2\)"):
            build_feature_matrix(3, [0], [2], None, 2)
        with pytest.raises(FeatureShapeError, match="same length"):
            build_feature_matrix(3, [0, 1], [0], None, 2)


class TestBuildInteractions:
    def test_weighting_rules(self):
        events = [  # user, item, kind_weight, value, is_explicit
            (0, 0, 1.0, 5.0, True),  # 5/5 rating: weight 1.0
            (0, 1, 1.0, 4.0, True),  # 4/5 rating: weight 0.8
            (0, 2, 1.0, 2.0, True),  # low rating: veto ...
            (0, 2, 0.5, 0.0, False),  # ... so this view does not count
            (1, 0, 0.5, 0.0, False),  # two views sum to 1.0
            (1, 0, 0.5, 0.0, False),
            (1, 1, 0.5, 0.0, False),  # view then dislike: removed
            (1, 1, -1.0, 0.0, False),
            (1, 2, 0.0, 0.0, False),  # zero-weight kind: ignored
            (2, 3, 2.0, 0.0, False),  # purchase-like kind weight 2
        ]
        u, i, w, v, e = map(np.array, zip(*events, strict=True))
        result = build_interactions(u, i, w, v, e, 3, 4)
        np.testing.assert_allclose(
            result.weights.toarray(),
            [
                [1.0, 0.8, 0, 0],
                [1.0, 0, 0, 0],
                [0, 0, 0, 2.0],
            ],
            rtol=1e-6,
        )
        assert result.positives.toarray().tolist() == (result.weights.toarray() > 0).astype(float).tolist()
        assert result.positives.dtype == np.float32 and result.weights.dtype == np.float32
        assert np.array_equal(result.positives.indices, result.weights.indices)
        assert result.negatives.toarray()[[0, 1], [2, 1]].tolist() == [1.0, 1.0]
        assert result.negatives.nnz == 2

    def test_positive_threshold_is_configurable(self):
        result = build_interactions([0, 0], [0, 1], [1, 1], [3.0, 2.0], [True, True], 1, 2, positive_threshold=3.0)
        np.testing.assert_allclose(result.weights.toarray(), [[1.0, 0.0]])

    def test_exponential_time_decay_and_last_seen(self):
        day = 86_400.0
        now = 100 * day
        result = build_interactions(
            [0, 0, 0],
            [0, 0, 1],
            [1.0, 1.0, 1.0],
            [0, 0, 0],
            [False] * 3,
            1,
            2,
            timestamps=[now, now - 10 * day, now - 20 * day],
            half_life_days=10.0,
        )
        np.testing.assert_allclose(result.weights.toarray(), [[1.5, 0.25]], rtol=1e-6)
        np.testing.assert_allclose(result.timestamps.toarray(), [[now, now - 20 * day]])

    def test_datetime64_timestamps_with_explicit_now(self):
        times = np.array(["2024-01-01", "2024-01-11"], dtype="datetime64[s]")
        result = build_interactions(
            [0, 1],
            [0, 0],
            [1.0, 1.0],
            [0, 0],
            [False, False],
            2,
            1,
            timestamps=times,
            now=np.datetime64("2024-01-21"),
            half_life_days=10.0,
        )
        np.testing.assert_allclose(result.weights.toarray().ravel(), [0.25, 0.5], rtol=1e-6)

    def test_decay_needs_timestamps_and_lengths_must_match(self):
        with pytest.raises(ValueError, match="timestamps"):
            build_interactions([0], [0], [1.0], [0.0], [False], 1, 1, half_life_days=5.0)
        with pytest.raises(FeatureShapeError, match="one entry per event"):
            build_interactions([0, 0], [0], [1.0], [0.0], [False], 1, 1)


def test_training_data_checks_shapes():
    interactions = build_interactions([0], [0], [1.0], [0.0], [False], 2, 2)
    with pytest.raises(FeatureShapeError, match="id maps"):
        TrainingData(user_ids=IdMap.from_ids([1]), item_ids=IdMap.from_ids([1, 2]), interactions=interactions)
    features = build_feature_matrix(2, [0], [0], None, 1)
    with pytest.raises(FeatureShapeError, match="names"):
        TrainingData(
            user_ids=IdMap.from_ids([1, 2]),
            item_ids=IdMap.from_ids([1, 2]),
            interactions=interactions,
            item_features=features,
            item_feature_names=["only-one"],
        )
    assert isinstance(interactions, Interactions) and interactions.shape == (2, 2)


def test_build_interactions_with_no_positive_event_gives_empty_matrices():
    interactions = build_interactions(
        [0, 1], [0, 1], [1.0, 1.0], [2.0, 1.0], [True, True], 2, 2, positive_threshold=4.0, timestamps=[10.0, 20.0]
    )
    assert interactions.positives.nnz == 0
    assert interactions.timestamps.nnz == 0
