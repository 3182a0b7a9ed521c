"""An import killed with SIGKILL half-way leaves no partial rows visible to anyone.

tests/catalog/test_importers.py::test_an_abort_half_way_leaves_no_rows covers an exception
raised inside the importer (the transaction is rolled back in-process). This covers the harder
case: the `manage.py import_movielens` PROCESS dies with SIGKILL, so no Python code runs to
roll anything back; PostgreSQL must discard the open transaction on its own.

To kill it at a known point, ratings.csv is a named pipe that the test feeds: it writes a few
batches (with a 4 MiB import budget a batch is about 14,000 ratings, which the importer COPYs
into staging and inserts into the real tables inside its transaction), then stops writing, so
the importer blocks with its work uncommitted. The kill lands either while the server is still
running a batch's INSERT (``active``) or once it waits for more rows (``idle in transaction``). Counts are read
from another connection before and after the kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from catalog.importers.bulk import ImportBudget
from tests.recommender.conftest import PROJECT_DIR, _test_database_url, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MOVIES = 50
USERS = 2000
BUDGET = ImportBudget(memory_bytes=4 << 20)
# Comfortably more than one batch: a staged rating is ~25 bytes of COPY text plus the row overhead.
RATINGS = 3 * BUDGET.batch_bytes // ImportBudget.staged_bytes(25, 1)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as connection:
        return {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("catalog_item", "catalog_itemfeature", "catalog_userprofile", "catalog_feedback")
        }


def _import_backend(url: str, *, state: str) -> dict | None:
    """The import's server session once it holds row locks on catalog_feedback (it inserted rows)
    and is in ``state``."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT a.pid, a.state FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
            "AND l.relation = 'catalog_feedback'::regclass AND l.mode = 'RowExclusiveLock' "
            "AND a.state = %s AND a.backend_xid IS NOT NULL",
            [state],
        ).fetchone()
    return {"pid": row[0], "state": row[1]} if row else None


def _backend_gone(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0] == 0


@pytest.mark.parametrize("kill_when", ["active", "idle in transaction"], ids=["mid-statement", "between-chunks"])
def test_sigkill_in_the_middle_of_an_import_leaves_no_rows(tmp_path, kill_when):
    url = _test_database_url()
    directory = tmp_path / "ml-csv"
    directory.mkdir()
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{m},Movie {m} (1999),Drama|Comedy\n" for m in range(1, MOVIES + 1))
    )
    os.mkfifo(directory / "ratings.csv")
    assert _counts(url) == {
        "catalog_item": 0,
        "catalog_itemfeature": 0,
        "catalog_userprofile": 0,
        "catalog_feedback": 0,
    }

    # A pipe has no size, so the import cannot tell it is large and keeps every index (no bulk
    # mode): other sessions read the tables throughout and must see none of its rows.
    env = dict(os.environ, DATABASE_URL=url, PYTHONUNBUFFERED="1", IMPORT_MEMORY_BUDGET_BYTES=str(BUDGET.memory_bytes))
    env.pop("CELERY_BROKER_URL", None)
    log_path = tmp_path / "import.log"
    with open(log_path, "wb") as log:
        importer = subprocess.Popen(
            [sys.executable, "manage.py", "import_movielens", str(directory), "--no-progress"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pipe_open = threading.Event()
    pipe = {}

    def feed() -> None:
        # A FIFO: opening it blocks until the importer opens it too.
        pipe["handle"] = open(directory / "ratings.csv", "w")  # noqa: SIM115  (the test's finally closes it)
        pipe_open.set()
        handle = pipe["handle"]
        handle.write("userId,movieId,rating,timestamp\n")
        # Some batches: the importer stages and inserts them, then waits for more. It may be
        # killed while this still writes (it inserts a batch before the last one is written).
        with contextlib.suppress(BrokenPipeError):
            for n in range(RATINGS):
                handle.write(f"{n % USERS + 1},{n % MOVIES + 1},{1 + n % 5}.0,{964982703 + n}\n")
            handle.flush()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        backend = wait_for(
            lambda: _import_backend(url, state=kill_when),
            timeout=120,
            # Sampled often: a chunk's insert is "active" for milliseconds, and at 0.1 s the poll
            # could miss every one of them and time out (seen once in four runs).
            interval=0.005,
            message="the import never inserted its first chunk",
            on_timeout=lambda: log_path.read_text(errors="replace"),
        )
        # Mid-import: its rows exist in its own transaction, and nobody else sees any of them.
        assert _counts(url) == {
            "catalog_item": 0,
            "catalog_itemfeature": 0,
            "catalog_userprofile": 0,
            "catalog_feedback": 0,
        }
        assert importer.poll() is None

        os.killpg(importer.pid, signal.SIGKILL)
        assert importer.wait(timeout=30) == -signal.SIGKILL
        wait_for(lambda: _backend_gone(url, backend["pid"]), timeout=30, message="the import's session lingered")
    finally:
        if importer.poll() is None:
            os.killpg(importer.pid, signal.SIGKILL)
            importer.wait(timeout=30)
        if pipe_open.is_set():
            with contextlib.suppress(BrokenPipeError):  # the reader was killed: expected
                pipe["handle"].close()
        feeder.join(timeout=30)

    time.sleep(0.2)
    assert _counts(url) == {
        "catalog_item": 0,
        "catalog_itemfeature": 0,
        "catalog_userprofile": 0,
        "catalog_feedback": 0,
    }
    with psycopg.connect(url, autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM auth_user WHERE username LIKE 'ml-%%'").fetchone()[0] == 0
        # Nothing half-done is left waiting either: no prepared transaction, no leftover staging table.
        assert connection.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'stage_%%'").fetchone()[0] == 0
