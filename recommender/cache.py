"""Homepage result cache whose invalidation is correct across processes.

The cache itself is Django's default cache, which is per process (LocMem) unless a shared
backend is configured. Invalidation therefore never deletes keys: every key embeds two
*generations* read from the database on each request,

- ``global``: bumped on model activation, on any re-ranking rule change and on item changes;
- ``user:<profile_id>``: bumped on each feedback event of that user (recorded or deleted).

A bump is a single upsert into ``rec_cache_generation``, committed with (or right after) the
write that caused it, so every web process builds a new key on its next request and an entry
computed before the change can never be served again. Stale entries simply age out (TTL).
Reading both generations is one indexed query (about 0.1 ms), far cheaper than the pipeline.

``rec_cache_generation`` is a plain table (like the vector tables) created on first use, so this
module needs no migration; creating it races safely (``IF NOT EXISTS`` inside a savepoint).
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

from django.core.cache import cache
from django.db import DatabaseError, connection, transaction

logger = logging.getLogger(__name__)

GENERATION_TABLE = "rec_cache_generation"
HOME_TTL_SECONDS = 600
GLOBAL_SCOPE = "global"


def _user_scope(profile_id: int) -> str:
    return f"user:{int(profile_id)}"


def _table_ensure() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {GENERATION_TABLE} "
                       "(scope text PRIMARY KEY, generation bigint NOT NULL DEFAULT 0)")


def _with_table(operation):
    """Run ``operation`` (in a savepoint inside a transaction); create the table and retry once if missing.

    In autocommit no savepoint is needed (a failed statement cannot poison anything), which
    saves the BEGIN/COMMIT round trips on every homepage request.
    """
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            return operation()
    except DatabaseError as error:
        if "does not exist" not in str(error):
            raise
    try:
        _table_ensure()
    except DatabaseError:
        # Another process created it at the same moment (pg_type unique violation): it exists now.
        logger.info("cache.generation_table_race")
    with transaction.atomic():
        return operation()


def generation_bump(*, scope: str) -> int:
    """Increment one generation (``global`` or ``user:<id>``); returns the new value."""
    def bump() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {GENERATION_TABLE} (scope, generation) VALUES (%s, 1) "
                f"ON CONFLICT (scope) DO UPDATE SET generation = {GENERATION_TABLE}.generation + 1 "
                "RETURNING generation", [scope])
            return int(cursor.fetchone()[0])

    value = _with_table(bump)
    logger.debug("cache.generation_bumped scope=%s generation=%s", scope, value)
    return value


def home_cache_invalidate_user(*, profile_id: int) -> int:
    return generation_bump(scope=_user_scope(profile_id))


def home_cache_invalidate_all() -> int:
    return generation_bump(scope=GLOBAL_SCOPE)


def generations_fetch(*, profile_id: int) -> tuple[int, int]:
    """(global generation, user generation); 0 for a scope never bumped."""
    user_scope = _user_scope(profile_id)

    def read() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT scope, generation FROM {GENERATION_TABLE} WHERE scope IN (%s, %s)",
                           [GLOBAL_SCOPE, user_scope])
            values = dict(cursor.fetchall())
        return int(values.get(GLOBAL_SCOPE, 0)), int(values.get(user_scope, 0))

    return _with_table(read)


def global_generation_fetch() -> int:
    """The ``global`` generation alone (bumped by model activation, rule and item changes)."""
    def read() -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT generation FROM {GENERATION_TABLE} WHERE scope = %s", [GLOBAL_SCOPE])
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    return _with_table(read)


def home_cache_key_and_generation(*, profile_id: int, k: int) -> tuple[str, int]:
    """(the homepage cache key, the global generation it embeds) from one query."""
    global_generation, user_generation = generations_fetch(profile_id=profile_id)
    key = f"rec:home:{connection.settings_dict['NAME']}:g{global_generation}:u{profile_id}.{user_generation}:k{k}"
    return key, global_generation


def home_cache_key(*, profile_id: int, k: int) -> str:
    return home_cache_key_and_generation(profile_id=profile_id, k=k)[0]


def home_cache_get(key: str) -> dict | None:
    return cache.get(key)


def home_cache_set(key: str, payload: dict) -> None:
    cache.set(key, payload, HOME_TTL_SECONDS)
