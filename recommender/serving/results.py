"""Results: cacheable payloads (plain data) and the items with explanations they turn into."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, is_dataclass

from django.conf import settings
from django.db.models import Prefetch

from catalog.models import Feature, Item
from recommender.candidates.base import PooledCandidate
from recommender.generations import global_generation_fetch
from recommender.memo import GenerationMemo

SOURCE_LABELS = {
    "personal_ann": "for you",
    "because_you_liked": "because you liked",
    "content": "similar content",
    "popular": "popular",
    "fresh": "new",
    "related": "similar",
    "fallback_popular": "popular",
    "fallback_fresh": "new",
}


@dataclass
class RecommendedItem:
    item: Item
    score: float | None
    sources: dict[str, float]
    reasons: list[str] = field(default_factory=list)  # "Because you liked Heat", resolved to titles
    notes: list[str] = field(default_factory=list)  # what re-ranking rules did to it
    # The experiment variant whose list contributed it (an interleaved list mixes two), else None.
    variant_id: int | None = None
    variant: str | None = None  # that variant's key

    @property
    def explanation(self) -> str:
        return "; ".join(self.reasons + self.notes)

    @property
    def badges(self) -> list[str]:
        return [SOURCE_LABELS.get(name, name.replace("_", " ")) for name in self.sources]


@dataclass
class Recommendations:
    surface: str
    items: list[RecommendedItem]
    fallback: bool = False
    fallback_reason: str = ""
    version_id: int | None = None
    cached: bool = False
    rules_applied: list = field(default_factory=list)
    milliseconds: float = 0.0
    # The result cache key this list is stored under (a hit, or a miss that stored it), else None:
    # where the API stores the rendered body of its next hits (`serving.stored`).
    cache_key: str | None = None
    # The experiment that served the list: {"id", "name", "variant", "mode"}, else None.
    experiment: dict | None = None


def _trace_plain(trace) -> list:
    plain: list = []
    for entry in trace or []:
        if is_dataclass(entry) and not isinstance(entry, type):
            entry = asdict(entry)
        if isinstance(entry, dict):
            plain.append(
                {
                    key: (value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value))
                    for key, value in entry.items()
                }
            )
        else:
            plain.append(str(entry))
    return plain


def payload_build(ranked: list[PooledCandidate], version_id: int | None, trace=None) -> dict:
    """The cacheable form of a ranked list: ids, scores, sources, reasons and the rules' trace."""
    return {
        "version_id": version_id,
        "rules_applied": _trace_plain(trace),
        "items": [
            {
                "item_id": c.item_id,
                "score": None if c.score is None else float(c.score),
                "sources": {name: float(score) for name, score in c.sources.items()},
                "reasons": list(c.reasons),
                "notes": list(c.notes),
            }
            for c in ranked
        ],
    }


def _items_read(item_ids: list[int]) -> dict[int, Item | None]:
    features = Prefetch("features", queryset=Feature.objects.order_by("type", "value"))
    return dict(Item.objects.filter(pk__in=item_ids).prefetch_related(features).in_bulk())


# What one memoised row holds, measured with tracemalloc on ml-100k (3.7 features a row): an Item
# loaded alone with its features prefetched takes 6.0 KB (the prefetch keeps a QuerySet per row),
# 4.2 KB when loaded in a batch (feature instances shared). The estimate takes the larger shape.
ITEM_ROW_BYTES = 3_500
ITEM_ROW_FEATURE_BYTES = 650


def item_row_bytes(item: Item | None) -> int:
    """Estimated bytes a memoised item row holds (a missing item, memoised as None, holds none)."""
    if item is None:
        return 0
    features = getattr(item, "_prefetched_objects_cache", {}).get("features")
    return ITEM_ROW_BYTES + ITEM_ROW_FEATURE_BYTES * len(features or ()) + len(item.title) + len(item.description)


# Item rows (with features) shown in lists, kept per process while the global generation holds:
# every item change bumps it, so a row is never served after its item changed. Saves the two item
# queries of most requests. Bounded by ``settings.ITEM_ROWS_BUDGET_BYTES``; rows past it are read
# from the database on each request (the same rows, two more queries).
ITEM_ROWS: GenerationMemo[int, Item | None] = GenerationMemo(
    "item_rows",
    lambda item_id: _items_read([item_id]).get(item_id),
    budget_bytes=lambda: settings.ITEM_ROWS_BUDGET_BYTES,
    size_of=item_row_bytes,
)


def items_load(item_ids: list[int], *, generation: int | None = None) -> dict[int, Item]:
    """Items by id with their features prefetched; from the per-generation memo when it may be used."""
    found = ITEM_ROWS.get_many(item_ids, generation=generation, load_many=_items_read)
    return {item_id: item for item_id, item in found.items() if item is not None}


def _reason_sentences(reasons: list[dict], titles: dict[int, str]) -> list[str]:
    sentences: list[str] = []
    for reason in reasons:
        liked = reason.get("because_item_id")
        if liked is not None and liked in titles:
            sentence = f"Because you liked {titles[liked]}"
        elif reason.get("text"):
            sentence = str(reason["text"])
        else:
            continue
        if sentence not in sentences:
            sentences.append(sentence)
    return sentences


def result_build(
    surface: str,
    payload: dict,
    *,
    fallback: bool = False,
    fallback_reason: str = "",
    cached: bool = False,
    started: float,
    generation: int | None = None,
) -> Recommendations:
    """Turn a payload into `Recommendations`: item rows loaded, "because you liked" resolved to titles."""
    entries = payload["items"]
    liked_ids = {
        reason["because_item_id"]
        for entry in entries
        for reason in entry["reasons"]
        if reason.get("because_item_id") is not None
    }
    if generation is None:
        generation = global_generation_fetch()
    shown_ids = [entry["item_id"] for entry in entries]
    loaded = items_load(list(dict.fromkeys(shown_ids + sorted(liked_ids))), generation=generation)
    items = {item_id: loaded[item_id] for item_id in shown_ids if item_id in loaded}
    titles = {item_id: item.title for item_id, item in loaded.items()}
    recommended = [
        RecommendedItem(
            item=items[entry["item_id"]],
            score=entry["score"],
            sources=entry["sources"],
            reasons=_reason_sentences(entry["reasons"], titles),
            notes=entry["notes"],
            variant_id=entry.get("variant_id"),
            variant=entry.get("variant"),
        )
        for entry in entries
        if entry["item_id"] in items  # an item deleted since the payload was cached
    ]
    return Recommendations(
        surface=surface,
        items=recommended,
        fallback=fallback,
        fallback_reason=fallback_reason,
        version_id=payload["version_id"],
        cached=cached,
        rules_applied=payload.get("rules_applied", []),
        milliseconds=1000 * (time.perf_counter() - started),
        experiment=payload.get("experiment"),
    )


def cache_entry(payload: dict, reason: str) -> dict:
    """What a result cache stores for a list served by ``reason`` ("" for the model)."""
    return {"payload": payload, "fallback": bool(reason), "fallback_reason": reason}


def cached_result_build(surface: str, entry: dict, *, started: float, generation: int | None) -> Recommendations:
    """`Recommendations` from a result cache's entry (`cache_entry`), flagged as cached."""
    return result_build(
        surface,
        entry["payload"],
        fallback=entry["fallback"],
        fallback_reason=entry["fallback_reason"],
        cached=True,
        started=started,
        generation=generation,
    )
