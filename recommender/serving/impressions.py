"""Impressions written behind the response, in batches (issue 12: a cache hit does the minimum).

A homepage request used to spend one of its round trips on its own impression insert. Serving
now appends the shown ids to a per-process buffer and returns; a daemon thread writes the buffer
every ``IMPRESSIONS_FLUSH_SECONDS`` as one set-based insert (`impressions_record_batch`). What
that costs and buys:

- "Demote recently shown" sees an impression up to one flush interval (0.2 s by default) later,
  which no visitor can tell apart from now.
- Impressions are telemetry: a crash loses at most the rows of one interval, never user data. A
  database that refuses the write (down, read-only) drops that batch with a log line, and a buffer
  past ``IMPRESSIONS_BUFFER_ROWS`` drops its oldest rows: memory stays bounded while the database
  is away.
- Inside a transaction (tests, ``ATOMIC_REQUESTS``) the write stays synchronous and joins it: the
  request's own transaction is what makes its rows visible or not, and a thread could not see
  uncommitted rows of the profile anyway.

One writer per process. After a fork (gunicorn's workers) the child starts its own buffer and
thread on first use; the parent's unwritten rows stay the parent's.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from recommender.rerank.services import impressions_record_batch, impressions_record_fast

logger = logging.getLogger(__name__)

# A connection idle this long is closed by the thread, so a quiet process holds no connection
# (and a test database can be dropped once traffic ends).
IDLE_CLOSE_SECONDS = 2.0


class ImpressionWriter:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        # (profile id, item id, surface, shown at (unix), experiment id, variant id)
        self._rows: deque[tuple[int, int, str, float, int | None, int | None]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written = 0

    def record(
        self,
        *,
        profile_id: int,
        item_ids: list[int],
        surface: str,
        experiment_id: int | None = None,
        variant_ids: list[int | None] | None = None,
    ) -> None:
        """Queue one request's impressions (or write them now inside a transaction).

        ``variant_ids``, aligned with ``item_ids``: the experiment variant that contributed each item.
        """
        if not item_ids:
            return
        variants = list(variant_ids) if variant_ids is not None else [None] * len(item_ids)
        if experiment_id is None:
            variants = [None] * len(item_ids)
        if connection.in_atomic_block:
            with transaction.atomic():  # a savepoint: a failed insert must not poison the outer transaction
                impressions_record_fast(
                    profile_id=profile_id,
                    item_ids=item_ids,
                    surface=surface,
                    experiment_id=experiment_id,
                    variant_ids=variants,
                )
            return
        if self._pid != os.getpid():
            self._reset()
        shown_at = time.time()
        limit = max(1, int(settings.IMPRESSIONS_BUFFER_ROWS))
        with self._lock:
            for item_id, variant_id in dict(zip(item_ids, variants, strict=True)).items():
                self._rows.append((int(profile_id), int(item_id), surface, shown_at, experiment_id, variant_id))
            overflow = len(self._rows) - limit
            for _ in range(max(0, overflow)):
                self._rows.popleft()
            if overflow > 0:
                self.dropped += overflow
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
                self._thread.start()
        if overflow > 0:
            logger.warning("impressions.buffer_full dropped=%s limit=%s", overflow, limit)

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write everything queued now, in this thread; returns rows written (tests, shutdown)."""
        with self._lock:
            rows = list(self._rows)
            self._rows.clear()
        if not rows:
            return 0
        try:
            written = impressions_record_batch(rows)
        except DatabaseError:
            # Losing impressions only weakens "demote recently shown"; nothing waits on them.
            self.dropped += len(rows)
            logger.exception("impressions.flush_failed rows=%s", len(rows))
            connection.close()
            return 0
        self.written += written
        return written

    def stop(self) -> int:
        """Write what is queued and end the thread (its connection closed); returns rows written.

        The next `record` starts a new thread. Called at interpreter exit, and by the test suite
        before it drops its database.
        """
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._stopping = True
            self._wake.set()
            thread.join(timeout=30)
        self._stopping = False
        self._thread = None
        return self.flush()

    def _run(self) -> None:
        idle_since = time.monotonic()
        try:
            while not self._stopping:
                self._wake.wait(float(settings.IMPRESSIONS_FLUSH_SECONDS))
                self._wake.clear()
                if self.flush():
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_CLOSE_SECONDS and connection.connection is not None:
                    connection.close()
            self.flush()
        finally:
            connection.close()


WRITER = ImpressionWriter()


def impressions_record_or_log(
    *,
    profile_id: int,
    item_ids: list[int],
    surface: str = "home",
    experiment_id: int | None = None,
    variant_ids: list[int | None] | None = None,
) -> None:
    """A list's impressions, queued; a failed synchronous write (inside a transaction) is logged."""
    try:
        WRITER.record(
            profile_id=profile_id,
            item_ids=item_ids,
            surface=surface,
            experiment_id=experiment_id,
            variant_ids=variant_ids,
        )
    except DatabaseError:
        # Inside a transaction the write is synchronous: losing impressions only weakens "demote
        # recently shown"; the page must still render.
        logger.exception("serving.impressions_failed profile=%s items=%s", profile_id, len(item_ids))


def impressions_flush() -> int:
    """Write the queued impressions now (tests; a process about to exit)."""
    return WRITER.flush()


def _flush_at_exit() -> None:
    try:
        WRITER.stop()
    except Exception:  # the interpreter is going away; nothing left to report to
        logger.exception("impressions.exit_flush_failed")


atexit.register(_flush_at_exit)
