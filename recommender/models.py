"""Recommender state: training configurations and model versions.

Vectors do not live in Django models: each published version owns two plain tables created by
`recommender/vectors.py` (fixed pgvector dimension, HNSW indexes), so a version is published,
activated and dropped as a whole. Re-ranking rules live in `recommender/rerank/models.py`.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Loss(models.TextChoices):
    WARP = "warp", "WARP"
    BPR = "bpr", "BPR"
    LOGISTIC = "logistic", "Logistic"
    WARP_KOS = "warp-kos", "k-OS WARP"


class SplitKind(models.TextChoices):
    RANDOM = "random", "Random 80/20 of interaction rows"
    TIME = "time", "By time: the newest interactions are held out"


def validate_family_list(value: str) -> None:
    from recommender.ml.families import FAMILIES

    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise ValidationError(f"Unknown model families {unknown}; known: {sorted(FAMILIES)}.")
    if names and "lightfm" not in names:
        raise ValidationError("The families must include lightfm: its vectors serve the ANN search.")


class TrainingConfig(models.Model):
    """Hyperparameters and protocol for a training run, editable in the admin.

    The configuration marked default is used by `manage.py train`, the API and the schedule.
    """

    name = models.CharField(max_length=100, unique=True)
    is_default = models.BooleanField(default=False)
    loss = models.CharField(max_length=16, choices=Loss.choices, default=Loss.WARP)
    no_components = models.PositiveIntegerField(default=32, validators=[MinValueValidator(1), MaxValueValidator(512)])
    learning_rate = models.FloatField(default=0.05, validators=[MinValueValidator(1e-6), MaxValueValidator(1.0)])
    item_alpha = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    user_alpha = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    epochs = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1), MaxValueValidator(1000)])
    max_sampled = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    use_item_features = models.BooleanField(default=True)
    use_user_features = models.BooleanField(default=False)
    positive_threshold = models.FloatField(default=4.0, help_text="Explicit ratings at or above this are positives.")
    time_decay_half_life_days = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.01)],
        help_text="Optional exponential decay of old feedback.",
    )
    split = models.CharField(max_length=8, choices=SplitKind.choices, default=SplitKind.RANDOM)
    test_fraction = models.FloatField(default=0.2, validators=[MinValueValidator(0.01), MaxValueValidator(0.9)])
    seed = models.IntegerField(default=0)
    eval_k = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1), MaxValueValidator(100)])
    early_stopping_patience = models.PositiveIntegerField(
        null=True, blank=True, help_text="Stop after this many epochs without a better validation precision@k."
    )
    refit_on_full_data = models.BooleanField(
        default=True, help_text="Serve a model refitted on all data after evaluation (see docs/training.md)."
    )
    families = models.CharField(
        max_length=200,
        blank=True,
        default="lightfm,als,ease",
        validators=[validate_family_list],
        help_text=(
            "Model families fitted at every run, comma-separated (lightfm, als, ease). With more than "
            "LightFM, a learned ranker over all of them is fitted on a validation split of the training "
            "data, and the run serves it or the best single family, whichever wins there (docs/training.md)."
        ),
    )
    quality_margin = models.FloatField(
        default=0.02,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="A new version may be at most this much worse (precision@k, absolute) than the active one.",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_config"),
        ]

    def __str__(self) -> str:
        return self.name

    def hyperparameters(self) -> dict:
        """The fields that define a run, as stored on each version for reproducibility."""
        return {
            field.name: getattr(self, field.name)
            for field in self._meta.concrete_fields
            if field.name not in {"id", "name", "is_default"}
        }


class VersionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    BUILDING_DATASET = "building_dataset", "Building dataset"
    TRAINING = "training", "Training"
    EVALUATING = "evaluating", "Evaluating"
    PUBLISHING = "publishing", "Publishing"
    READY = "ready", "Ready"
    ACTIVE = "active", "Active"
    FAILED = "failed", "Failed"
    RETIRED = "retired", "Retired"


RUNNING_STATUSES = (
    VersionStatus.QUEUED,
    VersionStatus.BUILDING_DATASET,
    VersionStatus.TRAINING,
    VersionStatus.EVALUATING,
    VersionStatus.PUBLISHING,
)


ACTIVATION_SETTLE_SECONDS = 30


class ModelVersion(models.Model):
    config = models.ForeignKey(TrainingConfig, on_delete=models.SET_NULL, null=True, blank=True)
    config_snapshot = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.QUEUED, db_index=True)
    epoch = models.PositiveIntegerField(default=0)
    epochs_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    baseline_metrics = models.JSONField(default=dict, blank=True)
    phase_seconds = models.JSONField(default=dict, blank=True)
    # What the running phase is doing right now ("HNSW index 2 of 3: 40% of 1,000,000 items"),
    # for the Models page; emptied when the run ends.
    phase_detail = models.CharField(max_length=200, blank=True, default="")
    # Peak resident memory of the training process during each phase, in MiB (VmHWM, reset per phase).
    phase_peak_rss_mib = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    gate_reason = models.TextField(blank=True, default="")
    artifact_path = models.CharField(max_length=500, blank=True, default="")
    dimension = models.PositiveIntegerField(null=True, blank=True, help_text="LightFM components.")
    n_users = models.PositiveIntegerField(null=True, blank=True)
    n_items = models.PositiveIntegerField(null=True, blank=True)
    n_interactions = models.PositiveBigIntegerField(null=True, blank=True)
    vectors_published = models.BooleanField(default=False)
    task_id = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="one_active_version"),
        ]

    def __str__(self) -> str:
        return f"v{self.pk} ({self.status})"

    @property
    def is_running(self) -> bool:
        return self.status in RUNNING_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status == VersionStatus.ACTIVE

    @property
    def may_still_activate(self) -> bool:
        """Ready for under ``ACTIVATION_SETTLE_SECONDS``: a run that passed its gate is activated in a
        second step moments after it turns ready, so a progress card keeps watching that long."""
        return (
            self.status == VersionStatus.READY
            and self.finished_at is not None
            and (timezone.now() - self.finished_at).total_seconds() < ACTIVATION_SETTLE_SECONDS
        )

    @property
    def progress(self) -> float:
        """0..1 over the whole run, for progress bars."""
        order = [
            VersionStatus.QUEUED,
            VersionStatus.BUILDING_DATASET,
            VersionStatus.TRAINING,
            VersionStatus.EVALUATING,
            VersionStatus.PUBLISHING,
        ]
        if self.status not in order:
            return 1.0
        if self.status == VersionStatus.TRAINING and self.epochs_total:
            return 0.1 + 0.7 * self.epoch / self.epochs_total
        fractions: dict[str, float] = {
            VersionStatus.QUEUED: 0.0,
            VersionStatus.BUILDING_DATASET: 0.05,
            VersionStatus.TRAINING: 0.1,
            VersionStatus.EVALUATING: 0.8,
            VersionStatus.PUBLISHING: 0.9,
        }
        return fractions[self.status]

    def clean(self) -> None:
        if self.status == VersionStatus.ACTIVE and not self.vectors_published:
            raise ValidationError({"status": "Only a version with published vectors can be active."})


from .rerank.models import Impression, Rule, RuleSet  # noqa: E402,F401
