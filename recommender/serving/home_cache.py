"""The homepage result cache, correct across processes without ever deleting a key.

The cache itself is Django's default cache (per process, LocMem, unless a shared backend is
configured). Every key embeds the ``global`` and the user's generation (`recommender.generations`),
so a feedback, rule, item or model change makes every process build a new key at once; stale
entries age out (TTL). The API reads the profile and both generations in one query
(`profile_with_generations`): with the impressions written behind the response
(`recommender.serving.impressions`), a hit costs that round trip and an in-process lookup.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection

from catalog.models import UserProfile
from config import metrics
from recommender.generations import GENERATION_TABLE, GLOBAL_SCOPE, generations_fetch

HOME_TTL_SECONDS = 600

_PROFILE_WITH_GENERATIONS = (
    "SELECT profile.id, profile.user_id, profile.external_id, profile.created_at, "
    f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = %s), 0) AS global_generation, "
    f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = 'user:' || profile.id), 0) "
    "AS user_generation "
    "FROM catalog_userprofile AS profile WHERE profile.external_id = %s"
)


def profile_with_generations(external_id: str) -> tuple[UserProfile, tuple[int, int]] | None:
    """The profile with this external id and its (global, user) generations, in one round trip."""
    with connection.cursor() as cursor:
        cursor.execute(_PROFILE_WITH_GENERATIONS, [GLOBAL_SCOPE, external_id])
        row = cursor.fetchone()
    if row is None:
        return None
    profile_id, user_id, external, created_at, global_generation, user_generation = row
    profile = UserProfile(id=profile_id, user_id=user_id, external_id=external, created_at=created_at)
    profile._state.adding = False  # a row read from the database, as the ORM would mark it
    profile._state.db = connection.alias
    return profile, (int(global_generation), int(user_generation))


def home_cache_key(*, profile_id: int, k: int, generations: tuple[int, int]) -> str:
    global_generation, user_generation = generations
    return f"rec:home:{connection.settings_dict['NAME']}:g{global_generation}:u{profile_id}.{user_generation}:k{k}"


def home_cache_key_and_generation(*, profile_id: int, k: int) -> tuple[str, int]:
    """(the homepage cache key, the global generation it embeds) from one query."""
    generations = generations_fetch(profile_id=profile_id)
    return home_cache_key(profile_id=profile_id, k=k, generations=generations), generations[0]


def home_cache_get(key: str) -> dict | None:
    cached = cache.get(key)
    metrics.cache_lookup("home", hit=cached is not None)
    return cached


def home_cache_set(key: str, payload: dict) -> None:
    cache.set(key, payload, HOME_TTL_SECONDS)
