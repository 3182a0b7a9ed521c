"""Recommender API: auth (own vs other user, staff), k validation, JSON errors, rules and models."""

from __future__ import annotations

import logging
import time

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from recommender import generations
from recommender.models import ModelVersion, VersionStatus
from tests.factories import StaffUserFactory, UserFactory, UserProfileFactory
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def served(planted_catalog):
    return planted_catalog, train_inline()


def test_rating_through_the_api_changes_the_users_recommendations_within_a_second(
    served, django_capture_on_commit_callbacks
):
    catalog, version = served
    profile = catalog.profiles_by_cluster[0][0]
    client = client_for(profile.user)
    before = client.get(f"/api/v1/users/{profile.external_id}/recommendations?k=10").json()
    assert before["fallback"] is False and before["version"] == version.pk
    events = [{"item": item.external_id, "kind": "rating", "value": 5} for item in catalog.items_by_cluster[1][:6]]

    started = time.perf_counter()
    with django_capture_on_commit_callbacks(execute=True):
        posted = client.post("/api/v1/feedback", {"events": events}, format="json")
    after = client.get(f"/api/v1/users/{profile.external_id}/recommendations?k=10").json()
    elapsed = time.perf_counter() - started

    assert posted.status_code == 201, posted.content
    assert elapsed < 1.0
    assert after["cached"] is False
    assert [i["external_id"] for i in after["items"]] != [i["external_id"] for i in before["items"]]
    rated = {event["item"] for event in events}
    assert not rated & {i["external_id"] for i in after["items"]}


def test_recommendations_carry_explanations(served):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[1][0]
    body = client_for(profile.user).get(f"/api/v1/users/{profile.external_id}/recommendations").json()
    assert len(body["items"]) == 10
    first = body["items"][0]
    assert set(first) >= {"external_id", "title", "score", "sources", "because_you_liked", "rules"}
    assert first["sources"]
    assert any(
        reason.startswith("Because you liked ") for item in body["items"] for reason in item["because_you_liked"]
    )
    assert isinstance(body["rules_applied"], list)


def test_only_the_user_or_staff_may_read_recommendations(served):
    catalog, _ = served
    profile = catalog.profiles_by_cluster[0][0]
    url = f"/api/v1/users/{profile.external_id}/recommendations"

    assert APIClient().get(url).status_code in (401, 403)
    other = client_for(UserFactory()).get(url)
    assert other.status_code == 403 and "own" in other.json()["detail"]
    assert client_for(StaffUserFactory()).get(url).status_code == 200
    missing = client_for(StaffUserFactory()).get("/api/v1/users/nobody/recommendations")
    assert missing.status_code == 404 and "detail" in missing.json()


@pytest.mark.parametrize("k", ["0", "abc", "-3", ""])
def test_invalid_k_is_a_json_400(k):
    profile = UserProfileFactory()
    response = client_for(profile.user).get(f"/api/v1/users/{profile.external_id}/recommendations?k={k}")
    assert response.status_code == 400
    assert "k" in response.json()


def test_k_is_capped_and_related_is_public(served):
    catalog, _ = served
    item = catalog.items_by_cluster[0][0]
    body = APIClient().get(f"/api/v1/items/{item.external_id}/related?k=500").json()
    assert body["fallback"] is False
    assert 0 < len(body["items"]) <= 100
    assert item.external_id not in {i["external_id"] for i in body["items"]}
    assert APIClient().get("/api/v1/items/missing/related").status_code == 404


def test_unknown_user_and_no_model_answer_200_with_fallback(planted_catalog):
    profile = planted_catalog.profiles_by_cluster[0][0]
    body = client_for(profile.user).get(f"/api/v1/users/{profile.external_id}/recommendations?k=5").json()
    assert body["fallback"] is True and body["fallback_reason"] == "no_active_model" and len(body["items"]) == 5


def test_rules_are_staff_only_and_validated_by_the_model(planted_catalog):
    user_client, staff = client_for(UserFactory()), client_for(StaffUserFactory())
    assert user_client.get("/api/v1/rules").status_code == 403

    bad = staff.post(
        "/api/v1/rules",
        {"name": "cap", "kind": "diversity_feature_cap", "params": {"feature_type": "genre", "max_per_value": 0}},
        format="json",
    )
    assert bad.status_code == 400 and "params" in bad.json()
    created = staff.post(
        "/api/v1/rules",
        {"name": "cap", "kind": "diversity_feature_cap", "params": {"feature_type": "genre", "max_per_value": 2}},
        format="json",
    )
    assert created.status_code == 201, created.content
    rule_id = created.json()["id"]
    patched = staff.patch(f"/api/v1/rules/{rule_id}", {"enabled": False}, format="json")
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert [r["id"] for r in staff.get("/api/v1/rules").json()] == [rule_id]
    assert staff.delete(f"/api/v1/rules/{rule_id}").status_code == 204
    assert staff.get(f"/api/v1/rules/{rule_id}").status_code == 404


