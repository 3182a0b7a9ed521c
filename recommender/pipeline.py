"""The serving pipeline: context → candidates → one scorer → re-ranking rules → items.

One function per surface (`recommend_for_user` for the homepage, `related_items` for an item
page) and `pipeline_preview` for the rules admin. Each stage is its own module; this one only
wires them, resolves explanations, caches the homepage and falls back when serving by model is
impossible (see docs/serving.md):

- no active model → ``no_active_model``;
- a database/vector-store error in the model path → ``vector_store_error`` (the savepoint
  around the model path is rolled back, so the connection stays usable);
- a user the model cannot place (no vector, no feedback, no known side features) → ``unknown_user``;
- any other error in the model path → ``pipeline_error`` (logged with its traceback).

A fallback serves popular and fresh items, flagged ``fallback=True``; never a 500.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, is_dataclass

import psycopg
from django.db import DatabaseError, connection, transaction
from django.db.models import Prefetch
from django.utils import timezone

from catalog import selectors as catalog_selectors
from catalog.models import Feature, Item, UserProfile

from . import ann, cache
from .candidates.base import AnnFilters, Context, PooledCandidate
from .models import ModelVersion
from .selectors import active_version

logger = logging.getLogger(__name__)

K_MAX = 100
# Pool sizes per surface and source (None: each source's own default). Tuned with `manage.py evaluate`.
POOL_SIZES: dict[str, dict[str, int] | None] = {"home": None, "related": None}


@dataclass
class RecommendedItem:
    item: Item
    score: float | None
    sources: dict[str, float]
    reasons: list[str] = field(default_factory=list)  # "Because you liked Heat", resolved to titles
    notes: list[str] = field(default_factory=list)  # what re-ranking rules did to it

    @property
    def explanation(self) -> str:
        return "; ".join(self.reasons + self.notes)

    @property
    def badges(self) -> list[str]:
        return [SOURCE_LABELS.get(name, name.replace("_", " ")) for name in self.sources]


SOURCE_LABELS = {
    "personal_ann": "for you", "because_you_liked": "because you liked", "content": "similar content",
    "popular": "popular", "fresh": "new", "related": "similar", "fallback_popular": "popular",
    "fallback_fresh": "new",
}


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


class UnknownUserError(LookupError):
    """The model has no vector for this user and none can be derived (no feedback, no known features)."""


# --------------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------------

def _seen_item_ids(profile_id: int | None) -> frozenset[int]:
    """Items with in-force feedback of the user (one plain query on the feedback (user, ...) index)."""
    if profile_id is None:
        return frozenset()
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT item_id FROM catalog_feedback WHERE user_id = %s "
                       "AND (is_current OR is_current IS NULL)", [profile_id])
        return frozenset(row[0] for row in cursor.fetchall())


def context_build(*, surface: str, version: ModelVersion | None, profile: UserProfile | None = None,
                  item: Item | None = None, require_user_vector: bool = False) -> Context:
    """The request's Context; the user vector is stored (trained/folded in) or derived from features."""
    from .services.realtime import user_vector_resolve

    from .candidates._shared import context_feedback_prime, user_feedback_summary
    from .vectors import VersionTables

    # Seen items, positive seeds, the log's newest id and the stored user vector in one round trip
    # (sources read the first three from the context's memo).
    summary = (user_feedback_summary(profile_id=profile.pk,
                                     user_vectors_table=VersionTables(version.pk).users if version else None)
               if profile is not None else None)
    user_vector = None
    if profile is not None and version is not None:
        user_vector = summary.user_vector
        if user_vector is None:  # not stored: fold-in, side features, or unknown
            user_vector, origin = user_vector_resolve(profile_id=profile.pk, version=version)
        if user_vector is None and require_user_vector:
            raise UnknownUserError(f"profile {profile.pk} has no vector in v{version.pk}")
    context = Context(
        surface=surface, now=timezone.now(), version_id=version.pk if version else None,
        profile_id=profile.pk if profile else None, item_id=item.pk if item else None,
        user_vector=user_vector, filters=AnnFilters(active_only=True),
        seen_item_ids=summary.seen_item_ids if summary is not None else frozenset(),
    )
    if summary is not None:
        context_feedback_prime(context, summary)
    return context


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------

