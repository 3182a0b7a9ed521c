"""A real gunicorn server on a given database, and a small threaded HTTP load generator.

Shared by the load benchmarks (``bench/load_feedback.py``, ``bench/load_retrain.py``) and the
fault tests (``tests/faults/``), which need the same thing: the project served by a real
server process, then many clients measuring each answer.

The load generator is plain ``http.client`` on threads with keep-alive connections, so it needs
nothing installed and sees every response body (the benchmarks check bodies, not just codes).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Throttling (config/settings/api.py) is a separate promise, tested in tests/security: a load
# test measures the server behind it, so its rates are switched off here.
UNTHROTTLED_ENV = {"API_THROTTLE_ANON": "off", "API_THROTTLE_USER": "off"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a project process on ``database_url`` (quiet logs, DEBUG off)."""
    env = dict(os.environ)
    env.pop("CELERY_BROKER_URL", None)  # the broker follows DATABASE_URL
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.development",
        DATABASE_URL=database_url,
        DEBUG="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        **UNTHROTTLED_ENV,
    )
    env.update(extra)
    return env


def manage_on(
    database_url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``manage.py <args>`` on ``database_url``; raises with its output when it fails."""
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env or server_env(database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )
    return completed


class GunicornServer:
    """``gunicorn config.wsgi`` in its own process group, on 127.0.0.1 and a free port."""

    def __init__(
        self,
        *,
        database_url: str,
        log_path: Path,
        workers: int = 1,
        threads: int = 4,
        env: dict[str, str] | None = None,
        worker_class: str = "gthread",
    ):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115  (the server's stdout until stop() closes it)
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:config.gunicorn",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            worker_class,
            "--timeout",
            "120",
            "--graceful-timeout",
            "10",
            "--keep-alive",
            "30",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=server_env(database_url, **(env or {})),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.process.returncode}:\n{self.output()[-4000:]}")
            try:
                if http_request(self.port, "GET", "/health/live", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer /health/live within {timeout} s:\n{self.output()[-4000:]}")

    def worker_pids(self) -> set[int]:
        """The pids of the master's children (gunicorn workers); a restart would change them."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: dict | list | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    connection: http.client.HTTPConnection | None = None,
) -> Answer:
    """One request (on ``connection`` when given, else a fresh one); the answer and its duration."""
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    payload = None if body is None else json.dumps(body).encode()
    all_headers = {
        "Accept": "application/json",
        **({"Content-Type": "application/json"} if payload else {}),
        **(headers or {}),
    }
    started = time.perf_counter()
    try:
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        seconds = time.perf_counter() - started
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data, seconds)
    finally:
        if own:
            connection.close()


@dataclass
class Sample:
    client: int
    started: float  # seconds since the load began
    seconds: float
    status: int  # 0: transport error (connection refused, reset, timeout)
    request: dict = field(default_factory=dict)
    body: bytes = b""
    error: str = ""


def load_run(
    *,
    port: int,
    clients: int,
    duration: float,
    next_request: Callable[[int, int], dict],
    keep_body: Callable[[Sample], bool] | None = None,
    stop_event: threading.Event | None = None,
    timeout: float = 30,
) -> list[Sample]:
    """``clients`` threads send requests back to back for ``duration`` seconds (or until ``stop_event``).

    ``next_request(client, n)`` returns ``{"method", "path", "body"?, "headers"?}`` plus any
    keys the caller wants back on the sample. Each client keeps one keep-alive connection and
    reconnects after a transport error. ``keep_body(sample)`` says which bodies to keep (all by
    default).
    """
    samples: list[Sample] = []
    lock = threading.Lock()
    stop_event = stop_event or threading.Event()
    began = time.perf_counter()
    deadline = began + duration

    def client_loop(client: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        mine: list[Sample] = []
        n = 0
        while time.perf_counter() < deadline and not stop_event.is_set():
            spec = next_request(client, n)
            n += 1
            started = time.perf_counter()
            try:
                answer = http_request(
                    port,
                    spec["method"],
                    spec["path"],
                    body=spec.get("body"),
                    headers=spec.get("headers"),
                    connection=connection,
                )
                sample = Sample(client, started - began, answer.seconds, answer.status, spec, answer.body)
            except (OSError, http.client.HTTPException) as error:
                sample = Sample(
                    client,
                    started - began,
                    time.perf_counter() - started,
                    0,
                    spec,
                    error=f"{type(error).__name__}: {error}",
                )
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            if keep_body is not None and not keep_body(sample):
                sample.body = b""
            mine.append(sample)
        connection.close()
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=client_loop, args=(client,), daemon=True) for client in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(samples, key=lambda sample: sample.started)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def latency_summary(samples: list[Sample], seconds: float) -> dict[str, float]:
    """requests/s, p50/p99 (ms) and counts of 2xx, 4xx, 5xx and transport errors."""
    latencies = [sample.seconds * 1000 for sample in samples]
    return {
        "requests": len(samples),
        "requests_per_second": len(samples) / seconds if seconds else float("nan"),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "2xx": sum(200 <= s.status < 300 for s in samples),
        "4xx": sum(400 <= s.status < 500 for s in samples),
        "5xx": sum(s.status >= 500 for s in samples),
        "transport_errors": sum(s.status == 0 for s in samples),
    }


_SEED_SCRIPT = """
import json
from rest_framework.authtoken.models import Token
from catalog.models import Item
from catalog.services import item_create, user_profile_create
prefix, users, items = {prefix!r}, {users}, {items}
for number in range(items):
    item_create(external_id=f"{{prefix}}item-{{number}}", title=f"Load item {{number}}")
clients = []
for number in range(users):
    profile = user_profile_create(external_id=f"{{prefix}}user-{{number}}", username=f"{{prefix}}user-{{number}}")
    clients.append({{"user": profile.external_id, "token": Token.objects.create(user=profile.user).key}})
print("SEEDED " + json.dumps({{"clients": clients,
                              "items": list(Item.objects.order_by("pk").values_list("external_id", flat=True))}}))
"""


def api_clients_create(database_url: str, *, users: int, items: int = 0, prefix: str = "load-") -> dict:
    """Create ``items`` items and ``users`` profiles with API tokens, through the catalogue services.

    Returns ``{"clients": [{"user": external_id, "token": key}], "items": [every item external id]}``.
    """
    completed = manage_on(database_url, "shell", "-c", _SEED_SCRIPT.format(prefix=prefix, users=users, items=items))
    line = next(line for line in completed.stdout.splitlines() if line.startswith("SEEDED "))
    return json.loads(line[len("SEEDED ") :])
