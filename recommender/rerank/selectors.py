"""Reads for re-ranking: the rules of a surface, and everything the rules need about the
candidates, loaded in one batch per request.

`rerank_data_fetch` runs a handful of set-based queries over the candidate ids (never one
query per item), and only the queries the given rules need: a request whose rules are only
"exclude rated" reads the item rows and that user's feedback on the candidates, nothing more.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.db import connection
from django.db.models import Count, Q

from catalog.array_selectors import (
    item_active_popularity,
    item_attribute_rows,
    item_feature_value_rows,
    user_feedback_rows,
)
from recommender.memo import GenerationMemo
from recommender.vectors.base import VectorIndex

from .models import Rule, RuleScope, RuleSet
from .params import RuleKind

POPULARITY_TTL_SECONDS = 600

_FEATURE_KINDS = {RuleKind.FILTER_FEATURE, RuleKind.BOOST_FEATURE, RuleKind.DIVERSITY_FEATURE_CAP}
_FEEDBACK_KINDS = {RuleKind.FILTER_SEEN, RuleKind.FILTER_DISLIKED}
_ITEM_ROW_KINDS = {
    RuleKind.FILTER_AGE,
    RuleKind.FILTER_INACTIVE,
    RuleKind.BOOST_FRESHNESS,
    RuleKind.FAIRNESS_PROVIDER_CAP,
    RuleKind.PIN,
}


@dataclass(frozen=True)
class ItemAttributes:
    item_id: int
    external_id: str
    provider: str
    published_epoch: float | None  # unix seconds
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
    last_shown_epoch: dict[int, float] = field(default_factory=dict)  # item id -> unix seconds
    popularity: dict[int, int] = field(default_factory=dict)
    # percentile -> popularity at that percentile of the catalogue (long tail: popularity <= threshold)
    long_tail_thresholds: dict[float, int] = field(default_factory=dict)
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    item_id_by_external_id: dict[str, int] = field(default_factory=dict)

    def feature_values(self, item_id: int, feature_type: str) -> frozenset[str]:
        return self.features.get(item_id, {}).get(feature_type, frozenset())


def _rules_read(key: tuple[str, int | None]) -> tuple[Rule, ...]:
    surface, rule_set_id = key
    # Rules outside any set always apply; a set's rules apply while it is enabled, or when a
    # variant names that set (`recommender.experiments`).
    in_set = Q(rule_set_id=rule_set_id) if rule_set_id is not None else Q(rule_set__enabled=True)
    return tuple(
        Rule.objects.filter(Q(rule_set__isnull=True) | in_set, enabled=True, scope__in=[surface, RuleScope.BOTH])
        .select_related("rule_set")
        .order_by("order", "id")
    )


# Every rule or rule-set save or delete bumps the global generation inside its own transaction,
# so the new rules and the new generation become visible together. The Rule objects are shared
# between requests: callers only read them.
RULES: GenerationMemo[tuple[str, int | None], tuple[Rule, ...]] = GenerationMemo("rules", _rules_read, max_entries=32)


def rules_for_surface(*, surface: str, generation: int | None = None, rule_set_id: int | None = None) -> list[Rule]:
    """The enabled rules that apply to ``surface``, in application order (periods not checked here).

    ``rule_set_id`` None: the rules in force (outside any set, or in an enabled set); else the
    rules outside any set plus that set's, enabled or not (an experiment's variant).
    Kept per process for the ``global`` cache ``generation`` the request read (`recommender.memo`).
    """
    return list(RULES.get((surface, rule_set_id), generation=generation))


def rule_list():
    return Rule.objects.order_by("order", "id")


def rule_set_list():
    """Rule sets by name, each with ``rule_count`` and ``variant_count`` (the variants naming it)."""
    return RuleSet.objects.annotate(
        rule_count=Count("rules", distinct=True), variant_count=Count("variants", distinct=True)
    ).order_by("name", "id")


@dataclass(frozen=True)
class PopularitySnapshot:
    """Popularity (count of in-force feedback) of every active item, taken at one moment."""

    counts: dict[int, int]  # item id -> count; active items without feedback are absent (count 0)
    sorted_counts: np.ndarray  # (n_active_items,) int64 ascending, zeros included
    taken_at: float  # time.monotonic()

    def threshold(self, percentile: float) -> int:
        """The count at ``percentile`` (0-100], as SQL's percentile_disc: the smallest count whose
        cumulative share of items reaches the percentile."""
        if len(self.sorted_counts) == 0:
            return 0
        return int(np.percentile(self.sorted_counts, percentile, method="inverted_cdf"))


_popularity: PopularitySnapshot | None = None
_popularity_lock = threading.Lock()


def popularity_snapshot(*, max_age_seconds: float = POPULARITY_TTL_SECONDS) -> PopularitySnapshot:
    """The process's popularity snapshot, refreshed when older than ``max_age_seconds``.

    The long tail is defined against the whole catalogue, which costs a full aggregation of the
    feedback log (tens of ms on 100k ratings); counting only the candidates still took ~25 ms per
    request. Popularity moves slowly, so one aggregation per process every few minutes serves
    every request from memory (0 queries); ``max_age_seconds=0`` forces a fresh one.
    """
    global _popularity
    snapshot = _popularity
    if snapshot is not None and time.monotonic() - snapshot.taken_at < max_age_seconds:
        return snapshot
    with _popularity_lock:
        rows = item_active_popularity()
        counts = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
        snapshot = PopularitySnapshot(
            counts={item_id: total for item_id, total in rows if total},
            sorted_counts=np.sort(counts),
            taken_at=time.monotonic(),
        )
        _popularity = snapshot
    return snapshot


def popularity_snapshot_clear() -> None:
    """Forget the snapshot (tests build a new catalogue each time)."""
    global _popularity
    _popularity = None


def long_tail_threshold(*, percentile: float, use_cache: bool = True) -> int:
    """Popularity at ``percentile`` of all active items, zeros included: at or below it is long tail."""
    return popularity_snapshot(max_age_seconds=POPULARITY_TTL_SECONDS if use_cache else 0).threshold(percentile)


def item_embeddings_fetch(*, vector_index: VectorIndex, item_ids: list[int]) -> dict[int, np.ndarray]:
    """Bare item representations of the request's version, by item id (from its vector index)."""
    if not item_ids:
        return {}
    ids, embeddings = vector_index.embeddings(item_ids)
    return dict(zip(ids.tolist(), embeddings, strict=True))


