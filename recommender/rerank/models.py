"""Re-ranking rules (edited in the admin) and impressions (what each user was shown).

A rule is data: a kind, an order, a scope, and parameters validated per kind by
`recommender.rerank.params`. The engine (`engine.py`) applies the enabled rules of a surface
in ascending order; each kind is one function in `rules.py`. Cached homepages are invalidated
on every rule save or delete by `recommender/receivers.py` (model signals, so list_editable and
deletes in the admin count too).
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import models

from catalog.models import FeatureSubject, Item, UserProfile

from .params import KIND_HELP, RuleKind, params_clean


class RuleScope(models.TextChoices):
    HOME = "home", "Homepage"
    RELATED = "related", "Related items"
    BOTH = "both", "Both"


class RuleSet(models.Model):
    """A named group of rules: switched on or off together, and what an experiment's variant names.

    Rules outside any set always apply. A set's rules apply to all traffic while the set is
    enabled; a variant that names a set gets the rules outside any set plus that set's, whether
    it is enabled or not (docs/experiments.md).
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True, help_text="Its rules apply to traffic outside experiments.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Rule(models.Model):
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=RuleKind.choices)
    enabled = models.BooleanField(default=True)
    order = models.IntegerField(default=100, help_text="Rules apply in ascending order.")
    scope = models.CharField(max_length=8, choices=RuleScope.choices, default=RuleScope.BOTH)
    params = models.JSONField(default=dict, blank=True, help_text="Parameters of the kind, as a JSON object.")
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Optional: the rule applies from then.")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Optional: the rule applies until then.")
    rule_set = models.ForeignKey(
        RuleSet,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="rules",
        help_text="Optional: the rule applies only while its set is enabled, or to a variant that names the set.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]
        indexes = [models.Index(fields=["enabled", "scope", "order"], name="rerank_rule_enabled_scope_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def kind_help(self) -> str:
        return KIND_HELP.get(self.kind, "")

    def is_live(self, now: datetime) -> bool:
        """Whether ``now`` lies inside the optional period [starts_at, ends_at)."""
        return (self.starts_at is None or self.starts_at <= now) and (self.ends_at is None or now < self.ends_at)

    def clean(self) -> None:
        if self.kind not in RuleKind.values:
            return  # the kind field reports its own error; parameters cannot be checked without it
        errors: dict[str, list[str]] = {}
        cleaned, messages = params_clean(self.kind, self.params)
        if not messages:
            messages = self._data_errors(cleaned)
        if messages:
            errors["params"] = messages
        else:
            self.params = cleaned
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            errors["ends_at"] = ["The end must be after the start."]
        if errors:
            raise ValidationError(errors)

    def _data_errors(self, params: dict) -> list[str]:
        """Checks that need the catalogue: the feature type and the pinned item must exist."""
        messages = []
        feature_type = params.get("feature_type")
        if feature_type is not None:
            from catalog.models import Feature

            if not Feature.objects.filter(subject=FeatureSubject.ITEM, type=feature_type).exists():
                known = sorted(set(Feature.objects.filter(subject=FeatureSubject.ITEM).values_list("type", flat=True)))
                messages.append(
                    f"feature_type: unknown item feature type {feature_type!r}; known types: "
                    f"{', '.join(known) or 'none yet'}."
                )
        if self.kind == RuleKind.PIN and not Item.objects.filter(external_id=params["item"]).exists():
            messages.append(f"item: no item has the external id {params['item']!r}.")
        return messages


class Impression(models.Model):
    """One item shown to one user on one surface; written in bulk after serving."""

    profile = models.ForeignKey(UserProfile, on_delete=models.CASCADE, related_name="impressions")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="impressions")
    surface = models.CharField(max_length=8, choices=[("home", "Homepage"), ("related", "Related items")])
    shown_at = models.DateTimeField()
    # The experiment and variant that served it (for an interleaved list: the team that contributed
    # the item), else NULL. Plain ids, not foreign keys: the experiments app builds on this one
    # (its variants name versions and rule sets), so this one cannot point back at it. The batch
    # writer joins the ids to their tables and writes NULL for an experiment deleted meanwhile.
    experiment_id = models.BigIntegerField(null=True, blank=True)
    variant_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-shown_at", "-id"]
        indexes = [
            models.Index(fields=["profile", "-shown_at"], name="impression_profile_time_idx"),
            # Only experiment traffic: the results read one experiment's rows by variant and user.
            models.Index(
                fields=["experiment_id", "variant_id", "profile", "item"],
                name="impression_experiment_idx",
                condition=models.Q(experiment_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} shown to {self.profile_id} on {self.surface}"
