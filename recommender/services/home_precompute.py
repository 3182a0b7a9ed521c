"""Precomputed homepage lists (seed 000: score static queries offline, store each one's top list).

A user's homepage depends only on the active version and on the user's own feedback between two
of their events, so after each activation a Celery task runs the homepage pipeline (context →
candidates → scorer, the same `ranked_candidates` as a live request) once per user, most recently
active users first, and stores each ranked pool in a per-version table::

    rec_home_v<N>(profile_id bigint PRIMARY KEY, item_ids bigint[], scores real[],
                  candidates jsonb, user_generation bigint, computed_at timestamptz)

``user_generation`` is the user's cache generation (`recommender.generations`) read *before* the
row was computed: serving uses a row only while it equals the user's current generation, so a
feedback event that lands during or after the computation makes the row stale at once and the
request computes live, as before. After feedback, `home_list_refresh` recomputes that one row with
the folded-in vector (queued by `recommender.receivers`), so the next request reads a fresh row
again. The re-ranking rules are still applied at request time (they may change at any moment).

The run is bounded by ``HOME_PRECOMPUTE_SECONDS``, the same budget rule as the related lists: the
most recently active users are the ones most likely to come back; everyone past the budget is
served live, with the list a row would have held.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from catalog.models import UserProfile

from ..generations import generations_fetch
from ..models import ModelVersion
from ..selectors import active_version, home_table
from ..serving.context import UnknownUserError, context_build
from ..serving.surfaces import ranked_candidates
from .precompute_tables import building_lock, rows_write, table_create, table_exists, table_swap, tables_drop_stale

logger = logging.getLogger(__name__)

WRITE_BATCH = 500
_COLUMNS = ["profile_id", "item_ids", "scores", "candidates", "user_generation", "computed_at"]


@dataclass(frozen=True)
class HomeCoverage:
    """What one precomputation covered: ``users`` of ``of`` users with feedback."""

    users: int
    of: int
    unknown: int  # users the version has no vector for (and none can be derived)
    seconds: float
    stopped_by: str  # "complete" or "time_budget"

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else 0.0


def _home_row(*, version: ModelVersion, profile: UserProfile, global_generation: int) -> tuple | None:
    """One user's row, or None when the version cannot rank for them (no vector, no history)."""
    _global, user_generation = generations_fetch(profile_id=profile.pk)
    try:
        context = context_build(
            surface="home",
            version=version,
            profile=profile,
            require_user_vector=True,
            generation=global_generation,
        )
    except UnknownUserError:
        return None
    ranked = ranked_candidates(context)
    return (
        profile.pk,
        [c.item_id for c in ranked],
        [float(c.score or 0.0) for c in ranked],
        json.dumps([{"sources": c.sources, "reasons": c.reasons, "notes": c.notes} for c in ranked]),
        user_generation,
        timezone.now(),
    )