# A window reaching back further than any impression can means "every impression". Rule
# parameters are unbounded floats (a rule of 1e300 days is valid), and timedelta overflows near
# 1e9 days, so windows are capped here rather than failing every request of the surface.
IMPRESSION_WINDOW_CAP_DAYS = 100 * 365


def _impression_window(rules: list[tuple[str, dict]]) -> timedelta | None:
    days = []
    for kind, params in rules:
        if kind == RuleKind.FILTER_SEEN and params.get("impressions_within_days"):
            days.append(float(params["impressions_within_days"]))
        if kind == RuleKind.DEMOTE_SHOWN:
            days.append(float(params["within_hours"]) / 24.0)
    return timedelta(days=min(max(days), IMPRESSION_WINDOW_CAP_DAYS)) if days else None


def _rows(query: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def rerank_data_fetch(
    *,
    item_ids: list[int],
    rules: list[tuple[str, dict]],
    profile_id: int | None,
    now: datetime,
    vector_index: VectorIndex | None = None,
) -> RerankData:
    """Load, in one batch, what ``rules`` ((kind, validated params) pairs) need about ``item_ids``.

    Pinned items are loaded too (by external id) even when no source nominated them.

    The catalogue's rows come from `catalog.array_selectors` as plain tuples (see
    `item_attribute_rows` for why). Rule parameters only ever travel as bound values.
    """
    kinds = {kind for kind, _ in rules}
    data = RerankData()
    all_ids = list(item_ids)
    if kinds & _ITEM_ROW_KINDS:
        pinned_external_ids = [params["item"] for kind, params in rules if kind == RuleKind.PIN]
        for pk, external_id, provider, published, is_active in item_attribute_rows(
            item_ids=all_ids, external_ids=pinned_external_ids
        ):
            data.items[pk] = ItemAttributes(pk, external_id, provider, published, is_active)
            data.item_id_by_external_id[external_id] = pk
        all_ids = list(dict.fromkeys(all_ids + list(data.items)))  # + pinned items not among the candidates

    if kinds & _FEATURE_KINDS:
        wanted_types = sorted({params["feature_type"] for kind, params in rules if kind in _FEATURE_KINDS})
        grouped: dict[int, dict[str, set[str]]] = {}
        for item_id, feature_type, value in item_feature_value_rows(item_ids=all_ids, feature_types=wanted_types):
            grouped.setdefault(item_id, {}).setdefault(feature_type, set()).add(value)
        data.features = {item_id: {t: frozenset(v) for t, v in types.items()} for item_id, types in grouped.items()}

    if profile_id is not None and kinds & _FEEDBACK_KINDS:
        for item_id, kind, weight, value, is_current in user_feedback_rows(profile_id=profile_id, item_ids=all_ids):
            data.feedback.setdefault(item_id, []).append(UserFeedback(kind, weight, value, is_current))

    window = _impression_window(rules)
    if profile_id is not None and window is not None:
        data.last_shown_epoch = dict(
            _rows(
                "SELECT item_id, extract(epoch FROM max(shown_at))::float8 FROM recommender_impression "
                "WHERE profile_id = %s AND item_id = ANY(%s) AND shown_at >= %s GROUP BY item_id",
                [profile_id, all_ids, now - window],
            )
        )

    if RuleKind.FAIRNESS_LONG_TAIL in kinds:
        snapshot = popularity_snapshot()
        data.popularity = {item_id: snapshot.counts.get(item_id, 0) for item_id in all_ids}
        for kind, params in rules:
            if kind == RuleKind.FAIRNESS_LONG_TAIL:
                percentile = float(params["percentile"])
                data.long_tail_thresholds[percentile] = snapshot.threshold(percentile)

    if RuleKind.DIVERSITY_MMR in kinds and vector_index is not None:
        data.embeddings = item_embeddings_fetch(vector_index=vector_index, item_ids=all_ids)
    return data
