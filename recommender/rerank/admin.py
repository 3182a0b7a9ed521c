"""Admin for re-ranking rules and rule sets, with a live preview of their effect for one user or one item.

Rules are written through `recommender.rerank.services` (the add and change forms, the
changelist's in-place edits, deletes and the bulk delete action), like the API and the dashboard.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.db import transaction
from django.db.models import Count
from django.template.response import TemplateResponse
from django.urls import path, reverse

from catalog.models import Item, UserProfile
from recommender.candidates.base import PooledCandidate
from recommender.selectors import active_version
from recommender.serving import pipeline_preview

from .engine import RerankResult
from .forms import RuleForm
from .models import Impression, Rule, RuleSet
from .services import RULE_FIELDS, rule_create, rule_delete, rule_update

PREVIEW_MAX_K = 50


def preview_build(
    *, profile: UserProfile | None = None, item: Item | None = None, k: int = 10
) -> tuple[list[PooledCandidate], RerankResult]:
    """(ranked before the rules, result after them), built by the serving pipeline itself, so the
    preview shows exactly what serving would do (same sources, scorer and rules; no cache)."""
    return pipeline_preview(profile=profile, item=item, k=k)


def _preview_context(*, user: str, item: str, k: int) -> dict:
    if not user and not item:
        return {}
    profile = UserProfile.objects.filter(external_id=user).first() if user else None
    seed = Item.objects.filter(external_id=item).first() if item and not user else None
    if user and profile is None:
        return {"error": f"No user has the external id {user!r}."}
    if item and not user and seed is None:
        return {"error": f"No item has the external id {item!r}."}
    if active_version() is None:
        return {"error": "No model is active: train and activate one to preview the rules."}
    before, result = preview_build(profile=profile, item=seed, k=k)
    ids = {entry.item_id for entry in before} | {entry.item_id for entry in result.items}
    for effect in result.trace:
        ids.update(effect.removed, effect.promoted, effect.demoted)
    items = Item.objects.in_bulk(ids)
    before_rank = {entry.item_id: rank for rank, entry in enumerate(before, start=1)}
    after_ids = {entry.item_id for entry in result.items}

    def label(item_id: int) -> str:
        row = items.get(item_id)
        return f"{row.title} ({row.external_id})" if row else f"#{item_id}"

    def describe(entry: PooledCandidate, rank: int, was: int | None) -> dict:
        row = items.get(entry.item_id)
        return {
            "rank": rank,
            "item_id": entry.item_id,
            "label": label(entry.item_id),
            "provider": row.provider if row else "",
            "score": entry.score,
            "sources": ", ".join(sorted(entry.sources)),
            "notes": entry.notes,
            "was": was,
            "left": entry.item_id not in after_ids,
        }

    return {
        "subject": profile or seed,
        "before": [describe(entry, rank, None) for rank, entry in enumerate(before[:k], start=1)],
        "after": [
            describe(entry, rank, before_rank.get(entry.item_id)) for rank, entry in enumerate(result.items, start=1)
        ],
        "trace": [
            {
                "name": effect.rule_name,
                "kind": effect.kind,
                "summary": effect.summary,
                "removed": [label(i) for i in effect.removed[:10]],
                "removed_count": len(effect.removed),
                "promoted": [label(i) for i in effect.promoted[:10]],
                "demoted": [label(i) for i in effect.demoted[:10]],
            }
            for effect in result.trace
        ],
        "pool_size": len(before),
    }


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ("name", "kind", "scope", "enabled", "order", "rule_set", "params_short", "starts_at", "ends_at")
    list_editable = ("enabled", "order")
    list_filter = ("kind", "scope", "enabled", "rule_set")
    list_select_related = ("rule_set",)
    search_fields = ("name",)
    ordering = ("order", "id")
    readonly_fields = ("created_at", "updated_at")
    change_list_template = "admin/recommender/rule/change_list.html"

    @admin.display(description="Parameters")
    def params_short(self, rule: Rule) -> str:
        text = json.dumps(rule.params, ensure_ascii=False)
        return text if len(text) <= 80 else text[:77] + "..."

    def save_model(self, request, obj: Rule, form, change: bool) -> None:
        # The form has already validated with Rule.full_clean and set its values on ``obj``; the
        # service validates again (cheap) and owns the transaction and the log line.
        if change:
            rule_update(rule=obj, **{name: getattr(obj, name) for name in form.changed_data if name in RULE_FIELDS})
            return
        created = rule_create(**{name: getattr(obj, name) for name in RULE_FIELDS})
        obj.pk = created.pk
        obj.refresh_from_db()  # the admin's log entry and redirect use ``obj``

    def delete_model(self, request, obj: Rule) -> None:
        rule_delete(rule=obj)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():  # all of the selected rules or none, like queryset.delete()
            for rule in queryset:
                rule_delete(rule=rule)

    def get_urls(self):
        preview = path("preview/", self.admin_site.admin_view(self.preview_view), name="recommender_rule_preview")
        return [preview, *super().get_urls()]

    def preview_view(self, request):
        user = request.GET.get("user", "").strip()
        item = request.GET.get("item", "").strip()
        try:
            k = min(max(int(request.GET.get("k", 10)), 1), PREVIEW_MAX_K)
        except ValueError:
            k = 10
        context = {
            **self.admin_site.each_context(request),
            "title": "Re-ranking preview",
            "opts": self.model._meta,
            "user_query": user,
            "item_query": item,
            "k": k,
            "changelist_url": reverse("admin:recommender_rule_changelist"),
            **_preview_context(user=user, item=item, k=k),
        }
        return TemplateResponse(request, "admin/recommender/rule/preview.html", context)


@admin.register(RuleSet)
class RuleSetAdmin(admin.ModelAdmin):
    """Named groups of rules: switched on or off together, and what an experiment's variant names."""

    list_display = ("name", "enabled", "rule_count", "description", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "description")
    readonly_fields = ("created_at", "updated_at")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(rule_total=Count("rules"))

    @admin.display(description="Rules", ordering="rule_total")
    def rule_count(self, rule_set) -> int:
        return rule_set.rule_total


@admin.register(Impression)
class ImpressionAdmin(admin.ModelAdmin):
    list_display = ("shown_at", "profile", "item", "surface")
    list_filter = ("surface",)
    raw_id_fields = ("profile", "item")
    list_select_related = ("profile", "item")
    show_full_result_count = False  # impressions grow fast; no exact count on every page

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
