"""The catalogue REST API over HTTP (DRF's APIClient) on the real PostgreSQL."""

import pytest
from rest_framework.test import APIClient

from catalog.models import Feedback, Item, UserProfile
from catalog.services import feedback_record
from tests.factories import FeedbackFactory, ItemFactory, StaffUserFactory, UserFactory, UserProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def alice():
    return UserProfileFactory(external_id="alice")


@pytest.fixture
def alice_client(alice):
    client = APIClient()
    client.force_authenticate(alice.user)
    return client


@pytest.fixture
def staff_client():
    client = APIClient()
    client.force_authenticate(StaffUserFactory())
    return client


@pytest.fixture
def movie():
    return ItemFactory(external_id="m1", title="Toy Story", features=[("genre", "Comedy"), ("year", "1995", 0.5)])


# ---------------------------------------------------------------- feedback: auth


def test_anonymous_feedback_is_refused_and_writes_nothing(anonymous, movie):
    response = anonymous.post("/api/v1/feedback", {"item": "m1", "kind": "like"}, format="json")
    assert response.status_code in (401, 403)
    assert response["Content-Type"] == "application/json"
    assert Feedback.objects.count() == 0


def test_user_records_for_self_with_or_without_naming_self(alice_client, alice, movie):
    response = alice_client.post("/api/v1/feedback", {"item": "m1", "kind": "rating", "value": 4}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["user"], body["item"], body["kind"], body["value"], body["is_current"], body["replayed"]) == (
        "alice",
        "m1",
        "rating",
        4.0,
        True,
        False,
    )
    response = alice_client.post(
        "/api/v1/feedback/", {"user": "alice", "item": "m1", "kind": "rating", "value": 5}, format="json"
    )
    assert response.status_code == 201
    assert list(Feedback.objects.filter(user=alice).order_by("id").values_list("value", "is_current")) == [
        (4.0, False),
        (5.0, True),
    ]


def test_user_cannot_post_for_another_user(alice_client, movie):
    bob = UserProfileFactory(external_id="bob")
    response = alice_client.post("/api/v1/feedback", {"user": "bob", "item": "m1", "kind": "like"}, format="json")
    assert response.status_code == 403
    batch = {"events": [{"item": "m1", "kind": "view"}, {"user": "bob", "item": "m1", "kind": "like"}]}
    assert alice_client.post("/api/v1/feedback", batch, format="json").status_code == 403
    assert Feedback.objects.count() == 0
    assert bob.feedback.count() == 0


def test_staff_can_post_for_another_user(staff_client, movie):
    bob = UserProfileFactory(external_id="bob")
    response = staff_client.post("/api/v1/feedback", {"user": "bob", "item": "m1", "kind": "like"}, format="json")
    assert response.status_code == 201
    assert list(bob.feedback.values_list("kind", "is_current")) == [("like", True)]


def test_signed_up_user_without_profile_gets_one_on_first_feedback(movie):
    user = UserFactory()
    client = APIClient()
    client.force_authenticate(user)
    response = client.post("/api/v1/feedback", {"item": "m1", "kind": "view"}, format="json")
    assert response.status_code == 201
    assert response.json()["user"] == f"u-{user.pk}"
    assert UserProfile.objects.get(user=user).feedback.count() == 1


