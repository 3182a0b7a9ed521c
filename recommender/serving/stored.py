"""Stored answers: a cached list's response body, rendered once, answered as bytes on later hits.

A result cache hit (`home_cache`, `related_cache`) used to rebuild `Recommendations` from the
cached payload, turn it into the API's data and render that to JSON on every request: about as
much CPU as the rest of the hit (issue 12). The API now renders the body of a hit once, when it
answers a list that is in a result cache, and stores it here under the same key plus
``:body``, with the ids of the items shown. The key embeds the database, the ``global``
generation and the user's (`recommender.generations`), so a stored body goes stale exactly when
the cached list does: a rating, a rule, an item change (a deactivation included) or a model
activation makes every process build a new key. The lean hit path of the API
(`config.stored_answers`) answers these bytes; on a miss it falls through to the full view.

Stored in the default cache, like the lists themselves (per process, or shared in Redis), and
for as long (the surface's TTL).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.utils import timezone

from config import metrics

from .experiments import assignment_for, unit_for
from .home_cache import HOME_TTL_SECONDS, home_cache_key
from .impressions import impressions_record_or_log
from .related_cache import RELATED_TTL_SECONDS, related_cache_key
from .results import Recommendations

logger = logging.getLogger(__name__)

_TTL_SECONDS = {"home": HOME_TTL_SECONDS, "related": RELATED_TTL_SECONDS}


@dataclass(frozen=True)
class StoredAnswer:
    surface: str
    body: bytes
    item_ids: list[int]  # the items shown, for the impressions of a homepage hit
    fallback_reason: str  # "" for the model; counted in the fallback series on each hit as before
    experiment_id: int | None = None  # the experiment that served the list, for its impressions
    variant_ids: list[int | None] | None = None  # aligned with item_ids


def _stored_key(cache_key: str) -> str:
    return f"{cache_key}:body"


def stored_answer_save(result: Recommendations, *, body: bytes) -> None:
    """Store ``body``, the rendered hit of ``result``, while its list is in a result cache."""
    if result.cache_key is None:
        return
    experiment_id = result.experiment["id"] if result.experiment else None
    stored = (
        body,
        [entry.item.pk for entry in result.items],
        result.fallback_reason,
        experiment_id,
        [entry.variant_id for entry in result.items],
    )
    cache.set(_stored_key(result.cache_key), stored, _TTL_SECONDS[result.surface])


def _stored_answer(surface: str, cache_key: str) -> StoredAnswer | None:
    stored = cache.get(_stored_key(cache_key))
    if stored is None:
        return None  # not counted as a miss: the full view that follows looks the list up and counts
    body, item_ids, fallback_reason, experiment_id, variant_ids = stored
    return StoredAnswer(surface, body, item_ids, fallback_reason, experiment_id, variant_ids)


def _variant_tag(surface: str, unit: str | None, generation: int) -> str:
    assignment = assignment_for(surface=surface, unit=unit, generation=generation, now=timezone.now())
    return assignment.tag if assignment else ""


def home_stored_answer(*, profile_id: int, k: int, generations: tuple[int, int]) -> StoredAnswer | None:
    """The stored body of this user's cached homepage (``k`` already capped), or None."""
    variant = _variant_tag("home", unit_for(profile_id=profile_id), generations[0])
    return _stored_answer("home", home_cache_key(profile_id=profile_id, k=k, generations=generations, variant=variant))


def related_stored_answer(
    *, item_id: int, k: int, profile_id: int | None, generations: tuple[int, int]
) -> StoredAnswer | None:
    """The stored body of this item's cached related list for this visitor (None: anonymous), or None."""
    variant = _variant_tag("related", unit_for(profile_id=profile_id), generations[0])
    key = related_cache_key(item_id=item_id, k=k, profile_id=profile_id, generations=generations, variant=variant)
    return _stored_answer("related", key)


def stored_answer_served(answer: StoredAnswer, *, profile_id: int | None, started: float) -> None:
    """What a hit through the full surface also does: the cache hit, impressions, latency and fallback series."""
    metrics.cache_lookup(answer.surface, hit=True)
    in_experiment = answer.experiment_id is not None
    if profile_id is not None and (answer.surface == "home" or in_experiment):
        impressions_record_or_log(
            profile_id=profile_id,
            item_ids=answer.item_ids,
            surface=answer.surface,
            experiment_id=answer.experiment_id,
            variant_ids=answer.variant_ids,
        )
    metrics.surface_observe(answer.surface, time.perf_counter() - started, answer.fallback_reason)
    logger.debug(
        "serving.%s profile=%s items=%s cached=True stored=True fallback=%s",
        answer.surface,
        profile_id,
        len(answer.item_ids),
        answer.fallback_reason or "no",
    )
