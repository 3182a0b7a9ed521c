"""The rules admin (form validation, list editing, live preview) and the model admin actions."""

import json
import logging

import pytest
from django.urls import reverse

from catalog.models import Item
from recommender.models import ModelVersion, TrainingConfig, VersionStatus
from recommender.rerank.forms import EXAMPLES
from recommender.rerank.models import Rule
from recommender.rerank.params import KIND_PARAMS, RuleKind
from recommender.selectors import active_version
from tests.factories import ItemFactory
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db

ADD_URL = "admin:recommender_rule_add"


def post_rule(client, kind: str, params, **fields):
    data = {
        "name": "rule",
        "kind": kind,
        "enabled": "on",
        "order": "10",
        "scope": "both",
        "params": params if isinstance(params, str) else json.dumps(params),
        "starts_at_0": "",
        "starts_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
        **fields,
    }
    return client.post(reverse(ADD_URL), data)


@pytest.mark.parametrize(
    "kind, params, message",
    [
        ("diversity_mmr", {"lambda": 1.5}, "lambda: must be ≥ 0 and ≤ 1 (got 1.5)."),
        (
            "diversity_feature_cap",
            {"feature_type": "genre", "max_per_value": -1},
            "max_per_value: must be ≥ 1 (got -1).",
        ),
        ("fairness_provider_cap", {"max_percent": 120}, "max_percent: must be > 0 and ≤ 100 (got 120)."),
        ("fairness_long_tail", {"min_percent": 20, "percentile": 0}, "percentile: must be > 0 and ≤ 100 (got 0)."),
        (
            "filter_feature",
            {"feature_type": "mood", "values": ["dark"]},
            "feature_type: unknown item feature type 'mood'",
        ),
        ("pin", {"item": "no-such-item", "slot": 1}, "item: no item has the external id 'no-such-item'."),
        ("pin", {"item": "known"}, "slot: required."),
        ("pin", {"item": "known", "slot": 1.5}, "slot: must be a whole number (got 1.5)."),
        ("filter_age", {"max_age_days": "ten"}, "max_age_days: must be a number (got 'ten')."),
        ("boost_feature", {"feature_type": "genre", "values": ["Comedy"], "amount": 0}, "amount: a multiplying factor"),
        ("boost_feature", {"feature_type": "genre", "values": [], "amount": 2}, "values: must be a non-empty list"),
        ("demote_shown", {"within_hours": 24, "factor": 1}, "factor: must be ≥ 0 and < 1 (got 1)."),
        ("filter_inactive", {"lambda": 0.5}, "lambda: unknown parameter for this kind; allowed: none."),
        ("diversity_mmr", "[0.5]", "Parameters must be a JSON object"),
    ],
)
def test_invalid_parameters_are_refused_with_a_clear_message(admin_client, kind, params, message):
    ItemFactory(external_id="known", features=[("genre", "Comedy")])
    response = post_rule(admin_client, kind, params)

    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    assert any(message in error for error in errors.get("params", [])), errors
    assert Rule.objects.count() == 0


def test_period_must_end_after_it_starts(admin_client):
    ItemFactory(external_id="known")
    response = post_rule(
        admin_client,
        "pin",
        {"item": "known", "slot": 1},
        starts_at_0="2030-01-02",
        starts_at_1="00:00:00",
        ends_at_0="2030-01-01",
        ends_at_1="00:00:00",
    )
    assert "The end must be after the start." in response.context["adminform"].form.errors["ends_at"]
    assert Rule.objects.count() == 0


def test_valid_rule_is_saved_with_its_defaults(admin_client):
    ItemFactory(features=[("genre", "Comedy")])
    response = post_rule(admin_client, "diversity_feature_cap", {"feature_type": "genre", "max_per_value": 2})
    assert response.status_code == 302
    rule = Rule.objects.get()
    assert rule.params == {"feature_type": "genre", "max_per_value": 2, "fill_when_short": False}


def test_add_form_explains_every_kind(admin_client):
    assert set(EXAMPLES) == set(KIND_PARAMS)
    page = admin_client.get(reverse(ADD_URL)).content.decode()
    for kind in RuleKind:
        assert kind.value in page
    assert "lambda (float, required, ≥ 0 and ≤ 1)" in page


def test_changelist_edits_enabled_and_order_in_place(admin_client):
    first = Rule.objects.create(name="a", kind="filter_inactive", order=1)
    second = Rule.objects.create(name="b", kind="filter_inactive", order=2)
    url = reverse("admin:recommender_rule_changelist")
    response = admin_client.get(url, {"kind__exact": "filter_inactive", "enabled__exact": "1"})
    assert response.context["cl"].result_count == 2
    assert "Live preview" in response.content.decode()
    data = {
        "form-TOTAL_FORMS": "2",
        "form-INITIAL_FORMS": "2",
        "_save": "Save",
        "form-0-id": str(first.pk),
        "form-0-order": "5",
        "form-1-id": str(second.pk),
        "form-1-order": "3",
        "form-1-enabled": "on",
    }
    assert admin_client.post(url, data).status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.enabled, first.order, second.enabled, second.order) == (False, 5, True, 3)


