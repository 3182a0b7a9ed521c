from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from lightfm import LightFM

from recommender.ml.dataset import FeatureShapeError, Interactions
from recommender.ml.evaluation import evaluate, popularity_scores, random_split
from recommender.ml.training import FittedModel, HyperParameterError, HyperParameters, NonFiniteFactorsError, fit


def _own_cluster_share(model, planted, k=10):
    scores = model.score_items(np.arange(len(planted.user_cluster)))
    scores[planted.data.interactions.positives.toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return planted.item_cluster[top] == planted.user_cluster[:, None]


def test_planted_clusters_are_ranked_first(planted, planted_model):
    own = _own_cluster_share(planted_model, planted)
    assert own[:, :5].all()
    assert own.mean() >= 0.95


def test_beats_popularity_on_held_out_pairs(planted, fast_params):
    split = random_split(planted.data.interactions.positives, planted.data.interactions.weights, 0.2, seed=0)
    train = replace(
        planted.data,
        interactions=Interactions(split.train_positives, split.train_weights, planted.data.interactions.negatives),
    )
    model = fit(train, fast_params)
    ours = evaluate(model.score_items, split.train_positives, split.test_positives, k=5)
    baseline = evaluate(popularity_scores(split.train_positives), split.train_positives, split.test_positives, k=5)
    assert ours["precision_at_5"] > 1.5 * baseline["precision_at_5"]
    assert ours["auc"] > baseline["auc"] + 0.15


def _lightfm_reference(planted, params):
    """Train LightFM directly, the way fit() is documented to, for the exactness check."""
    positives = planted.data.interactions.positives
    model = LightFM(
        no_components=params.no_components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        max_sampled=params.max_sampled,
        random_state=params.random_state,
    )
    user_features = sp.identity(positives.shape[0], dtype=np.float32, format="csr")
    for _ in range(params.epochs):
        model.fit_partial(
            positives.tocoo(),
            user_features=user_features,
            item_features=planted.data.item_features,
            sample_weight=planted.data.interactions.weights.tocoo(),
            num_threads=1,
        )
    return model, user_features


def test_bias_augmented_inner_product_equals_lightfm_predict(planted, planted_model, fast_params):
    reference, user_features = _lightfm_reference(planted, fast_params)
    rng = np.random.default_rng(1)
    users = rng.integers(0, len(planted.data.user_ids), 100).astype(np.int32)
    items = rng.integers(0, len(planted.data.item_ids), 100).astype(np.int32)
    expected = reference.predict(users, items, item_features=planted.data.item_features, user_features=user_features)
    inner = np.einsum(
        "ij,ij->i", planted_model.user_vectors_with_bias()[users], planted_model.item_vectors_with_bias()[items]
    )
    np.testing.assert_allclose(inner, expected, atol=1e-4)
    np.testing.assert_allclose(planted_model.predict(users, items), expected, atol=1e-4)
    np.testing.assert_allclose(planted_model.score_items(users)[np.arange(100), items], expected, atol=1e-4)
    biases, vectors = reference.get_item_representations(planted.data.item_features)
    ours_biases, ours_vectors = planted_model.item_representations()
    np.testing.assert_allclose(ours_vectors, vectors, atol=1e-5)
    np.testing.assert_allclose(ours_biases, biases, atol=1e-5)
    assert planted_model.item_vectors_with_bias().dtype == np.float32
    assert planted_model.item_vectors_with_bias().shape == (len(planted.data.item_ids), fast_params.no_components + 2)


def test_save_load_roundtrip(planted_model, tmp_path):
    path = planted_model.save(tmp_path / "model.npz")
    loaded = FittedModel.load(path)
    users = np.arange(10)
    np.testing.assert_array_equal(loaded.score_items(users), planted_model.score_items(users))
    assert loaded.item_ids.ids.tolist() == planted_model.item_ids.ids.tolist()
    assert loaded.user_ids.ids.tolist() == planted_model.user_ids.ids.tolist()
    assert loaded.item_feature_names == planted_model.item_feature_names
    assert loaded.params == planted_model.params
    assert (loaded.item_identity, loaded.user_identity) == (True, True)


def test_cold_start_item_from_side_features(planted, planted_model):
    genre_a, tag_x = 0, 2
    vector = planted_model.item_vector_from_features([genre_a, tag_x])
    offset = len(planted.data.item_ids)
    expected = 0.5 * (planted_model.item_embeddings[offset + genre_a] + planted_model.item_embeddings[offset + tag_x])
    np.testing.assert_allclose(vector[:-2], expected, rtol=1e-5)
    assert vector[-1] == 1.0
    scores = planted_model.user_vectors_with_bias() @ vector
    assert scores[planted.user_cluster == 0].mean() > scores[planted.user_cluster == 1].mean()
    with pytest.raises(FeatureShapeError, match=r"\[0, 5\)"):
        planted_model.item_vector_from_features([5])


def test_cold_start_needs_side_features(planted):
    model = fit(planted.data, HyperParameters(no_components=4, epochs=1, num_threads=1, use_item_features=False))
    with pytest.raises(FeatureShapeError, match="use_item_features=True"):
        model.item_vector_from_features([0])
    with pytest.raises(FeatureShapeError, match="use_user_features=True"):
        model.user_vector_from_features([0])


def test_on_epoch_and_early_stopping_keeps_best_epoch(planted):
    split = random_split(planted.data.interactions.positives, planted.data.interactions.weights, 0.2, seed=1)
    train = replace(
        planted.data,
        interactions=Interactions(split.train_positives, split.train_weights, planted.data.interactions.negatives),
    )
    calls = []
    params = HyperParameters(no_components=4, epochs=12, num_threads=1, early_stopping_patience=3, early_stopping_k=5)
    model = fit(train, params, validation=split.test_positives, on_epoch=lambda *args: calls.append(args))
    assert [call[0] for call in calls] == list(range(1, len(calls) + 1))
    assert all(call[1] == 12 and call[2] is not None for call in calls)
    reported = [call[2] for call in calls]
    final = evaluate(model.score_items, split.train_positives, split.test_positives, k=5)["precision_at_5"]
    assert final == pytest.approx(max(reported))
    if len(calls) < 12:  # it stopped: the last `patience` epochs did not improve
        assert max(reported[-3:]) <= max(reported[:-3])


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"loss": "hinge"}, "loss"),
        ({"no_components": 0}, "no_components"),
        ({"no_components": 2.5}, "no_components"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"item_alpha": -1e-6}, "item_alpha"),
        ({"epochs": 0}, "epochs"),
        ({"max_sampled": 0}, "max_sampled"),
        ({"num_threads": 0}, "num_threads"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
        ({"early_stopping_k": 0}, "early_stopping_k"),
    ],
)
def test_bad_hyperparameters_raise_named_errors(changes, name):
    with pytest.raises(HyperParameterError, match=name):
        replace(HyperParameters(), **changes).validate()


def test_fit_refuses_inconsistent_requests(planted):
    with pytest.raises(HyperParameterError, match="validation"):
        fit(planted.data, HyperParameters(epochs=1, num_threads=1, early_stopping_patience=2))
    with pytest.raises(HyperParameterError, match="loss"):
        fit(planted.data, HyperParameters(loss="nope"))


def test_divergence_raises_non_finite_factors_error(planted):
    with pytest.raises(NonFiniteFactorsError, match="learning_rate"):
        fit(planted.data, HyperParameters(loss="logistic", learning_rate=1e12, epochs=5, num_threads=1))


def test_check_finite_names_the_bad_array(planted_model):
    broken = replace(planted_model, item_biases=planted_model.item_biases.copy())
    broken.item_biases[3] = np.nan
    with pytest.raises(NonFiniteFactorsError, match="item_biases"):
        broken.check_finite()


@pytest.mark.parametrize("loss", ["bpr", "logistic", "warp-kos"])
def test_other_losses_train(planted, loss):
    model = fit(planted.data, HyperParameters(loss=loss, no_components=4, epochs=3, num_threads=1))
    assert model.score_items([0, 1]).shape == (2, len(planted.data.item_ids))
