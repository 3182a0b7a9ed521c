"""Reads for the dashboard: the profile being viewed, catalogue counts, imports, the embedding map."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Q
from psycopg import sql

from catalog.array_selectors import item_strongest_feature_values
from catalog.models import Feature, FeatureSubject, Feedback, Item, UserProfile
from recommender.models import ModelVersion
from recommender.serving.experiments import FORCED_VARIANTS_SESSION_KEY
from recommender.vectors.store import VersionTables

from .projection import pca_2d

logger = logging.getLogger(__name__)

# Staff pick a user in the nav; pages that show recommendations read the profile through
# `viewing_profile`. The session stores the UserProfile primary key under this key.
VIEW_AS_SESSION_KEY = "view_as_profile_id"
VIEW_AS_LABEL_SESSION_KEY = "view_as_external_id"

IMPORT_TASK_NAME = "recommender.dashboard.tasks.catalog_import_task"

MAP_MAX_POINTS = 5000  # more points than this make an unreadable map and a slow page
MAP_CACHE_SECONDS = 600  # cold-start items added to a version appear after this at the latest
MAP_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#17becf",
    "#bcbd22",
)
MAP_OTHER_COLOR = "#9aa3ad"
PROVIDER_COLOR = "provider"


def viewing_profile(request) -> UserProfile | None:
    """The profile whose recommendations a page should show.

    Staff who chose a user with the "view as" switcher see that user's profile; everyone else
    (and staff who did not choose) sees their own profile, or None when signed out or without one.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    if user.is_staff:
        profile_id = request.session.get(VIEW_AS_SESSION_KEY)
        if profile_id is not None:
            profile = UserProfile.objects.filter(pk=profile_id).first()
            if profile is not None:
                return profile
    return UserProfile.objects.filter(user=user).first()


def view_as_profile(request) -> UserProfile | None:
    """The profile staff chose to view as, or None (not chosen, not staff, or deleted since)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_staff:
        return None
    profile_id = request.session.get(VIEW_AS_SESSION_KEY)
    return UserProfile.objects.filter(pk=profile_id).first() if profile_id is not None else None


def forced_variants(request) -> dict[str, str] | None:
    """The experiment variants a staff member chose to see the site as ({experiment id: key}), else None."""
    user = getattr(request, "user", None)
    if user is None or not user.is_staff:
        return None
    forced = request.session.get(FORCED_VARIANTS_SESSION_KEY)
    return dict(forced) if isinstance(forced, dict) and forced else None


def profile_search(*, query: str, limit: int = 20) -> list[UserProfile]:
    """Profiles whose external id or username starts with ``query`` (for the switcher's suggestions)."""
    query = query.strip()
    if not query:
        return []
    rows = UserProfile.objects.select_related("user").filter(external_id__istartswith=query)
    return list(rows.order_by("external_id")[:limit])


# ------------------------------------------------------------------------------------------
# Data page
# ------------------------------------------------------------------------------------------


@dataclass
class CatalogCounts:
    users: int
    items: int
    active_items: int
    features: dict[str, int]  # "item" / "user" → count
    feedback_by_kind: list[dict]  # [{"kind": code, "name": ..., "total": n, "current": n}]
    feedback_total: int


def catalog_counts() -> CatalogCounts:
    """Exact counts (a handful of index-only scans; tens of milliseconds on ml-100k)."""
    items = Item.objects.aggregate(total=Count("id"), active=Count("id", filter=Q(is_active=True)))
    features = dict(Feature.objects.values_list("subject").annotate(n=Count("id")).order_by())
    by_kind = list(Feedback.objects.values("kind", "kind__name").annotate(total=Count("id")).order_by("-total"))
    return CatalogCounts(
        users=UserProfile.objects.count(),
        items=items["total"],
        active_items=items["active"],
        features={subject: features.get(subject, 0) for subject in FeatureSubject.values},
        feedback_by_kind=[{"kind": row["kind"], "name": row["kind__name"], "total": row["total"]} for row in by_kind],
        feedback_total=sum(row["total"] for row in by_kind),
    )


def import_task_list(*, limit: int = 5):
    from django_celery_results.models import TaskResult

    return TaskResult.objects.filter(task_name=IMPORT_TASK_NAME).order_by("-date_created")[:limit]


def import_task_get(*, task_id: str):
    from django_celery_results.models import TaskResult

    return TaskResult.objects.filter(task_id=task_id).first()


# ------------------------------------------------------------------------------------------
# Embedding map
# ------------------------------------------------------------------------------------------


def map_color_choices() -> list[str]:
    """Item feature types, plus the provider column, that can colour the map."""
    types = sorted(set(Feature.objects.filter(subject=FeatureSubject.ITEM).values_list("type", flat=True)))
    return [*types, PROVIDER_COLOR]


def _version_embeddings(version_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids (n,) int64, embeddings (n, d) float32) of a published version."""
    table = sql.Identifier(VersionTables(version_id).items)
    # ``::real[]`` returns a plain array, so no pgvector adapter is needed on this connection.
    query = sql.SQL("SELECT item_id, embedding::real[] FROM {} ORDER BY item_id").format(table)
    with connection.cursor() as cursor:
        cursor.execute(query.as_string(connection.connection))
        rows = cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    return ids, np.asarray([row[1] for row in rows], dtype=np.float32)


def version_projection(*, version: ModelVersion) -> dict:
    """PCA coordinates of a version's item embeddings (cached per version: its vectors never change)."""
    key = f"dashboard:projection:v{version.pk}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    ids, embeddings = _version_embeddings(version.pk)
    coordinates, explained = pca_2d(embeddings)
    if len(ids) > MAP_MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(ids), MAP_MAX_POINTS, replace=False))
        ids, coordinates = ids[keep], coordinates[keep]
    projection = {
        "item_ids": ids.tolist(),
        "xy": np.round(coordinates, 4).tolist(),
        "explained": [round(float(x), 4) for x in explained],
        "total_items": len(embeddings),
    }
    cache.set(key, projection, MAP_CACHE_SECONDS)
    return projection


