"""Several families and one learned scorer, chosen on validation data carved from training data only.

The planted two-taste catalogue (tests/recommender/ml/conftest.py) is split 80/20 like the
training service splits a catalogue; `scorer_fit` is handed the training part only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.ml import evaluation
from recommender.ml.dataset import TrainingData
from recommender.ml.families import FAMILIES
from recommender.ml.families.ease import EaseFamily
from recommender.ml.ranker import feature_names, feature_overlap
from recommender.ml.stack import (
    ItemContext,
    ScorerFit,
    StackConfig,
    candidate_pools,
    families_fit,
    family_top_k,
    rated_matrix,
    scorer_fit,
    stack_top_k,
    with_positives,
)
from tests.recommender.ml.conftest import make_planted

ALS = {"factors": 2, "regularization": 1.0, "alpha": 3.0, "iterations": 15, "num_threads": 1, "random_state": 0}


def _config(fast_params, **changes) -> StackConfig:
    lightfm = {**dataclasses.asdict(fast_params), "early_stopping_patience": None}
    defaults = {
        "families": {"lightfm": lightfm, "als": ALS, "ease": {}},
        "search_seconds": 0.0,
        "num_threads": 1,
        # Small pools: the planted catalogue has 60 items and ~90 validation users. The ranker keeps
        # its default trees (200 samples per leaf): smaller leaves overfit this little data.
        "pool_sizes": {"lightfm": 20, "als": 20, "ease": 20},
        "popular_size": 10,
        "min_validation_users": 20,
    }
    return StackConfig(**{**defaults, **changes})


@pytest.fixture(scope="module")
def catalogue():
    return make_planted(n_users=120, n_items=60, seed=3)


@pytest.fixture(scope="module")
def split(catalogue) -> evaluation.Split:
    interactions = catalogue.data.interactions
    return evaluation.random_split(interactions.positives, interactions.weights, 0.2, seed=11)


@pytest.fixture(scope="module")
def train(catalogue, split) -> TrainingData:
    return with_positives(catalogue.data, split.train_positives, split.train_weights)


@pytest.fixture(scope="module")
def chosen(train, fast_params) -> ScorerFit:
    return scorer_fit(train, _config(fast_params))


def _pairs(matrix: sp.spmatrix) -> set[tuple[int, int]]:
    rows, columns = sp.csr_matrix(matrix).nonzero()
    return set(zip(rows.tolist(), columns.tolist(), strict=True))


def test_scorer_fit_fits_its_families_on_part_of_train_and_never_on_the_test_split(
    monkeypatch, train, split, fast_params
):
    # A real EASE fit that keeps the pairs it was fitted on: the only way to see what data
    # scorer_fit handed its families (nothing of the model is replaced).
    fitted_on: list[set[tuple[int, int]]] = []

    class RecordingEase(EaseFamily):
        @classmethod
        def fit(cls, data, params, *, progress=None):
            fitted_on.append(_pairs(data.interactions.positives))
            return super().fit(data, params, progress=progress)

    monkeypatch.setitem(FAMILIES, "ease", RecordingEase)
    result = scorer_fit(train, _config(fast_params))

    train_pairs, test_pairs = _pairs(train.interactions.positives), _pairs(split.test_positives)
    assert test_pairs and not (train_pairs & test_pairs)
    assert len(fitted_on) == 1  # search_seconds=0: one try
    (seen,) = fitted_on
    assert seen < train_pairs  # a strict subset: the validation positives were carved out of train
    assert not (seen & test_pairs)
    # What the ranker is labelled with (train minus the families' part) holds no test pair either,
    # and about validation_fraction of train went there.
    validation = train_pairs - seen
    assert not (validation & test_pairs)
    assert 0.1 < len(validation) / len(train_pairs) < 0.3
    n_validation_users = len({user for user, _ in validation})
    assert result.report["validation_users"] == n_validation_users


def test_a_zero_search_budget_fits_exactly_one_try_per_family(chosen):
    search = chosen.report["search"]
    assert set(search) == {"lightfm", "als", "ease"}
    for rows in search.values():
        assert len(rows) == 1
        assert rows[0]["params"] == "default"
        assert rows[0]["seconds"] >= 0
        assert 0.0 <= rows[0]["precision_at_10"] <= 1.0
    assert chosen.report["search_seconds_budget"] == 0.0


def test_a_generous_budget_tries_every_distinct_grid_entry_once_and_keeps_the_best(train, fast_params):
    config = _config(fast_params, families={"ease": {}, "als": ALS}, search_seconds=600.0)
    result = scorer_fit(train, config)
    ease_rows = result.report["search"]["ease"]
    # The first grid entry is EASE's default l2: fitting it again would spend budget on a copy.
    assert len(ease_rows) == len(EaseFamily.param_grid)
    assert ease_rows[0]["params"] == "default"
    tried = [row["params"] for row in ease_rows[1:]]
    assert len({str(params) for params in tried}) == len(tried)
    best = max(ease_rows, key=lambda row: row["precision_at_10"])
    expected = {} if best["params"] == "default" else best["params"]
    assert {key: result.params["ease"].get(key) for key in expected} == expected
    # ALS's grid overrides the configured factors, regularization and alpha: each is a new try.
    assert len(result.report["search"]["als"]) == 1 + len(FAMILIES["als"].param_grid)


def test_the_chosen_scorer_puts_the_users_cluster_first(catalogue, train, chosen, fast_params):
    # This seeded catalogue chooses the learned ranker, so its path through stack_top_k is the one tested.
    assert chosen.choice == "ranker"
    config = chosen.tuned(_config(fast_params))
    families, seconds = families_fit(train, config)
    assert set(seconds) == {"lightfm", "als", "ease"}
    users = np.arange(len(catalogue.user_cluster))
    top = stack_top_k(families, chosen, train, users, config)
    assert top.shape == (len(users), config.k)
    assert (top >= 0).all()
    # Never an item the user already rated in training.
    rated = rated_matrix(train).toarray() > 0
    assert not rated[users[:, None], top].any()
    own = catalogue.item_cluster[top] == catalogue.user_cluster[:, None]
    assert own[:, :3].all()
    assert own.mean() >= 0.95


def test_the_report_explains_the_choice(chosen):
    report = chosen.report
    assert chosen.choice == "ranker" or chosen.choice.startswith("family:")
    assert set(report["validation"]) == {"lightfm", "als", "ease"}
    assert report["reason"]
    if chosen.choice == "ranker":
        assert chosen.ranker is not None
        assert report["ranker_kind"] in ("lambdarank", "logistic")
        assert sum(report["importances"].values()) == pytest.approx(1.0, abs=1e-3)
        assert set(report["ranker_lift"]) == {"lightfm", "als", "ease"}
    else:
        assert chosen.ranker is None
    assert report["lift_users"] > 0
    assert set(report["on_lift_users"]) >= {"lightfm", "als", "ease"}


def test_too_few_validation_users_let_the_best_family_serve_with_a_reason(train, fast_params):
    result = scorer_fit(train, _config(fast_params, min_validation_users=10_000))
    validation = result.report["validation"]
    best = max(validation, key=lambda name: validation[name]["precision_at_10"])
    assert result.choice == f"family:{best}"
    assert result.ranker is None
    assert f"(< 10000): {best} serves alone" in result.report["reason"]
    assert str(result.report["validation_users"]) in result.report["reason"]


def test_a_family_that_serves_alone_ranks_like_that_family(catalogue, train, fast_params):
    config = _config(fast_params, min_validation_users=10_000)
    result = scorer_fit(train, config)
    families, _ = families_fit(train, result.tuned(config))
    users = np.arange(20)
    name = result.choice.removeprefix("family:")
    np.testing.assert_array_equal(
        stack_top_k(families, result, train, users, config),
        family_top_k(families[name], rated_matrix(train), users, config.k),
    )


def test_tuned_swaps_in_the_searched_parameters_and_keeps_the_order(fast_params):
    config = _config(fast_params)
    fit = ScorerFit(choice="family:ease", ranker=None, report={}, params={"ease": {"l2": 50.0}})
    tuned = fit.tuned(config)
    assert list(tuned.families) == ["lightfm", "als", "ease"]
    assert tuned.families["ease"] == {"l2": 50.0}
    assert tuned.families["als"] == ALS  # not searched: the configured parameters stay
    assert tuned.families["lightfm"] == config.families["lightfm"]
    assert config.families["ease"] == {}  # the original is untouched
    assert dataclasses.replace(tuned, families=config.families) == config


def test_pool_context_features_read_every_rated_item_as_serving_does(catalogue, train):
    # Serving's history (recommender.stacking.user_history) holds the user's positives and her
    # vetoed pairs; the pools the ranker is fitted on must read the same set, or its user_activity
    # and feature_overlap columns mean one thing at fit and another at serving.
    vetoed = np.flatnonzero(catalogue.item_cluster == 1)[:5]
    vetoed = vetoed[train.interactions.positives[0].toarray().ravel()[vetoed] == 0]
    assert len(vetoed) >= 3
    negatives = sp.lil_matrix(train.interactions.shape, dtype=np.float32)
    negatives[0, vetoed] = 1.0
    data = dataclasses.replace(train, interactions=dataclasses.replace(train.interactions, negatives=negatives.tocsr()))
    config = StackConfig(families={"ease": {}}, pool_sizes={"ease": 20}, popular_size=10)
    families, _ = families_fit(data, config)
    items = ItemContext.build(data)
    ((user, candidates, features),) = candidate_pools(families, rated_matrix(data), items, np.array([0]), config)
    column = {name: features[:, i] for i, name in enumerate(feature_names(families))}
    history = np.union1d(data.interactions.positives[0].indices, vetoed)
    assert user == 0
    assert not set(vetoed) & set(candidates.tolist())  # a vetoed item is rated: never a candidate
    np.testing.assert_allclose(column["user_activity"], np.log1p(len(history)))
    np.testing.assert_allclose(column["feature_overlap"], feature_overlap(items.features, history, candidates))


def test_validation_beyond_its_cell_budget_learns_on_a_seeded_sample_of_users(train, fast_params):
    n_items = train.interactions.positives.shape[1]
    result = scorer_fit(train, _config(fast_params, evaluation_budget_cells=25 * n_items, min_validation_users=10))

    assert result.report["validation_users"] == 25
    again = scorer_fit(train, _config(fast_params, evaluation_budget_cells=25 * n_items, min_validation_users=10))
    assert again.report["validation_users"] == 25
    assert again.report["validation"] == result.report["validation"]  # the same seeded users
