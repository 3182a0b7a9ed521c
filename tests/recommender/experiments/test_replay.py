"""`manage.py evaluate --experiment NAME`: every variant's home pipeline on one held-out split,
side by side; a clearly worse variant is named; nothing is left behind."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from catalog.models import Feedback
from recommender.experiments.services import VariantSpec, experiment_create
from recommender.models import ModelVersion
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


def _popular_pool_against_default(name: str = "pools"):
    return experiment_create(
        name=name,
        surface="home",
        variants=[
            VariantSpec(key="A", share=50, is_control=True, candidate_sizes={"popular": 50}),
            VariantSpec(key="B", share=50),
        ],
    )


@pytest.fixture
def wide_catalog(db):
    """Four clusters of 60 items: the 50 most popular items hold only each cluster's head, which
    its users have mostly rated, so a popular-only pool misses the held-out tail items."""
    catalog = build_planted_catalog(clusters=4, users_per_cluster=20, items_per_cluster=60, ratings_per_user=15)
    return catalog, train_inline()


def _replay(*args: str) -> tuple[str, dict]:
    out = StringIO()
    call_command("evaluate", "--experiment", *args, stdout=out)
    text = out.getvalue()
    return text, json.loads(text.strip().splitlines()[-1])


def test_the_replay_leaves_nothing_behind_and_trains_once_per_snapshot(wide_catalog):
    _, version = wide_catalog
    _popular_pool_against_default()
    feedback_before = Feedback.objects.count()
    versions_before = list(ModelVersion.objects.values_list("pk", flat=True))

    text, last = _replay("pools", "--max-users", "9", "--no-blend")

    assert {key: metrics["n_users"] for key, metrics in last["variants"].items()} == {"A": 9, "B": 9}
    assert {metrics["version_id"] for metrics in last["variants"].values()} == {version.pk}
    assert text.count("evaluation model trained on") == 1  # both variants name the active version
    assert Feedback.objects.count() == feedback_before
    assert list(ModelVersion.objects.values_list("pk", flat=True)) == versions_before
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^rec_item_vectors_v[0-9]+$'")
        assert cursor.fetchone()[0] == 1
    assert ModelVersion.objects.get(pk=version.pk).is_active


def test_an_unknown_experiment_is_refused_by_name(wide_catalog):
    _popular_pool_against_default()

    with pytest.raises(CommandError, match=r"No experiment is named 'nope'; known: 'pools'"):
        call_command("evaluate", "--experiment", "nope", stdout=StringIO())