def _active_profiles() -> Iterator[UserProfile]:
    """Profiles with feedback, most recent event first, in batches (one aggregate over the log)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT user_id FROM catalog_feedback GROUP BY user_id ORDER BY max(created_at) DESC, user_id")
        ordered = [profile_id for (profile_id,) in cursor.fetchall()]
    for start in range(0, len(ordered), WRITE_BATCH):
        batch = ordered[start : start + WRITE_BATCH]
        profiles = UserProfile.objects.in_bulk(batch)
        yield from (profiles[profile_id] for profile_id in batch if profile_id in profiles)


def _active_profile_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT user_id) FROM catalog_feedback")
        return int(cursor.fetchone()[0])


def home_lists_precompute(*, version: ModelVersion, clock: Callable[[], float] = time.monotonic) -> HomeCoverage:
    """Compute and store the homepage pools of ``version``, most recently active users first.

    Stops when ``settings.HOME_PRECOMPUTE_SECONDS`` are spent (checked before each user, so a run
    overshoots by at most one user and the last write); 0 turns it off. The table is rebuilt and
    swapped in at the end in one transaction, so readers see either the previous or the new
    complete table.
    """
    budget_seconds = float(settings.HOME_PRECOMPUTE_SECONDS)
    started = clock()
    name, building = home_table(version.pk), f"{home_table(version.pk)}_building"
    global_generation, _user = generations_fetch(profile_id=0)
    written = unknown = 0
    stopped_by = "complete"
    # Filled outside any transaction, under the table's lock, so the process's copies serve each
    # user's pipeline run (`precompute_tables.building_lock`); swapped in one transaction.
    with building_lock(building):
        total = _active_profile_count()
        table_create(
            building,
            columns="profile_id bigint NOT NULL, item_ids bigint[] NOT NULL, scores real[] NOT NULL, "
            "candidates jsonb NOT NULL, user_generation bigint NOT NULL, computed_at timestamptz NOT NULL",
        )
        batch: list[tuple] = []
        for profile in _active_profiles():
            if clock() - started >= budget_seconds:
                stopped_by = "time_budget"
                break
            row = _home_row(version=version, profile=profile, global_generation=global_generation)
            if row is None:
                unknown += 1
                continue
            batch.append(row)
            if len(batch) >= WRITE_BATCH:
                rows_write(building, columns=_COLUMNS, rows=batch)
                written += len(batch)
                batch = []
        with transaction.atomic():
            rows_write(building, columns=_COLUMNS, rows=batch)
            written += len(batch)
            coverage = HomeCoverage(
                users=written, of=total, unknown=unknown, seconds=round(clock() - started, 3), stopped_by=stopped_by
            )
            table_swap(building=building, name=name, key="profile_id", coverage=asdict(coverage))
    tables_drop_stale(prefix="rec_home_v")
    logger.info(
        "precompute.home_done version=%s users=%s of=%s unknown=%s seconds=%.1f users_per_second=%.1f "
        "stopped_by=%s budget_seconds=%s",
        version.pk,
        coverage.users,
        coverage.of,
        coverage.unknown,
        coverage.seconds,
        coverage.users_per_second,
        coverage.stopped_by,
        budget_seconds,
    )
    return coverage


def home_list_refresh(*, profile_id: int) -> bool:
    """Recompute one user's stored pool after their feedback; True when a row was written.

    Only where the active version has a homepage table (precomputation ran). The upsert keeps a
    row computed at a newer generation (two refreshes racing), and a user the version cannot rank
    any more loses their row (served live, with the same fallback a live request reaches).
    """
    version = active_version()
    if version is None or not table_exists(home_table(version.pk)):
        return False
    profile = UserProfile.objects.filter(pk=profile_id).first()
    if profile is None:
        return False
    global_generation, _user = generations_fetch(profile_id=profile_id)
    row = _home_row(version=version, profile=profile, global_generation=global_generation)
    table = sql.Identifier(home_table(version.pk))
    with connection.cursor() as cursor:
        if row is None:
            cursor.execute(
                sql.SQL("DELETE FROM {} WHERE profile_id = %s").format(table).as_string(connection.connection),
                [profile_id],
            )
            return False
        cursor.execute(
            sql.SQL(
                "INSERT INTO {table} (profile_id, item_ids, scores, candidates, user_generation, computed_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (profile_id) DO UPDATE SET "
                "item_ids = EXCLUDED.item_ids, scores = EXCLUDED.scores, candidates = EXCLUDED.candidates, "
                "user_generation = EXCLUDED.user_generation, computed_at = EXCLUDED.computed_at "
                "WHERE {table}.user_generation <= EXCLUDED.user_generation"
            )
            .format(table=table)
            .as_string(connection.connection),
            list(row),
        )
        refreshed = cursor.rowcount > 0
    logger.info("precompute.home_refreshed version=%s profile=%s written=%s", version.pk, profile_id, refreshed)
    return refreshed
