"""Experiments: A/B tests (and interleaved tests) of model versions, rule sets and candidate pools.

An experiment splits the traffic of a surface between two or more variants by a hash of
(experiment salt, user id) (`assignment.py`). A variant names what serves its users: a model
version (or whichever is active), a rule set (or the rules in force) and optional candidate-pool
sizes. Impressions carry the experiment and variant that served them; outcomes (clicks,
conversions, ratings) are the users' later feedback on the items they were shown, read by
`selectors.experiment_results`. Every status change is written to `ExperimentEvent` (the audit).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class ExperimentSurface(models.TextChoices):
    HOME = "home", "Homepage"
    RELATED = "related", "Related items"
    BOTH = "both", "Both"


class ExperimentMode(models.TextChoices):
    SPLIT = "split", "Split traffic: each user sees one variant"
    INTERLEAVE = "interleave", "Team-draft interleaving of two variants in one list"


class VariantScorer(models.TextChoices):
    """How a variant orders its candidate pool (`recommender.ranking.SCORERS`)."""

    MODEL = "model", "The model: the version's scorer (its stack or blend)"
    POPULARITY = "popularity", "Popularity: all-time feedback counts, the same for everyone (a baseline)"


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    COMPLETED = "completed", "Completed (winner promoted)"


def _new_salt() -> str:
    return secrets.token_hex(8)


class Experiment(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    surface = models.CharField(max_length=8, choices=ExperimentSurface.choices, default=ExperimentSurface.HOME)
    mode = models.CharField(max_length=12, choices=ExperimentMode.choices, default=ExperimentMode.SPLIT)
    status = models.CharField(
        max_length=10, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT, db_index=True
    )
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Optional: traffic is split from then on.")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Optional: traffic is split until then.")
    salt = models.CharField(
        max_length=32, default=_new_salt, help_text="Seeds the assignment; a new salt reshuffles every user."
    )
    outcome_window_hours = models.FloatField(
        default=24.0,
        validators=[MinValueValidator(0.01), MaxValueValidator(24 * 90)],
        help_text="Feedback on a shown item counts as its outcome within this many hours of the impression.",
    )
    conversion_kinds = models.CharField(
        max_length=200,
        default="like,purchase",
        blank=True,
        help_text="Feedback kinds that count as a conversion (comma-separated codes); a rating at or above the "
        "positive threshold always does.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    winner = models.ForeignKey("Variant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def outcome_window(self) -> timedelta:
        return timedelta(hours=self.outcome_window_hours)

    def is_live(self, now: datetime) -> bool:
        """Running, and ``now`` inside its optional period [starts_at, ends_at)."""
        return (
            self.status == ExperimentStatus.RUNNING
            and (self.starts_at is None or self.starts_at <= now)
            and (self.ends_at is None or now < self.ends_at)
        )

    def surfaces(self) -> frozenset[str]:
        return frozenset({"home", "related"}) if self.surface == ExperimentSurface.BOTH else frozenset({self.surface})

    def conversion_kind_codes(self) -> list[str]:
        return [code.strip() for code in self.conversion_kinds.split(",") if code.strip()]


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=32, help_text="Short name shown in responses, e.g. A or new-model.")
    name = models.CharField(max_length=100, blank=True, default="")
    share = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(100)], help_text="Percent of the traffic."
    )
    is_control = models.BooleanField(default=False, help_text="The variant every other one is compared with.")
    position = models.PositiveSmallIntegerField(default=0)
    version = models.ForeignKey(
        "recommender.ModelVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: whichever version is active.",
    )
    rule_set = models.ForeignKey(
        "recommender.RuleSet",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="variants",
        help_text="Empty: the rules in force. Else the rules outside any set plus this set's.",
    )
    scorer = models.CharField(
        max_length=12,
        choices=VariantScorer.choices,
        default=VariantScorer.MODEL,
        help_text="How the pool is ordered before the rules: by the model, or by popularity (a non-personalised "
        "baseline to test a model against).",
    )
    candidate_sizes = models.JSONField(
        null=True,
        blank=True,
        help_text='Optional: candidates per source for this variant, e.g. {"popular": 50}; only the sources '
        "named run. Empty: the surface's configured sizes.",
    )

    class Meta:
        ordering = ["experiment", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["experiment", "key"], name="variant_key_unique")]

    def __str__(self) -> str:
        return f"{self.experiment.name}: {self.key}"

    @property
    def label(self) -> str:
        return self.name or self.key


class ExperimentEvent(models.Model):
    """The audit: who created, started, stopped or promoted an experiment, when, and what it changed."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        UPDATED = "updated", "Updated"
        STARTED = "started", "Started"
        STOPPED = "stopped", "Stopped"
        PROMOTED = "promoted", "Winner promoted"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=10, choices=Action.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.action} at {self.at:%Y-%m-%d %H:%M}"
