"""A planted catalogue with a trained, active model, shared by the candidate-source tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.utils import timezone

from recommender.models import ModelVersion
from recommender.vectors import store
from tests.recommender.conftest import PlantedCatalog, build_planted_catalog
from tests.recommender.test_training import train_inline


@dataclass
class Trained:
    catalog: PlantedCatalog
    version: ModelVersion

    def own_item_ids(self, cluster: int) -> set[int]:
        return {item.pk for item in self.catalog.items_by_cluster[cluster]}

    def user_vector(self, profile_id: int):
        return store.user_vector_fetch(version_id=self.version.pk, profile_id=profile_id)


@pytest.fixture
def trained(db) -> Trained:
    catalog = build_planted_catalog(users_per_cluster=15, items_per_cluster=30, ratings_per_user=10)
    return Trained(catalog=catalog, version=train_inline())


@pytest.fixture
def now():
    return timezone.now()
