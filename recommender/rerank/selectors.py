"""Reads for re-ranking: the rules of a surface, and everything the rules need about the
candidates, loaded in one batch per request.

`rerank_data_fetch` runs a handful of set-based queries over the candidate ids (never one
query per item), and only the queries the given rules need: a request whose rules are only
"exclude rated" reads the item rows and that user's feedback on the candidates, nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max, Q

from catalog.models import Feedback, FeatureSubject, Item, ItemFeature
from recommender import ann

from .models import Impression, Rule, RuleScope
from .params import RuleKind

LONG_TAIL_THRESHOLD_TTL_SECONDS = 600

_FEATURE_KINDS = {RuleKind.FILTER_FEATURE, RuleKind.BOOST_FEATURE, RuleKind.DIVERSITY_FEATURE_CAP}
_FEEDBACK_KINDS = {RuleKind.FILTER_SEEN, RuleKind.FILTER_DISLIKED}


@dataclass(frozen=True)
class ItemAttributes:
    item_id: int
    external_id: str
    provider: str
    published_at: datetime | None
    is_active: bool


@dataclass(frozen=True)
class UserFeedback:
    """One in-force feedback row of the requesting user on a candidate."""

    kind: str
    kind_weight: float
    value: float
    is_current: bool | None


@dataclass
class RerankData:
    """What the rules read, keyed by item id. Loaded by `rerank_data_fetch`."""

    items: dict[int, ItemAttributes] = field(default_factory=dict)
    # type -> values, per item
    features: dict[int, dict[str, frozenset[str]]] = field(default_factory=dict)
    feedback: dict[int, list[UserFeedback]] = field(default_factory=dict)
    last_shown_at: dict[int, datetime] = field(default_factory=dict)
    popularity: dict[int, int] = field(default_factory=dict)
    # percentile -> popularity at that percentile of the catalogue (long tail: popularity <= threshold)
    long_tail_thresholds: dict[float, int] = field(default_factory=dict)
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    item_id_by_external_id: dict[str, int] = field(default_factory=dict)

    def feature_values(self, item_id: int, feature_type: str) -> frozenset[str]:
        return self.features.get(item_id, {}).get(feature_type, frozenset())


def rules_for_surface(*, surface: str) -> list[Rule]:
    """The enabled rules that apply to ``surface``, in application order (periods not checked here)."""
    return list(
        Rule.objects.filter(enabled=True, scope__in=[surface, RuleScope.BOTH]).order_by("order", "id")
    )


def rule_list():
    return Rule.objects.order_by("order", "id")


def long_tail_threshold(*, percentile: float, use_cache: bool = True) -> int:
    """Popularity (count of in-force feedback) at ``percentile`` of all active items, zeros included.

    The whole catalogue is aggregated, so the answer is cached for a few minutes: popularity
    percentiles move slowly, and serving must not pay a full feedback scan per request.
    """
    key = f"rerank:long_tail_threshold:{percentile:g}"
    if use_cache and (cached := cache.get(key)) is not None:
        return cached
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(percentile_disc(%s) WITHIN GROUP (ORDER BY coalesce(f.total, 0)), 0) "
            "FROM catalog_item i LEFT JOIN ("
            "  SELECT item_id, count(*) AS total FROM catalog_feedback"
            "  WHERE is_current IS DISTINCT FROM false GROUP BY item_id"
            ") f ON f.item_id = i.id WHERE i.is_active",
            [percentile / 100.0],
        )
        threshold = int(cursor.fetchone()[0])
    cache.set(key, threshold, LONG_TAIL_THRESHOLD_TTL_SECONDS)
    return threshold


def item_embeddings_fetch(*, version_id: int, item_ids: list[int]) -> dict[int, np.ndarray]:
    """Bare item representations of a version (the cosine-indexed ``embedding`` column), by item id."""
    if not item_ids:
        return {}
    ids, embeddings = ann.item_embeddings_fetch(version_id=version_id, item_ids=item_ids)
    return dict(zip(ids.tolist(), embeddings))


def _impression_window(rules: list[tuple[str, dict]]) -> timedelta | None:
    windows = []
    for kind, params in rules:
        if kind == RuleKind.FILTER_SEEN and params.get("impressions_within_days"):
            windows.append(timedelta(days=params["impressions_within_days"]))
        if kind == RuleKind.DEMOTE_SHOWN:
            windows.append(timedelta(hours=params["within_hours"]))
    return max(windows) if windows else None


def rerank_data_fetch(*, item_ids: list[int], rules: list[tuple[str, dict]], profile_id: int | None,
                      version_id: int | None, now: datetime) -> RerankData:
    """Load, in one batch, what ``rules`` ((kind, validated params) pairs) need about ``item_ids``.

    Pinned items are loaded too (by external id) even when no source nominated them.
    """
    kinds = {kind for kind, _ in rules}
    data = RerankData()
    pinned_external_ids = [params["item"] for kind, params in rules if kind == RuleKind.PIN]
    rows = Item.objects.filter(Q(pk__in=item_ids) | Q(external_id__in=pinned_external_ids)).values_list(
        "pk", "external_id", "provider", "published_at", "is_active")
    for pk, external_id, provider, published_at, is_active in rows:
        data.items[pk] = ItemAttributes(pk, external_id, provider, published_at, is_active)
        data.item_id_by_external_id[external_id] = pk
    all_ids = list(data.items)

    if kinds & _FEATURE_KINDS:
        wanted_types = {params["feature_type"] for kind, params in rules if kind in _FEATURE_KINDS}
        links = ItemFeature.objects.filter(
            item_id__in=all_ids, feature__subject=FeatureSubject.ITEM, feature__type__in=wanted_types,
        ).values_list("item_id", "feature__type", "feature__value")
        grouped: dict[int, dict[str, set[str]]] = {}
        for item_id, feature_type, value in links:
            grouped.setdefault(item_id, {}).setdefault(feature_type, set()).add(value)
        data.features = {item_id: {t: frozenset(v) for t, v in types.items()} for item_id, types in grouped.items()}

    if profile_id is not None and kinds & _FEEDBACK_KINDS:
        rows = (Feedback.objects.filter(Q(is_current=True) | Q(is_current__isnull=True),
                                        user_id=profile_id, item_id__in=all_ids)
                .order_by().values_list("item_id", "kind_id", "kind__weight", "value", "is_current"))
        for item_id, kind, weight, value, is_current in rows:
            data.feedback.setdefault(item_id, []).append(UserFeedback(kind, weight, value, is_current))

    window = _impression_window(rules)
    if profile_id is not None and window is not None:
        shown = (Impression.objects.filter(profile_id=profile_id, item_id__in=all_ids, shown_at__gte=now - window)
                 .order_by().values("item_id").annotate(last=Max("shown_at")).values_list("item_id", "last"))
        data.last_shown_at = dict(shown)

    if RuleKind.FAIRNESS_LONG_TAIL in kinds:
        counts = (Feedback.objects.filter(Q(is_current=True) | Q(is_current__isnull=True), item_id__in=all_ids)
                  .order_by().values("item_id").annotate(total=Count("*")).values_list("item_id", "total"))
        data.popularity = {item_id: 0 for item_id in all_ids} | dict(counts)
        for kind, params in rules:
            if kind == RuleKind.FAIRNESS_LONG_TAIL:
                percentile = float(params["percentile"])
                data.long_tail_thresholds[percentile] = long_tail_threshold(percentile=percentile)

    if RuleKind.DIVERSITY_MMR in kinds and version_id is not None:
        data.embeddings = item_embeddings_fetch(version_id=version_id, item_ids=all_ids)
    return data
