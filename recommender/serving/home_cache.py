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
from config.authentication import Lookup
from recommender.generations import GENERATION_TABLE, GLOBAL_SCOPE, generations_fetch

HOME_TTL_SECONDS = 600

_PROFILE_WITH_GENERATIONS = (
    "SELECT profile.id, profile.user_id, profile.external_id, profile.created_at, "
    f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = %s), 0) AS global_generation, "
    f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = 'user:' || profile.id), 0) "
    "AS user_generation "
    "FROM catalog_userprofile AS profile WHERE profile.external_id = %s"
)


# The same columns joined to another statement's row (the token's: `profile_lookup_sql`).
_PROFILE_COLUMNS = (
    ", profile.id, profile.user_id, profile.external_id, profile.created_at, "
    f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = %s), 0), "
    f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = 'user:' || profile.id), 0)"
)


def _profile_read(row) -> tuple[UserProfile, tuple[int, int]] | None:
    profile_id, user_id, external, created_at, global_generation, user_generation = row
    if profile_id is None:
        return None
    profile = UserProfile.from_db(
        connection.alias, ["id", "user_id", "external_id", "created_at"], [profile_id, user_id, external, created_at]
    )
    return profile, (int(global_generation), int(user_generation))


def profile_with_generations(external_id: str) -> tuple[UserProfile, tuple[int, int]] | None:
    """The profile with this external id and its (global, user) generations, in one round trip."""
    with connection.cursor() as cursor:
        cursor.execute(_PROFILE_WITH_GENERATIONS, [GLOBAL_SCOPE, external_id])
        row = cursor.fetchone()
    return None if row is None else _profile_read(row)


def profile_lookup_sql(external_id: str) -> Lookup:
    """The same read as `profile_with_generations`, as parts to join to the token's statement
    (`config.authentication.lookup_arm`): a token-authenticated hit then costs one round trip."""
    return Lookup(
        columns=_PROFILE_COLUMNS,
        join="LEFT JOIN catalog_userprofile AS profile ON profile.external_id = %s",
        params=[GLOBAL_SCOPE, external_id],
        read=_profile_read,
    )


def home_cache_key(*, profile_id: int, k: int, generations: tuple[int, int], variant: str = "") -> str:
    """``variant``: the experiment assignment's tag (`serving.experiments`), so each variant has its own lists."""
    global_generation, user_generation = generations
    name = connection.settings_dict["NAME"]
    return f"rec:home:{name}:g{global_generation}:u{profile_id}.{user_generation}:k{k}" + (
        f":{variant}" if variant else ""
    )


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
