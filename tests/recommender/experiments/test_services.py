"""Experiment writes: validation of the whole, the status machine, the audit, promotion, and
retirement keeping the versions an experiment names."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from recommender.experiments.models import ExperimentEvent, ExperimentStatus
from recommender.experiments.selectors import live_plan
from recommender.experiments.services import (
    ExperimentStateError,
    VariantSpec,
    experiment_create,
    experiment_promote,
    experiment_start,
    experiment_stop,
    experiment_update,
)
from recommender.models import ModelVersion, VersionStatus
from recommender.rerank.models import RuleSet
from recommender.services.activation import model_versions_retire
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


def _two(**b):
    return [VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50, **b)]


def _errors(**kwargs) -> dict:
    with pytest.raises(ValidationError) as caught:
        experiment_create(**kwargs)
    return caught.value.message_dict


def test_shares_controls_keys_and_counts_are_checked_together():
    assert (
        "The variants' traffic shares must sum to 100%, not 90%."
        in _errors(
            name="x", variants=[VariantSpec(key="A", share=40, is_control=True), VariantSpec(key="B", share=50)]
        )["variants"]
    )
    assert (
        "Exactly one variant must be the control, not 0."
        in _errors(name="x", variants=[VariantSpec(key="A", share=50), VariantSpec(key="B", share=50)])["variants"]
    )
    assert (
        "Each variant needs its own key."
        in _errors(
            name="x", variants=[VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="A", share=50)]
        )["variants"]
    )
    assert (
        "An experiment needs at least two variants, not 1."
        in _errors(name="x", variants=[VariantSpec(key="A", share=100, is_control=True)])["variants"]
    )
    three = [
        VariantSpec(key="A", share=40, is_control=True),
        VariantSpec(key="B", share=30),
        VariantSpec(key="C", share=30),
    ]
    assert _errors(name="x", mode="interleave", variants=three)["mode"] == [
        "Interleaving compares exactly two variants."
    ]


def test_candidate_sizes_and_periods_are_checked():
    messages = _errors(name="x", variants=_two(candidate_sizes={"nope": 5, "popular": -1}))["variants"]
    assert any("unknown candidate sources ['nope']" in message for message in messages)
    assert any("candidate_sizes['popular'] must be a whole number" in message for message in messages)
    now = timezone.now()
    assert _errors(name="x", starts_at=now, ends_at=now - timedelta(hours=1), variants=_two())["ends_at"] == [
        "The end must be after the start."
    ]


def test_a_failed_or_retired_version_cannot_serve_a_variant():
    failed = ModelVersion.objects.create(status=VersionStatus.FAILED, config_snapshot={})
    messages = _errors(name="x", variants=_two(version=failed))["variants"]
    assert messages == [
        f"Variant B: v{failed.pk} is failed; only a ready or active version with published vectors can serve."
    ]


def test_two_running_experiments_cannot_share_a_surface():
    ends = timezone.now() + timedelta(days=10)
    experiment_start(experiment=experiment_create(name="first", surface="both", ends_at=ends, variants=_two()))
    second = experiment_create(name="second", surface="home", variants=_two())
    with pytest.raises(ValidationError) as caught:
        experiment_start(experiment=second)
    assert caught.value.message_dict["surface"] == ["Experiment 'first' is already running on Both."]
    # A period that does not overlap the running one may share its surface.
    soon = timezone.now() + timedelta(days=30)
    later = experiment_create(name="later", surface="related", starts_at=soon, variants=_two())
    assert experiment_start(experiment=later).status == ExperimentStatus.RUNNING


def test_the_status_machine_and_its_audit(django_user_model):
    staff = django_user_model.objects.create_user("boss", is_staff=True)
    experiment = experiment_create(name="flow", actor=staff, variants=_two())
    with pytest.raises(ExperimentStateError):
        experiment_stop(experiment=experiment)
    experiment = experiment_start(experiment=experiment, actor=staff)
    assert live_plan(surface="home", generation=None, now=timezone.now()).experiment_id == experiment.pk
    with pytest.raises(ExperimentStateError):
        experiment_start(experiment=experiment)
    with pytest.raises(ExperimentStateError, match="only its end, outcome window and description can change"):
        experiment_update(experiment=experiment, name="renamed")
    experiment_update(experiment=experiment, outcome_window_hours=48)
    experiment_stop(experiment=experiment, actor=staff, reason="enough")
    assert live_plan(surface="home", generation=None, now=timezone.now()) is None
    actions = list(ExperimentEvent.objects.filter(experiment=experiment).order_by("id").values_list("action", "actor"))
    assert actions == [
        ("created", staff.pk),
        ("started", staff.pk),
        ("updated", None),
        ("stopped", staff.pk),
    ]


def test_promoting_activates_the_version_and_switches_the_rule_sets(trained):
    first = trained.version
    second = train_inline()  # the newer run becomes active; the first stays ready for rollback
    assert second.status == VersionStatus.ACTIVE
    losing, winning = RuleSet.objects.create(name="losing"), RuleSet.objects.create(name="winning", enabled=False)
    experiment = experiment_start(
        experiment=experiment_create(
            name="promote",
            variants=[
                VariantSpec(key="A", share=50, is_control=True, rule_set=losing),
                VariantSpec(key="B", share=50, rule_set=winning, version=ModelVersion.objects.get(pk=first.pk)),
            ],
        )
    )
    experiment = experiment_promote(experiment=experiment, variant=experiment.variants.get(key="B"))
    losing.refresh_from_db()
    winning.refresh_from_db()
    assert (losing.enabled, winning.enabled) == (False, True)
    assert ModelVersion.objects.get(status=VersionStatus.ACTIVE).pk == first.pk
    assert experiment.status == ExperimentStatus.COMPLETED and experiment.winner.key == "B"
    event = experiment.events.get(action="promoted")
    assert event.detail["activated_version"] == first.pk
    assert event.detail["rule_set_enabled"] == "winning" and event.detail["rule_sets_disabled"] == ["losing"]
    with pytest.raises(ExperimentStateError):
        experiment_promote(experiment=experiment, variant=experiment.variants.get(key="A"))


def test_retirement_keeps_a_version_a_running_experiment_names():
    old = timezone.now() - timedelta(days=5)
    versions = [
        ModelVersion.objects.create(status=VersionStatus.READY, vectors_published=True, config_snapshot={})
        for _ in range(5)
    ]
    ModelVersion.objects.filter(pk__in=[v.pk for v in versions]).update(finished_at=old)
    oldest = versions[0]
    experiment_start(experiment=experiment_create(name="keeps", variants=_two(version=oldest)))
    retired = model_versions_retire(keep=1)
    assert oldest.pk not in retired
    assert set(retired) == {v.pk for v in versions[1:4]}
