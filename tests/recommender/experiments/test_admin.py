"""The experiments admin: saves go through the services' validation and writes; status is read-only."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from recommender.experiments.models import Experiment, ExperimentEvent, ExperimentStatus
from recommender.experiments.services import VariantSpec, experiment_create, experiment_start
from recommender.rerank.models import Rule, RuleSet

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_() -> Client:
    user = get_user_model().objects.create_user(username="admin", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def _inline(variants: list[dict], *, initial: int = 0) -> dict:
    data = {
        "variants-TOTAL_FORMS": str(len(variants)),
        "variants-INITIAL_FORMS": str(initial),
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
    }
    for index, variant in enumerate(variants):
        data |= {f"variants-{index}-{name}": value for name, value in variant.items()}
    return data


def _add_form(share_b: int = 50) -> dict:
    fields = {
        "name": "Admin test",
        "surface": "home",
        "mode": "split",
        "outcome_window_hours": "24",
        "conversion_kinds": "like",
    }
    variants = [
        {"key": "A", "share": "50", "is_control": "on", "scorer": "model"},
        {"key": "B", "share": str(share_b), "scorer": "popularity"},
    ]
    return fields | _inline(variants)


def test_adding_through_the_admin_goes_through_the_service(admin_client_):
    response = admin_client_.post(reverse("admin:experiments_experiment_add"), _add_form())
    assert response.status_code == 302, response.context and response.context["errors"]
    experiment = Experiment.objects.get(name="Admin test")
    assert list(experiment.variants.order_by("position").values_list("key", "share", "scorer")) == [
        ("A", 50, "model"),
        ("B", 50, "popularity"),
    ]
    assert experiment.status == ExperimentStatus.DRAFT
    event = experiment.events.get()
    assert (event.action, event.actor.username) == (ExperimentEvent.Action.CREATED, "admin")


def test_shares_not_summing_to_100_are_refused_with_the_services_message(admin_client_):
    response = admin_client_.post(reverse("admin:experiments_experiment_add"), _add_form(share_b=40))
    assert response.status_code == 200
    assert "The variants&#x27; traffic shares must sum to 100%, not 90%." in response.content.decode()
    assert not Experiment.objects.exists()


def test_a_drafts_variants_are_replaced_through_the_service(admin_client_):
    experiment = experiment_create(
        name="Draft", variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)]
    )
    a, b = experiment.variants.order_by("position")
    fields = {"name": "Draft", "surface": "home", "mode": "split", "outcome_window_hours": "24", "conversion_kinds": ""}
    variants = [
        {"id": a.pk, "experiment": experiment.pk, "key": "A", "share": "70", "is_control": "on", "scorer": "model"},
        {"id": b.pk, "experiment": experiment.pk, "key": "B", "share": "30", "scorer": "model"},
    ]
    url = reverse("admin:experiments_experiment_change", args=[experiment.pk])
    response = admin_client_.post(url, fields | _inline(variants, initial=2))
    assert response.status_code == 302
    assert list(experiment.variants.order_by("position").values_list("key", "share")) == [("A", 70), ("B", 30)]
    assert experiment.events.filter(action=ExperimentEvent.Action.UPDATED).count() == 1
    a, b = experiment.variants.order_by("position")  # the service wrote the variants anew
    variants[0]["id"], variants[1]["id"], variants[1]["share"] = a.pk, b.pk, "20"
    response = admin_client_.post(url, fields | _inline(variants, initial=2))
    assert response.status_code == 200
    assert "must sum to 100%, not 90%" in response.content.decode()


def test_a_running_experiment_keeps_its_status_and_variants(admin_client_):
    experiment = experiment_start(
        experiment=experiment_create(
            name="Live", variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)]
        )
    )
    url = reverse("admin:experiments_experiment_change", args=[experiment.pk])
    page = admin_client_.get(url)
    assert page.status_code == 200
    assert "status" not in page.context["adminform"].form.fields
    assert "name" not in page.context["adminform"].form.fields  # only the end, window and description change
    response = admin_client_.post(
        url,
        {"description": "Now with a note", "outcome_window_hours": "48", "status": "stopped"}
        | _inline([], initial=0)
        | {"variants-TOTAL_FORMS": "2", "variants-INITIAL_FORMS": "2"},
    )
    assert response.status_code == 302
    experiment.refresh_from_db()
    assert (experiment.status, experiment.description, experiment.outcome_window_hours) == (
        ExperimentStatus.RUNNING,
        "Now with a note",
        48.0,
    )
    assert experiment.variants.count() == 2


def test_rule_sets_have_an_admin_and_rules_show_their_set(admin_client_):
    holiday = RuleSet.objects.create(name="Holiday picks")
    Rule.objects.create(name="Only comedies", kind="filter_inactive", rule_set=holiday)
    Rule.objects.create(name="Everywhere", kind="filter_inactive")
    sets = admin_client_.get(reverse("admin:recommender_ruleset_changelist"))
    assert sets.status_code == 200 and "Holiday picks" in sets.content.decode()
    rules = admin_client_.get(reverse("admin:recommender_rule_changelist"), {"rule_set__id__exact": holiday.pk})
    assert [rule.name for rule in rules.context["cl"].result_list] == ["Only comedies"]
