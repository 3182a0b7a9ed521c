"""Recommendation pages: the homepage list and the related-items panel of an item page.

Thin views over `recommender.serving`. Both render without JavaScript; with htmx the item page
loads its panel as a fragment and reloads it after a rating (the fold-in has already run by
then, synchronously in the rating's request), so recommendations change in place.
"""

from __future__ import annotations

import re
import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from catalog import selectors as catalog_selectors
from catalog.models import Item

from . import serving
from .dashboard.selectors import forced_variants, viewing_profile
from .serving.results import SOURCE_LABELS

HOME_COUNT = 12
RELATED_COUNT = 8
FOR_YOU_ON_ITEM_PAGE = 4
# An anonymous visitor's id for experiments on the related panel (assignment needs a stable unit).
# Set only when an experiment served the visitor: no experiment, no cookie.
VISITOR_COOKIE = "rec_visitor"
VISITOR_COOKIE_MAX_AGE = 365 * 24 * 3600
_VISITOR_ID = re.compile(r"[0-9a-f]{32}")


def home(request: HttpRequest) -> HttpResponse:
    # Staff who picked a user in the "view as" switcher see that user's homepage.
    profile = viewing_profile(request)
    if profile is None:
        # Without a profile (signed out, or signed in before a first rating) there is nothing to
        # personalise: the catalogue's welcome (popular, else newest) and a notice that fits, with
        # no pipeline and no per-visitor work.
        return render(request, "recommender/home_no_profile.html", _catalog_welcome())
    # Staff who picked a variant on an experiment's page see that variant ("view as" a variant).
    result = serving.recommend_for_user(profile=profile, k=HOME_COUNT, forced_variants=forced_variants(request))
    template = "recommender/recommendations_list.html" if request.htmx else "recommender/home.html"
    show_rows = request.GET.get("rows") == "sources"
    context = {
        "result": result,
        "signed_in": True,
        "viewing_other": profile.user_id != request.user.pk,
        "viewed_profile": profile,
        "show_rows": show_rows,
        "source_rows": _source_rows(profile) if show_rows and not result.fallback else [],
    }
    return render(request, template, context)


SOURCE_ROW_ORDER = ("personal_ann", "because_you_liked", "content_based", "popular", "fresh")
SOURCE_ROW_SIZE = 6


def _source_rows(profile) -> list[dict]:
    """One row per candidate source: its best items by the model's score, before the rules.

    Lets a product manager see what each source contributes to the merged pool.
    """
    ranked, _ = serving.pipeline_preview(profile=profile, k=HOME_COUNT)
    picks = {source: [c for c in ranked if source in c.sources][:SOURCE_ROW_SIZE] for source in SOURCE_ROW_ORDER}
    wanted = {c.item_id for row in picks.values() for c in row}
    items = Item.objects.filter(pk__in=wanted).prefetch_related("features").in_bulk()
    return [
        {
            "source": source,
            "label": SOURCE_LABELS.get(source, source.replace("_", " ")),
            "items": [items[c.item_id] for c in row if c.item_id in items],
        }
        for source, row in picks.items()
        if row
    ]


def _catalog_welcome() -> dict:
    items = catalog_selectors.popular_items(limit=HOME_COUNT)
    showing_popular = bool(items)
    if not items:
        items = list(catalog_selectors.item_list(sort="newest")[:HOME_COUNT])
    return {"items": items, "showing_popular": showing_popular}


def item_related_panel(request: HttpRequest, external_id: str) -> HttpResponse:
    """Related items (and, when signed in, a few personal picks) for one item page."""
    item = Item.objects.filter(external_id=external_id).first()
    if item is None or not item.is_active:
        raise Http404("No item with this id.")
    profile = viewing_profile(request)
    forced = forced_variants(request)
    visitor, new_visitor = None, False
    if profile is None:
        visitor = request.COOKIES.get(VISITOR_COOKIE, "")
        if not _VISITOR_ID.fullmatch(visitor):
            visitor, new_visitor = uuid.uuid4().hex, True
    related = serving.related_items(
        item=item, k=RELATED_COUNT, profile=profile, visitor=visitor, forced_variants=forced
    )
    for_you = (
        serving.recommend_for_user(profile=profile, k=FOR_YOU_ON_ITEM_PAGE, forced_variants=forced) if profile else None
    )
    context = {"item": item, "related": related, "for_you": for_you}
    template = "recommender/related_panel.html" if request.htmx else "recommender/related_page.html"
    response = render(request, template, context)
    if new_visitor and related.experiment is not None:
        response.set_cookie(
            VISITOR_COOKIE,
            visitor,
            max_age=VISITOR_COOKIE_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure(),
        )
    return response
