"""Health checks: the database, the broker, the worker and the active model.

The worker check: Celery's ``control.ping`` needs a broadcast-capable broker, which the default
SQLAlchemy transport is not. Instead the worker counts as alive when it completed a task recently:
beat runs the maintenance task every 5 minutes (config/schedules.py), and its result lands in
django_celery_results' table, so a live worker + beat leave a fresh row at least that often.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

DATABASE_TIMEOUT_MS = 1000
BROKER_TIMEOUT_SECONDS = 2.0
# Twice the maintenance schedule plus slack: one missed beat is not yet an alarm.
WORKER_FRESH_FOR = timedelta(minutes=11)


@dataclass
class Check:
    name: str
    ok: bool | None  # None: unknown (no evidence either way)
    detail: str
    milliseconds: float = 0.0
    data: dict = field(default_factory=dict)

    @property
    def state(self) -> str:
        return {True: "ok", False: "error", None: "unknown"}[self.ok]

    def as_dict(self) -> dict:
        return {**asdict(self), "state": self.state}


def database_check(*, timeout_ms: int = DATABASE_TIMEOUT_MS) -> Check:
    """SELECT 1 under a statement timeout, so a stuck database answers 'error' instead of hanging."""
    started = time.perf_counter()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = %s", [f"{int(timeout_ms)}ms"])
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # any failure is the answer of this probe; logged with its cause
        logger.warning("health.database_failed error=%s", error)
        return Check("database", False, f"{type(error).__name__}: {error}"[:300], _ms(started))
    return Check("database", True, f"answered within {timeout_ms} ms", _ms(started))


def broker_check(*, timeout: float = BROKER_TIMEOUT_SECONDS) -> Check:
    """Connect to the Celery broker with a short timeout and read the default queue's depth."""
    from config.celery import app

    started = time.perf_counter()
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=timeout)
            transport = broker.transport_cls
            channel = broker.default_channel
            size = getattr(channel, "_size", None)
            queued = {queue: size(queue) for queue in ("default", "training")} if size else {}
    except Exception as error:  # the probe's answer; logged with its cause
        logger.warning("health.broker_failed error=%s", error)
        return Check("broker", False, f"{type(error).__name__}: {error}"[:300], _ms(started))
    detail = f"{transport} transport reachable"
    if queued:
        detail += "; waiting messages " + ", ".join(f"{queue}={count}" for queue, count in queued.items())
    return Check("broker", True, detail, _ms(started), {"transport": str(transport), "queued": queued})


def worker_check(*, fresh_for: timedelta = WORKER_FRESH_FOR) -> Check:
    """Alive when a task finished within ``fresh_for``; also lists running training versions."""
    from django_celery_results.models import TaskResult

    from recommender.selectors import running_versions

    started = time.perf_counter()
    last = (
        TaskResult.objects.filter(date_done__isnull=False)
        .order_by("-date_done")
        .only("task_name", "status", "date_done")
        .first()
    )
    running = [f"v{version.pk} {version.status}" for version in running_versions()]
    data = {
        "running_versions": running,
        "last_task": (
            {"name": last.task_name, "status": last.status, "done_at": last.date_done.isoformat()} if last else None
        ),
    }
    if last is None:
        return Check("worker", None, "no task has finished yet (is a worker and beat running?)", _ms(started), data)
    age = timezone.now() - last.date_done
    fresh = age <= fresh_for
    detail = f"last task {last.task_name} {last.status.lower()} {int(age.total_seconds())} s ago"
    if running:
        detail += f"; running: {', '.join(running)}"
    if not fresh:
        detail += f" (older than {int(fresh_for.total_seconds() // 60)} min: the worker or beat may be down)"
    return Check("worker", fresh, detail, _ms(started), data)


def active_model_check() -> Check:
    from recommender.selectors import active_version

    started = time.perf_counter()
    version = active_version()
    if version is None:
        return Check("model", False, "no active model: pages serve popular items (fallback)", _ms(started))
    data = {
        "version": version.pk,
        "activated_at": version.activated_at.isoformat() if version.activated_at else None,
        "metrics": version.metrics,
    }
    precision = version.metrics.get("precision_at_10")
    detail = f"v{version.pk} active" + (f", precision@10 {precision:.3f}" if precision is not None else "")
    return Check("model", True, detail, _ms(started), data)


def health_report() -> dict:
    """Every check; ``status`` is 'ok', 'degraded' (worker or model missing) or 'error' (database/broker)."""
    checks = [database_check()]
    if checks[0].ok:
        checks += [broker_check(), worker_check(), active_model_check()]
    else:
        checks += [broker_check()]
    essential = [check for check in checks if check.name in ("database", "broker")]
    if not all(check.ok for check in essential):
        status = "error"
    elif all(check.ok for check in checks):
        status = "ok"
    else:
        status = "degraded"
    return {"status": status, "checked_at": timezone.now().isoformat(), "checks": [c.as_dict() for c in checks]}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
