"""A test-only task, loaded into the test's workers with ``celery worker --include``.

`barrier_task` records which worker runs it and waits until ``parties`` different workers have
joined the same barrier: a worker busy with one barrier task cannot take a second one, so the
barrier only opens when another worker takes the other task. It shows that the work is shared
without timing anything.
"""

from __future__ import annotations

import time

from django.db import connection

from config.celery import app

BARRIER_TABLE = "scaleout_barrier"


@app.task(bind=True, acks_late=True, soft_time_limit=90, time_limit=120)
def barrier_task(self, barrier: str, parties: int) -> str:
    """Join ``barrier`` as this worker; return the worker's name once ``parties`` workers joined.

    Raises TimeoutError after 60 s (the test then fails with the worker logs). Safe to run twice:
    a second run of the same worker joins as the same party.
    """
    worker = str(self.request.hostname)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {BARRIER_TABLE} (barrier, worker) VALUES (%s, %s)", [barrier, worker])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(DISTINCT worker) FROM {BARRIER_TABLE} WHERE barrier = %s", [barrier])
            if cursor.fetchone()[0] >= parties:
                return worker
        time.sleep(0.05)
    raise TimeoutError(f"barrier {barrier!r}: fewer than {parties} workers joined within 60 s")
