"""Read replicas: the serving reads go to a PostgreSQL hot standby, everything else to the primary.

Active only when `DATABASE_REPLICA_URLS` is set (`config.settings.database` then adds the aliases
``replica_0``… and installs `ReplicaRouter`); unset, every function here answers "default".

What goes where:

- **Serving reads** — the body of a surface wrapped in `replica_reads` (the homepage and related
  items) — read from one replica for the whole call, chosen at random per call. The ORM gets
  there through the router; the raw SQL of the read path asks `reading_connection()` instead of
  ``django.db.connection``. Code that was not converted keeps using the primary: a new read is
  never routed by accident, it is only slower than it could be.
- **Writes** always go to the primary: the router sends every ORM write there, and raw SQL writes
  use ``django.db.connection`` (the primary). So does anything inside a transaction on the
  primary (its reads must see its own writes).
- **Fold-in** (`primary_reads`) reads the user's feedback on the primary, and writes the folded-in
  vector there.

Read-your-writes. A user's write bumps their cache generation (`recommender.generations`), and
the bump calls `user_reads_pin`: once it commits, the primary's WAL position
(``pg_current_wal_lsn()``) is kept in the shared cache under the user for at most
`DATABASE_REPLICA_PIN_SECONDS`. While that pin lives, the user's serving reads go to the primary
unless the chosen replica has already replayed past it (``pg_last_wal_replay_lsn()``, one tiny
query on the replica). Why an LSN in the cache rather than a plain timed pin or a cookie:

- a timed pin alone either holds the user on the primary long after the replica caught up (it
  lags milliseconds) or is too short when replay stalls; the LSN answers exactly;
- a cookie is lost on API clients that authenticate with a token, and the writer is not always the
  reader (staff record feedback for a user); the cache is keyed by the user whose list changed;
- the homepage cache key embeds the user's generation: read from a lagging replica it would name
  the *old* generation and serve the list from before the write. Routing the pinned user to the
  primary reads the new generation, so the write is visible on the very next homepage.

The pins live in Django's default cache, so with several web processes it must be shared
(`CACHE_URL=redis://…`); a system check warns when replicas run with the per-process cache.
A replica that does not answer is skipped for the call (logged) and the primary serves it.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.core import checks
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# The alias this call's serving reads use; None outside any routed scope (then: the primary).
_serving_alias: ContextVar[str | None] = ContextVar("serving_read_alias", default=None)


def replica_aliases() -> list[str]:
    return list(getattr(settings, "DATABASE_REPLICA_ALIASES", []))


def reading_alias() -> str:
    """Where a serving read goes now: the scope's replica, or the primary (no scope, a transaction
    open on the primary, or no replicas)."""
    alias = _serving_alias.get()
    if alias is None or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    return alias


def reading_connection() -> BaseDatabaseWrapper:
    """The Django connection a serving read uses (``django.db.connection`` when no replica applies)."""
    return connections[reading_alias()]


def _pin_key(profile_id: int) -> str:
    return f"db:pin:user:{int(profile_id)}"


def _pin_record(profile_id: int) -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        lsn = cursor.fetchone()[0]
    cache.set(_pin_key(profile_id), lsn, settings.DATABASE_REPLICA_PIN_SECONDS)
    logger.debug("db_router.pinned profile=%s lsn=%s", profile_id, lsn)


def user_reads_pin(*, profile_id: int) -> None:
    """After this transaction commits, keep the user's reads on the primary until a replica has it."""
    if not replica_aliases() or settings.DATABASE_REPLICA_PIN_SECONDS == 0:
        return
    # robust: the write has committed; a pin lost to a cache outage is logged by Django and costs
    # at most one read as stale as the replica's lag, not an error page for a stored rating.
    transaction.on_commit(lambda: _pin_record(profile_id), using=DEFAULT_DB_ALIAS, robust=True)


def replica_has_replayed(alias: str, lsn: str) -> bool:
    """Whether the standby ``alias`` has replayed the WAL up to ``lsn``. False when it is not a
    standby (``pg_last_wal_replay_lsn()`` is NULL there): the pin then holds for its whole window."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", [lsn])
        return bool(cursor.fetchone()[0])


def _replica_choose(profile_id: int | None) -> str:
    replicas = replica_aliases()
    if not replicas or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    alias = random.choice(replicas)  # spreading load, not security
    try:
        connections[alias].ensure_connection()
        pin = cache.get(_pin_key(profile_id)) if profile_id is not None else None
        if pin is not None and not replica_has_replayed(alias, pin):
            logger.debug("db_router.pinned_read profile=%s alias=%s lsn=%s", profile_id, alias, pin)
            return DEFAULT_DB_ALIAS
    except DatabaseError:
        logger.exception("db_router.replica_unavailable alias=%s: reading from the primary", alias)
        connections[alias].close_if_unusable_or_obsolete()
        return DEFAULT_DB_ALIAS
    return alias


@contextmanager
def serving_reads(*, profile_id: int | None) -> Iterator[str]:
    """Route this block's serving reads to one replica (or the primary when the user is pinned).

    Nested scopes keep the outer choice, so a `primary_reads` block stays on the primary.
    """
    if _serving_alias.get() is not None:
        yield reading_alias()
        return
    token = _serving_alias.set(_replica_choose(profile_id))
    try:
        yield reading_alias()
    finally:
        _serving_alias.reset(token)


@contextmanager
def primary_reads_scope() -> Iterator[None]:
    token = _serving_alias.set(DEFAULT_DB_ALIAS)
    try:
        yield
    finally:
        _serving_alias.reset(token)


def replica_reads(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator for a serving surface: its reads go to a replica; the user comes from its
    ``profile`` keyword argument (a `UserProfile` or None). Cache generations passed in by the
    caller (``generations``) are dropped when the reads go to a replica (see the comment below)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not replica_aliases():
            return function(*args, **kwargs)
        profile: Any = kwargs.get("profile")
        with serving_reads(profile_id=getattr(profile, "pk", None)) as alias:
            if alias != DEFAULT_DB_ALIAS and kwargs.get("generations") is not None:
                # Generations the caller read on the primary (the API's profile lookup) must not
                # key data read from a replica that may not have them yet: a stale list would be
                # cached under the new key. The surface re-reads them on the replica instead.
                kwargs["generations"] = None
            return function(*args, **kwargs)

    return wrapper


def primary_reads(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator: every read inside goes to the primary, even within a serving scope (fold-in must
    see the user's own newest feedback, and it writes)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not replica_aliases():
            return function(*args, **kwargs)
        with primary_reads_scope():
            return function(*args, **kwargs)

    return wrapper


class ReplicaRouter:
    """ORM routing: reads to `reading_alias()`, writes and migrations to the primary only."""

    def db_for_read(self, model, **hints) -> str:
        return reading_alias()

    def db_for_write(self, model, **hints) -> str:
        # Explicit: without it Django would write an instance back to the alias it was read from.
        return DEFAULT_DB_ALIAS

    def allow_relation(self, first, second, **hints) -> bool:
        return True  # every alias holds the same data

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool:
        return db == DEFAULT_DB_ALIAS


def replica_pins_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Replicas with a per-process cache: a pin set by one process is unseen by the others."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if replica_aliases() and backend.endswith("LocMemCache"):
        return [
            checks.Warning(
                "DATABASE_REPLICA_URLS is set but the cache is per process (LocMemCache): a user's "
                "read-your-writes pin is seen only by the process that recorded the write.",
                hint="Set CACHE_URL=redis://… so every web process shares the pins.",
                id="project.W001",
            )
        ]
    return []
