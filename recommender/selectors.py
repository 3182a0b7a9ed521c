"""Reads for the recommender: model versions, training configurations, precomputed related lists."""

from __future__ import annotations

import json
from contextlib import nullcontext

from django.db import DatabaseError, connection, transaction
from psycopg import sql

from config.db_router import reading_connection

from .candidates.base import PooledCandidate
from .models import RUNNING_STATUSES, ModelVersion, TrainingConfig, VersionStatus


def active_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=VersionStatus.ACTIVE).first()


def model_version_list():
    return ModelVersion.objects.select_related("config", "requested_by").order_by("-id")


def running_versions():
    return ModelVersion.objects.filter(status__in=RUNNING_STATUSES).order_by("id")


def rollback_candidate(*, exclude_id: int | None) -> ModelVersion | None:
    """The most recently active version, other than ``exclude_id``, that still has its vectors."""
    versions = ModelVersion.objects.filter(
        status=VersionStatus.READY, vectors_published=True, activated_at__isnull=False
    )
    if exclude_id is not None:
        versions = versions.exclude(pk=exclude_id)
    return versions.order_by("-activated_at").first()


def default_training_config() -> TrainingConfig:
    config = TrainingConfig.objects.filter(is_default=True).first()
    if config is None:
        config, _ = TrainingConfig.objects.get_or_create(name="default", defaults={"is_default": True})
    return config


def related_table(version_id: int) -> str:
    """The table of a version's precomputed related lists (`recommender.services.precompute`)."""
    return f"rec_related_v{int(version_id)}"


def home_table(version_id: int) -> str:
    """The table of a version's precomputed homepage pools (`recommender.services.home_precompute`)."""
    return f"rec_home_v{int(version_id)}"


def home_precompute_coverage(*, version_id: int) -> dict | None:
    """What the version's last homepage precomputation covered (``HomeCoverage`` as a dict), or None."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", [home_table(version_id)])
        row = cursor.fetchone()
    return json.loads(row[0]) if row and row[0] else None


def home_precomputed_fetch(
    *, version_id: int, profile_id: int, user_generation: int, limit: int | None = None
) -> list[PooledCandidate] | None:
    """The user's stored homepage pool, or None: no table, no row, or a row older than their feedback.

    Items deactivated since the row was computed are left out (the live pool filters them too),
    in the same round trip. ``limit``: only the first that many active entries (a request with no
    live rule shows the top k only), picked in SQL so the rest of the pool is never decoded.
    """
    table = sql.Identifier(home_table(version_id))
    try:
        # On a replica when serving reads go there (the generation it is compared with was read
        # there too). A savepoint only inside a transaction: in autocommit a missing table fails
        # on its own.
        reader = reading_connection()
        savepoint = transaction.atomic(using=reader.alias) if reader.in_atomic_block else nullcontext()
        with savepoint, reader.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "SELECT stored.user_generation, picked.item_ids, picked.scores, picked.candidates "
                    "FROM {} AS stored CROSS JOIN LATERAL ("
                    "  SELECT array_agg(entry.id ORDER BY entry.position) AS item_ids, "
                    "    array_agg(stored.scores[entry.position] ORDER BY entry.position) AS scores, "
                    "    jsonb_agg(stored.candidates -> (entry.position::int - 1) ORDER BY entry.position) "
                    "      AS candidates "
                    "  FROM (SELECT listed.id, listed.position "
                    "    FROM unnest(stored.item_ids) WITH ORDINALITY AS listed(id, position) "
                    "    JOIN catalog_item AS item ON item.id = listed.id AND item.is_active "
                    "    ORDER BY listed.position LIMIT %s) AS entry"
                    ") AS picked WHERE stored.profile_id = %s"
                )
                .format(table)
                .as_string(reader.connection),
                [limit, profile_id],  # LIMIT NULL is no limit
            )
            row = cursor.fetchone()
    except DatabaseError as error:
        if "does not exist" in str(error):
            return None  # not precomputed (yet): the caller computes live
        raise
    if row is None or int(row[0]) != int(user_generation):
        return None
    _generation, item_ids, scores, candidates = row
    if not item_ids:
        return []
    candidates = candidates if isinstance(candidates, list) else json.loads(candidates)
    return [
        PooledCandidate(
            item_id=int(item_id),
            sources=entry["sources"],
            reasons=entry["reasons"],
            notes=entry["notes"],
            score=float(score),
        )
        for item_id, score, entry in zip(item_ids, scores, candidates, strict=True)
    ]


def related_precompute_coverage(*, version_id: int) -> dict | None:
    """What the version's last precomputation covered, ``{"items", "of", "seconds", "stopped_by"}``
    (`recommender.services.precompute.RelatedCoverage`), or None when it has not run."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", [related_table(version_id)])
        row = cursor.fetchone()
    return json.loads(row[0]) if row and row[0] else None


def related_precomputed_fetch(*, version_id: int | None, item_id: int | None) -> list[PooledCandidate] | None:
    """The stored ranked list for ``item_id`` (scores are the model's), or None when there is none."""
    if version_id is None or item_id is None:
        return None
    table = related_table(version_id)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT related_ids, scores, sources FROM {} WHERE item_id = %s")
                .format(sql.Identifier(table))
                .as_string(connection.connection),
                [item_id],
            )
            row = cursor.fetchone()
    except DatabaseError as error:
        if "does not exist" in str(error):
            return None  # not precomputed (yet): the caller computes live
        raise
    if row is None:
        return None
    related_ids, scores, sources = row
    sources = sources if isinstance(sources, list) else json.loads(sources)
    return [
        PooledCandidate(item_id=int(related_id), sources=dict(source), score=float(score))
        for related_id, score, source in zip(related_ids, scores, sources, strict=False)
    ]
