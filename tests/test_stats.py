"""`manage.py stats`: catalogue counts and the active model, one JSON object with --json."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from catalog.models import Feature, Feedback, Item, ItemFeature, UserFeature, UserProfile

pytestmark = pytest.mark.django_db
WHEN = datetime(2024, 5, 1, tzinfo=UTC)


def _stats_json() -> dict:
    out = io.StringIO()
    call_command("stats", "--json", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object, nothing around it
    return json.loads(lines[0])


def test_stats_count_current_state_by_kind_and_features_by_type():
    people = [
        UserProfile.objects.create(user=get_user_model().objects.create(username=f"u{n}"), external_id=f"u{n}")
        for n in range(2)
    ]
    items = [Item.objects.create(external_id=f"i{n}", title=f"Item {n}", is_active=n != 2) for n in range(3)]
    comedy = Feature.objects.create(subject="item", type="genre", value="Comedy")
    Feature.objects.create(subject="item", type="genre", value="Drama")
    segment = Feature.objects.create(subject="user", type="segment", value="1")
    ItemFeature.objects.create(item=items[0], feature=comedy)
    UserFeature.objects.create(profile=people[0], feature=segment)
    # A re-rating: the old rating is superseded and must not be counted.
    Feedback.objects.create(user=people[0], item=items[0], kind_id="rating", value=2, created_at=WHEN, is_current=False)
    Feedback.objects.create(user=people[0], item=items[0], kind_id="rating", value=4, created_at=WHEN, is_current=True)
    Feedback.objects.create(user=people[1], item=items[1], kind_id="rating", value=5, created_at=WHEN, is_current=True)
    for _ in range(3):  # repeatable events all count
        Feedback.objects.create(user=people[1], item=items[2], kind_id="view", created_at=WHEN, is_current=None)

    stats = _stats_json()

    assert stats["users"] == 2
    assert (stats["items"], stats["items_active"]) == (3, 2)
    assert stats["feedback"] == {"rating": 2, "view": 3}
    assert stats["features"] == {"item": {"genre": 2}, "user": {"segment": 1}}
    assert "active_model" in stats and stats["active_model"] is None


def test_stats_on_an_empty_catalogue():
    stats = _stats_json()
    assert stats == {"users": 0, "items": 0, "items_active": 0, "feedback": {}, "features": {}, "active_model": None}


def test_stats_plain_text_lists_the_counts():
    Item.objects.create(external_id="only", title="Only item")
    out = io.StringIO()
    call_command("stats", stdout=out)
    assert "items         1 (1 active)" in out.getvalue()


def test_stats_name_the_active_model_with_its_metrics():
    from recommender.models import ModelVersion, VersionStatus

    ModelVersion.objects.create(status=VersionStatus.READY, metrics={"precision_at_10": 0.1})
    active = ModelVersion.objects.create(status=VersionStatus.ACTIVE, metrics={"precision_at_10": 0.25})
    assert _stats_json()["active_model"] == {"id": active.id, "metrics": {"precision_at_10": 0.25}}
    out = io.StringIO()
    call_command("stats", stdout=out)
    assert f"active model  {active.id}" in out.getvalue()