def ranked_candidates(context: Context) -> list[PooledCandidate]:
    """Candidates from every source, merged, scored by the active model, best first."""
    from .candidates import candidates_generate
    from .ranking import pool_score

    pool = candidates_generate(context, POOL_SIZES.get(context.surface))
    return pool_score(context=context, pool=pool)


def _related_ranked(context: Context) -> list[PooledCandidate]:
    from .services.precompute import related_precomputed_fetch

    stored = related_precomputed_fetch(version_id=context.version_id, item_id=context.item_id)
    return stored if stored is not None else ranked_candidates(context)


def _rerank(context: Context, ranked: list[PooledCandidate], k: int, rules):
    from .rerank.engine import rules_apply

    return rules_apply(context=context, ranked=ranked, k=k, rules=rules)


def pipeline_preview(*, profile: UserProfile | None = None, item: Item | None = None, k: int = 10):
    """(ranked before the rules, RerankResult) for the rules admin's live preview; no cache, no impressions."""
    version = active_version()
    surface = "related" if item is not None else "home"
    context = context_build(surface=surface, version=version, profile=profile, item=item)
    ranked = _related_ranked(context) if surface == "related" else ranked_candidates(context)
    before = [PooledCandidate(item_id=c.item_id, sources=dict(c.sources), reasons=list(c.reasons),
                              score=c.score, notes=list(c.notes)) for c in ranked]
    return before, _rerank(context, ranked, k, None)


# --------------------------------------------------------------------------------------------
# Results: payloads (cacheable plain data) → items with explanations
# --------------------------------------------------------------------------------------------

def _trace_plain(trace) -> list:
    plain = []
    for entry in trace or []:
        if is_dataclass(entry):
            entry = asdict(entry)
        if isinstance(entry, dict):
            plain.append({key: (value if isinstance(value, (str, int, float, bool, type(None), list, dict))
                                else str(value)) for key, value in entry.items()})
        else:
            plain.append(str(entry))
    return plain


def _payload(ranked: list[PooledCandidate], version_id: int | None, trace=None) -> dict:
    return {
        "version_id": version_id,
        "rules_applied": _trace_plain(trace),
        "items": [{"item_id": c.item_id, "score": None if c.score is None else float(c.score),
                   "sources": {name: float(score) for name, score in c.sources.items()},
                   "reasons": list(c.reasons), "notes": list(c.notes)} for c in ranked],
    }


# Item rows (with features) shown in lists, kept per process while the global cache generation
# holds: every item change bumps it (`item_changed` → `home_cache_invalidate_all`), so a row is
# never served after its item changed. Saves the two item queries of most requests.
ITEM_MEMO_MAX = 20_000
_item_memo: dict = {"key": None, "items": {}}
_item_memo_lock = threading.Lock()


def _items_load(item_ids: list[int], *, generation: int | None = None) -> dict[int, Item]:
    """Items by id with their features prefetched; served from the per-generation memo when known."""
    key = (connection.settings_dict["NAME"], generation) if generation is not None else None
    with _item_memo_lock:
        if key is None or _item_memo["key"] != key:
            if key is not None:
                _item_memo.update(key=key, items={})
            memo = {}
        else:
            memo = _item_memo["items"]
        found = {item_id: memo[item_id] for item_id in item_ids if item_id in memo}
    missing = [item_id for item_id in item_ids if item_id not in found]
    if missing:
        features = Prefetch("features", queryset=Feature.objects.order_by("type", "value"))
        loaded = Item.objects.filter(pk__in=missing).prefetch_related(features).in_bulk()
        found.update(loaded)
        if key is not None:
            with _item_memo_lock:
                if _item_memo["key"] == key and len(_item_memo["items"]) + len(loaded) <= ITEM_MEMO_MAX:
                    _item_memo["items"].update(loaded)
    return found


_version_memo: dict = {"key": None, "version": None}


def _active_version(generation: int | None) -> ModelVersion | None:
    """`active_version()`, kept per process for as long as the ``global`` generation holds.

    Activation (and rollback) changes which version is active and bumps the generation after
    it commits, so the copy read under a generation is the one any request of that generation
    would read (at worst the moment before the bump, as the homepage cache itself). Not inside a
    transaction and not without a generation. The object is shared: serving only reads it.
    """
    if generation is None or connection.in_atomic_block:
        return active_version()
    key = (connection.settings_dict["NAME"], int(generation))
    with _item_memo_lock:
        if _version_memo["key"] == key:
            return _version_memo["version"]
    version = active_version()
    with _item_memo_lock:
        _version_memo.update(key=key, version=version)
    return version


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