def test_rule_writes_go_through_the_rule_services(planted_catalog, caplog):
    staff = client_for(StaffUserFactory())
    # The serializer accepts any JSON as params; refusing a (falsy) list is the service's own validation.
    refused = staff.post("/api/v1/rules", {"name": "r", "kind": "filter_inactive", "params": []}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"params": ['Parameters must be a JSON object, e.g. {"lambda": 0.7}.']}
    generation = generations.global_generation_fetch()

    with caplog.at_level(logging.INFO, logger="recommender.rerank.services"):
        rule_id = staff.post("/api/v1/rules", {"name": "r", "kind": "filter_seen"}, format="json").json()["id"]
        assert (
            staff.put(f"/api/v1/rules/{rule_id}", {"name": "s", "kind": "filter_seen"}, format="json").status_code
            == 200
        )
        assert staff.patch(f"/api/v1/rules/{rule_id}", {"enabled": False}, format="json").status_code == 200
        assert staff.patch(f"/api/v1/rules/{rule_id}", {"kind": "pin"}, format="json").status_code == 400
        assert staff.delete(f"/api/v1/rules/{rule_id}").status_code == 204

    assert [record.getMessage() for record in caplog.records if record.name == "recommender.rerank.services"] == [
        f"rule.created id={rule_id} kind=filter_seen",
        f"rule.updated id={rule_id} fields=enabled,kind,name,order,params,scope",
        f"rule.updated id={rule_id} fields=enabled",
        f"rule.deleted id={rule_id} kind=filter_seen",
    ]
    assert generations.global_generation_fetch() == generation + 4  # the refused PATCH bumped nothing


def test_models_list_detail_activate_rollback_and_train_conflict(planted_catalog):
    first = train_inline()
    second = train_inline()
    staff = client_for(StaffUserFactory())
    listed = staff.get("/api/v1/models").json()
    assert [v["id"] for v in listed][:2] == [second.pk, first.pk]
    assert "precision_at_10" in listed[0]["metrics"]
    detail = staff.get(f"/api/v1/models/{second.pk}").json()
    assert detail["status"] == "active" and detail["progress"] == 1.0

    assert client_for(UserFactory()).post(f"/api/v1/models/{first.pk}/activate").status_code == 403
    activated = staff.post(f"/api/v1/models/{first.pk}/activate")
    assert activated.status_code == 200 and activated.json()["is_active"] is True
    rolled = staff.post("/api/v1/models/rollback")
    assert rolled.status_code == 200 and rolled.json()["id"] == second.pk

    ModelVersion.objects.create(status=VersionStatus.TRAINING, config_snapshot={}, heartbeat_at=timezone.now())
    conflict = staff.post("/api/v1/models/train")
    assert conflict.status_code == 409 and "already" in conflict.json()["detail"]


def test_schema_documents_the_recommender_endpoints(db):
    schema = client_for(StaffUserFactory()).get("/api/schema/?format=json").json()
    for path in (
        "/api/v1/users/{external_id}/recommendations",
        "/api/v1/items/{external_id}/related",
        "/api/v1/rules",
        "/api/v1/models",
        "/api/v1/models/train",
        "/api/v1/models/{version_id}/activate",
        "/api/v1/models/rollback",
    ):
        assert path in schema["paths"], path


def test_schema_gives_each_rule_kind_exactly_its_parameters(db):
    from recommender.rerank.params import KIND_PARAMS

    schema = client_for(StaffUserFactory()).get("/api/schema/?format=json").json()
    variants = schema["components"]["schemas"]["RuleInputRequest"]["oneOf"]
    described = {v["properties"]["kind"]["allOf"][0]["enum"][0]: v["properties"]["params"] for v in variants}
    assert set(described) == set(KIND_PARAMS)
    for kind, params in described.items():
        assert set(params["properties"]) == {p.name for p in KIND_PARAMS[kind]}, kind
        assert set(params.get("required", [])) == {p.name for p in KIND_PARAMS[kind] if p.required}, kind
        assert params["additionalProperties"] is False


def test_rule_order_takes_a_whole_number_written_as_a_float_and_refuses_a_fraction(planted_catalog):
    staff = client_for(StaffUserFactory())
    body = {"name": "unseen", "kind": "filter_seen"}
    whole = staff.post("/api/v1/rules", {**body, "order": 36.0}, format="json")
    fraction = staff.post("/api/v1/rules", {**body, "order": 36.5}, format="json")
    assert whole.status_code == 201 and whole.json()["order"] == 36
    assert fraction.status_code == 400 and "order" in fraction.json()


def test_a_rule_joins_a_rule_set_through_the_api_and_the_set_then_cannot_be_deleted(planted_catalog):
    staff = client_for(StaffUserFactory())
    rule_set = staff.post("/api/v1/rule-sets", {"name": "Holiday", "enabled": False}, format="json").json()
    created = staff.post(
        "/api/v1/rules", {"name": "r", "kind": "filter_inactive", "rule_set": rule_set["id"]}, format="json"
    )
    assert created.status_code == 201 and created.json()["rule_set"] == rule_set["id"]
    unknown = staff.post("/api/v1/rules", {"name": "r2", "kind": "filter_inactive", "rule_set": 987654}, format="json")
    assert unknown.status_code == 400 and "rule_set" in unknown.json()
    assert staff.delete(f"/api/v1/rule-sets/{rule_set['id']}").status_code == 409

    moved = staff.patch(f"/api/v1/rules/{created.json()['id']}", {"rule_set": None}, format="json")
    assert moved.status_code == 200 and moved.json()["rule_set"] is None
    assert staff.delete(f"/api/v1/rule-sets/{rule_set['id']}").status_code == 204
