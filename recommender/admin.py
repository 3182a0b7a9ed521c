"""Admin for the recommender: training configurations ("Train now"), model versions (read-only,
with "Activate" and "Roll back"), and the re-ranking rules (`rerank/admin.py`, imported here so
the admin's autodiscovery finds them)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from config.exception_handlers import ApplicationError
from recommender.ml.training import HyperParameterError
from recommender.services.activation import model_version_activate, model_version_rollback
from recommender.services.training import model_training_request

from .models import ModelVersion, TrainingConfig
from .rerank import admin as rerank_admin  # noqa: F401  (registers Rule, RuleSet and Impression)


@admin.register(TrainingConfig)
class TrainingConfigAdmin(admin.ModelAdmin):
    list_display = ("name", "is_default", "loss", "no_components", "epochs", "learning_rate", "split")
    list_filter = ("loss", "split")
    search_fields = ("name",)
    actions = ("train_now",)

    @admin.action(description="Train now with the selected configuration")
    def train_now(self, request, queryset):
        configs = list(queryset)
        if len(configs) != 1:
            self.message_user(request, "Select exactly one configuration to train.", messages.ERROR)
            return
        try:
            version = model_training_request(config=configs[0], requested_by=request.user)
        except (ApplicationError, HyperParameterError, ValidationError) as error:
            self.message_user(request, getattr(error, "message", str(error)), messages.ERROR)
            return
        self.message_user(request, f"Training v{version.pk} is queued with {configs[0].name}.", messages.SUCCESS)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "progress_percent", "precision", "config", "created_at", "activated_at")
    list_filter = ("status",)
    list_select_related = ("config",)
    actions = ("activate", "roll_back")
    readonly_fields = [field.name for field in ModelVersion._meta.fields] + ["progress_percent"]

    @admin.display(description="Progress")
    def progress_percent(self, version: ModelVersion) -> str:
        return f"{version.progress:.0%}"

    @admin.display(description="Precision@k (baseline)")
    def precision(self, version: ModelVersion) -> str:
        k = version.config_snapshot.get("eval_k", 10)
        mine = version.metrics.get(f"precision_at_{k}")
        baseline = version.baseline_metrics.get(f"precision_at_{k}")
        if mine is None:
            return "–"
        return f"{mine:.4f}" + (f" ({baseline:.4f})" if baseline is not None else "")

    def has_add_permission(self, request):
        return False  # versions are created by training runs only

    def has_change_permission(self, request, obj=None):
        return False  # status changes go through the actions below (activation is a service)

    def has_delete_permission(self, request, obj=None):
        return False  # retirement drops the vector tables; see model_versions_retire

    @admin.action(description="Activate the selected version")
    def activate(self, request, queryset):
        versions = list(queryset)
        if len(versions) != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        try:
            version = model_version_activate(version=versions[0], reason=f"Activated by {request.user} in the admin.")
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"v{version.pk} is now active.", messages.SUCCESS)

    @admin.action(description="Roll back to the previously active version")
    def roll_back(self, request, queryset):
        try:
            version = model_version_rollback()
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"Rolled back: v{version.pk} is active again.", messages.SUCCESS)
