"""Reads for the catalogue: item lists and facets, item statistics, a user's feedback.

Selectors return QuerySets or plain data and own their ``select_related``/``prefetch_related``
and ordering, so views and APIs never build queries themselves (see /work/shared/STYLE.md).

Popularity counts the feedback rows that are *in force*: current states (``is_current=True``)
and repeatable events (``is_current IS NULL``). Superseded ratings (``is_current=False``) are
history and do not count, so re-rating an item does not make it more popular. All-time
popularity is the stored ``Item.popularity`` column, kept exact by triggers (migration 0005).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Avg, Count, Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from catalog.models import Feature, FeatureSubject, Feedback, Item, ItemFeature, UserProfile

ITEM_SORTS = ("popular", "newest", "title")
PROVIDER_FACET = "provider"
FACET_TYPES = ("genre", "year", PROVIDER_FACET)
RATING_KIND = "rating"


class UnknownSortError(ValueError):
    """``item_list`` was asked for a sort order it does not know."""


def feedback_in_force() -> Q:
    """Feedback that counts now, for ORM reads: the same rule as `catalog.sql.feedback_in_force_sql`."""
    # Written as an explicit OR (not ``~Q(is_current=False)``) so PostgreSQL sees two simple
    # predicates it can combine with the feedback(item, kind) index.
    return Q(is_current=True) | Q(is_current__isnull=True)


def _features_prefetch() -> Prefetch:
    return Prefetch("features", queryset=Feature.objects.order_by("type", "value"))


def item_list(
    *,
    search: str = "",
    features: dict[str, list[str]] | None = None,
    provider: str | list[str] | None = None,
    year: int | None = None,
    sort: str = "popular",
    active_only: bool = True,
) -> QuerySet[Item]:
    """Items matching a title search and filters, annotated with ``popularity``.

    ``search`` matches every whitespace-separated word in the title, case-insensitively.
    ``features`` maps a feature type to accepted values: values of one type are alternatives
    (genre Comedy OR Drama), different types must all match (AND). ``provider`` (one name or a
    list of alternatives) matches the item's provider field exactly, ``year`` its publication year.
    """
    if sort not in ITEM_SORTS:
        raise UnknownSortError(f"Unknown sort {sort!r}; use one of {', '.join(ITEM_SORTS)}.")
    items = Item.objects.all()
    if active_only:
        items = items.filter(is_active=True)
    for word in (search or "").split():
        items = items.filter(title__icontains=word)
    for feature_type, values in (features or {}).items():
        values = [value for value in values if value != ""]
        if not values:
            continue
        # EXISTS keeps one row per item, where a join would repeat items with several matches.
        items = items.filter(
            Exists(
                ItemFeature.objects.filter(
                    item=OuterRef("pk"),
                    feature__subject=FeatureSubject.ITEM,
                    feature__type=feature_type,
                    feature__value__in=values,
                )
            )
        )
    providers = [provider] if isinstance(provider, str) else list(provider or [])
    providers = [name for name in providers if name]
    if providers:
        items = items.filter(provider__in=providers)
    if year is not None:
        items = items.filter(published_at__year=year)
    # ``popularity`` is a stored column kept exact by triggers (migration 0005): no per-request count.
    items = items.prefetch_related(_features_prefetch())
    if sort == "popular":
        return items.order_by("-popularity", Lower("title"), "id")
    if sort == "newest":
        return items.order_by(F("published_at").desc(nulls_last=True), "-id")
    return items.order_by(Lower("title"), "id")


def item_detail(*, external_id: str) -> Item:
    """One item by external id, with its features prefetched; raises ``Item.DoesNotExist``."""
    return Item.objects.prefetch_related(_features_prefetch()).get(external_id=external_id)


def item_statistics(*, item: Item) -> dict:
    """Counts and the mean over *current* ratings (a re-rating replaces, it does not add).

    Returns ``{"ratings_count": int, "rating_mean": float | None, "likes_count": int,
    "dislikes_count": int}``.
    """
    current = Feedback.objects.filter(item=item, is_current=True)
    stats = current.aggregate(
        ratings_count=Count("id", filter=Q(kind_id=RATING_KIND)),
        rating_mean=Avg("value", filter=Q(kind_id=RATING_KIND)),
        likes_count=Count("id", filter=Q(kind_id="like")),
        dislikes_count=Count("id", filter=Q(kind_id="dislike")),
    )
    if stats["rating_mean"] is not None:
        stats["rating_mean"] = float(stats["rating_mean"])
    return stats


def feature_facets(
    *,
    subject: str = FeatureSubject.ITEM,
    types: tuple[str, ...] = FACET_TYPES,
) -> dict[str, list[tuple[str, int]]]:
    """Values of each feature type with how many (active) items or profiles carry them.

    Every requested type is a key, empty when no value is in use; values are sorted.
    For items, ``provider`` is read from ``Item.provider`` (the field fairness rules use and
    importers fill), not from Feature rows; filter on it with ``item_list(provider=...)``.
    """
    if subject == FeatureSubject.ITEM:
        usage = Count("item_links", filter=Q(item_links__item__is_active=True))
    else:
        usage = Count("user_links")
    provider_from_items = subject == FeatureSubject.ITEM and PROVIDER_FACET in types
    feature_types = [t for t in types if not (provider_from_items and t == PROVIDER_FACET)]
    rows = (
        Feature.objects.filter(subject=subject, type__in=feature_types)
        .annotate(usage=usage)
        .filter(usage__gt=0)
        .order_by("type", "value")
        .values_list("type", "value", "usage")
    )
    facets: dict[str, list[tuple[str, int]]] = {feature_type: [] for feature_type in types}
    for feature_type, value, count in rows:
        facets[feature_type].append((value, count))
    if provider_from_items:
        providers = (
            Item.objects.filter(is_active=True)
            .exclude(provider="")
            .order_by()
            .values("provider")
            .annotate(usage=Count("id"))
            .order_by("provider")
        )
        facets[PROVIDER_FACET] = [(row["provider"], row["usage"]) for row in providers]
    return facets


def user_profile_for_user(*, user) -> UserProfile | None:
    """The profile of a signed-in user, or None (anonymous, or not created yet)."""
    if user is None or not user.is_authenticated:
        return None
    return UserProfile.objects.filter(user=user).first()


def user_feedback_list(*, profile: UserProfile) -> QuerySet[Feedback]:
    """A profile's current states and events, newest first; superseded history is left out."""
    return (
        Feedback.objects.filter(feedback_in_force(), user=profile)
        .select_related("item", "kind")
        .order_by("-created_at", "-id")
    )