def test_admin_writes_go_through_the_rule_services(admin_client, caplog):
    changelist = reverse("admin:recommender_rule_changelist")
    with caplog.at_level(logging.INFO, logger="recommender.rerank.services"):
        assert post_rule(admin_client, "filter_inactive", {}).status_code == 302
        rule = Rule.objects.get()
        other = Rule.objects.create(name="b", kind="filter_inactive", order=20)
        in_place = {
            "form-TOTAL_FORMS": "2",
            "form-INITIAL_FORMS": "2",
            "_save": "Save",
            "form-0-id": str(rule.pk),
            "form-0-order": "7",
            "form-1-id": str(other.pk),
            "form-1-order": "20",
            "form-1-enabled": "on",
        }
        assert admin_client.post(changelist, in_place).status_code == 302
        assert (
            admin_client.post(reverse("admin:recommender_rule_delete", args=[rule.pk]), {"post": "yes"}).status_code
            == 302
        )
        assert (
            admin_client.post(
                changelist, {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"}
            ).status_code
            == 302
        )

    assert [record.getMessage() for record in caplog.records if record.name == "recommender.rerank.services"] == [
        f"rule.created id={rule.pk} kind=filter_inactive",
        f"rule.updated id={rule.pk} fields=enabled,order",
        f"rule.deleted id={rule.pk} kind=filter_inactive",
        f"rule.deleted id={other.pk} kind=filter_inactive",
    ]
    assert not Rule.objects.exists()


def test_preview_shows_before_and_after_for_a_user(admin_client, planted_catalog):
    train_inline()
    profile = planted_catalog.profiles_by_cluster[0][0]
    Rule.objects.create(
        name="Hide cluster 0",
        kind="filter_feature",
        scope="home",
        order=1,
        params={"feature_type": "genre", "values": ["cluster-0"]},
    )
    cluster_0 = {item.pk for item in planted_catalog.items_by_cluster[0]}

    response = admin_client.get(reverse("admin:recommender_rule_preview"), {"user": profile.external_id, "k": 5})

    assert response.status_code == 200
    before, after, trace = response.context["before"], response.context["after"], response.context["trace"]
    assert len(before) == 5 and len(after) == 5
    assert all(row["item_id"] in cluster_0 for row in before)  # the model's own taste
    assert not any(row["item_id"] in cluster_0 for row in after)
    assert trace[0]["name"] == "Hide cluster 0" and trace[0]["removed_count"] >= 5
    page = response.content.decode()
    assert "Before the rules" in page and "After the rules" in page and "Hide cluster 0" in page
    assert Item.objects.get(pk=after[0]["item_id"]).title in page


def test_preview_for_an_item_and_error_messages(admin_client, planted_catalog):
    url = reverse("admin:recommender_rule_preview")
    assert "No model is active" in admin_client.get(url, {"user": "pu0-0"}).content.decode()
    assert "No user has the external id" in admin_client.get(url, {"user": "nobody"}).content.decode()
    train_inline()
    response = admin_client.get(url, {"item": "p1-0", "k": 5})
    assert response.status_code == 200
    assert len(response.context["after"]) == 5
    assert response.context["subject"].external_id == "p1-0"


def _action(client, model: str, action: str, pks):
    return client.post(
        reverse(f"admin:recommender_{model}_changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_activate_and_roll_back_actions(admin_client, planted_catalog):
    first = train_inline()
    second = train_inline()  # same quality: passes the gate and becomes active
    assert active_version().pk == second.pk

    response = _action(admin_client, "modelversion", "activate", [first.pk])
    assert f"v{first.pk} is now active." in _messages(response)
    assert active_version().pk == first.pk

    response = _action(admin_client, "modelversion", "roll_back", [first.pk])
    assert f"Rolled back: v{second.pk} is active again." in _messages(response)
    assert active_version().pk == second.pk

    failed = ModelVersion.objects.create(status=VersionStatus.FAILED)
    response = _action(admin_client, "modelversion", "activate", [failed.pk])
    assert any("not ready" in message for message in _messages(response))
    assert active_version().pk == second.pk

    page = admin_client.get(reverse("admin:recommender_modelversion_change", args=[second.pk])).content.decode()
    assert "100%" in page and "precision_at_10" in page


def test_train_now_action_queues_a_run_and_refuses_a_second(admin_client, admin_user):
    config = TrainingConfig.objects.create(name="small", epochs=2)

    response = _action(admin_client, "trainingconfig", "train_now", [config.pk])
    version = ModelVersion.objects.get()
    assert (version.status, version.config, version.requested_by) == (VersionStatus.QUEUED, config, admin_user)
    assert f"Training v{version.pk} is queued with small." in _messages(response)

    response = _action(admin_client, "trainingconfig", "train_now", [config.pk])
    assert any("already queued" in message for message in _messages(response))
    assert ModelVersion.objects.count() == 1
