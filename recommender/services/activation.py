"""Activation, the quality gate, rollback and retirement of model versions.

Activation is one atomic pointer switch: inside a transaction the active row becomes `ready`
and the new one `active` (a partial unique index allows one active row). Serving reads vectors
through the active row, so it sees either the old version or the new one, never a mix.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from config.exception_handlers import ApplicationError
from recommender.vectors import store

from ..models import ModelVersion, VersionStatus
from ..selectors import active_version, rollback_candidate

logger = logging.getLogger(__name__)

# Sent after commit when the served version changes; caches and precomputed lists listen to it.
model_activated = Signal()

KEEP_READY_VERSIONS = 3  # besides the active one, for rollback
RETIRE_GRACE = timedelta(hours=24)


class ActivationRefused(ApplicationError):
    status_code = 409


def served_metric(version: ModelVersion, key: str) -> float | None:
    """The metric of what ``version`` serves: its stack's chosen scorer when it has one, else LightFM's."""
    stack = version.metrics.get("stack") if isinstance(version.metrics, dict) else None
    if stack:
        return stack.get("scorer", {}).get(key)
    return version.metrics.get(key)


def quality_gate(*, version: ModelVersion, current: ModelVersion | None) -> tuple[bool, str]:
    """Whether ``version`` may replace ``current`` automatically, and why (or why not).

    The served scorer must beat popularity, stay within ``quality_margin`` of the EASE family
    measured on the same split (when the run fitted it: the strong baseline), and within
    ``quality_margin`` of the active version.
    """
    k = version.config_snapshot.get("eval_k", 10)
    key = f"precision_at_{k}"
    margin = version.config_snapshot.get("quality_margin", 0.0)
    mine = served_metric(version, key)
    stack = version.metrics.get("stack") or {}
    baseline = (stack.get("popularity") or version.baseline_metrics).get(key)
    if mine is None or baseline is None:
        return False, "No evaluation metrics were recorded."
    if mine <= baseline:
        return False, f"{key} {mine:.4f} does not beat the popularity baseline ({baseline:.4f})."
    ease = (stack.get("families") or {}).get("ease", {}).get(key)
    if ease is not None and mine < ease - margin:
        return False, (
            f"{key} {mine:.4f} is more than {margin:.4f} below the EASE family on the same split ({ease:.4f}); "
            "check the run's scorer report."
        )
    if current is not None and current.pk != version.pk:
        theirs = served_metric(current, key)
        if theirs is not None and mine < theirs - margin:
            return False, (f"{key} {mine:.4f} is more than {margin:.4f} below the active v{current.pk} ({theirs:.4f}).")
    against = f"; EASE {ease:.4f} ({mine / ease:.2f}x)" if ease else ""
    return True, f"{key} {mine:.4f} beats the popularity baseline ({baseline:.4f}){against}."


def model_version_activate(*, version: ModelVersion, reason: str = "") -> ModelVersion:
    """Make ``version`` the served one; the previous active version stays `ready` for rollback."""
    if not version.vectors_published or version.status not in (VersionStatus.READY, VersionStatus.ACTIVE):
        raise ActivationRefused(
            f"v{version.pk} is {version.get_status_display().lower()}, not ready; "
            "only a trained and published version can be activated."
        )
    if not store.version_tables_exist(version.pk) or not store.version_indexes_valid(version.pk):
        raise ActivationRefused(f"v{version.pk} has no valid HNSW indexes (see pg_index); it cannot serve.")
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if locked.status == VersionStatus.ACTIVE:
            return locked
        ModelVersion.objects.filter(status=VersionStatus.ACTIVE).update(status=VersionStatus.READY)
        locked.status = VersionStatus.ACTIVE
        locked.activated_at = timezone.now()
        if reason:
            locked.gate_reason = reason
        locked.save(update_fields=["status", "activated_at", "gate_reason"])
        transaction.on_commit(lambda: model_activated.send(sender=ModelVersion, version_id=locked.pk))
    logger.info("model.activated version=%s", locked.pk)
    return locked


def model_version_apply_gate(*, version: ModelVersion) -> ModelVersion:
    """Activate a freshly ready version when it passes the quality gate; otherwise record why not."""
    passed, reason = quality_gate(version=version, current=active_version())
    if passed:
        return model_version_activate(version=version, reason=reason)
    version.gate_reason = reason
    version.save(update_fields=["gate_reason"])
    logger.info("model.gate_refused version=%s reason=%s", version.pk, reason)
    return version


def model_version_rollback() -> ModelVersion:
    """Re-activate the most recently active earlier version."""
    current = active_version()
    previous = rollback_candidate(exclude_id=current.pk if current else None)
    if previous is None:
        raise ActivationRefused("There is no earlier version with published vectors to roll back to.")
    return model_version_activate(version=previous, reason=f"Rolled back from v{current.pk}." if current else "")


def model_versions_retire(*, keep: int = KEEP_READY_VERSIONS, grace: timedelta = RETIRE_GRACE) -> list[int]:
    """Drop the vector tables of old versions: all but the newest ``keep`` ready ones, once
    they have been inactive for ``grace`` and no draft or running experiment names them. Failed
    versions lose their (partial) tables at once."""
    retired: list[int] = []
    ready = list(ModelVersion.objects.filter(status=VersionStatus.READY).order_by("-id"))
    cutoff = timezone.now() - grace
    from recommender.experiments.selectors import versions_in_experiments

    named = versions_in_experiments()  # a draft or running experiment still serves (or will serve) them
    for version in ready[keep:]:
        if version.pk not in named and (version.finished_at or version.created_at) < cutoff:
            retired.append(version.pk)
    for version_id in retired:
        store.vectors_drop(version_id=version_id)
    ModelVersion.objects.filter(pk__in=retired).update(status=VersionStatus.RETIRED, vectors_published=False)
    for version_id in ModelVersion.objects.filter(status=VersionStatus.FAILED).values_list("pk", flat=True):
        store.vectors_drop(version_id=version_id)
    if retired:
        logger.info("model.retired versions=%s", retired)
    return retired