def user_feedback_get(*, profile: UserProfile | None, feedback_id: int) -> Feedback | None:
    """One feedback row if it belongs to ``profile``; None for anyone else's or a missing row."""
    if profile is None:
        return None
    return Feedback.objects.filter(pk=feedback_id, user=profile).select_related("item", "kind").first()


def user_item_state(*, profile: UserProfile | None, item: Item) -> dict[str, float]:
    """The profile's current stateful feedback on an item, as ``{kind code: value}``."""
    if profile is None:
        return {}
    rows = Feedback.objects.filter(user=profile, item=item, is_current=True).values_list("kind_id", "value")
    return dict(rows)


def user_current_rating(*, profile: UserProfile | None, item: Item) -> float | None:
    """The profile's current rating of the item, or None when unrated."""
    if profile is None:
        return None
    return (
        Feedback.objects.filter(user=profile, item=item, kind_id=RATING_KIND, is_current=True)
        .values_list("value", flat=True)
        .first()
    )


def popular_items(*, days: int | None = None, limit: int = 20, active_only: bool = True) -> list[Item]:
    """The most popular items, overall or over the last ``days`` days, each with ``popularity``.

    Items nobody has interacted with in the window are left out, so the list may be shorter
    than ``limit`` (even empty); callers choose their own fallback.
    """
    if days is None:
        # All-time popularity is the stored, trigger-maintained column: an index scan, not a count.
        items = Item.objects.filter(popularity__gt=0)
        if active_only:
            items = items.filter(is_active=True)
        return list(items.order_by("-popularity", "id").prefetch_related(_features_prefetch())[:limit])
    since = timezone.now() - timedelta(days=days)
    rows = Feedback.objects.filter(feedback_in_force())
    # The (created_at, item) index serves this range.
    rows = rows.filter(created_at__gte=since)
    if active_only:
        rows = rows.filter(item__is_active=True)
    top = list(rows.order_by().values("item_id").annotate(total=Count("*")).order_by("-total", "item_id")[:limit])
    counts = {row["item_id"]: row["total"] for row in top}
    by_id = Item.objects.filter(pk__in=counts).prefetch_related(_features_prefetch()).in_bulk()
    ranked = [by_id[item_id] for item_id in counts]
    for item in ranked:
        item.popularity = counts[item.pk]
    return ranked


def catalog_counts() -> dict[str, Any]:
    """Counts of users, items (and active items), feedback in force by kind, features by subject and type.

    Feedback counts are rows *in force*: the current state of stateful kinds plus every repeatable
    event; superseded ratings are left out, so "rating" means how many (user, item) pairs hold a
    rating now. Plain data, ready for JSON: ``{"users", "items", "items_active", "feedback":
    {kind: n}, "features": {subject: {type: n}}}``.
    """
    items = Item.objects.aggregate(total=Count("id"), active=Count("id", filter=Q(is_active=True)))
    feedback = (
        Feedback.objects.filter(feedback_in_force())
        .values_list("kind_id")
        .annotate(count=Count("id"))
        .order_by("kind_id")
    )
    features: dict[str, dict[str, int]] = {}
    for subject, feature_type, count in (
        Feature.objects.values_list("subject", "type").annotate(count=Count("id")).order_by("subject", "type")
    ):
        features.setdefault(subject, {})[feature_type] = count
    return {
        "users": UserProfile.objects.count(),
        "items": items["total"],
        "items_active": items["active"],
        "feedback": dict(feedback),
        "features": features,
    }
