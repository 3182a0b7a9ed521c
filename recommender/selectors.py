"""Reads for the recommender: versions, and the catalogue exported as plain arrays for training."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.db import connection

from .models import RUNNING_STATUSES, ModelVersion, TrainingConfig, VersionStatus

FETCH_BATCH = 200_000


def active_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=VersionStatus.ACTIVE).first()


def model_version_list():
    return ModelVersion.objects.select_related("config", "requested_by").order_by("-id")


def running_versions():
    return ModelVersion.objects.filter(status__in=RUNNING_STATUSES).order_by("id")


def rollback_candidate(*, exclude_id: int | None) -> ModelVersion | None:
    """The most recently active version, other than ``exclude_id``, that still has its vectors."""
    return (
        ModelVersion.objects.filter(status=VersionStatus.READY, vectors_published=True, activated_at__isnull=False)
        .exclude(pk=exclude_id)
        .order_by("-activated_at")
        .first()
    )


def default_training_config() -> TrainingConfig:
    config = TrainingConfig.objects.filter(is_default=True).first()
    if config is None:
        config, _ = TrainingConfig.objects.get_or_create(name="default", defaults={"is_default": True})
    return config


@dataclass(frozen=True)
class CatalogArrays:
    """The catalogue as numpy arrays (database primary keys), ready for `recommender.ml.dataset`."""

    user_ids: np.ndarray  # (n_users,) int64, UserProfile pks
    item_ids: np.ndarray  # (n_items,) int64, Item pks
    feedback_user: np.ndarray  # (m,) int64
    feedback_item: np.ndarray  # (m,) int64
    feedback_kind_weight: np.ndarray  # (m,) float64
    feedback_value: np.ndarray  # (m,) float64
    feedback_is_explicit: np.ndarray  # (m,) bool
    feedback_time: np.ndarray  # (m,) float64 unix seconds
    item_feature_item: np.ndarray  # (f,) int64
    item_feature_id: np.ndarray  # (f,) int64
    item_feature_weight: np.ndarray  # (f,) float64
    user_feature_user: np.ndarray
    user_feature_id: np.ndarray
    user_feature_weight: np.ndarray
    feature_ids: np.ndarray  # (n_features,) int64, Feature pks
    feature_names: list[str]  # "type=value" per feature id


def _fetch_columns(query: str, n_columns: int, dtype=np.float64) -> list[np.ndarray]:
    """Stream a query through a server-side cursor into column arrays without Python row objects piling up."""
    chunks: list[np.ndarray] = []
    with connection.cursor() as django_cursor:
        raw = django_cursor.connection
    with raw.transaction(), raw.cursor(name="recommender_export") as cursor:
        cursor.itersize = FETCH_BATCH
        cursor.execute(query)
        while rows := cursor.fetchmany(FETCH_BATCH):
            chunks.append(np.asarray(rows, dtype=dtype).reshape(len(rows), n_columns))
    if not chunks:
        return [np.zeros(0, dtype=dtype) for _ in range(n_columns)]
    table = np.concatenate(chunks)
    return [table[:, column] for column in range(n_columns)]


def catalog_arrays_fetch() -> CatalogArrays:
    """Export users, items, current feedback and features for training.

    Superseded stateful feedback (``is_current = false``) is left out: a re-rating counts once.
    """
    (user_ids,) = _fetch_columns("SELECT id FROM catalog_userprofile ORDER BY id", 1, np.int64)
    (item_ids,) = _fetch_columns("SELECT id FROM catalog_item ORDER BY id", 1, np.int64)
    user, item, weight, value, explicit, seconds = _fetch_columns(
        "SELECT f.user_id, f.item_id, k.weight, f.value, k.is_explicit::int, extract(epoch FROM f.created_at) "
        "FROM catalog_feedback f JOIN catalog_feedbackkind k ON k.code = f.kind_id "
        "WHERE f.is_current IS DISTINCT FROM false",
        6,
    )
    if_item, if_feature, if_weight = _fetch_columns(
        "SELECT item_id, feature_id, weight FROM catalog_itemfeature", 3)
    uf_user, uf_feature, uf_weight = _fetch_columns(
        "SELECT profile_id, feature_id, weight FROM catalog_userfeature", 3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, type || '=' || value FROM catalog_feature ORDER BY id")
        features = cursor.fetchall()
    return CatalogArrays(
        user_ids=user_ids,
        item_ids=item_ids,
        feedback_user=user.astype(np.int64),
        feedback_item=item.astype(np.int64),
        feedback_kind_weight=weight,
        feedback_value=value,
        feedback_is_explicit=explicit.astype(bool),
        feedback_time=seconds,
        item_feature_item=if_item.astype(np.int64),
        item_feature_id=if_feature.astype(np.int64),
        item_feature_weight=if_weight,
        user_feature_user=uf_user.astype(np.int64),
        user_feature_id=uf_feature.astype(np.int64),
        user_feature_weight=uf_weight,
        feature_ids=np.asarray([row[0] for row in features], dtype=np.int64),
        feature_names=[row[1] for row in features],
    )