def _result(surface: str, payload: dict, *, fallback: bool = False, fallback_reason: str = "",
            cached: bool = False, started: float, generation: int | None = None) -> Recommendations:
    entries = payload["items"]
    liked_ids = {reason["because_item_id"] for entry in entries for reason in entry["reasons"]
                 if reason.get("because_item_id") is not None}
    if generation is None:
        generation = cache.global_generation_fetch()
    shown_ids = [entry["item_id"] for entry in entries]
    loaded = _items_load(list(dict.fromkeys(shown_ids + sorted(liked_ids))), generation=generation)
    items = {item_id: loaded[item_id] for item_id in shown_ids if item_id in loaded}
    titles = {item_id: item.title for item_id, item in loaded.items()}
    recommended = [
        RecommendedItem(item=items[entry["item_id"]], score=entry["score"], sources=entry["sources"],
                        reasons=_reason_sentences(entry["reasons"], titles), notes=entry["notes"])
        for entry in entries if entry["item_id"] in items  # an item deleted since the payload was cached
    ]
    return Recommendations(surface=surface, items=recommended, fallback=fallback, fallback_reason=fallback_reason,
                           version_id=payload["version_id"], cached=cached,
                           rules_applied=payload.get("rules_applied", []),
                           milliseconds=1000 * (time.perf_counter() - started))


def _fallback_payload(*, k: int, exclude: set[int], version_id: int | None) -> dict:
    """Popular and fresh items, interleaved (popular first), for when the model cannot serve."""
    popular = [item.pk for item in catalog_selectors.popular_items(limit=k + len(exclude))]
    fresh = list(Item.objects.filter(is_active=True).order_by("-published_at", "-id")
                 .values_list("pk", flat=True)[:k + len(exclude)])
    chosen: list[tuple[int, str]] = []
    taken: set[int] = set()
    # Items the user already rated come last: only when too few others exist (a tiny catalogue).
    for allowed in (lambda item_id: item_id not in exclude, lambda item_id: True):
        for index in range(max(len(popular), len(fresh))):
            for ids, source in ((popular, "fallback_popular"), (fresh, "fallback_fresh")):
                if index < len(ids) and ids[index] not in taken and allowed(ids[index]) and len(chosen) < k:
                    taken.add(ids[index])
                    chosen.append((ids[index], source))
    return {"version_id": version_id, "rules_applied": [],
            "items": [{"item_id": item_id, "score": None, "sources": {source: 1.0}, "reasons": [], "notes": []}
                      for item_id, source in chosen]}


def read_scope():
    """A savepoint when already inside a transaction, else nothing (autocommit).

    The model path only reads (plus single-statement upserts of a folded-in user vector). In
    autocommit a failed statement ends its own implicit transaction and leaves the connection
    usable, so the BEGIN/SAVEPOINT/RELEASE/COMMIT round trips a savepoint per stage would cost
    buy nothing there; inside an outer transaction (tests, ATOMIC_REQUESTS) the savepoint is what
    keeps a failed statement from poisoning it.
    """
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def _serve_by_model(surface: str, build, *, k: int, exclude, version: ModelVersion | None,
                    profile_id: int | None, item_id: int | None):
    """Run ``build()`` (the model path) in a read scope; (payload, fallback_reason).

    ``exclude`` is a callable giving the items a fallback should avoid, only called on fallback.
    """
    if version is None:
        return _fallback_payload(k=k, exclude=exclude(), version_id=None), "no_active_model"
    try:
        # Idle here, so the HNSW settings are set for the connection's life (once per connection).
        ann.serving_settings_ensure()
        with read_scope():
            return build(), ""
    except UnknownUserError:
        reason = "unknown_user"
    except (DatabaseError, psycopg.Error):
        logger.exception("serving.vector_store_error surface=%s version=%s profile=%s item=%s",
                         surface, version.pk, profile_id, item_id)
        reason = "vector_store_error"
    except Exception:
        logger.exception("serving.pipeline_error surface=%s version=%s profile=%s item=%s",
                         surface, version.pk, profile_id, item_id)
        reason = "pipeline_error"
    return _fallback_payload(k=k, exclude=exclude(), version_id=version.pk), reason


