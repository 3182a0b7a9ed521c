"""The homepage result cache, correct across processes without ever deleting a key.

The cache itself is Django's default cache (per process, LocMem, unless a shared backend is
configured). Every key embeds the ``global`` and the user's generation (`recommender.generations`),
read in one query per request, so a feedback, rule, item or model change makes every process
build a new key at once; stale entries age out (TTL).
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection

from config import metrics
from recommender.generations import generations_fetch

HOME_TTL_SECONDS = 600


def home_cache_key_and_generation(*, profile_id: int, k: int) -> tuple[str, int]:
    """(the homepage cache key, the global generation it embeds) from one query."""
    global_generation, user_generation = generations_fetch(profile_id=profile_id)
    key = f"rec:home:{connection.settings_dict['NAME']}:g{global_generation}:u{profile_id}.{user_generation}:k{k}"
    return key, global_generation


def home_cache_get(key: str) -> dict | None:
    cached = cache.get(key)
    metrics.cache_lookup("home", hit=cached is not None)
    return cached


def home_cache_set(key: str, payload: dict) -> None:
    cache.set(key, payload, HOME_TTL_SECONDS)
