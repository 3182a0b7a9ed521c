"""Several Celery workers share the default and training queues, on either broker.

Two real `celery worker` processes (as `docker compose up --scale worker=N` runs them: the same
command, each its own node name) consume both queues. A barrier task on each queue can only
finish when two different workers hold one each, so a pass shows that both took tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from recommender.tasks import model_versions_maintain_task
from tests.recommender.conftest import _point_broker_at, _test_database_url

from .worker_tasks import BARRIER_TABLE, barrier_task

PROJECT_DIR = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Worker:
    """One `celery worker` (solo pool: one task at a time) on both queues, named ``name@host``."""

    def __init__(self, name: str, *, broker_url: str, log_path: Path):
        env = {key: value for key, value in os.environ.items() if key not in ("CELERY_BROKER_URL", "CACHE_URL")}
        env.update(
            DATABASE_URL=_test_database_url(),
            CELERY_BROKER_URL=broker_url,
            CELERY_TASK_ALWAYS_EAGER="0",
            PYTHONUNBUFFERED="1",
        )
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - the worker's output until stop()
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,training"),
                *("--pool", "solo", "--concurrency", "1", "-n", f"{name}@%h", "-l", "info"),
                *("--include", "tests.scaleout.worker_tasks", "--without-gossip", "--without-mingle"),
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        return f"[{self.name} {state}]\n" + self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def barrier_table():
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {BARRIER_TABLE} (barrier text NOT NULL, worker text NOT NULL)")
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {BARRIER_TABLE}")


def _broker_url(kind: str, request) -> str:
    if kind == "redis":
        # kombu's spelling of Redis on a unix socket.
        return "redis+socket://" + request.getfixturevalue("redis_server").socket
    return "sqla+postgresql+psycopg://" + _test_database_url().split("://", 1)[1]


@pytest.mark.parametrize("broker", ["postgresql", "redis"])
def test_two_workers_both_take_tasks_from_the_default_and_training_queues(broker, request, barrier_table, tmp_path):
    url = _broker_url(broker, request)
    previous = _point_broker_at(url)
    workers = [Worker(name, broker_url=url, log_path=tmp_path / f"{name}.log") for name in ("first", "second")]
    try:

        def logs() -> str:
            return "\n".join(worker.output() for worker in workers)

        # A project task through this broker first: it also waits until a worker is consuming.
        try:
            maintained = model_versions_maintain_task.apply_async().get(timeout=120)
        except Exception as error:
            raise AssertionError(f"the maintenance task did not run: {error!r}\n{logs()}") from error
        assert isinstance(maintained, dict)

        ran_on: dict[str, list[str]] = {}
        for queue in ("default", "training"):
            results = [barrier_task.apply_async(args=[f"{broker}-{queue}", 2], queue=queue) for _ in range(2)]
            try:
                ran_on[queue] = [result.get(timeout=120) for result in results]
            except Exception as error:
                raise AssertionError(f"the {queue} barrier did not open: {error!r}\n{logs()}") from error
        for queue, names in ran_on.items():
            assert len(set(names)) == 2, (queue, names)
            assert {name.split("@")[0] for name in names} == {"first", "second"}
    finally:
        for worker in workers:
            worker.stop()
        _point_broker_at(previous)