def _k_clean(k: int) -> int:
    return max(1, min(int(k), K_MAX))


def recommend_for_user(*, profile: UserProfile | None, k: int = 10, rules=None,
                       use_cache: bool = True) -> Recommendations:
    """The homepage list for ``profile`` (None: anonymous → popular and fresh, flagged as fallback).

    Cached per user while no feedback, rule, item or model changes (see `recommender.cache`);
    ``rules`` overrides the stored rules (and bypasses the cache). Impressions are recorded.
    """
    started = time.perf_counter()
    k = _k_clean(k)
    if profile is None:
        return _result("home", _fallback_payload(k=k, exclude=set(), version_id=None),
                       fallback=True, fallback_reason="anonymous", started=started)
    use_cache = use_cache and rules is None
    key, generation = (cache.home_cache_key_and_generation(profile_id=profile.pk, k=k) if use_cache
                       else (None, None))
    cached = cache.home_cache_get(key) if key else None
    if cached is not None:
        result = _result("home", cached["payload"], fallback=cached["fallback"],
                         fallback_reason=cached["fallback_reason"], cached=True, started=started,
                         generation=generation)
    else:
        version = _active_version(generation)

        def build() -> dict:
            context = context_build(surface="home", version=version, profile=profile, require_user_vector=True)
            # Lets stages use per-process memos keyed by it (recommender.vector_memo.version_vectors).
            context.memo["global_generation"] = generation
            reranked = _rerank(context, ranked_candidates(context), k, rules)
            return _payload(reranked.items, version.pk, reranked.trace)

        payload, reason = _serve_by_model("home", build, k=k, exclude=lambda: set(_seen_item_ids(profile.pk)),
                                          version=version, profile_id=profile.pk, item_id=None)
        if key and reason in ("", "unknown_user", "no_active_model"):
            # Errors are not cached: the next request retries the model path.
            cache.home_cache_set(key, {"payload": payload, "fallback": bool(reason), "fallback_reason": reason})
        result = _result("home", payload, fallback=bool(reason), fallback_reason=reason, started=started,
                         generation=generation)
    _impressions_record(profile.pk, [entry.item.pk for entry in result.items])
    logger.info("serving.home profile=%s version=%s items=%s cached=%s fallback=%s ms=%.1f", profile.pk,
                result.version_id, len(result.items), result.cached, result.fallback_reason or "no",
                result.milliseconds)
    return result


def _impressions_record(profile_id: int, item_ids: list[int]) -> None:
    if not item_ids:
        return
    from .rerank.services import impressions_record_fast

    try:
        with read_scope():
            impressions_record_fast(profile_id=profile_id, item_ids=item_ids, surface="home")
    except DatabaseError:
        # Losing impressions only weakens "demote recently shown"; the page must still render.
        logger.exception("serving.impressions_failed profile=%s items=%s", profile_id, len(item_ids))


def related_items(*, item: Item, k: int = 10, profile: UserProfile | None = None) -> Recommendations:
    """Items related to ``item``: the precomputed list when present (else live), then the rules."""
    started = time.perf_counter()
    k = _k_clean(k)
    # Read before the model path (it was read for the item rows anyway): stages may use memos keyed by it.
    generation = cache.global_generation_fetch()
    version = _active_version(generation)

    def build() -> dict:
        context = context_build(surface="related", version=version, profile=profile, item=item)
        context.memo["global_generation"] = generation
        reranked = _rerank(context, _related_ranked(context), k, None)
        return _payload(reranked.items, version.pk, reranked.trace)

    payload, reason = _serve_by_model("related", build, k=k, exclude=lambda: {item.pk}, version=version,
                                      profile_id=profile.pk if profile else None, item_id=item.pk)
    result = _result("related", payload, fallback=bool(reason), fallback_reason=reason, started=started,
                     generation=generation)
    logger.info("serving.related item=%s version=%s items=%s fallback=%s ms=%.1f", item.pk, result.version_id,
                len(result.items), result.fallback_reason or "no", result.milliseconds)
    return result
