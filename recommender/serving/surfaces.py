"""The surfaces: the homepage (`recommend_for_user`), an item's related panel (`related_items`),
and the rules admin's `pipeline_preview`. Each wires the stages, context → candidates → one
scorer → re-ranking rules, and answers through a fallback when serving by model is impossible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.utils import timezone

from catalog.array_selectors import user_seen_item_ids
from catalog.models import Item, UserProfile
from config import metrics
from config.db_router import replica_reads
from recommender.candidates import candidates_generate
from recommender.candidates.base import Context, PooledCandidate, Surface
from recommender.experiments.selectors import Arm
from recommender.generations import generations_fetch, global_generation_fetch
from recommender.models import ModelVersion
from recommender.ranking import SCORERS
from recommender.rerank.engine import rules_apply
from recommender.rerank.selectors import rules_for_surface
from recommender.selectors import active_version, home_precomputed_fetch, related_precomputed_fetch

from . import home_cache, related_cache
from .context import context_build, serving_version
from .experiments import Assignment, arm_version, assignment_for, interleaved_payload, unit_for
from .fallbacks import fallback_payload, serve_by_model
from .impressions import impressions_record_or_log
from .results import Recommendations, cache_entry, cached_result_build, payload_build, result_build

logger = logging.getLogger(__name__)

K_MAX = 100
# Pool sizes per surface and source (None: each source's own default). Tuned with `manage.py evaluate`.
POOL_SIZES: dict[str, dict[str, int] | None] = {"home": None, "related": None}


def ranked_candidates(
    context: Context, sizes: dict[str, int] | None = None, scorer: str = "model"
) -> list[PooledCandidate]:
    """Candidates from every source (or those ``sizes`` names), merged, ordered by ``scorer``
    (a key of `ranking.SCORERS`; the model's by default), best first."""
    pool = candidates_generate(context, sizes if sizes is not None else POOL_SIZES.get(context.surface))
    return SCORERS[scorer](context=context, pool=pool)


def _related_ranked(
    context: Context, sizes: dict[str, int] | None = None, scorer: str = "model"
) -> list[PooledCandidate]:
    if sizes is not None or scorer != "model":  # a variant's own pool: the stored lists were ranked the usual way
        return ranked_candidates(context, sizes, scorer)
    stored = related_precomputed_fetch(version_id=context.version_id, item_id=context.item_id)
    metrics.cache_lookup("related_precomputed", hit=stored is not None)
    return stored if stored is not None else ranked_candidates(context)


def pipeline_preview(*, profile: UserProfile | None = None, item: Item | None = None, k: int = 10):
    """(ranked before the rules, RerankResult) for the rules admin's live preview; no cache, no impressions."""
    version = active_version()
    surface: Surface = "related" if item is not None else "home"
    context = context_build(surface=surface, version=version, profile=profile, item=item)
    ranked = _related_ranked(context) if surface == "related" else ranked_candidates(context)
    before = [
        PooledCandidate(
            item_id=c.item_id, sources=dict(c.sources), reasons=list(c.reasons), score=c.score, notes=list(c.notes)
        )
        for c in ranked
    ]
    return before, rules_apply(context=context, ranked=ranked, k=k, rules=None)


def _home_ranked(
    context: Context,
    user_generation: int | None,
    sizes: dict[str, int] | None = None,
    scorer: str = "model",
    limit: int | None = None,
) -> list[PooledCandidate]:
    """The user's precomputed pool while it is as new as their feedback, else the live pipeline.

    ``limit``: the caller needs only the first that many of a stored pool (no rule will reorder it).
    """
    if sizes is not None or scorer != "model":
        return ranked_candidates(context, sizes, scorer)
    if user_generation is not None and context.version_id is not None and context.profile_id is not None:
        stored = home_precomputed_fetch(
            version_id=context.version_id,
            profile_id=context.profile_id,
            user_generation=user_generation,
            limit=limit,
        )
        metrics.cache_lookup("home_precomputed", hit=stored is not None)
        if stored is not None:
            return stored
    return ranked_candidates(context)


def _model_payload(
    surface: Surface,
    *,
    version: ModelVersion | None,
    profile: UserProfile | None,
    item: Item | None,
    k: int,
    rules,
    generation: int | None,
    user_generation: int | None = None,
    arm: Arm | None = None,
) -> dict:
    """The model path of a surface: context, its ranked list (stored or live), then the rules.

    ``arm``, an experiment's variant, names the rule set, the candidate sizes and the scorer it
    serves with (its version is ``version`` already).
    """
    assert version is not None  # serve_by_model runs the model path only with a version
    context = context_build(
        surface=surface,
        version=version,
        profile=profile,
        item=item,
        require_user_vector=surface == "home",
        generation=generation,
    )
    sizes = dict(arm.candidate_sizes) if arm is not None and arm.candidate_sizes else None
    scorer = arm.scorer if arm is not None else "model"
    if rules is None:
        rule_set_id = arm.rule_set_id if arm is not None else None
        rules = rules_for_surface(surface=surface, generation=generation, rule_set_id=rule_set_id)
    # With no rule in its period nothing can move an item up from below the top k.
    limit = None if any(rule.is_live(context.now) for rule in rules) else k
    ranked = (
        _home_ranked(context, user_generation, sizes, scorer, limit)
        if surface == "home"
        else _related_ranked(context, sizes, scorer)
    )
    reranked = rules_apply(context=context, ranked=ranked, k=k, rules=rules)
    return payload_build(reranked.items, version.pk, reranked.trace)


def _experiment_payload(
    surface: Surface, assignment: Assignment | None, *, fallback_version: ModelVersion | None, unit_seed: str, **kwargs
) -> Callable[[], dict]:
    """The model path for this request: the plain one, a variant's, or two variants interleaved."""
    generation = kwargs["generation"]
    if assignment is None:
        return lambda: _model_payload(surface, version=fallback_version, **kwargs)

    def arm_payload(arm: Arm) -> dict:
        version = arm_version(arm, generation=generation) or fallback_version
        payload = _model_payload(surface, version=version, arm=arm, **kwargs)
        for entry in payload["items"]:
            entry["variant_id"], entry["variant"] = arm.variant_id, arm.key
        return payload

    if assignment.arm is not None:
        arm = assignment.arm
        return lambda: arm_payload(arm)
    first, second = assignment.plan.arms[0], assignment.plan.arms[1]
    return lambda: interleaved_payload(
        arm_payload(first), arm_payload(second), arms=(first, second), k=kwargs["k"], seed=unit_seed
    )


def _labelled(payload: dict, assignment: Assignment | None) -> dict:
    """The payload with the experiment that served it (fallback lists included: they were its users' lists)."""
    if assignment is None:
        return payload
    if assignment.arm is not None:  # a fallback list too: it was this variant's users' list
        for entry in payload["items"]:
            entry.setdefault("variant_id", assignment.arm.variant_id)
            entry.setdefault("variant", assignment.arm.key)
    return {**payload, "experiment": assignment.label()}


def _assignment_version(assignment: Assignment | None, generation: int | None) -> ModelVersion | None:
    """The version that decides whether the model can serve (serve_by_model): the variant's, else the active."""
    if assignment is not None and assignment.arm is not None:
        named = arm_version(assignment.arm, generation=generation)
        if named is not None:
            return named
    return serving_version(generation)


def _k_clean(k: int) -> int:
    return max(1, min(int(k), K_MAX))


@metrics.surface_observed
@replica_reads  # reads on a replica when configured (config.db_router)
def recommend_for_user(
    *,
    profile: UserProfile | None,
    k: int = 10,
    rules=None,
    use_cache: bool = True,
    generations: tuple[int, int] | None = None,
    forced_variants: dict[str, str] | None = None,
) -> Recommendations:
    """The homepage list for ``profile`` (None: anonymous → popular and fresh, flagged as fallback).

    Cached per user while no feedback, rule, item or model changes (see `home_cache`); below the
    cache, the user's precomputed pool (`home_precompute`) while it is fresh, else the live
    pipeline. ``rules`` overrides the stored rules (and bypasses the cache and any experiment).
    ``generations``, the (global, user) pair when the caller read it with the profile, saves that
    query. A running experiment on the homepage serves the user's variant (``forced_variants``:
    a staff member's choice, `serving.experiments`), cached under its own key. Impressions are
    recorded behind the response, with the experiment and variant that served them.
    """
    started = time.perf_counter()
    k = _k_clean(k)
    if profile is None:
        return result_build(
            "home",
            fallback_payload(k=k, exclude=set(), version_id=None),
            fallback=True,
            fallback_reason="anonymous",
            started=started,
        )
    if generations is None:
        generations = generations_fetch(profile_id=profile.pk)
    generation, user_generation = generations
    use_cache = use_cache and rules is None
    unit = unit_for(profile_id=profile.pk)
    assignment = (
        None
        if rules is not None
        else assignment_for(
            surface="home", unit=unit, generation=generation, now=timezone.now(), forced=forced_variants
        )
    )
    variant_tag = assignment.tag if assignment else ""
    key = (
        home_cache.home_cache_key(profile_id=profile.pk, k=k, generations=generations, variant=variant_tag)
        if use_cache
        else None
    )
    cached = home_cache.home_cache_get(key) if key else None
    if cached is not None:
        result = cached_result_build("home", cached, started=started, generation=generation)
        result.cache_key = key
    else:
        version = _assignment_version(assignment, generation)
        payload, reason = serve_by_model(
            "home",
            _experiment_payload(
                "home",
                assignment,
                fallback_version=serving_version(generation),
                unit_seed=f"{unit}:{user_generation}",
                profile=profile,
                item=None,
                k=k,
                rules=rules,
                generation=generation,
                user_generation=user_generation if rules is None else None,
            ),
            k=k,
            exclude=lambda: set(user_seen_item_ids(profile_id=profile.pk)),
            version=version,
            profile_id=profile.pk,
            item_id=None,
        )
        payload = _labelled(payload, assignment)
        # Errors are not cached: the next request retries the model path.
        stored_key = key if reason in ("", "unknown_user", "no_active_model") else None
        if stored_key:
            home_cache.home_cache_set(stored_key, cache_entry(payload, reason))
        result = result_build(
            "home", payload, fallback=bool(reason), fallback_reason=reason, started=started, generation=generation
        )
        result.cache_key = stored_key
    impressions_record_or_log(
        profile_id=profile.pk,
        item_ids=[entry.item.pk for entry in result.items],
        experiment_id=result.experiment["id"] if result.experiment else None,
        variant_ids=[entry.variant_id for entry in result.items],
    )
    # A hit is logged at DEBUG: formatting and writing the line cost a tenth of the hit, and the
    # hit rate and latency are in /metrics (config/metrics.py).
    logger.log(
        logging.DEBUG if result.cached else logging.INFO,
        "serving.home profile=%s version=%s items=%s cached=%s fallback=%s ms=%.1f",
        profile.pk,
        result.version_id,
        len(result.items),
        result.cached,
        result.fallback_reason or "no",
        result.milliseconds,
    )
    return result


@metrics.surface_observed
@replica_reads
def related_items(
    *,
    item: Item,
    k: int = 10,
    profile: UserProfile | None = None,
    generations: tuple[int, int] | None = None,
    use_cache: bool = True,
    visitor: str | None = None,
    forced_variants: dict[str, str] | None = None,
) -> Recommendations:
    """Items related to ``item``: cached, else the precomputed list when present (else live), then the rules.

    ``generations``, the (global, visitor) pair when the caller read it with the item, saves that
    query; the cache key embeds both (see `related_cache`). A running experiment on this surface
    serves the visitor's variant: by user, else by ``visitor`` (an anonymous cookie id).
    Impressions are recorded for signed-in visitors inside an experiment (outcomes need a user).
    """
    started = time.perf_counter()
    k = _k_clean(k)
    # Read before the model path (it was read for the item rows anyway): stages may use memos keyed by it.
    if generations is None:
        generations = (
            generations_fetch(profile_id=profile.pk) if profile is not None else (global_generation_fetch(), 0)
        )
    generation = generations[0]
    unit = unit_for(profile_id=profile.pk if profile else None, visitor=visitor)
    assignment = assignment_for(
        surface="related", unit=unit, generation=generation, now=timezone.now(), forced=forced_variants
    )
    key = (
        related_cache.related_cache_key(
            item_id=item.pk,
            k=k,
            profile_id=profile.pk if profile else None,
            generations=generations,
            variant=assignment.tag if assignment else "",
        )
        if use_cache
        else None
    )
    cached = related_cache.related_cache_get(key) if key else None
    metrics.cache_lookup("related", hit=cached is not None)
    if cached is not None:
        result = cached_result_build("related", cached, started=started, generation=generation)
        result.cache_key = key
    else:
        version = _assignment_version(assignment, generation)
        payload, reason = serve_by_model(
            "related",
            _experiment_payload(
                "related",
                assignment,
                fallback_version=serving_version(generation),
                unit_seed=f"{unit}:{generations[1]}:{item.pk}",
                profile=profile,
                item=item,
                k=k,
                rules=None,
                generation=generation,
            ),
            k=k,
            exclude=lambda: {item.pk},
            version=version,
            profile_id=profile.pk if profile else None,
            item_id=item.pk,
        )
        payload = _labelled(payload, assignment)
        # Errors are not cached: the next request retries the model path.
        stored_key = key if reason in ("", "no_active_model") else None
        if stored_key:
            related_cache.related_cache_set(stored_key, cache_entry(payload, reason))
        result = result_build(
            "related", payload, fallback=bool(reason), fallback_reason=reason, started=started, generation=generation
        )
        result.cache_key = stored_key
    if result.experiment is not None and profile is not None:
        impressions_record_or_log(
            profile_id=profile.pk,
            item_ids=[entry.item.pk for entry in result.items],
            surface="related",
            experiment_id=result.experiment["id"],
            variant_ids=[entry.variant_id for entry in result.items],
        )
    logger.log(
        logging.DEBUG if result.cached else logging.INFO,
        "serving.related item=%s version=%s items=%s cached=%s fallback=%s ms=%.1f",
        item.pk,
        result.version_id,
        len(result.items),
        result.cached,
        result.fallback_reason or "no",
        result.milliseconds,
    )
    return result
