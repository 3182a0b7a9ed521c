"""One function per rule kind. Each is pure: it receives the working list (best first), the
batch-loaded attributes, the rule's validated parameters, k and the request context, and
returns the new list with what it did. None touches the database.

The list is the WHOLE ranked pool, not just the first k: rules that shape the top k
(diversity, fairness, pins) pick their k from everything below as well, and put the items they
passed over right after the k, so later rules still have them to work with.

Scores can be negative (LightFM's scores are unbounded), so multiplicative changes act on the
magnitude: ``score + gain·|score|`` raises a score for gain > 0 whatever its sign, and equals
``score·(1 + gain)`` for positive scores. Boosts re-sort the list by score (stably).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recommender.candidates.base import Context, PooledCandidate

from .params import RuleKind
from .selectors import RerankData

HOUR = 3600.0
DAY = 86400.0
SEEN_KINDS = frozenset({"view", "click"})  # repeatable "saw it" events; every other kind means "rated"


@dataclass
class RuleOutcome:
    items: list[PooledCandidate]
    summary: str
    removed: list[int] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)  # item id -> short note for explanations


RuleFunction = Callable[..., RuleOutcome]


def _exclude(items: list[PooledCandidate], predicate: Callable[[PooledCandidate], bool], what: str) -> RuleOutcome:
    kept, removed = [], []
    for item in items:
        if predicate(item):
            removed.append(item.item_id)
        else:
            kept.append(item)
    return RuleOutcome(kept, f"removed {len(removed)} {what}", removed=removed)


# Rule parameters are unbounded floats, so a boost can overflow to inf (and a later rule turn it
# into NaN, which cannot be ordered or sent as JSON). Every rescored item stays within the finite
# range; an overflowing boost still puts its items above every finite score.
_SCORE_LIMIT = sys.float_info.max


def _rescored(item: PooledCandidate, score: float) -> PooledCandidate:
    score = min(max(score, -_SCORE_LIMIT), _SCORE_LIMIT)
    # Direct construction: dataclasses.replace costs ~10x more, and boosts rescore every pooled item.
    return PooledCandidate(
        item_id=item.item_id, sources=item.sources, reasons=item.reasons, score=score, notes=item.notes
    )


def _gain(score: float, gain: float) -> float:
    return score + gain * abs(score)


def _resorted(items: list[PooledCandidate]) -> list[PooledCandidate]:
    # Scored by now (the ranking stage fills every score); sorted() is stable: ties keep their order.
    return sorted(items, key=lambda item: -(item.score or 0.0))


# Filters ---------------------------------------------------------------------------------------


def filter_seen(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    """Exclude items the user rated (any non-view feedback), optionally viewed, optionally was shown."""
    window_start = None
    if params["impressions_within_days"]:
        window_start = context.now.timestamp() - params["impressions_within_days"] * DAY

    def seen(item: PooledCandidate) -> bool:
        kinds = {row.kind for row in data.feedback.get(item.item_id, ())}
        if kinds - SEEN_KINDS or (params["include_views"] and kinds & SEEN_KINDS):
            return True
        shown = data.last_shown_epoch.get(item.item_id)
        return window_start is not None and shown is not None and shown >= window_start

    return _exclude(items, seen, "already rated or seen")


def filter_disliked(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    """Exclude items with current negative-weight feedback (dislike), or a rating at or below a bar."""
    bar = params["rating_at_most"]

    def disliked(item: PooledCandidate) -> bool:
        for row in data.feedback.get(item.item_id, ()):
            if row.kind_weight < 0 and row.is_current is not False:
                return True
            if bar is not None and row.kind == "rating" and row.is_current and row.value <= bar:
                return True
        return False

    return _exclude(items, disliked, "disliked")


def filter_feature(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    feature_type, values = params["feature_type"], frozenset(params["values"])
    label = f"with {feature_type} in {sorted(values)}"
    return _exclude(items, lambda item: bool(data.feature_values(item.item_id, feature_type) & values), label)


def filter_age(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    oldest = context.now.timestamp() - params["max_age_days"] * DAY

    def too_old(item: PooledCandidate) -> bool:
        attributes = data.items.get(item.item_id)
        published = attributes.published_epoch if attributes else None
        if published is None:
            return not params["keep_undated"]
        return published < oldest

    return _exclude(items, too_old, f"older than {params['max_age_days']:g} days")


def filter_inactive(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    def inactive(item: PooledCandidate) -> bool:
        attributes = data.items.get(item.item_id)
        return attributes is None or not attributes.is_active  # a deleted item is not servable either

    return _exclude(items, inactive, "inactive")


# Boosts ----------------------------------------------------------------------------------------


def boost_feature(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    """Multiply (by magnitude) or add to the score of items having any of the feature values."""
    feature_type, values = params["feature_type"], frozenset(params["values"])
    amount, multiply = params["amount"], params["mode"] == "multiply"
    notes, result = {}, []
    for item in items:
        matched = data.feature_values(item.item_id, feature_type) & values
        if matched:
            score = _gain(item.score, amount - 1.0) if multiply else item.score + amount
            item = _rescored(item, score)
            verb = "boosted" if (amount > 1.0 if multiply else amount > 0) else "demoted"
            notes[item.item_id] = f"{verb}: {feature_type}={', '.join(sorted(matched))}"
        result.append(item)
    change = f"×{amount:g}" if multiply else f"{amount:+g}"
    return RuleOutcome(
        _resorted(result), f"{change} on {len(notes)} items with {feature_type} in {sorted(values)}", notes=notes
    )


def boost_freshness(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    """score + weight·|score|·0.5^(age_days / half_life_days); undated items are left alone."""
    half_life, weight = params["half_life_days"], params["weight"]
    now = context.now.timestamp()
    notes, result = {}, []
    for item in items:
        attributes = data.items.get(item.item_id)
        if attributes is not None and attributes.published_epoch is not None:
            age_days = max(0.0, (now - attributes.published_epoch) / DAY)
            gain = weight * 0.5 ** (age_days / half_life)
            item = _rescored(item, _gain(item.score, gain))
            if gain >= 0.01:
                notes[item.item_id] = f"fresh: +{gain:.0%} ({age_days:.0f} days old)"
        result.append(item)
    return RuleOutcome(
        _resorted(result), f"freshness boost on {len(notes)} items (half-life {half_life:g} days)", notes=notes
    )


def demote_shown(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    """score − (1 − factor)·|score| for items shown to the user within the window."""
    now = context.now.timestamp()
    since = now - params["within_hours"] * HOUR
    loss = 1.0 - params["factor"]
    notes, result = {}, []
    for item in items:
        shown = data.last_shown_epoch.get(item.item_id)
        if shown is not None and shown >= since:
            item = _rescored(item, _gain(item.score, -loss))
            hours = (now - shown) / HOUR
            notes[item.item_id] = f"demoted: shown {hours:.0f} h ago"
        result.append(item)
    return RuleOutcome(
        _resorted(result), f"demoted {len(notes)} items shown within {params['within_hours']:g} h", notes=notes
    )


# Diversity -------------------------------------------------------------------------------------


def mmr_order(relevance: np.ndarray, embeddings: np.ndarray, k: int, lam: float) -> list[int]:
    """Greedy maximal marginal relevance: the indices of k picks, in pick order.

    Parameters
    ----------
    relevance : (n,) float64, higher is better; normalised to [0, 1] here (min-max) so that λ
        weighs comparable quantities.
    embeddings : (n, d) float32; rows of zeros (no embedding) are similar to nothing.
    k : int, how many to pick (at most n).
    lam : float in [0, 1]; each pick maximises λ·relevance − (1 − λ)·max cosine to the picked.
    """
    n = len(relevance)
    spread = relevance.max() - relevance.min() if n else 0.0
    relevance = (relevance - relevance.min()) / spread if spread > 0 else np.ones(n)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = np.divide(embeddings, norms, out=np.zeros_like(embeddings, dtype=np.float64), where=norms > 0)
    max_similarity = np.zeros(n)
    available = np.ones(n, dtype=bool)
    picks: list[int] = []
    for step in range(min(k, n)):
        penalty = max_similarity if step else 0.0
        value = np.where(available, lam * relevance - (1.0 - lam) * penalty, -np.inf)
        pick = int(np.argmax(value))
        picks.append(pick)
        available[pick] = False
        similarity = unit @ unit[pick]
        max_similarity = similarity if step == 0 else np.maximum(max_similarity, similarity)
    return picks


def diversity_mmr(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    with_embedding = [item for item in items if item.item_id in data.embeddings]
    if len(with_embedding) < 2:
        return RuleOutcome(list(items), "no item embeddings (no active model): order unchanged")
    dimension = len(next(iter(data.embeddings.values())))
    embeddings = np.stack([data.embeddings.get(item.item_id, np.zeros(dimension, dtype=np.float32)) for item in items])
    relevance = np.asarray([item.score for item in items], dtype=np.float64)
    picks = mmr_order(relevance, embeddings, k, params["lambda"])
    picked = set(picks)
    result = [items[i] for i in picks] + [item for i, item in enumerate(items) if i not in picked]
    notes = {items[i].item_id: "diversified (MMR)" for rank, i in enumerate(picks) if i > rank}
    return RuleOutcome(result, f"MMR λ={params['lambda']:g} picked the top {len(picks)}", notes=notes)


def _greedy_cap(
    items, k: int, keys_of: Callable[[PooledCandidate], frozenset], cap: int, fill_when_short: bool, what: str
) -> RuleOutcome:
    """Pick up to k items in order, skipping any whose keys already hold ``cap`` picks."""
    counts: Counter = Counter()
    picked: list[PooledCandidate] = []
    passed_over: list[PooledCandidate] = []
    position = 0
    while position < len(items) and len(picked) < k:
        item = items[position]
        keys = keys_of(item)
        if any(counts[key] >= cap for key in keys):
            passed_over.append(item)
        else:
            counts.update(keys)
            picked.append(item)
        position += 1
    rest = list(items[position:])
    removed: list[int] = []
    if len(picked) < k and passed_over and not fill_when_short:
        # Anything after the picks would land inside the top k and break the cap.
        removed = [item.item_id for item in passed_over]
        passed_over = []
    summary = f"at most {cap} per {what}: passed over {len(passed_over) + len(removed)} items"
    if removed:
        summary += f", removed {len(removed)} (too few items satisfy the cap)"
    return RuleOutcome(picked + passed_over + rest, summary, removed=removed)


def diversity_feature_cap(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    feature_type = params["feature_type"]
    return _greedy_cap(
        items,
        k,
        lambda item: data.feature_values(item.item_id, feature_type),
        params["max_per_value"],
        params["fill_when_short"],
        f"{feature_type} value",
    )


# Fairness --------------------------------------------------------------------------------------


def provider_slots(max_percent: float, k: int) -> int:
    """Slots a provider may hold: floor(X% of k), but at least one."""
    return max(1, math.floor(max_percent / 100.0 * k + 1e-9))


def fairness_provider_cap(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    def provider(item: PooledCandidate) -> frozenset:
        attributes = data.items.get(item.item_id)
        # Items without a provider are nobody's: the cap cannot apply to them.
        return frozenset({attributes.provider}) if attributes and attributes.provider else frozenset()

    cap = provider_slots(params["max_percent"], k)
    return _greedy_cap(items, k, provider, cap, params["fill_when_short"], "provider")


def fairness_long_tail(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    """Swap the best long-tail items from below k for the lowest-ranked head items in the top k."""
    threshold = data.long_tail_thresholds[float(params["percentile"])]

    def is_tail(item: PooledCandidate) -> bool:
        return data.popularity.get(item.item_id, 0) <= threshold

    need = math.ceil(params["min_percent"] / 100.0 * min(k, len(items)) - 1e-9)
    top, below = list(items[:k]), list(items[k:])
    have = sum(map(is_tail, top))
    if have >= need:
        return RuleOutcome(list(items), f"{have} of {len(top)} already long tail (popularity ≤ {threshold})")
    promoted = [item for item in below if is_tail(item)][: need - have]
    dropped_ids = {item.item_id for item in [item for item in reversed(top) if not is_tail(item)][: len(promoted)]}
    promoted_ids = {item.item_id for item in promoted}
    new_top = [item for item in top if item.item_id not in dropped_ids] + promoted
    result = (
        new_top
        + [item for item in top if item.item_id in dropped_ids]
        + [item for item in below if item.item_id not in promoted_ids]
    )
    notes = {item.item_id: "promoted: long tail" for item in promoted}
    return RuleOutcome(
        result,
        f"promoted {len(promoted)} long-tail items (popularity ≤ {threshold}) "
        f"to reach {have + len(promoted)} of {need} wanted",
        notes=notes,
    )


# Pins ------------------------------------------------------------------------------------------


def pin(items, *, data: RerankData, params: dict, k: int, context: Context) -> RuleOutcome:
    """Put the item at the slot, loading it when no source nominated it (the period is the rule's)."""
    external_id, slot = params["item"], params["slot"]
    item_id = data.item_id_by_external_id.get(external_id)
    attributes = data.items.get(item_id) if item_id is not None else None
    if item_id is None or attributes is None:
        return RuleOutcome(list(items), f"pinned item {external_id} no longer exists: nothing pinned")
    if not attributes.is_active:
        return RuleOutcome(list(items), f"pinned item {external_id} is inactive: nothing pinned")
    if item_id == context.item_id:
        return RuleOutcome(list(items), f"pinned item {external_id} is the page's own item: nothing pinned")
    rest = [item for item in items if item.item_id != item_id]
    existing = next((item for item in items if item.item_id == item_id), None)
    position = min(slot - 1, len(rest))
    # The pinned entry takes the displaced item's score so later score-based rules treat it like its slot.
    neighbour = rest[position] if position < len(rest) else (rest[-1] if rest else None)
    score = neighbour.score if neighbour is not None else 0.0
    pinned = (
        _rescored(existing, score) if existing else PooledCandidate(item_id=item_id, sources={"pin": 1.0}, score=score)
    )
    rest.insert(position, pinned)
    return RuleOutcome(
        rest,
        f"pinned {external_id} at slot {position + 1}" + ("" if existing else " (not among the candidates: loaded)"),
        notes={item_id: f"pinned at slot {position + 1}"},
    )


RULE_FUNCTIONS: dict[str, RuleFunction] = {
    RuleKind.FILTER_SEEN: filter_seen,
    RuleKind.FILTER_DISLIKED: filter_disliked,
    RuleKind.FILTER_FEATURE: filter_feature,
    RuleKind.FILTER_AGE: filter_age,
    RuleKind.FILTER_INACTIVE: filter_inactive,
    RuleKind.BOOST_FEATURE: boost_feature,
    RuleKind.BOOST_FRESHNESS: boost_freshness,
    RuleKind.DEMOTE_SHOWN: demote_shown,
    RuleKind.DIVERSITY_MMR: diversity_mmr,
    RuleKind.DIVERSITY_FEATURE_CAP: diversity_feature_cap,
    RuleKind.FAIRNESS_PROVIDER_CAP: fairness_provider_cap,
    RuleKind.FAIRNESS_LONG_TAIL: fairness_long_tail,
    RuleKind.PIN: pin,
}
