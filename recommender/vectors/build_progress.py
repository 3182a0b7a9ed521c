"""Progress of a running ANN (HNSW or IVFFlat) index build, read from PostgreSQL while the build's statement runs.

``CREATE INDEX`` is one statement that holds its connection for minutes at a million items, so its
progress is read from another connection: ``pg_stat_progress_create_index`` for the builder's
backend pid (pgvector reports its phase and the tuples it has inserted). A daemon thread polls it
and hands a one-line message to ``report``; the training service writes that to the version row
(phase detail and heartbeat), so the Models page moves during the build and a long build is not
mistaken for a lost worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connections

logger = logging.getLogger(__name__)

Report = Callable[[str], None]
POLL_SECONDS = 1.0
METHOD_NAMES = {"hnsw": "HNSW", "ivfflat": "IVFFlat"}


@dataclass(frozen=True)
class BuildStep:
    """Which build this is, for the message: ``number`` of ``total``, over ``n_items`` rows."""

    number: int
    total: int
    index: str
    n_items: int
    method: str = "hnsw"


def progress_message(step: BuildStep, phase: str | None, tuples_done: int | None, tuples_total: int | None) -> str:
    """'HNSW index 2 of 3 (…_cos_hnsw): loading tuples, 400,000 of 1,000,000 items (40%)'."""
    head = f"{METHOD_NAMES.get(step.method, step.method)} index {step.number} of {step.total} ({step.index})"
    if phase is None:
        return f"{head}: starting"
    total = tuples_total or step.n_items
    if tuples_done and total:
        share = min(1.0, tuples_done / total)
        return f"{head}: {phase}, {min(tuples_done, total):,} of {total:,} items ({share:.0%})"
    return f"{head}: {phase}"


def build_progress_read(backend_pid: int) -> tuple[str | None, int | None, int | None]:
    """(phase, tuples_done, tuples_total) of the index build running in ``backend_pid``; Nones when none runs."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = %s", [backend_pid]
        )
        row = cursor.fetchone()
    if row is None:
        return None, None, None
    return str(row[0]), int(row[1] or 0), int(row[2] or 0)


class BuildWatcher:
    """``with BuildWatcher(pid, step, report):`` polls the build of ``pid`` until the block ends.

    The thread has its own database connection (Django's are per thread), closed when it stops.
    A failing poll is logged and the polling goes on: progress is informative, the build is not.
    """

    def __init__(self, backend_pid: int, step: BuildStep, report: Report, *, interval: float = POLL_SECONDS):
        self.backend_pid, self.step, self.report, self.interval = backend_pid, step, report, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hnsw-progress-{step.index}", daemon=True)

    def __enter__(self) -> BuildWatcher:
        self.report(progress_message(self.step, None, None, None))
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        last = ""
        try:
            while not self._stop.wait(self.interval):
                try:
                    phase, done, total = build_progress_read(self.backend_pid)
                    if phase is None:  # not started yet, or already finished: the last message stands
                        continue
                    message = progress_message(self.step, phase, done, total)
                    if message != last:
                        self.report(message)
                        last = message
                except Exception:
                    logger.warning("vectors.index_progress_failed index=%s", self.step.index, exc_info=True)
        finally:
            connections.close_all()
