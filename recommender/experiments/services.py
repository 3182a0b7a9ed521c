"""Writes for experiments: create and edit (validated as a whole), start, stop, promote.

Every write goes through here, from the admin, the dashboard and the API. An experiment and its
variants are validated together (`experiment_problems`): a variant alone cannot say whether the
shares sum to 100. Status changes lock the row and write an `ExperimentEvent` (the audit) in the
same transaction. Every save of an experiment, a variant or a rule set bumps the ``global``
generation inside that transaction (`recommender/receivers.py`; the variants written in bulk
here ride on their experiment's save), so every process's `selectors.PLANS` sees the change
exactly when it commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from config.exception_handlers import ApplicationError
from recommender.candidates import SOURCES
from recommender.models import ModelVersion
from recommender.rerank.models import RuleSet

from .models import Experiment, ExperimentEvent, ExperimentMode, ExperimentStatus, Variant, VariantScorer
from .results import experiment_report
from .selectors import SERVABLE_STATUSES

logger = logging.getLogger(__name__)


class ExperimentStateError(ApplicationError):
    """A status change that does not apply to the experiment as it is now (409)."""

    status_code = 409


@dataclass
class VariantSpec:
    """One variant as a form or the API gives it, before it is saved."""

    key: str
    share: int
    name: str = ""
    is_control: bool = False
    version: ModelVersion | None = None
    rule_set: RuleSet | None = None
    candidate_sizes: dict[str, int] | None = None
    scorer: str = VariantScorer.MODEL


def _sizes_problems(sizes: Any) -> list[str]:
    if sizes in (None, {}):
        return []
    if not isinstance(sizes, dict):
        return ["candidate_sizes must be an object of source name → number of candidates."]
    problems = []
    unknown = sorted(set(sizes) - set(SOURCES))
    if unknown:
        problems.append(f"unknown candidate sources {unknown}; known: {sorted(SOURCES)}.")
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10_000:
            problems.append(f"candidate_sizes[{name!r}] must be a whole number from 0 to 10000, not {n!r}.")
    if not problems and not any(sizes.values()):
        problems.append("candidate_sizes must ask at least one source for candidates.")
    return problems


def experiment_problems(*, experiment: Experiment, variants: Sequence[VariantSpec]) -> dict[str, list[str]]:
    """Field → messages for everything wrong with this experiment and its variants (empty: valid)."""
    problems: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        problems.setdefault(field, []).append(message)

    if len(variants) < 2:
        add("variants", f"An experiment needs at least two variants, not {len(variants)}.")
    total = sum(int(spec.share or 0) for spec in variants)
    if variants and total != 100:
        add("variants", f"The variants' traffic shares must sum to 100%, not {total}%.")
    controls = sum(1 for spec in variants if spec.is_control)
    if variants and controls != 1:
        add("variants", f"Exactly one variant must be the control, not {controls}.")
    keys = [spec.key for spec in variants]
    if len(set(keys)) != len(keys):
        add("variants", "Each variant needs its own key.")
    if experiment.mode == ExperimentMode.INTERLEAVE and len(variants) != 2:
        add("mode", "Interleaving compares exactly two variants.")
    for spec in variants:
        version = spec.version
        if version is not None and (version.status not in SERVABLE_STATUSES or not version.vectors_published):
            add(
                "variants",
                f"Variant {spec.key}: v{version.pk} is {version.get_status_display().lower()}; "
                "only a ready or active version with published vectors can serve.",
            )
        for message in _sizes_problems(spec.candidate_sizes):
            add("variants", f"Variant {spec.key}: {message}")
        if spec.scorer not in VariantScorer.values:
            add("variants", f"Variant {spec.key}: scorer must be one of {VariantScorer.values}, not {spec.scorer!r}.")
    if experiment.starts_at and experiment.ends_at and experiment.ends_at <= experiment.starts_at:
        add("ends_at", "The end must be after the start.")
    if experiment.status == ExperimentStatus.RUNNING:
        clash = _running_clash(experiment)
        if clash is not None:
            add("surface", f"Experiment {clash.name!r} is already running on {clash.get_surface_display()}.")
    return problems


def _running_clash(experiment: Experiment) -> Experiment | None:
    """Another running experiment sharing a surface and an overlapping period."""
    others = Experiment.objects.filter(status=ExperimentStatus.RUNNING).exclude(pk=experiment.pk)
    for other in others:
        if not (other.surfaces() & experiment.surfaces()):
            continue
        mine, theirs = (experiment.starts_at, experiment.ends_at), (other.starts_at, other.ends_at)
        if _periods_overlap(mine, theirs):
            return other
    return None


def _periods_overlap(first: tuple, second: tuple) -> bool:
    """Whether two [start, end) periods overlap; None is open-ended."""
    (start_a, end_a), (start_b, end_b) = first, second
    b_starts_before_a_ends = end_a is None or start_b is None or start_b < end_a
    a_starts_before_b_ends = end_b is None or start_a is None or start_a < end_b
    return b_starts_before_a_ends and a_starts_before_b_ends


def _raise_if_invalid(experiment: Experiment, variants: Sequence[VariantSpec]) -> None:
    # The model's errors as ValidationError instances, which keep their codes: a taken name
    # ("unique") alone is a conflict, 409 in the API (config.validation).
    problems: dict[str, list[ValidationError]] = {}
    try:
        experiment.full_clean(exclude=["winner", "created_by"])
    except ValidationError as error:
        problems = {field: list(errors) for field, errors in error.error_dict.items()}
    for field, messages in experiment_problems(experiment=experiment, variants=variants).items():
        problems.setdefault(field, []).extend(ValidationError(message) for message in messages)
    if problems:
        raise ValidationError(problems)


def variant_specs(experiment: Experiment) -> list[VariantSpec]:
    return [
        VariantSpec(
            key=variant.key,
            share=variant.share,
            name=variant.name,
            is_control=variant.is_control,
            version=variant.version,
            rule_set=variant.rule_set,
            candidate_sizes=variant.candidate_sizes,
            scorer=variant.scorer,
        )
        for variant in experiment.variants.select_related("version", "rule_set").order_by("position", "id")
    ]


def _event(experiment: Experiment, action: str, actor, **detail: Any) -> ExperimentEvent:
    return ExperimentEvent.objects.create(
        experiment=experiment,
        action=action,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        detail=detail,
    )


def _variants_write(experiment: Experiment, variants: Sequence[VariantSpec]) -> None:
    experiment.variants.all().delete()
    Variant.objects.bulk_create(
        [
            Variant(
                experiment=experiment,
                key=spec.key,
                name=spec.name,
                share=spec.share,
                is_control=spec.is_control,
                position=position,
                version=spec.version,
                rule_set=spec.rule_set,
                candidate_sizes=spec.candidate_sizes or None,
                scorer=spec.scorer,
            )
            for position, spec in enumerate(variants)
        ]
    )


def experiment_create(*, actor=None, variants: Sequence[VariantSpec], **fields: Any) -> Experiment:
    """Validate and save a draft experiment with its variants; raises ValidationError."""
    experiment = Experiment(**fields, status=ExperimentStatus.DRAFT)
    if getattr(actor, "is_authenticated", False):
        experiment.created_by = actor
    _raise_if_invalid(experiment, variants)
    with transaction.atomic():
        experiment.save()
        _variants_write(experiment, variants)
        _event(experiment, ExperimentEvent.Action.CREATED, actor, variants=[spec.key for spec in variants])
    logger.info("experiment.created id=%s name=%s variants=%s", experiment.pk, experiment.name, len(variants))
    return experiment


# The fields a create or an update may set, in form order; and what a started experiment may still change.
EXPERIMENT_FIELDS = (
    "name",
    "description",
    "surface",
    "mode",
    "starts_at",
    "ends_at",
    "outcome_window_hours",
    "conversion_kinds",
)
EDITABLE_FIELDS = frozenset(EXPERIMENT_FIELDS)
STARTED_EDITABLE_FIELDS = ("description", "ends_at", "outcome_window_hours")


def experiment_update(
    *, experiment: Experiment, actor=None, variants: Sequence[VariantSpec] | None = None, **fields: Any
) -> Experiment:
    """Change a draft's fields and (optionally) replace its variants; a started one only its end and window."""
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise ValueError(f"Not editable experiment fields: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != ExperimentStatus.DRAFT:
            frozen = (set(fields) - set(STARTED_EDITABLE_FIELDS)) or (variants is not None)
            if frozen:
                raise ExperimentStateError(
                    f"Experiment {locked.name!r} is {locked.get_status_display().lower()}: only its end, outcome "
                    "window and description can change; its variants and split stay as its users saw them."
                )
        for name, value in fields.items():
            setattr(locked, name, value)
        specs = list(variants) if variants is not None else variant_specs(locked)
        _raise_if_invalid(locked, specs)
        locked.save()
        if variants is not None:
            _variants_write(locked, specs)
        _event(locked, ExperimentEvent.Action.UPDATED, actor, fields=sorted(fields), variants=variants is not None)
    logger.info("experiment.updated id=%s fields=%s", locked.pk, ",".join(sorted(fields)))
    return locked


def experiment_start(*, experiment: Experiment, actor=None) -> Experiment:
    """Draft → running; validation (a free surface, servable versions) runs again now."""
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != ExperimentStatus.DRAFT:
            raise ExperimentStateError(
                f"Experiment {locked.name!r} is {locked.get_status_display().lower()}; only a draft can start."
            )
        locked.status = ExperimentStatus.RUNNING
        _raise_if_invalid(locked, variant_specs(locked))
        locked.started_at = timezone.now()
        locked.save(update_fields=["status", "started_at"])
        _event(locked, ExperimentEvent.Action.STARTED, actor)
    logger.info("experiment.started id=%s name=%s", locked.pk, locked.name)
    return locked


def experiment_stop(*, experiment: Experiment, actor=None, reason: str = "") -> Experiment:
    """Running → stopped: its users get the normal recommendations on their next request."""
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != ExperimentStatus.RUNNING:
            raise ExperimentStateError(
                f"Experiment {locked.name!r} is {locked.get_status_display().lower()}; only a running one can stop."
            )
        locked.status = ExperimentStatus.STOPPED
        locked.stopped_at = timezone.now()
        locked.save(update_fields=["status", "stopped_at"])
        _event(locked, ExperimentEvent.Action.STOPPED, actor, reason=reason)
    logger.info("experiment.stopped id=%s name=%s", locked.pk, locked.name)
    return locked


PROMOTABLE_STATUSES = (ExperimentStatus.RUNNING, ExperimentStatus.STOPPED)


def _raise_unless_promotable(experiment: Experiment) -> None:
    if experiment.status not in PROMOTABLE_STATUSES:
        raise ExperimentStateError(
            f"Experiment {experiment.name!r} is {experiment.get_status_display().lower()}; "
            "only a running or stopped experiment can promote a winner."
        )


def experiment_promote_by_key(*, experiment: Experiment, variant_key: str | None = None, actor=None) -> Experiment:
    """Promote the variant with ``variant_key``; None promotes the results' winner (`results.experiment_report`).

    Raises ExperimentStateError (409) for an experiment that cannot promote, before any results
    are computed, and ValidationError on ``variant`` for an unknown key or no winner to promote.
    """
    _raise_unless_promotable(experiment)
    if variant_key is None:
        variant_key = experiment_report(experiment).winner_key
        if variant_key is None:
            raise ValidationError(
                {"variant": ["No variant is significantly better than the control yet: name the variant to promote."]}
            )
    variant = experiment.variants.filter(key=variant_key).first()
    if variant is None:
        keys = ", ".join(experiment.variants.order_by("position", "id").values_list("key", flat=True))
        raise ValidationError(
            {"variant": [f"Experiment {experiment.name!r} has no variant {variant_key!r}; its variants: {keys}."]}
        )
    return experiment_promote(experiment=experiment, variant=variant, actor=actor)


def experiment_promote(*, experiment: Experiment, variant: Variant, actor=None) -> Experiment:
    """Make ``variant`` what everyone gets: activate its version, enable its rule set, end the experiment.

    One transaction: the activation (the same atomic pointer switch as any activation), the rule
    sets (the winner's enabled, the other variants' sets disabled), the experiment's end and the
    audit event commit together or not at all. Candidate-pool sizes are settings
    (``RECOMMENDER_CANDIDATE_SIZES``), so a winner's sizes are reported in the event, not applied.
    """
    from recommender.services.activation import model_version_activate

    if variant.experiment_id != experiment.pk:
        raise ExperimentStateError(f"Variant {variant.key!r} is not part of experiment {experiment.name!r}.")
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        _raise_unless_promotable(locked)
        winner = Variant.objects.select_related("version", "rule_set").get(id=variant.id)
        activated = None
        if winner.version is not None and not winner.version.is_active:
            activated = model_version_activate(
                version=winner.version, reason=f"Promoted as the winner of experiment {locked.name!r}."
            ).pk
        others = RuleSet.objects.filter(variants__experiment=locked, enabled=True).distinct()
        if winner.rule_set_id is not None:
            others = others.exclude(id=winner.rule_set_id)
        disabled = sorted(others.values_list("name", flat=True))
        for rule_set in others:
            rule_set.enabled = False
            rule_set.save(update_fields=["enabled", "updated_at"])
        enabled = None
        if winner.rule_set is not None and not winner.rule_set.enabled:
            winner.rule_set.enabled = True
            winner.rule_set.save(update_fields=["enabled", "updated_at"])
        if winner.rule_set is not None:
            enabled = winner.rule_set.name
        locked.status = ExperimentStatus.COMPLETED
        locked.winner = winner
        locked.stopped_at = locked.stopped_at or timezone.now()
        locked.save(update_fields=["status", "winner", "stopped_at"])
        _event(
            locked,
            ExperimentEvent.Action.PROMOTED,
            actor,
            variant=winner.key,
            activated_version=activated,
            rule_set_enabled=enabled,
            rule_sets_disabled=disabled,
            candidate_sizes_not_applied=winner.candidate_sizes or None,
            scorer_not_applied=winner.scorer if winner.scorer != VariantScorer.MODEL else None,
        )
    logger.info("experiment.promoted id=%s variant=%s activated=%s", locked.pk, winner.key, activated)
    return locked