# ---------------------------------------------------------------- feedback: validation never 500s


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"item": "m1", "kind": "rating", "value": 7}, "value"),
        ({"item": "nope", "kind": "like"}, "item"),
        ({"item": "", "kind": "like"}, "item"),
        ({"item": "m1", "kind": "stars"}, "kind"),
        ({"item": "m1", "kind": "view", "value": "NaN"}, "value"),
        ({"item": "m1", "kind": "view", "value": "Infinity"}, "value"),
        ({"item": "m1", "kind": "view", "value": 10**400}, "value"),
        ({"item": "m1", "kind": "view", "value": 1e300}, "value"),
        ({"item": "m1", "kind": "view", "value": [1]}, "value"),
        ({"item": ["m1"], "kind": "view"}, "item"),
        ({"item": "m1", "kind": "view", "created_at": "yesterday"}, "created_at"),
        ({"item": "m1" * 100, "kind": "view"}, "item"),
        ({"item": "m1\x00", "kind": "view"}, "item"),
        ({"user": "", "item": "m1", "kind": "view"}, "user"),
        ({"kind": "view"}, "item"),
    ],
)
def test_bad_feedback_is_a_json_400_with_the_field_named(alice_client, movie, payload, field):
    response = alice_client.post("/api/v1/feedback", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Feedback.objects.count() == 0


def test_rating_seven_message_is_clear(alice_client, movie):
    response = alice_client.post("/api/v1/feedback", {"item": "m1", "kind": "rating", "value": 7}, format="json")
    assert response.json() == {"value": ["A rating must be between 0.5 and 5; got 7."]}


def test_raw_nan_literal_and_broken_json_are_400(alice_client, movie):
    for body in ('{"item": "m1", "kind": "view", "value": NaN}', '{"item": "m1", ', "[1, 2]", '"x"'):
        response = alice_client.post("/api/v1/feedback", body, content_type="application/json")
        assert response.status_code == 400, (body, response.content)
        assert response["Content-Type"] == "application/json"
    assert Feedback.objects.count() == 0


def test_batch_with_bad_event_three_writes_nothing(alice_client, movie):
    ItemFactory(external_id="m2")
    events = [
        {"item": "m1", "kind": "rating", "value": 4},
        {"item": "m2", "kind": "view"},
        {"item": "m2", "kind": "rating", "value": 7},
        {"item": "m1", "kind": "like"},
    ]
    response = alice_client.post("/api/v1/feedback", {"events": events}, format="json")
    assert response.status_code == 400
    assert response.json() == {"events": {"2": {"value": ["A rating must be between 0.5 and 5; got 7."]}}}
    events[2]["value"] = "NaN"  # caught by the input serializer this time, same shape of answer
    response = alice_client.post("/api/v1/feedback", {"events": events}, format="json")
    assert response.status_code == 400
    assert list(response.json()["events"]) == ["2"]
    assert Feedback.objects.count() == 0

    events[2]["value"] = 3
    response = alice_client.post("/api/v1/feedback", {"events": events}, format="json")
    assert response.status_code == 201
    assert [(e["item"], e["kind"], e["is_current"]) for e in response.json()["events"]] == [
        ("m1", "rating", True),
        ("m2", "view", None),
        ("m2", "rating", True),
        ("m1", "like", True),
    ]
    assert Feedback.objects.count() == 4


def test_repeated_idempotency_key_answers_200_and_writes_nothing(alice_client, movie):
    payload = {"item": "m1", "kind": "rating", "value": 3, "idempotency_key": "abc"}
    first = alice_client.post("/api/v1/feedback", payload, format="json")
    second = alice_client.post("/api/v1/feedback", payload, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["replayed"] is True
    assert Feedback.objects.count() == 1


def test_idempotency_key_of_another_users_event_is_not_leaked(alice_client, movie):
    bob = UserProfileFactory(external_id="bob")
    feedback_record(profile=bob, item=movie, kind="rating", value=2, idempotency_key="shared")
    response = alice_client.post(
        "/api/v1/feedback", {"item": "m1", "kind": "rating", "idempotency_key": "shared"}, format="json"
    )
    assert response.status_code == 409  # the key is bound to another event: a conflict, not a malformed request
    assert "idempotency_key" in response.json()
    assert "bob" not in response.content.decode()
    assert Feedback.objects.count() == 1


# ---------------------------------------------------------------- user feedback list


def test_user_feedback_list_is_for_owner_or_staff(alice_client, staff_client, anonymous, alice, movie):
    FeedbackFactory.create_batch(3, user=alice, item=movie)
    bob = UserProfileFactory(external_id="bob")
    assert anonymous.get("/api/v1/users/alice/feedback").status_code in (401, 403)
    assert alice_client.get("/api/v1/users/bob/feedback").status_code == 403
    response = alice_client.get("/api/v1/users/alice/feedback?page_size=2")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]
    assert staff_client.get("/api/v1/users/alice/feedback/").json()["count"] == 3
    assert staff_client.get(f"/api/v1/users/{bob.external_id}/feedback").json()["count"] == 0
    assert staff_client.get("/api/v1/users/nobody/feedback").status_code == 404


# ---------------------------------------------------------------- items


def test_items_list_is_public_paginated_and_capped(anonymous):
    ItemFactory.create_batch(205)
    response = anonymous.get("/api/v1/items?page_size=1000")
    assert response.status_code == 200
    assert response.json()["count"] == 205
    assert len(response.json()["results"]) == 200
    assert len(anonymous.get("/api/v1/items/?page_size=3").json()["results"]) == 3
    assert anonymous.get("/api/v1/items?sort=bogus").status_code == 400


def test_item_retrieve_shows_weighted_features(anonymous, movie):
    response = anonymous.get("/api/v1/items/m1")
    assert response.status_code == 200
    assert response.json()["features"] == [
        {"type": "genre", "value": "Comedy", "weight": 1.0},
        {"type": "year", "value": "1995", "weight": 0.5},
    ]
    assert anonymous.get("/api/v1/items/missing").status_code == 404


def test_item_create_update_delete_is_staff_only(alice_client, staff_client, anonymous):
    payload = {"external_id": "m9", "title": "Heat", "features": [{"type": "genre", "value": "Crime"}]}
    assert anonymous.post("/api/v1/items", payload, format="json").status_code in (401, 403)
    assert alice_client.post("/api/v1/items", payload, format="json").status_code == 403
    assert Item.objects.count() == 0

    response = staff_client.post("/api/v1/items", payload, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["features"] == [{"type": "genre", "value": "Crime", "weight": 1.0}]

    assert alice_client.patch("/api/v1/items/m9", {"title": "X"}, format="json").status_code == 403
    response = staff_client.patch(
        "/api/v1/items/m9",
        {"title": "Heat (1995)", "features": [{"type": "genre", "value": "Drama", "weight": 2}]},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["title"], response.json()["features"]) == (
        "Heat (1995)",
        [{"type": "genre", "value": "Drama", "weight": 2.0}],
    )

    assert alice_client.delete("/api/v1/items/m9").status_code == 403
    assert staff_client.delete("/api/v1/items/m9/").status_code == 204
    assert Item.objects.get(external_id="m9").is_active is False  # soft delete keeps history
    assert anonymous.get("/api/v1/items/m9").status_code == 404
    assert staff_client.get("/api/v1/items/m9").json()["is_active"] is False
    assert anonymous.get("/api/v1/items").json()["count"] == 0
    assert staff_client.get("/api/v1/items?include_inactive=true").json()["count"] == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"external_id": "", "title": "x"}, "external_id"),
        ({"external_id": "   ", "title": "x"}, "external_id"),
        ({"external_id": "n", "title": "x", "metadata": [1]}, "metadata"),
        ({"external_id": "n", "title": "x", "metadata": {"a": "\x00"}}, "metadata"),
        ({"external_id": "n", "title": "x", "features": [{"type": "bad type", "value": "x"}]}, "features"),
        (
            {"external_id": "n", "title": "x", "features": [{"type": "genre", "value": "x", "weight": "NaN"}]},
            "features",
        ),
        ({"external_id": "n", "title": "x", "features": [{"type": "genre", "value": "x", "weight": -1}]}, "features"),
        ({"external_id": "n", "title": "x", "published_at": "not a date"}, "published_at"),
    ],
)
def test_bad_item_is_a_json_400(staff_client, movie, payload, field):
    response = staff_client.post("/api/v1/items", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Item.objects.count() == 1


def test_an_external_id_already_taken_is_a_409_with_the_field_named(staff_client, movie):
    ItemFactory(external_id="m2")
    created = staff_client.post("/api/v1/items", {"external_id": " m1 ", "title": "Copy"}, format="json")
    renamed = staff_client.patch("/api/v1/items/m2", {"external_id": "m1"}, format="json")
    for response in (created, renamed):
        assert response.status_code == 409, response.content
        assert list(response.json()) == ["external_id"]
        assert "already exists" in response.json()["external_id"][0]
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["m1", "m2"]


def test_a_batch_event_reusing_a_key_for_another_event_is_a_409_and_writes_nothing(alice_client, movie):
    other = ItemFactory(external_id="m2")
    events = [
        {"item": "m1", "kind": "like", "idempotency_key": "k1"},
        {"item": other.external_id, "kind": "like", "idempotency_key": "k1"},
    ]
    response = alice_client.post("/api/v1/feedback", {"events": events}, format="json")
    assert response.status_code == 409, response.content
    assert list(response.json()["events"]) == ["1"] and "idempotency_key" in response.json()["events"]["1"]
    assert Feedback.objects.count() == 0


# ---------------------------------------------------------------- users


def test_a_taken_user_id_or_username_is_a_409_and_a_malformed_username_a_400(staff_client, alice):
    taken_id = staff_client.post("/api/v1/users", {"external_id": "alice"}, format="json")
    taken_username = staff_client.post(
        "/api/v1/users", {"external_id": "a2", "username": alice.user.username}, format="json"
    )
    malformed = staff_client.post(
        "/api/v1/users", {"external_id": "a3", "username": "no spaces allowed"}, format="json"
    )
    assert (taken_id.status_code, list(taken_id.json())) == (409, ["external_id"])
    assert (taken_username.status_code, list(taken_username.json())) == (409, ["username"])
    assert (malformed.status_code, list(malformed.json())) == (400, ["username"])
    assert UserProfile.objects.count() == 1


def test_users_list_and_create_are_staff_only(alice_client, staff_client, alice):
    assert alice_client.get("/api/v1/users").status_code == 403
    assert alice_client.post("/api/v1/users", {"external_id": "x"}, format="json").status_code == 403
    response = staff_client.post(
        "/api/v1/users", {"external_id": "42", "features": [{"type": "age", "value": "25-34"}]}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["features"] == [{"type": "age", "value": "25-34", "weight": 1.0}]
    assert staff_client.post("/api/v1/users", {"external_id": "42"}, format="json").status_code == 409
    assert staff_client.get("/api/v1/users").json()["count"] == 2


def test_user_detail_is_for_owner_or_staff(alice_client, staff_client, alice):
    UserProfileFactory(external_id="bob")
    assert alice_client.get("/api/v1/users/alice").json()["external_id"] == "alice"
    assert alice_client.get("/api/v1/users/bob").status_code == 403
    response = alice_client.patch(
        "/api/v1/users/alice", {"features": [{"type": "age", "value": "18-24"}]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["features"] == [{"type": "age", "value": "18-24", "weight": 1.0}]
    assert alice_client.patch("/api/v1/users/alice", {"external_id": "queen"}, format="json").status_code == 403
    assert staff_client.patch("/api/v1/users/alice/", {"external_id": "queen"}, format="json").status_code == 200
    assert UserProfile.objects.filter(external_id="queen").exists()


def test_openapi_schema_lists_paths_without_trailing_slashes(anonymous):
    response = anonymous.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = set(response.json()["paths"])
    assert {
        "/api/v1/items",
        "/api/v1/items/{external_id}",
        "/api/v1/users",
        "/api/v1/users/{external_id}",
        "/api/v1/users/{external_id}/feedback",
        "/api/v1/feedback",
    } <= paths
    assert not any(path.startswith("/api/v1/") and path.endswith("/") for path in paths)
