"""The related-items result cache: the home cache's scheme (`home_cache`) for an item's panel.

A related list depends on the item, the active version, the rules and the catalogue (the
``global`` generation) and, for a signed-in visitor, on what they have seen (their ``user``
generation, since rules such as "exclude rated" read it). The key embeds all of them, so no entry
is ever deleted to invalidate it. The API reads the item, the visitor's profile and both
generations in one statement (`item_viewer_generations`): a hit costs that round trip.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection

from catalog.models import Item, UserProfile
from config.authentication import Lookup
from recommender.generations import GENERATION_TABLE, GLOBAL_SCOPE

RELATED_TTL_SECONDS = 600
_ITEM_FIELDS = [field.column for field in Item._meta.concrete_fields]


def _statement() -> str:
    columns = ", ".join(f'item."{column}"' for column in _ITEM_FIELDS)
    return (
        f"SELECT {columns}, profile.id, profile.user_id, profile.external_id, profile.created_at, "
        f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = %s), 0), "
        f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = 'user:' || profile.id), 0) "
        "FROM catalog_item AS item LEFT JOIN catalog_userprofile AS profile ON profile.user_id = %s "
        "WHERE item.external_id = %s"
    )


_STATEMENT = _statement()


def item_viewer_generations(
    external_id: str, *, user_id: int | None
) -> tuple[Item, UserProfile | None, tuple[int, int]] | None:
    """The item, the signed-in visitor's profile (None for anonymous or no profile) and the
    (global, visitor) generations, in one round trip; None when no item has that external id."""
    with connection.cursor() as cursor:
        cursor.execute(_STATEMENT, [GLOBAL_SCOPE, user_id, external_id])
        row = cursor.fetchone()
    if row is None:
        return None
    width = len(_ITEM_FIELDS)
    item = Item.from_db(connection.alias, [field.attname for field in Item._meta.concrete_fields], row[:width])
    profile_id, profile_user_id, profile_external_id, profile_created_at, global_generation, user_generation = row[
        width:
    ]
    profile = None
    if profile_id is not None:
        profile = UserProfile.from_db(
            connection.alias,
            ["id", "user_id", "external_id", "created_at"],
            [profile_id, profile_user_id, profile_external_id, profile_created_at],
        )
    return item, profile, (int(global_generation), int(user_generation) if profile is not None else 0)


def _item_viewer_read(row) -> tuple[int, bool, int | None, tuple[int, int]] | None:
    item_id, is_active, profile_id, global_generation, user_generation = row
    if item_id is None:
        return None
    return item_id, bool(is_active), profile_id, (int(global_generation), int(user_generation or 0))


def item_viewer_lookup_sql(external_id: str) -> Lookup:
    """The key parts of `item_viewer_generations` (item id, whether active, the token's user's
    profile id, the generations) joined to the token's statement: the lean hit path's one round trip."""
    return Lookup(
        columns=(
            ", item.id, item.is_active, profile.id, "
            f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = %s), 0), "
            f"coalesce((SELECT generation FROM {GENERATION_TABLE} WHERE scope = 'user:' || profile.id), 0)"
        ),
        join=(
            "LEFT JOIN catalog_item AS item ON item.external_id = %s "
            "LEFT JOIN catalog_userprofile AS profile ON profile.user_id = account.id"
        ),
        params=[GLOBAL_SCOPE, external_id],
        read=_item_viewer_read,
    )


def related_cache_key(
    *, item_id: int, k: int, profile_id: int | None, generations: tuple[int, int], variant: str = ""
) -> str:
    """``variant``: the experiment assignment's tag (`serving.experiments`), so each variant has its own lists."""
    global_generation, user_generation = generations
    viewer = f"u{profile_id}.{user_generation}" if profile_id is not None else "anon"
    name = connection.settings_dict["NAME"]
    return f"rec:related:{name}:g{global_generation}:i{item_id}:{viewer}:k{k}" + (f":{variant}" if variant else "")


def related_cache_get(key: str) -> dict | None:
    return cache.get(key)


def related_cache_set(key: str, payload: dict) -> None:
    cache.set(key, payload, RELATED_TTL_SECONDS)