def _item_categories(item_ids: list[int], color: str) -> dict[int, str]:
    if color == PROVIDER_COLOR:
        return {
            pk: provider or "(none)"
            for pk, provider in Item.objects.filter(pk__in=item_ids).values_list("pk", "provider")
        }
    # An item can carry several values of one type (several genres): colour by its strongest.
    return item_strongest_feature_values(item_ids=item_ids, feature_type=color)


def embedding_map_points(*, version: ModelVersion, color: str) -> dict:
    """The map's JSON: categories with colours and compact points [x, y, category, external_id, title]."""
    projection = version_projection(version=version)
    item_ids = projection["item_ids"]
    category_of = _item_categories(item_ids, color)
    items = {
        pk: (external_id, title)
        for pk, external_id, title in Item.objects.filter(pk__in=item_ids).values_list("pk", "external_id", "title")
    }
    counts: dict[str, int] = {}
    for pk in item_ids:
        name = category_of.get(pk, "(none)")
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts, key=lambda name: (-counts[name], name))
    named = ranked[: len(MAP_PALETTE)]
    index_of = {name: index for index, name in enumerate(named)}
    categories = [
        {"name": name, "color": MAP_PALETTE[index], "count": counts[name]} for index, name in enumerate(named)
    ]
    other = len(categories)
    if len(ranked) > len(named):
        categories.append(
            {
                "name": f"other ({len(ranked) - len(named)} values)",
                "color": MAP_OTHER_COLOR,
                "count": sum(counts[name] for name in ranked[len(named) :]),
            }
        )
    points = []
    for pk, (x, y) in zip(item_ids, projection["xy"], strict=True):
        if pk not in items:  # deleted since the version was trained
            continue
        external_id, title = items[pk]
        points.append([x, y, index_of.get(category_of.get(pk, "(none)"), other), external_id, title])
    return {
        "version": version.pk,
        "color": color,
        "explained": projection["explained"],
        "total_items": projection["total_items"],
        "categories": categories,
        "points": points,
    }
