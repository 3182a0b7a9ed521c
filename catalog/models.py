"""Users, items, their typed side features, and feedback.

Feedback history: `Feedback` is an append-only event log. For kinds that hold a *state* per
(user, item) — a rating, a like, a dislike — only the newest event is current: the earlier one
is kept with ``is_current=False`` so re-ratings stay auditable, and a partial unique index
guarantees at most one current row per (user, item, kind). Events of repeatable kinds (view,
click, purchase) have ``is_current=None`` and may occur many times. See docs/feedback.md.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class FeatureSubject(models.TextChoices):
    ITEM = "item", "Item"
    USER = "user", "User"


class Feature(models.Model):
    """A typed side feature value, such as ``genre=Comedy`` or ``age=25-34``."""

    subject = models.CharField(max_length=8, choices=FeatureSubject.choices)
    type = models.SlugField(max_length=50, help_text="Feature type, e.g. genre, tag, year, provider, age.")
    value = models.CharField(max_length=200)

    class Meta:
        ordering = ["subject", "type", "value"]
        constraints = [
            models.UniqueConstraint(fields=["subject", "type", "value"], name="feature_unique_subject_type_value"),
        ]

    def __str__(self) -> str:
        return f"{self.type}={self.value}"


class Item(models.Model):
    external_id = models.CharField(max_length=128, unique=True)
    title = models.CharField(max_length=500)
    description = models.TextField(blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True, db_index=True, help_text="Used for freshness.")
    provider = models.CharField(
        max_length=200, blank=True, default="", db_index=True, help_text="Provider or creator, used by fairness rules."
    )
    is_active = models.BooleanField(default=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Count of in-force feedback (current states and events), kept by database triggers on
    # catalog_feedback (migration 0005), so every writer — services, COPY importers, the admin —
    # keeps it exact without counting 100k rows per catalogue page.
    popularity = models.PositiveBigIntegerField(default=0, db_default=0, editable=False)
    features: models.ManyToManyField[Feature, ItemFeature] = models.ManyToManyField(
        Feature, through="ItemFeature", related_name="items", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["title"], name="item_title_idx"),
            models.Index(fields=["-popularity", "id"], name="item_popularity_idx"),
        ]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        if not (self.external_id or "").strip():
            raise ValidationError({"external_id": "The external id may not be empty."})


# Side-feature weights training accepts: LightFM's feature matrix is float32 and non-negative,
# and one stored weight outside that would fail every training run. The services say so
# politely first (catalog.services.FEATURE_WEIGHT_MAX); this holds for every other writer.
FEATURE_WEIGHT_MAX = 1e6


def _feature_weight_in_range(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=models.Q(weight__gte=0, weight__lte=FEATURE_WEIGHT_MAX),
        name=name,
        violation_error_message=f"A feature weight must be between 0 and {FEATURE_WEIGHT_MAX:g}.",
    )


class ItemFeature(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="feature_links")
    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="item_links")
    weight = models.FloatField(default=1.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "feature"], name="item_feature_unique"),
            _feature_weight_in_range("item_feature_weight_range"),
        ]
        indexes = [models.Index(fields=["feature", "item"], name="item_feature_by_feature_idx")]

    def __str__(self) -> str:
        # Ids only: the admin inline prints one per row, and a join per row is not worth it.
        return f"item {self.item_id}: feature {self.feature_id} × {self.weight:g}"


class UserProfile(models.Model):
    """The recommender's view of a person: Django's auth user plus an external id and side features."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    external_id = models.CharField(max_length=128, unique=True)
    features: models.ManyToManyField[Feature, UserFeature] = models.ManyToManyField(
        Feature, through="UserFeature", related_name="profiles", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.external_id

    def clean(self) -> None:
        if not (self.external_id or "").strip():
            raise ValidationError({"external_id": "The external id may not be empty."})


class UserFeature(models.Model):
    profile = models.ForeignKey(UserProfile, on_delete=models.CASCADE, related_name="feature_links")
    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="user_links")
    weight = models.FloatField(default=1.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["profile", "feature"], name="user_feature_unique"),
            _feature_weight_in_range("user_feature_weight_range"),
        ]

    def __str__(self) -> str:
        # Ids only: the admin inline prints one per row, and a join per row is not worth it.
        return f"user {self.profile_id}: feature {self.feature_id} × {self.weight:g}"


class ValueTransform(models.TextChoices):
    """How an implicit kind's value (a count) becomes a training weight (docs/ml.md, "Weighting rules").

    The order is the code order of `CatalogArrays.feedback_value_transform`; the numeric core
    reads the names (`recommender.ml.dataset.VALUE_TRANSFORMS`), never a code on its own.
    """

    NONE = "none", "None: the kind weight, the value ignored"
    LOG = "log", "Log: kind weight × log(1 + value)"
    CONFIDENCE = "confidence", "Confidence: kind weight × (1 + α·log(1 + value/ε))"


class FeedbackKind(models.Model):
    """A kind of feedback and how much it counts in training; editable in the admin."""

    code = models.SlugField(max_length=32, primary_key=True)
    name = models.CharField(max_length=100)
    weight = models.FloatField(default=1.0, help_text="Training weight; negative for negative feedback.")
    is_explicit = models.BooleanField(default=False, help_text="The value is an explicit rating, weighted by itself.")
    is_stateful = models.BooleanField(
        default=False,
        help_text="One current value per user and item (rating, like); a new event supersedes the old.",
    )
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    default_value = models.FloatField(default=1.0)
    value_transform = models.CharField(
        max_length=16,
        choices=ValueTransform.choices,
        default=ValueTransform.NONE,
        db_default=ValueTransform.NONE,
        help_text="Implicit kinds only: how the value (a count: plays, purchases) scales the training weight.",
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValidationError({"max_value": "The maximum must not be below the minimum."})
        if self.value_transform != ValueTransform.NONE:
            if self.is_explicit:
                raise ValidationError(
                    {"value_transform": "An explicit kind is weighted by its rating; transforms are for counts."}
                )
            # log1p of a negative count is undefined (or -inf at -1): a count kind starts at 0.
            if self.min_value is None or self.min_value < 0:
                raise ValidationError({"min_value": "A kind with a value transform counts: set a minimum of 0."})


class Feedback(models.Model):
    # No single-column indexes (migration 0008): every lookup by user, item or time is served by
    # a composite index below that starts with that column, a lookup by kind alone happens only
    # when a kind is deleted (rare, admin), and every bulk import would rebuild each extra index.
    user = models.ForeignKey(UserProfile, on_delete=models.CASCADE, related_name="feedback", db_index=False)
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="feedback", db_index=False)
    kind = models.ForeignKey(FeedbackKind, on_delete=models.PROTECT, related_name="feedback", db_index=False)
    value = models.FloatField(default=1.0)
    created_at = models.DateTimeField()
    # True: the current state of a stateful kind; False: superseded; None: a repeatable event.
    is_current = models.BooleanField(null=True, blank=True)
    # Unique where set (the constraint below): most rows have no key, and a partial index
    # leaves them out instead of holding millions of NULLs.
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001 (NULL = no key; '' would be one key)
    # Not a column: set on the rows catalog.services.feedback_record returns (True when a repeated
    # idempotency key returned the stored row instead of writing one).
    replayed: bool

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "item", "kind"],
                condition=Q(is_current=True),
                name="feedback_one_current_state",
            ),
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="feedback_idempotency_key_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="feedback_user_time_idx"),
            models.Index(fields=["created_at", "item"], name="feedback_time_item_idx"),
            models.Index(fields=["item", "kind"], name="feedback_item_kind_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind_id}={self.value} on {self.item_id}"
