"""Reads for the recommender: model versions, training configurations, precomputed related lists."""

from __future__ import annotations

import json

from django.db import DatabaseError, connection, transaction
from psycopg import sql

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
