"""Serving reads on a real streaming replica, and read-your-writes across it.

The test builds its own PostgreSQL primary and a hot standby (``pg_basebackup -R``, streaming
replication) from the embedded wheel's binaries, migrates and seeds the primary (a small synthetic
catalogue and a trained model), and runs the real stack under gunicorn with ``DATABASE_URL`` on
the primary and ``DATABASE_REPLICA_URLS`` on the standby, driven over HTTP through the API.

Replay on the standby is paused to make the replica lag on purpose: then a read that still sees
the old state must have come from the replica, and a user's own rating being visible proves that
their reads went to the primary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from .servers import StreamingPair, postgres_bin_dir

PROJECT_DIR = Path(__file__).resolve().parents[2]
TOKEN_SCRIPT = (
    "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
    "user = get_user_model().objects.create_superuser('ops', 'ops@example.com', 'unused-password-1'); "
    "print(Token.objects.create(user=user).key)"
)

pytestmark = pytest.mark.slow


def _env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "CELERY_", "CACHE"))}
    env.pop("REDIS_URL", None)
    env.update(DJANGO_SETTINGS_MODULE="config.settings.development", PYTHONUNBUFFERED="1", **overrides)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, f"manage.py {' '.join(args)} failed:\n{completed.stderr[-4000:]}"
    return completed.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    pair: StreamingPair
    base_url: str
    token: str
    profiles: list[tuple[int, str]]  # (pk, external id) of users the model knows
    log_path: Path

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())

    def homepage(self, external_id: str) -> dict:
        status, body = self.request("GET", f"/api/v1/users/{external_id}/recommendations?k=10")
        assert status == 200
        return body

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _generation_bump_elsewhere(pair: StreamingPair, profile_id: int) -> None:
    """A write to the user's generation made on the primary by another process: no pin here."""
    with pair.primary.connect() as connection:
        connection.execute(
            "INSERT INTO rec_cache_generation (scope, generation) VALUES (%s, 1) ON CONFLICT (scope) "
            "DO UPDATE SET generation = rec_cache_generation.generation + 1",
            (f"user:{profile_id}",),
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("the embedded PostgreSQL wheel ships no initdb/pg_ctl/pg_basebackup here")
    work = tmp_path_factory.mktemp("replica_stack")
    pair = StreamingPair.start(bin_dir)
    server = None
    try:
        seed_env = _env(
            DATABASE_URL=pair.primary.url(), MODEL_ARTIFACT_DIR=str(work / "models"), CELERY_TASK_ALWAYS_EAGER="1"
        )
        _manage(seed_env, "migrate", "--noinput", "-v0")
        _manage(seed_env, "generate_catalog", "--users", "60", "--items", "120", "--interactions", "300", "--seed", "3")
        trained = json.loads(_manage(seed_env, "train", "--inline", "--json").strip().splitlines()[-1])
        assert trained["status"] == "active", trained
        token = _manage(seed_env, "shell", "-c", TOKEN_SCRIPT).strip().splitlines()[-1]
        with pair.primary.connect() as connection:
            profiles = connection.execute(
                "SELECT p.id, p.external_id FROM catalog_userprofile p WHERE EXISTS "
                "(SELECT 1 FROM catalog_feedback f WHERE f.user_id = p.id) ORDER BY p.id LIMIT 3"
            ).fetchall()
        pair.wait_replayed()

        port = _free_port()
        log_path = work / "gunicorn.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the server's output until teardown
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=PROJECT_DIR,
            env=_env(
                DATABASE_URL=pair.primary.url(),
                DATABASE_REPLICA_URLS=pair.standby.url(),
                MODEL_ARTIFACT_DIR=str(work / "models"),
                LOG_LEVEL="INFO",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack = Stack(pair, f"http://127.0.0.1:{port}", token, [(int(pk), str(ext)) for pk, ext in profiles], log_path)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(stack.base_url + "/health/live", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("gunicorn did not come up:\n" + stack.server_log()) from None
                time.sleep(0.2)
        yield stack
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        pair.stop()


def test_the_standby_is_a_real_streaming_replica(stack):
    assert stack.pair.standby.scalar("SELECT pg_is_in_recovery()") is True
    assert stack.pair.primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1
    # The schema and the model's tables reached it through WAL, not through a migration of its own.
    assert stack.pair.standby.scalar("SELECT count(*) FROM recommender_modelversion WHERE status = 'active'") == 1


def test_a_rating_is_visible_on_the_next_homepage_while_the_replica_lags(stack):
    (a_id, a_external), (b_id, b_external) = stack.profiles[:2]
    a_before = stack.homepage(a_external)
    b_before = stack.homepage(b_external)
    assert not a_before["fallback"] and a_before["items"], a_before
    assert not b_before["fallback"] and b_before["items"], b_before
    stack.pair.wait_replayed()

    stack.pair.replay_pause()
    try:
        # Reads go to the replica: B's generation moved on the primary, but the paused standby
        # still has the old one, so B gets the list cached under the old key.
        _generation_bump_elsewhere(stack.pair, b_id)
        b_during = stack.homepage(b_external)
        assert b_during["cached"] is True, "B's list was keyed by the primary's generation, not the replica's"
        assert b_during["items"] == b_before["items"]

        # A rates their top item; the standby cannot have it (replay is paused) ...
        rated = a_before["items"][0]["external_id"]
        rating = {"user": a_external, "item": rated, "kind": "rating", "value": 4.5}
        status, _ = stack.request("POST", "/api/v1/feedback", rating)
        assert status == 201
        # ... yet A's next homepage reflects it: A is pinned to the primary until a replica has the write.
        a_after = stack.homepage(a_external)
        assert a_after["cached"] is False
        assert not a_after["fallback"], a_after
        assert rated not in [item["external_id"] for item in a_after["items"]]
        assert len(a_after["items"]) == 10
    finally:
        stack.pair.replay_resume()

    lag = stack.pair.wait_replayed()
    print(f"\nreplica caught up {lag:.1f} ms after replay resumed")
    # Caught up: B's read now sees the new generation on the replica (a fresh list, not the cache).
    assert stack.homepage(b_external)["cached"] is False
    # A's pin is released by the replay position, not only by its time window: with replay paused
    # again, A reads the replica's generation once more (a cached list under the replica's key).
    assert rated not in [item["external_id"] for item in stack.homepage(a_external)["items"]]
    stack.pair.replay_pause()
    try:
        _generation_bump_elsewhere(stack.pair, a_id)
        again = stack.homepage(a_external)
        assert again["cached"] is True, "A stayed pinned to the primary after the replica had replayed the write"
        assert rated not in [item["external_id"] for item in again["items"]]
    finally:
        stack.pair.replay_resume()


def test_replication_lag_of_single_writes(stack):
    """Measures (and prints) how long the standby takes to replay one small committed write."""
    (profile_id, _external), *_ = stack.profiles
    lags = []
    for _ in range(50):
        _generation_bump_elsewhere(stack.pair, profile_id)
        lags.append(stack.pair.wait_replayed())
    lags.sort()
    print(
        f"\nreplication lag over {len(lags)} single-row commits: median {statistics.median(lags):.2f} ms, "
        f"p90 {lags[int(len(lags) * 0.9) - 1]:.2f} ms, max {lags[-1]:.2f} ms"
    )
    generation = "SELECT generation FROM rec_cache_generation WHERE scope = %s"
    scope = (f"user:{profile_id}",)
    assert stack.pair.standby.scalar(generation, scope) == stack.pair.primary.scalar(generation, scope)


def test_the_replica_and_the_primary_serve_the_same_homepage(stack):
    """The same user's list from the replica and, pinned, from the primary; prints both latencies."""
    external_id = stack.profiles[2][1]
    stack.pair.wait_replayed()

    def timed_homepages(n: int) -> tuple[list[dict], list[float]]:
        bodies, milliseconds = [], []
        for _ in range(n):
            started = time.perf_counter()
            bodies.append(stack.homepage(external_id))
            milliseconds.append((time.perf_counter() - started) * 1000)
        return bodies, milliseconds

    from_replica, replica_ms = timed_homepages(60)
    # Pin the user (a real write through the API) while the replica cannot catch up.
    unrated = from_replica[0]["items"][-1]["external_id"]
    stack.pair.replay_pause()
    try:
        rating = {"user": external_id, "item": unrated, "kind": "view"}
        assert stack.request("POST", "/api/v1/feedback", rating)[0] == 201
        from_primary, primary_ms = timed_homepages(60)
    finally:
        stack.pair.replay_resume()
    assert all(body["items"] == from_primary[0]["items"] for body in from_primary)
    assert all(body["items"] == from_replica[0]["items"] for body in from_replica)
    assert unrated not in [item["external_id"] for item in from_primary[0]["items"]]
    print(
        "\nhomepage over HTTP, cached after the first request (p50 of 60): "
        f"replica {statistics.median(replica_ms):.2f} ms, "
        f"pinned to the primary (plus the replay-position check) {statistics.median(primary_ms):.2f} ms"
    )
