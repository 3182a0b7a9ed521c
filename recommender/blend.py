"""The version's blend (`recommender.ml.blend`): fitted at training, stored next to the artifact, served.

A version's blend lives in ``<artifact stem>.blend.npz`` beside its LightFM artifact (no schema
change; the weights are also copied into ``ModelVersion.metrics["blend"]`` for the admin and the
API). A version without that file (too little data to fit weights, or the blend did not beat the
model on its validation split) is served by the model's score alone.

Serving reads nothing new from the database: the features come from the pool's model scores,
the user's rated items (``context.seen_item_ids``, already read for filtering) and the blend's
in-memory item-item matrix and popularity, loaded once per version per process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection

from recommender.candidates.base import Context
from recommender.memo import VersionModels
from recommender.ml.blend import BlendModel, blend_fit_on_validation, blend_fit_with_model, blend_model_build
from recommender.ml.dataset import TrainingData

logger = logging.getLogger(__name__)

_MISSING_RECHECK_SECONDS = 30.0


def blend_path(artifact_path: str | Path) -> Path:
    """``…/model_v7.npz`` → ``…/model_v7.blend.npz``."""
    path = Path(artifact_path)
    return path.with_name(f"{path.stem}.blend.npz")


def blend_train(
    *,
    data: TrainingData,
    params,
    min_users: int | None = None,
    min_gain: float | None = None,
    model=None,
    held_out=None,
) -> BlendModel | None:
    """Fit blend weights on a validation split of ``data`` (training interactions only).

    With ``model`` (trained on ``data``) and ``held_out`` (positives it never saw), the weights are
    fitted against those instead, with no extra LightFM fit: training passes its evaluation model
    and the protocol's held-out part (see docs/serving.md, "The blend").

    Returns the fitted BlendModel (its B and popularity from the reduced data; see
    `blend_for_serving`), or None when ``data`` has fewer than ``min_users`` users with a positive
    (settings ``RECOMMENDER_BLEND_MIN_USERS``) or the blend's validation precision does not beat
    the model's by ``min_gain`` (relative, ``RECOMMENDER_BLEND_MIN_GAIN``).
    """
    min_users = settings.RECOMMENDER_BLEND_MIN_USERS if min_users is None else min_users
    min_gain = settings.RECOMMENDER_BLEND_MIN_GAIN if min_gain is None else min_gain
    users = int((np.diff(data.interactions.positives.tocsr().indptr) > 0).sum())
    if users < min_users:
        logger.info("blend.skipped reason=few_users users=%s min_users=%s", users, min_users)
        return None
    started = time.perf_counter()
    if model is not None and held_out is not None:
        fitted = blend_fit_with_model(
            data,
            model,
            held_out,
            budget_cells=settings.TRAINING_EVALUATION_BUDGET_CELLS,
            fit_seconds=settings.TRAINING_FAMILY_FIT_SECONDS,
        )
    else:
        fitted = blend_fit_on_validation(data, params)
    model_precision = next(v for key, v in fitted.validation.items() if key.startswith("model_precision"))
    blend_precision = next(v for key, v in fitted.validation.items() if key.startswith("blend_precision"))
    logger.info(
        "blend.fitted weights=%s model_precision=%.4f blend_precision=%.4f s=%.1f",
        fitted.weights.as_dict(),
        model_precision,
        blend_precision,
        time.perf_counter() - started,
    )
    if blend_precision < model_precision * (1.0 + min_gain):
        logger.info(
            "blend.skipped reason=no_gain model_precision=%.4f blend_precision=%.4f", model_precision, blend_precision
        )
        return None
    return fitted


def blend_store(*, fitted: BlendModel, data: TrainingData, artifact_path: str | Path) -> BlendModel:
    """Refit B and popularity on ``data`` (what the served model saw), keep the frozen weights, save."""
    served = blend_model_build(fitted, data, fit_seconds=settings.TRAINING_FAMILY_FIT_SECONDS)
    served.save(blend_path(artifact_path))
    _cache_clear()
    return served


def _blend_bytes(entry: tuple[BlendModel | None, float]) -> int:
    blend = entry[0]
    if blend is None:
        return 0
    matrix = blend.item_item
    return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes + blend.popularity.nbytes)


# (blend or None, when checked) per version, within half of SERVING_MODELS_BUDGET_BYTES (the
# stacks' memo has the other half, recommender/stacking.py).
_cache: VersionModels[tuple, tuple[BlendModel | None, float]] = VersionModels(
    "blends", budget_bytes=lambda: settings.SERVING_MODELS_BUDGET_BYTES // 2, size_of=_blend_bytes
)


def _cache_clear() -> None:
    _cache.clear()


def blend_discard(artifact_path: str | Path) -> None:
    """Remove a blend left at this artifact's place and forget loaded blends (see `stacking.stack_discard`)."""
    blend_path(artifact_path).unlink(missing_ok=True)
    _cache_clear()


def version_blend(version_id: int) -> BlendModel | None:
    """The version's BlendModel, loaded once per process (kept within a byte budget); None when it has none."""
    key = (connection.settings_dict["NAME"], version_id)
    found, hit = _cache.lookup(key)
    if found and hit is not None:
        blend, checked_at = hit
        if blend is not None or time.monotonic() - checked_at < _MISSING_RECHECK_SECONDS:
            return blend
    with connection.cursor() as cursor:
        cursor.execute("SELECT artifact_path FROM recommender_modelversion WHERE id = %s", [version_id])
        row = cursor.fetchone()
    blend = None
    if row and row[0]:
        path = blend_path(row[0])
        if path.exists():
            started = time.perf_counter()
            blend = BlendModel.load(path)
            logger.info("blend.loaded version=%s ms=%.1f", version_id, 1000 * (time.perf_counter() - started))
    _cache.store(key, (blend, time.monotonic()))
    return blend


def pool_blend_scores(*, context: Context, item_ids: list[int], model_scores: np.ndarray) -> np.ndarray | None:
    """Blended scores of the pooled items for the context's user, or None without a blend.

    ``model_scores`` are LightFM's scores of ``item_ids`` (same order); the user's history is
    ``context.seen_item_ids``.
    """
    if context.version_id is None:
        return None
    blend = version_blend(context.version_id)
    if blend is None:
        return None
    history = np.fromiter(context.seen_item_ids, dtype=np.int64, count=len(context.seen_item_ids))
    return blend.pool_scores(
        model_scores=model_scores, history_ids=history, candidate_ids=np.asarray(item_ids, dtype=np.int64)
    )
