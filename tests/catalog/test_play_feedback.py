"""Implicit counts (the seeded ``play`` kind) through the feedback API and the kind's validation."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from catalog.array_selectors import catalog_arrays_fetch
from catalog.models import Feedback, FeedbackKind, ValueTransform
from recommender.ml.dataset import VALUE_TRANSFORMS
from tests.factories import ItemFactory, StaffUserFactory, UserProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client():
    client = APIClient()
    client.force_authenticate(StaffUserFactory())
    return client


def test_a_batch_of_play_counts_supersedes_each_pairs_count_and_refuses_negative_counts(staff_client):
    listener = UserProfileFactory(external_id="listener")
    ItemFactory(external_id="song-1")
    ItemFactory(external_id="song-2")
    events = [
        {"user": "listener", "item": "song-1", "kind": "play", "value": 12, "created_at": "2024-05-01T10:00:00Z"},
        {"user": "listener", "item": "song-2", "kind": "play", "value": 3, "created_at": "2024-05-01T10:00:00Z"},
        {"user": "listener", "item": "song-1", "kind": "play", "value": 40, "created_at": "2024-05-02T10:00:00Z"},
    ]
    response = staff_client.post("/api/v1/feedback", {"events": events}, format="json")
    assert response.status_code == 201, response.json()
    assert [event["is_current"] for event in response.json()["events"]] == [True, True, True]
    current = dict(Feedback.objects.filter(user=listener, is_current=True).values_list("item__external_id", "value"))
    assert current == {"song-1": 40.0, "song-2": 3.0}
    assert Feedback.objects.filter(user=listener, is_current=False).get().value == 12.0

    refused = staff_client.post(
        "/api/v1/feedback",
        {"events": [{"user": "listener", "item": "song-2", "kind": "play", "value": -1}]},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["events"]["0"]["value"] == ["A play must be at least 0; got -1."]

    arrays = catalog_arrays_fetch()
    names = [arrays.value_transform_names[code] for code in arrays.feedback_value_transform]
    assert sorted(zip(arrays.feedback_value.tolist(), names, strict=True)) == [(3.0, "log"), (40.0, "log")]


def test_the_schema_documents_play_counts(staff_client):
    schema = staff_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    event = schema["components"]["schemas"]["FeedbackEventInputRequest"]["properties"]
    assert "play" in event["kind"]["description"] and "log(1 + value)" in event["kind"]["description"]


def test_a_value_transform_needs_an_implicit_kind_counting_from_zero():
    kind = FeedbackKind(code="listen", name="Listen", value_transform=ValueTransform.LOG, min_value=None)
    with pytest.raises(ValidationError, match="minimum of 0"):
        kind.full_clean()
    kind.is_explicit, kind.min_value = True, 0.0
    with pytest.raises(ValidationError, match="weighted by its rating"):
        kind.full_clean()
    kind.is_explicit = False
    kind.full_clean()
    assert {kind.value_transform for kind in FeedbackKind.objects.exclude(code="play")} == {"none"}


def test_the_catalogue_offers_exactly_the_transforms_the_core_knows():
    assert set(ValueTransform.values) == set(VALUE_TRANSFORMS)
