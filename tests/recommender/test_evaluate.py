"""`manage.py evaluate` on a planted catalogue: the JSON line, and nothing left behind."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from catalog.models import Feedback
from recommender.models import ModelVersion
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


def test_evaluate_prints_the_three_scorers_and_cleans_up(planted_catalog):
    version = train_inline()
    feedback_before = Feedback.objects.count()
    versions_before = list(ModelVersion.objects.values_list("pk", flat=True))
    out = StringIO()

    call_command("evaluate", "--json", "--k", "10", stdout=out)

    last = json.loads(out.getvalue().strip().splitlines()[-1])
    # The default configuration fits three families: each is also measured alone on the same split.
    assert set(last) == {"pipeline", "model", "popularity", "family:lightfm", "family:als", "family:ease"}
    assert last["pipeline"]["scorer"]["choice"]  # what served the pipeline, and why
    assert last["pipeline"]["scorer"]["reason"]
    for metrics in last.values():
        assert set(metrics) >= {"precision_at_10", "recall_at_10", "ndcg_at_10", "coverage"}
        assert metrics["n_users"] > 0
    # Planted clusters: the pipeline and the model find the held-out cluster items, popularity less so.
    assert last["pipeline"]["precision_at_10"] >= last["model"]["precision_at_10"] - 0.02
    assert last["model"]["precision_at_10"] > last["popularity"]["precision_at_10"]
    assert last["pipeline"]["coverage"] > last["popularity"]["coverage"]
    # The scratch version, its tables and the hidden held-out rows were all rolled back.
    assert Feedback.objects.count() == feedback_before
    assert list(ModelVersion.objects.values_list("pk", flat=True)) == versions_before
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^rec_item_vectors_v[0-9]+$'")
        assert cursor.fetchone()[0] == 1
    assert ModelVersion.objects.get(pk=version.pk).is_active


def test_evaluate_on_a_subset_of_users_scores_all_three_on_that_subset(planted_catalog):
    train_inline()
    out = StringIO()

    call_command("evaluate", "--json", "--max-users", "7", "--no-blend", stdout=out)

    last = json.loads(out.getvalue().strip().splitlines()[-1])
    assert {name: metrics["n_users"] for name, metrics in last.items()} == {"pipeline": 7, "model": 7, "popularity": 7}
    assert last["pipeline"]["blend"] is None
