"""Train, evaluate and publish one model version.

Protocol (docs/training.md): positives and weights come from `recommender.ml.dataset`; a split
(random 80/20 of the positive pairs with the configured seed, or by time) trains a model that is
evaluated on the held-out part against a popularity baseline. The served model then continues
training from the evaluated one on all the data for a few more epochs (see `_refit_parameters`),
because the 20% held out is often the newest and most useful feedback. The metrics stored on the
version therefore describe the protocol's model, which is the honest estimate of the served one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from catalog.array_selectors import CatalogArrays, catalog_arrays_fetch
from config import metrics
from config.exception_handlers import ApplicationError
from recommender import process_memory
from recommender.blend import blend_discard
from recommender.ml import evaluation
from recommender.ml.dataset import IdMap, Interactions, TrainingData, build_feature_matrix, build_interactions
from recommender.ml.training import FittedModel, HyperParameters, fit
from recommender.services.scorer import scorer_evaluate, scorer_publish, stack_config
from recommender.stacking import VECTOR_FAMILY, stack_discard
from recommender.vectors import store

from ..models import RUNNING_STATUSES, ModelVersion, TrainingConfig, VersionStatus, validate_family_list
from ..selectors import default_training_config
from .activation import model_version_apply_gate

logger = logging.getLogger(__name__)

# Sent after a training request commits; recommender.receivers queues the run on it.
training_requested = Signal()

# A running version whose heartbeat is older than this is considered lost (its worker died).
STALE_AFTER = timedelta(seconds=settings.TRAINING_STALE_SECONDS)
TRAINING_LOCK_KEY = 0x7265_6373  # pg_advisory_xact_lock key serialising training requests


class TrainingAlreadyRunning(ApplicationError):
    status_code = 409


def hyperparameters_from_config(snapshot: dict) -> HyperParameters:
    return HyperParameters(
        loss=snapshot["loss"],
        no_components=snapshot["no_components"],
        learning_rate=snapshot["learning_rate"],
        item_alpha=snapshot["item_alpha"],
        user_alpha=snapshot["user_alpha"],
        epochs=snapshot["epochs"],
        max_sampled=snapshot["max_sampled"],
        use_item_features=snapshot["use_item_features"],
        use_user_features=snapshot["use_user_features"],
        random_state=snapshot["seed"],
        early_stopping_patience=snapshot["early_stopping_patience"],
        early_stopping_k=snapshot["eval_k"],
        # 0 = every core. LightFM's Hogwild threads make multi-threaded runs non-reproducible;
        # 1 gives bit-identical runs for a seed (tests that compare two scorers use it).
        num_threads=settings.TRAINING_NUM_THREADS or os.cpu_count() or 1,
    ).validate()


def model_training_request(
    *, config: TrainingConfig | None = None, requested_by=None, enqueue: bool = True
) -> ModelVersion:
    """Queue a training run; refuse with a clear message while another one is queued or running.

    ``enqueue=False`` only creates the queued version, for a caller that runs it in-process.
    """
    config = config or default_training_config()
    # Refuse a bad configuration before queueing, not minutes later inside the run (a config saved
    # without full_clean, e.g. from the shell or a data migration, skipped the field validators).
    hyperparameters_from_config(config.hyperparameters())
    try:
        validate_family_list(config.families)
    except ValidationError as error:
        raise ValidationError({"families": error.messages}) from error
    with transaction.atomic():
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [TRAINING_LOCK_KEY])
        model_versions_fail_stale()
        running = ModelVersion.objects.filter(status__in=RUNNING_STATUSES).first()
        if running is not None:
            raise TrainingAlreadyRunning(
                f"Training v{running.pk} is already {running.get_status_display().lower()}; "
                "wait for it to finish before starting another.",
                extra={"version": running.pk},
            )
        version = ModelVersion.objects.create(
            config=config,
            config_snapshot=config.hyperparameters(),
            requested_by=requested_by,
            epochs_total=config.epochs,
        )
        if enqueue:
            # The receiver queues the Celery task (recommender.receivers): services never import tasks,
            # which import services.
            transaction.on_commit(lambda: training_requested.send(sender=ModelVersion, version_id=version.pk))
    logger.info("training.requested version=%s config=%s", version.pk, config.name)
    return version


def model_version_enqueued(*, version_id: int, task_id: str) -> None:
    """Record the Celery task that will run ``version_id``."""
    ModelVersion.objects.filter(pk=version_id).update(task_id=task_id or "")


def model_version_enqueue_failed(*, version_id: int, error: Exception) -> None:
    """The broker refused the run: fail the version now, or it would stay queued and block every later request."""
    ModelVersion.objects.filter(pk=version_id).update(
        status=VersionStatus.FAILED,
        finished_at=timezone.now(),
        error=f"Could not reach the Celery broker to queue the run: {error}",
    )
    logger.exception("training.enqueue_failed version=%s", version_id)


def model_version_claim(*, version_id: int) -> ModelVersion | None:
    """Take a queued version (or one whose worker was lost mid-run) for this process; None if taken.

    A redelivered task (acks_late after a worker died) finds its version running with a stale
    heartbeat and runs it again from the start: every phase rewrites only this version's rows.
    """
    stale_before = timezone.now() - STALE_AFTER
    claimable = Q(status=VersionStatus.QUEUED) | (
        Q(status__in=RUNNING_STATUSES) & (Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True))
    )
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update(skip_locked=True).filter(claimable, pk=version_id).first()
        if version is None:
            return None
        now = timezone.now()
        version.status = VersionStatus.BUILDING_DATASET
        version.attempts += 1
        version.started_at = now
        version.heartbeat_at = now
        version.error = ""
        version.save(update_fields=["status", "attempts", "started_at", "heartbeat_at", "error"])
    return version


def model_version_train(*, version_id: int, task_id: str | None = None) -> ModelVersion | None:
    """Claim a queued version, run every phase, then let the quality gate decide its activation.

    The one training sequence: `model_train_task`, ``manage.py train --inline`` and the tests call
    it. Returns None, having done nothing, when the version cannot be claimed (another process runs
    it, or it already finished). A failed run is marked failed and logged with its phase by
    `model_version_run`, and the error propagates; the gate never runs then, so the served version
    is untouched. ``task_id`` records the Celery task running the version.
    """
    version = model_version_claim(version_id=version_id)
    if version is None:
        logger.info("training.skipped version=%s reason=already_claimed_or_done", version_id)
        return None
    if task_id is not None:
        ModelVersion.objects.filter(pk=version_id).update(task_id=task_id)
    version = model_version_run(version=version)
    return model_version_apply_gate(version=version)


def model_versions_fail_stale(*, stale_after: timedelta = STALE_AFTER) -> int:
    """Mark running versions whose worker stopped sending heartbeats as failed; returns how many."""
    cutoff = timezone.now() - stale_after
    stale = (
        ModelVersion.objects.filter(status__in=RUNNING_STATUSES)
        .exclude(status=VersionStatus.QUEUED)
        .filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
    )
    count = stale.update(
        status=VersionStatus.FAILED,
        finished_at=timezone.now(),
        error=f"The worker stopped reporting for over {int(stale_after.total_seconds())} s "
        "(killed or lost); the active version was not touched.",
    )
    if count:
        logger.warning("training.stale_failed count=%s", count)
    return count


class _Progress:
    """Writes status, epoch, phase detail and heartbeat to the version row without flooding the database.

    Each phase also records its wall time and its own peak RSS (`recommender.process_memory`: the
    peak is reset when a phase starts), logged and kept on the version (``phase_peak_rss_mib``).
    ``detail`` may be called from another thread (the HNSW build watcher): it writes through that
    thread's own connection.
    """

    DETAIL_EVERY_SECONDS = 1.0

    def __init__(self, version: ModelVersion):
        self.version = version
        self.phase_started = time.perf_counter()
        self.phase: str | None = None
        self.last_write = 0.0
        self.last_detail = 0.0
        self.last_head = ""
        self._lock = threading.Lock()

    def enter(self, status: str) -> None:
        self._close_phase()
        self.phase = status
        self.phase_started = time.perf_counter()
        process_memory.peak_rss_reset()
        self.version.status = status
        self.version.heartbeat_at = timezone.now()
        self.version.phase_detail = ""
        self.version.save(
            update_fields=["status", "heartbeat_at", "phase_seconds", "phase_peak_rss_mib", "phase_detail"]
        )

    def _close_phase(self) -> None:
        if self.phase is not None:
            seconds = time.perf_counter() - self.phase_started
            peak_mib = round(process_memory.peak_rss_bytes() / process_memory.MIB)
            self.version.phase_seconds[self.phase] = round(self.version.phase_seconds.get(self.phase, 0) + seconds, 3)
            self.version.phase_peak_rss_mib[self.phase] = max(
                peak_mib, self.version.phase_peak_rss_mib.get(self.phase, 0)
            )
            logger.info(
                "training.phase_done version=%s phase=%s seconds=%.1f peak_rss_mib=%s",
                self.version.pk,
                self.phase,
                seconds,
                peak_mib,
            )
            metrics.training_phase_observe(self.phase, seconds)

    def epoch(self, epoch: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last_write < 0.5 and epoch < total:
            return
        self.last_write = now
        ModelVersion.objects.filter(pk=self.version.pk).update(
            epoch=epoch, epochs_total=total, heartbeat_at=timezone.now()
        )

    def detail(self, message: str) -> None:
        """What the phase is doing now (a family's fit step, an index build's share).

        A new step (the text before its first ':' changed) is always written; updates of the same
        step at most once a second.
        """
        head = message.split(":", 1)[0]
        with self._lock:
            now = time.perf_counter()
            if head == self.last_head and now - self.last_detail < self.DETAIL_EVERY_SECONDS:
                return
            self.last_detail, self.last_head = now, head
        logger.info("training.progress version=%s phase=%s detail=%s", self.version.pk, self.phase, message)
        ModelVersion.objects.filter(pk=self.version.pk).update(phase_detail=message[:200], heartbeat_at=timezone.now())

    def family_step(self, done: int, total: int, message: str) -> None:
        """A `recommender.ml.families.Progress` callback."""
        self.detail(message)

    def finish(self) -> None:
        self._close_phase()
        self.phase = None
        self.version.phase_detail = ""


def training_data_build(arrays: CatalogArrays, snapshot: dict) -> tuple[TrainingData, np.ndarray]:
    """Catalogue arrays → TrainingData (identity + side features); also returns per-positive timestamps."""
    users, items = IdMap.from_ids(arrays.user_ids), IdMap.from_ids(arrays.item_ids)
    features = IdMap.from_ids(arrays.feature_ids)
    interactions = build_interactions(
        users.index_of(arrays.feedback_user),
        items.index_of(arrays.feedback_item),
        arrays.feedback_kind_weight,
        arrays.feedback_value,
        arrays.feedback_is_explicit,
        len(users),
        len(items),
        positive_threshold=snapshot["positive_threshold"],
        timestamps=arrays.feedback_time,
        half_life_days=snapshot["time_decay_half_life_days"],
        # Implicit counts (plays) weigh by their kind's value transform (log, confidence).
        value_transform=arrays.feedback_value_transform,
        value_transform_names=arrays.value_transform_names,
    )
    names = np.asarray(arrays.feature_names, dtype=object)
    item_columns = features.index_of(arrays.item_feature_id)
    user_columns = features.index_of(arrays.user_feature_id)
    item_features = build_feature_matrix(
        len(items), items.index_of(arrays.item_feature_item), item_columns, arrays.item_feature_weight, len(features)
    )
    user_features = build_feature_matrix(
        len(users), users.index_of(arrays.user_feature_user), user_columns, arrays.user_feature_weight, len(features)
    )
    data = TrainingData(
        user_ids=users,
        item_ids=items,
        interactions=interactions,
        user_features=user_features,
        item_features=item_features,
        user_feature_names=[f"user:{i}" for i in arrays.user_ids] + list(names),
        item_feature_names=[f"item:{i}" for i in arrays.item_ids] + list(names),
    )
    return data, arrays.feature_ids


def _with_interactions(data: TrainingData, positives, weights) -> TrainingData:
    interactions = Interactions(positives=positives, weights=weights, negatives=data.interactions.negatives)
    return dataclasses.replace(data, interactions=interactions)


def _split(data: TrainingData, snapshot: dict) -> evaluation.Split:
    positives, weights = data.interactions.positives, data.interactions.weights
    if snapshot["split"] == "time" and data.interactions.timestamps is not None:
        return evaluation.time_split(positives, weights, data.interactions.timestamps, snapshot["test_fraction"])
    return evaluation.random_split(positives, weights, snapshot["test_fraction"], snapshot["seed"])


def _refit_parameters(params: HyperParameters, trained_epochs: int, test_fraction: float) -> HyperParameters:
    """Continue the evaluated model on all the data instead of refitting from scratch.

    The held-out share gets the passes it would have had in proportion to its size
    (epochs × test/(1 − test): 8 of 30 at 80/20), which brings it in at about a quarter of
    a second full fit's cost; bench/training.py measures the whole run against a raw fit.
    """
    extra = max(1, int(np.ceil(trained_epochs * test_fraction / (1.0 - test_fraction))))
    return dataclasses.replace(params, epochs=extra, early_stopping_patience=None)


def artifact_path(version_id: int) -> Path:
    # Per database, so a test database's v3 never overwrites the development database's v3.
    from django.db import connection

    return Path(settings.MODEL_ARTIFACT_DIR) / connection.settings_dict["NAME"] / f"model_v{version_id}.npz"


@metrics.training_run_observed
def model_version_run(*, version: ModelVersion) -> ModelVersion:
    """Run every phase of a claimed version. On any error the version is marked failed, its
    half-published tables are dropped, and the active version is left untouched."""
    progress = _Progress(version)
    try:
        _run_phases(version, progress)
    except BaseException as error:  # SoftTimeLimitExceeded and KeyboardInterrupt included: record, then re-raise
        failed_phase = progress.phase
        progress.finish()
        store.vectors_drop(version_id=version.pk)
        ModelVersion.objects.filter(pk=version.pk).update(
            status=VersionStatus.FAILED,
            error=f"{type(error).__name__}: {error}"[:5000],
            finished_at=timezone.now(),
            phase_seconds=version.phase_seconds,
            phase_peak_rss_mib=version.phase_peak_rss_mib,
            phase_detail="",
            vectors_published=False,
        )
        logger.exception("training.failed version=%s phase=%s", version.pk, failed_phase)
        raise
    version.refresh_from_db()
    return version


def _families_refit_decision(stack_metrics: dict, run_started: float, test_fraction: float) -> tuple[bool, str]:
    """Whether the served families keep their fits on the training part, and why (kept on the version).

    A refit on all the data is predicted from the training part's own fit seconds, scaled by the
    data's size; it runs while it fits what is left of `TRAINING_RUN_SECONDS`. Small catalogues
    (seconds of fitting) always refit; at a million items the fallback keeps request -> active
    within the budget, at the cost of the held-out share of the data in the families (LightFM,
    always continued on all of it, is unaffected).
    """
    fit_seconds = sum(float(row.get("fit_seconds") or 0.0) for row in stack_metrics.get("families", {}).values())
    predicted = fit_seconds / max(1.0 - float(test_fraction), 1e-9)
    left = float(settings.TRAINING_RUN_SECONDS) - (time.perf_counter() - run_started)
    if predicted <= left:
        return False, f"refitted on all the data (predicted {predicted:.0f} s, {left:.0f} s of the run budget left)"
    return True, (
        f"fitted on the training part: a refit on all the data was predicted at {predicted:.0f} s "
        f"with {left:.0f} s of TRAINING_RUN_SECONDS left"
    )


def _run_phases(version: ModelVersion, progress: _Progress) -> None:
    run_started = time.perf_counter()
    snapshot = version.config_snapshot
    params = hyperparameters_from_config(snapshot)
    k = snapshot["eval_k"]

    progress.enter(VersionStatus.BUILDING_DATASET)
    data, _ = training_data_build(catalog_arrays_fetch(), snapshot)
    split = _split(data, snapshot)
    version.n_users, version.n_items = data.interactions.shape
    version.n_interactions = int(data.interactions.positives.nnz)
    version.dimension = params.no_components
    refit = snapshot["refit_on_full_data"]
    version.epochs_total = params.epochs + (
        _refit_parameters(params, params.epochs, snapshot["test_fraction"]).epochs if refit else 0
    )
    version.save(update_fields=["n_users", "n_items", "n_interactions", "dimension", "epochs_total"])

    progress.enter(VersionStatus.TRAINING)
    best_epoch, best_score, epochs_run = params.epochs, -1.0, 0

    def on_epoch(epoch: int, total: int, validation_precision: float | None, offset: int = 0) -> None:
        nonlocal best_epoch, best_score, epochs_run
        if validation_precision is not None and validation_precision > best_score:
            best_epoch, best_score = epoch, validation_precision
        if not offset:
            epochs_run = epoch
        progress.epoch(offset + epoch, version.epochs_total)

    train = _with_interactions(data, split.train_positives, split.train_weights)
    # Early stopping ranks its validation users against every item each epoch: the same cell budget
    # (and seeded sample) as the evaluation, so an epoch's check does not grow with users × items.
    validation = (
        evaluation.users_within_budget(
            split.test_positives, budget_cells=settings.TRAINING_EVALUATION_BUDGET_CELLS, seed=snapshot["seed"]
        )
        if params.early_stopping_patience is not None
        else None
    )
    fit_budget = float(settings.TRAINING_LIGHTFM_FIT_SECONDS)
    model = fit(train, params, on_epoch=on_epoch, validation=validation, time_budget_seconds=fit_budget)
    if best_score < 0 or epochs_run < best_epoch:
        # No early stopping, or the time budget cut the epochs: the refit continues from those run.
        best_epoch = epochs_run

    progress.enter(VersionStatus.EVALUATING)
    # Every scorer below is measured on the same users: all of them while users × items fits the
    # budget, else a uniform sample of budget / items users (evaluation.users_within_budget).
    evaluated = evaluation.users_within_budget(
        split.test_positives, budget_cells=settings.TRAINING_EVALUATION_BUDGET_CELLS, seed=snapshot["seed"]
    )
    evaluated_users = int((np.diff(evaluated.indptr) > 0).sum())
    progress.detail(f"LightFM and popularity on {evaluated_users:,} test users")
    version.metrics = evaluation.evaluate(model.score_items, split.train_positives, evaluated, k)
    popularity = evaluation.popularity_scores(split.train_positives)
    version.baseline_metrics = evaluation.evaluate(popularity, split.train_positives, evaluated, k)
    stack = stack_config(snapshot, dataclasses.asdict(dataclasses.replace(params, early_stopping_patience=None)))
    chosen = None
    if stack is not None:
        # Families and the learned scorer: chosen on validation data carved from `train`, measured
        # on this run's test split next to the LightFM metrics above (recommender/services/scorer.py).
        chosen, stack_metrics, train_families = scorer_evaluate(
            train=train, test_positives=evaluated, lightfm_model=model, config=stack, progress=progress.family_step
        )
        version.metrics["stack"] = stack_metrics
    # Serving blend weights (recommender/blend.py), fitted for the evaluation model against the
    # held-out part: no extra fit. The version's metrics above are the model's own and were computed
    # before; `manage.py evaluate` measures the whole pipeline with weights fitted on training data only.
    # None: too little data, or no gain on the held-out part.
    from recommender.blend import blend_train

    # The blend is the fallback scorer: only when no stack serves, or the stack chose LightFM alone.
    fitted_blend = None
    if chosen is None or chosen.choice == f"family:{VECTOR_FAMILY}":
        progress.detail("fitting the serving blend")
        fitted_blend = blend_train(
            data=train,
            params=dataclasses.replace(params, early_stopping_patience=None),
            model=model,
            held_out=split.test_positives,
        )
    if fitted_blend is not None:
        version.metrics.update(
            {f"blend_weight_{name}": weight for name, weight in fitted_blend.weights.as_dict().items()}
        )
        version.metrics.update(
            {f"blend_validation_{key}": value for key, value in fitted_blend.validation.items() if "precision" in key}
        )
    version.save(update_fields=["metrics", "baseline_metrics"])

    if refit:
        progress.enter(VersionStatus.TRAINING)
        held_share = snapshot["test_fraction"] / (1.0 - snapshot["test_fraction"])
        model = fit(
            data,
            _refit_parameters(params, best_epoch, snapshot["test_fraction"]),
            resume=model,
            on_epoch=lambda e, t, s: on_epoch(e, t, None, offset=params.epochs),
            time_budget_seconds=fit_budget * held_share,
        )

    progress.enter(VersionStatus.PUBLISHING)
    model_publish(version=version, model=model, progress=progress.detail)
    if fitted_blend is not None:
        from recommender.blend import blend_store

        # Item-item weights and popularity from everything the served model saw; weights stay frozen.
        blend_store(fitted=fitted_blend, data=data if refit else train, artifact_path=version.artifact_path)
    if stack is not None and chosen is not None:
        reuse = False
        if refit:
            reuse, why = _families_refit_decision(stack_metrics, run_started, snapshot["test_fraction"])
            version.metrics["stack"]["serving_families"] = why
            version.save(update_fields=["metrics"])
        progress.detail(
            "serving the families as fitted" if reuse else "refitting the families on all the data for serving"
        )
        scorer_publish(
            artifact_path=version.artifact_path,
            data=data if refit else train,
            lightfm_model=model,
            scorer=chosen,
            config=stack,
            positive_threshold=float(snapshot["positive_threshold"]),
            progress=progress.family_step,
            fitted=train_families if reuse else None,
            version_id=version.pk,
        )
    progress.finish()
    version.status = VersionStatus.READY
    version.finished_at = timezone.now()
    version.epoch = version.epochs_total
    version.save(
        update_fields=["status", "finished_at", "epoch", "phase_seconds", "phase_peak_rss_mib", "phase_detail"]
    )
    logger.info(
        "training.ready version=%s precision=%.4f baseline=%.4f",
        version.pk,
        version.metrics.get(f"precision_at_{k}", 0),
        version.baseline_metrics.get(f"precision_at_{k}", 0),
    )


def model_publish(*, version: ModelVersion, model: FittedModel, progress: Callable[[str], None] | None = None) -> None:
    """Save the artifact and write the vectors of ``version`` into its own pgvector tables.

    ``progress(message)`` hears each step, and the HNSW builds' progress while they run.
    """
    target = artifact_path(version.pk)
    target.parent.mkdir(parents=True, exist_ok=True)
    stack_discard(target)
    blend_discard(target)
    path = model.save(target)
    version.artifact_path = str(path)
    version.save(update_fields=["artifact_path"])
    _, item_repr = model.item_representations()
    store.vectors_publish(
        version_id=version.pk,
        item_ids=np.asarray(model.item_ids.ids, dtype=np.int64),
        item_score_vectors=model.item_vectors_with_bias(),
        item_embeddings=item_repr,
        user_ids=np.asarray(model.user_ids.ids, dtype=np.int64),
        user_score_vectors=model.user_vectors_with_bias(),
        progress=progress,
    )
    version.vectors_published = True
    version.save(update_fields=["vectors_published"])
    from recommender.vectors.deep_retrieval import deep_retrieval_discard

    deep_retrieval_discard(version.pk)
    if settings.VECTOR_INDEX_KIND == "deep_retrieval":
        _deep_retrieval_publish(version, progress)


def _deep_retrieval_publish(version: ModelVersion, progress: Callable[[str], None] | None) -> None:
    """Fit the version's Deep Retrieval structure; a failure is logged and the version still serves
    (through pgvector), so an optional index never blocks an activation."""
    from recommender.vectors.deep_retrieval import deep_retrieval_publish

    if progress is not None:
        progress("fitting the Deep Retrieval structure")
    try:
        deep_retrieval_publish(version_id=version.pk)
    except Exception:
        logger.exception("training.deep_retrieval_failed version=%s", version.pk)
