"""Rules page: on/off toggles for the re-ranking rules and a before/after preview for one user."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from catalog.models import Item, UserProfile
from recommender.rerank.models import Rule
from recommender.rerank.selectors import rule_list

from ..access import staff_required
from ..selectors import view_as_profile
from ..services import rule_set_enabled

logger = logging.getLogger(__name__)

PREVIEW_K = 10


@staff_required
def rules_page(request: HttpRequest) -> HttpResponse:
    chosen = request.GET.get("user", "").strip()
    if not chosen:
        viewed = view_as_profile(request)
        chosen = viewed.external_id if viewed else ""
    return render(request, "dashboard/rules.html", {"rules": rule_list(), "preview_user": chosen})


@require_POST
@staff_required
def rule_toggle(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(Rule, pk=rule_id)
    enabled = request.POST.get("enabled") == "on"
    error = ""
    try:
        rule = rule_set_enabled(rule=rule, enabled=enabled)
    except ValidationError as invalid:
        # A rule that no longer validates (e.g. its pinned item was deleted) cannot be switched on.
        rule.refresh_from_db()
        error = "; ".join(invalid.messages)
    response = render(request, "partials/dashboard_rule_row.html", {"rule": rule, "error": error})
    if not error:
        response["HX-Trigger"] = "rules-changed"
    return response


def _titles(item_ids: list[int]) -> dict[int, Item]:
    return Item.objects.in_bulk(item_ids)


@staff_required
def rules_preview(request: HttpRequest) -> HttpResponse:
    from recommender.serving import pipeline_preview

    external_id = request.GET.get("user", "").strip()
    profile = UserProfile.objects.filter(external_id=external_id).first() if external_id else None
    context = {"preview_user": external_id, "unknown_user": bool(external_id) and profile is None}
    if not context["unknown_user"]:
        before, result = pipeline_preview(profile=profile, k=PREVIEW_K)
        before = before[:PREVIEW_K]
        items = _titles([c.item_id for c in before] + [c.item_id for c in result.items])
        after_ids = [c.item_id for c in result.items]
        before_ids = [c.item_id for c in before]
        context.update(
            {
                "profile": profile,
                "before": [
                    {"candidate": c, "item": items.get(c.item_id), "kept": c.item_id in after_ids} for c in before
                ],
                "after": [
                    {
                        "candidate": c,
                        "item": items.get(c.item_id),
                        "moved": (before_ids.index(c.item_id) - rank) if c.item_id in before_ids else None,
                    }
                    for rank, c in enumerate(result.items)
                ],
                "trace": result.trace,
            }
        )
    return render(request, "partials/dashboard_rules_preview.html", context)
