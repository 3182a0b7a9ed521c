"""Admin for experiments: a draft's fields and variants edited together, through the services.

The variants' inline formset validates the experiment and its variants as a whole with
`services.experiment_problems` (shares summing to 100, one control, servable versions, …), the
same rules the dashboard and the API apply, and the save goes through `experiment_create` /
`experiment_update` (one transaction, the audit event). Status changes are the dashboard's
buttons (start, stop, promote): the status is read-only here. A started experiment keeps its
variants and split as its users saw them: only its end, outcome window and description change.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from .models import Experiment, ExperimentEvent, ExperimentStatus, Variant
from .services import (
    EDITABLE_FIELDS,
    EXPERIMENT_FIELDS,
    STARTED_EDITABLE_FIELDS,
    VariantSpec,
    experiment_create,
    experiment_problems,
    experiment_update,
)

STATUS_FIELDS = ("status", "salt", "created_by", "created_at", "started_at", "stopped_at", "winner")


def _is_draft(experiment: Experiment | None) -> bool:
    return experiment is None or experiment.pk is None or experiment.status == ExperimentStatus.DRAFT


def _spec(data: dict) -> VariantSpec:
    return VariantSpec(
        key=data.get("key") or "",
        share=data.get("share") or 0,
        name=data.get("name") or "",
        is_control=bool(data.get("is_control")),
        version=data.get("version"),
        rule_set=data.get("rule_set"),
        candidate_sizes=data.get("candidate_sizes") or None,
        scorer=data.get("scorer") or "model",
    )


class VariantInlineFormSet(forms.BaseInlineFormSet):
    """Validates the experiment with all its (kept) variants, as the services do."""

    def specs(self) -> list[VariantSpec]:
        return [
            _spec(form.cleaned_data)
            for form in self.forms
            if getattr(form, "cleaned_data", None) and not self._should_delete_form(form)
        ]

    def clean(self) -> None:
        super().clean()
        if any(self.errors) or not _is_draft(self.instance):
            return  # row errors first; a started experiment's variants are read-only
        problems = experiment_problems(experiment=self.instance, variants=self.specs())
        messages = [
            message if field == "variants" else f"{field.replace('_', ' ').capitalize()}: {message}"
            for field, field_messages in problems.items()
            for message in field_messages
        ]
        if messages:
            raise ValidationError(messages)


class VariantInline(admin.TabularInline):
    model = Variant
    formset = VariantInlineFormSet
    fields = ("key", "name", "share", "is_control", "version", "rule_set", "scorer", "candidate_sizes")
    extra = 0
    min_num = 2
    ordering = ("position", "id")

    def has_add_permission(self, request, obj=None) -> bool:
        return super().has_add_permission(request, obj) and _is_draft(obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and _is_draft(obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and _is_draft(obj)


class ExperimentEventInline(admin.TabularInline):
    """The audit, read-only: events are written by the services only."""

    model = ExperimentEvent
    fields = ("at", "action", "actor", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-at", "-id")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "surface", "mode", "status", "started_at", "stopped_at", "results_link")
    list_filter = ("status", "surface", "mode")
    search_fields = ("name", "description")
    fields = EXPERIMENT_FIELDS + STATUS_FIELDS
    inlines = (VariantInline, ExperimentEventInline)
    actions = None  # no bulk delete: an experiment is deleted one at a time, as a draft

    @admin.display(description="Results")
    def results_link(self, experiment: Experiment) -> str:
        return format_html('<a href="{}">Results and buttons</a>', reverse("experiments-detail", args=[experiment.pk]))

    def get_inlines(self, request, obj):
        return (VariantInline,) if obj is None else (VariantInline, ExperimentEventInline)  # no audit before saving

    def get_readonly_fields(self, request, obj=None):
        if _is_draft(obj):
            return STATUS_FIELDS
        return STATUS_FIELDS + tuple(name for name in EXPERIMENT_FIELDS if name not in STARTED_EDITABLE_FIELDS)

    def has_delete_permission(self, request, obj=None) -> bool:
        # A started experiment's impressions name it: it stays, with its results and audit.
        return super().has_delete_permission(request, obj) and (obj is None or _is_draft(obj))

    def save_model(self, request, obj, form, change) -> None:
        """Nothing here: the service writes the experiment with its variants in `save_related`."""

    def save_related(self, request, form, formsets, change) -> None:
        for formset in formsets:
            # The service rewrites the variants as a whole; the admin's change message reads these.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        variants_formset = next(formset for formset in formsets if isinstance(formset, VariantInlineFormSet))
        fields = {name: form.cleaned_data[name] for name in form.cleaned_data if name in EDITABLE_FIELDS}
        obj = form.instance
        if not change:
            created = experiment_create(actor=request.user, variants=variants_formset.specs(), **fields)
            obj.pk = created.pk
            obj.refresh_from_db()  # the admin's log entry and redirect use ``obj``
            return
        stored = Experiment.objects.get(pk=obj.pk)
        if _is_draft(stored):
            experiment_update(experiment=stored, actor=request.user, variants=variants_formset.specs(), **fields)
        else:
            changed = {name: fields[name] for name in form.changed_data if name in STARTED_EDITABLE_FIELDS}
            experiment_update(experiment=stored, actor=request.user, **changed)
        obj.refresh_from_db()
