"""Celery tasks: thin wrappers that load ids and call one service. Schedules: config/schedules.py."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded  # noqa: F401  (raised inside the service, recorded there)

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    queue="training",
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
    max_retries=0,
)
def model_train_task(self, version_id: int) -> dict:
    """Train, evaluate, publish and (when it passes the gate) activate one version: `model_version_train`.

    Safe to run twice: a second delivery finds the version already claimed and does nothing,
    unless the first worker died (stale heartbeat), in which case it runs the version again.
    Not retried on errors: a failed version records its error, the error is re-raised (the task
    fails too), and a new run must be requested.
    """
    from .services.training import model_version_train

    version = model_version_train(version_id=version_id, task_id=self.request.id or "")
    if version is None:
        return {"version": version_id, "skipped": True}
    return {"version": version.pk, "status": version.status}


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def model_versions_maintain_task() -> dict:
    """Fail runs whose worker died and retire old versions' tables. Safe to run any number of times."""
    from .services.activation import model_versions_retire
    from .services.training import model_versions_fail_stale

    return {"failed_stale": model_versions_fail_stale(), "retired": model_versions_retire()}


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def model_train_scheduled_task() -> dict:
    """Periodic retraining; refuses quietly (logged) when a run is already going on."""
    from .services.training import TrainingAlreadyRunning, model_training_request

    try:
        version = model_training_request()
    except TrainingAlreadyRunning as error:
        logger.info("training.scheduled_skipped reason=%s", error.message)
        return {"skipped": error.message}
    return {"version": version.pk}


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1900, max_retries=2, default_retry_delay=60)
def related_items_precompute_task(version_id: int) -> dict:
    """Precompute the related-item lists of one version (after its activation).

    Safe to run twice: the version's table is rebuilt from scratch in one transaction. Skips a
    version that is no longer active (a newer one took over before the task ran). Bounded by
    ``RELATED_PRECOMPUTE_SECONDS`` (300 s by default), well inside the soft time limit.
    """
    from .selectors import active_version
    from .services.precompute import related_items_precompute

    version = active_version()
    if version is None or version.pk != version_id:
        logger.info("precompute.task_skipped version=%s reason=not_active", version_id)
        return {"version": version_id, "skipped": True}
    coverage = related_items_precompute(version=version)
    return {"version": version_id, "items": coverage.items, "of": coverage.of, "seconds": coverage.seconds}


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1900, max_retries=2, default_retry_delay=60)
def home_lists_precompute_task(version_id: int) -> dict:
    """Precompute the homepage pools of one version (after its activation); skips a version no longer active.

    Safe to run twice (the table is rebuilt in one transaction); bounded by
    ``HOME_PRECOMPUTE_SECONDS`` (300 s by default), well inside the soft time limit.
    """
    from .selectors import active_version
    from .services.home_precompute import home_lists_precompute

    version = active_version()
    if version is None or version.pk != version_id:
        logger.info("precompute.home_task_skipped version=%s reason=not_active", version_id)
        return {"version": version_id, "skipped": True}
    coverage = home_lists_precompute(version=version)
    return {"version": version_id, "users": coverage.users, "of": coverage.of, "seconds": coverage.seconds}


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90, max_retries=0)
def home_list_refresh_task(profile_id: int) -> dict:
    """Recompute one user's stored homepage pool after their feedback (fold-in already ran)."""
    from .services.home_precompute import home_list_refresh

    return {"profile": profile_id, "refreshed": home_list_refresh(profile_id=profile_id)}
