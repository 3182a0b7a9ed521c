"""A planted two-taste catalogue: cluster-A users like cluster-A items, cluster-B users cluster-B items."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from recommender.ml.dataset import IdMap, TrainingData, build_feature_matrix, build_interactions
from recommender.ml.training import HyperParameters


@dataclass
class PlantedCatalogue:
    data: TrainingData
    user_cluster: np.ndarray  # (n_users,) 0 or 1
    item_cluster: np.ndarray  # (n_items,) 0 or 1
    n_side_features: int


def make_planted(
    n_users: int = 80, n_items: int = 60, density: float = 0.35, noise: float = 0.02, seed: int = 0
) -> PlantedCatalogue:
    """Users touch a random ``density`` share of their own cluster's items and ``noise`` of the other's.

    Item side features: column 0 = "genre:a", 1 = "genre:b" (the planted truth), 2..4 = random tags.
    """
    rng = np.random.default_rng(seed)
    user_cluster = np.arange(n_users) % 2
    item_cluster = np.arange(n_items) % 2
    same = user_cluster[:, None] == item_cluster[None, :]
    liked = rng.random((n_users, n_items)) < np.where(same, density, noise)
    users, items = np.nonzero(liked)
    n = len(users)
    # Half the events are 5-star ratings, half are views, so both weighting paths are exercised.
    explicit = rng.random(n) < 0.5
    interactions = build_interactions(
        users, items, np.ones(n), np.where(explicit, 5.0, 0.0), explicit, n_users, n_items
    )
    tag = rng.integers(0, 3, n_items)
    feature_items = np.concatenate([np.arange(n_items), np.arange(n_items)])
    feature_columns = np.concatenate([item_cluster, 2 + tag])
    n_side = 5
    item_features = build_feature_matrix(n_items, feature_items, feature_columns, None, n_side)
    names = [f"item:{i}" for i in range(n_items)] + ["genre:a", "genre:b", "tag:x", "tag:y", "tag:z"]
    data = TrainingData(
        user_ids=IdMap.from_ids([f"u{i}" for i in range(n_users)]),
        item_ids=IdMap.from_ids(np.arange(n_items) + 1000),
        interactions=interactions,
        item_features=item_features,
        item_feature_names=names,
    )
    return PlantedCatalogue(data=data, user_cluster=user_cluster, item_cluster=item_cluster, n_side_features=n_side)


@pytest.fixture(scope="session")
def planted() -> PlantedCatalogue:
    return make_planted()


@pytest.fixture(scope="session")
def fast_params() -> HyperParameters:
    # One thread: LightFM's parallel SGD is not reproducible run to run.
    return HyperParameters(no_components=8, epochs=20, num_threads=1, random_state=0)


@pytest.fixture(scope="session")
def planted_model(planted, fast_params):
    from recommender.ml.training import fit

    return fit(planted.data, fast_params)
