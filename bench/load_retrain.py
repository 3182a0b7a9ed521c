"""Load during a retrain: the recommendations API under sustained load while a model retrains and activates.

Setup: a scratch database with ml-100k imported and a first model trained and active (v1);
the default training config's seed is then changed (as an admin would), so the retrained v2
has different vectors from v1. gunicorn serves the API; a real Celery worker (queues
``training,default``, run under ``nice -n 19`` as a training box shared with web would be)
trains.

1. Warm-up, then the **idle** phase: ``--clients`` closed-loop clients request
   ``GET /api/v1/users/<user>/recommendations?k=<5..30>`` for random ml-100k users (staff token).
   Random k and user keep the homepage cache mostly cold, so the model path is what is measured.
2. The **retrain** phase: the same load; ``POST /api/v1/models/train`` queues v2, the worker
   trains, publishes and activates it (through the quality gate, or ``POST …/activate`` when the
   gate holds it back); the load continues ``--after`` seconds past the activation.

Checked on every 200 answer: the ``version`` field names one version, and every item's
personal-ANN source score (``sources.personal_ann``, the raw model score; ``score`` itself is the
scorer's blend when the version has one) equals the inner product of the user's and the item's
score vectors IN THAT VERSION's tables (``rec_user_vectors_v<N>``, ``rec_item_vectors_v<N>``).
Because v1 and v2 differ, a response that mixed versions (a user vector of one, item vectors of the other, or a version
field that does not match the scores) would fail the check. Promises: 0 5xx, 0 mixed responses,
p99 during the retrain ≤ 2× the idle p99 measured in the same run. Exit status 1 if one fails.

Load generator: Python threads with keep-alive ``http.client`` connections, because every body
must be read and checked against the vectors. wrk (Debian: ``apt-get install -y wrk``) measures
latency well but cannot check bodies against the vectors; ``--wrk`` adds a wrk run of the same
URLs per phase for comparison when the binary is present.

Usage: python -m bench.load_retrain [--quick] [--clients 8] [--idle 20] [--after 8] [--wrk]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench._common import REPO, movielens_dir, print_table, scratch_database
from bench.serving_load_common import (
    GunicornServer,
    Sample,
    http_request,
    latency_summary,
    load_run,
    manage_on,
    server_env,
)

_SETUP_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from catalog.models import UserProfile
from recommender.selectors import default_training_config
config = default_training_config()
config.seed = config.seed + 1
config.save(update_fields=["seed"])
staff = get_user_model().objects.create_user("bench-load-staff", password=None, is_staff=True)
print("SETUP " + json.dumps({"token": Token.objects.create(user=staff).key,
                             "users": list(UserProfile.objects.values_list("external_id", flat=True))}))
"""


class CeleryWorker:
    """A real worker on the benchmark database (its broker follows DATABASE_URL), at low CPU priority."""

    def __init__(self, *, database_url: str, log_path: Path):
        self.log = open(log_path, "wb")  # noqa: SIM115  (the worker's stdout until stop() closes it)
        self.log_path = log_path
        self.process = subprocess.Popen(
            [
                "nice",
                "-n",
                "19",
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "training,default",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO,
            env=server_env(database_url, CELERY_TASK_ALWAYS_EAGER="0"),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


class RecommendationTraffic:
    def __init__(self, *, token: str, users: list[str], seed: int = 0):
        self.headers = {"Authorization": f"Token {token}"}
        self.users = users
        self.randoms: dict[int, np.random.Generator] = {}
        self.seed = seed

    def __call__(self, client: int, n: int) -> dict:
        rng = self.randoms.setdefault(client, np.random.default_rng(self.seed * 1000 + client))
        user = self.users[int(rng.integers(len(self.users)))]
        return {
            "method": "GET",
            "path": f"/api/v1/users/{user}/recommendations?k={int(rng.integers(5, 31))}",
            "headers": self.headers,
            "user": user,
        }


def _vectors(connection, table: str, key: str) -> dict[int, np.ndarray]:
    rows = connection.execute(f"SELECT {key}, score_vector::text FROM {table}").fetchall()
    return {row_id: np.array(json.loads(text), dtype=np.float64) for row_id, text in rows}


def consistency_check(database_url: str, samples: list[Sample]) -> dict:
    """Recompute every served score from the tables of the version the answer names."""
    import psycopg

    answers = [(sample, json.loads(sample.body)) for sample in samples if sample.status == 200]
    versions = sorted({body["version"] for _, body in answers if body["version"] is not None})
    with psycopg.connect(database_url, autocommit=True) as connection:
        profile_ids = dict(connection.execute("SELECT external_id, id FROM catalog_userprofile").fetchall())
        item_ids = dict(connection.execute("SELECT external_id, id FROM catalog_item").fetchall())
        users = {v: _vectors(connection, f"rec_user_vectors_v{v}", "profile_id") for v in versions}
        items = {v: _vectors(connection, f"rec_item_vectors_v{v}", "item_id") for v in versions}

    def matches(version: int, profile_id: int, entries: list[dict]) -> bool:
        """Every item the personal ANN nominated carries that source's score, the raw inner product
        of the user's and the item's score vectors; it must equal the named version's. (The item's
        ``score`` is the scorer's blend when the version has one, so it is not an inner product.)"""
        user = users[version].get(profile_id)
        if user is None:
            return False
        checked = 0
        for entry in entries:
            nominated = entry["sources"].get("personal_ann")
            if nominated is None:
                continue
            item = items[version].get(item_ids[entry["external_id"]])
            if item is None:
                return False
            expected = float(user @ item)
            if abs(expected - nominated) > 1e-3 * max(1.0, abs(expected)):
                return False
            checked += 1
        return checked > 0

    result = Counter()
    for sample, body in answers:
        if body["fallback"]:
            result["fallback"] += 1
            continue
        version, profile_id = body["version"], profile_ids[sample.request["user"]]
        result[f"v{version}"] += 1
        if matches(version, profile_id, body["items"]):
            result["consistent"] += 1
            others = [v for v in versions if v != version]
            if any(matches(other, profile_id, body["items"]) for other in others):
                result["indistinguishable"] += 1  # would also match another version: check has no power here
        else:
            result["mixed_or_wrong"] += 1
    result["checked"] = len(answers)
    result["versions"] = versions
    return dict(result)


def _wait_for_activation(port: int, token: str, version_id: int, timeout: float) -> tuple[dict, str]:
    """Poll the version until it is active (activating it by API if the gate held it back)."""
    headers = {"Authorization": f"Token {token}"}
    deadline = time.monotonic() + timeout
    how = "quality gate"
    while time.monotonic() < deadline:
        body = http_request(port, "GET", f"/api/v1/models/{version_id}", headers=headers).json()
        if body["status"] == "active":
            return body, how
        if body["status"] == "failed":
            raise RuntimeError(f"v{version_id} failed: {body['error']}")
        if body["status"] == "ready" and body["gate_reason"]:
            answer = http_request(port, "POST", f"/api/v1/models/{version_id}/activate", headers=headers)
            if answer.status != 200:
                raise RuntimeError(f"activating v{version_id} answered {answer.status}: {answer.body[:300]!r}")
            how = f"API activate (gate: {body['gate_reason']})"
        time.sleep(0.5)
    raise RuntimeError(f"v{version_id} was not active within {timeout} s")


def _wrk_p99(port: int, token: str, users: list[str], seconds: float, clients: int) -> float | None:
    """p99 (ms) of a wrk run over the same kind of URLs, or None without wrk."""
    if shutil.which("wrk") is None:
        return None
    script = (
        "local users = {" + ",".join(f'"{u}"' for u in users) + "}\n"
        "math.randomseed(1)\n"
        "request = function()\n"
        "  local path = '/api/v1/users/' .. users[math.random(#users)]\n"
        "    .. '/recommendations?k=' .. math.random(5, 30)\n"
        f"  return wrk.format('GET', path, {{['Authorization'] = 'Token {token}'}})\nend\n"
        "done = function(summary, latency, requests)\n"
        "  io.write(string.format('P99_US %d\\nNON2XX %d\\n',\n"
        "                         latency:percentile(99), summary.errors.status))\nend\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    completed = subprocess.run(
        ["wrk", "-t", "2", "-c", str(clients), "-d", f"{int(seconds)}s", "-s", handle.name, f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
    )
    os.unlink(handle.name)
    match = re.search(r"P99_US (\d+)", completed.stdout)
    return int(match.group(1)) / 1000 if match else None


def run(
    *,
    directory: Path,
    clients: int,
    idle_seconds: float,
    after_seconds: float,
    workers: int,
    threads: int,
    use_wrk: bool,
) -> tuple[list[list], dict, list[str]]:
    log_dir = REPO / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    with scratch_database("bench_load_retrain") as url:
        manage_on(url, "migrate", "--noinput")
        manage_on(url, "import_movielens", str(directory), "--no-progress")
        manage_on(url, "train", "--inline", timeout=1800)
        setup = json.loads(
            next(
                line
                for line in manage_on(url, "shell", "-c", _SETUP_SCRIPT).stdout.splitlines()
                if line.startswith("SETUP ")
            )[len("SETUP ") :]
        )
        server = GunicornServer(
            database_url=url, log_path=log_dir / "load_retrain_gunicorn.log", workers=workers, threads=threads
        )
        worker = CeleryWorker(database_url=url, log_path=log_dir / "load_retrain_worker.log")
        try:
            server.wait_ready()
            traffic = RecommendationTraffic(token=setup["token"], users=setup["users"])
            load_run(port=server.port, clients=clients, duration=3, next_request=traffic)  # warm-up
            started = time.perf_counter()
            idle = load_run(port=server.port, clients=clients, duration=idle_seconds, next_request=traffic)
            idle_elapsed = time.perf_counter() - started
            wrk_idle = _wrk_p99(server.port, setup["token"], setup["users"], idle_seconds, clients) if use_wrk else None

            stop = threading.Event()
            busy: dict = {}

            def load_in_background() -> None:
                busy["samples"] = load_run(
                    port=server.port, clients=clients, duration=3600, next_request=traffic, stop_event=stop
                )

            loader = threading.Thread(target=load_in_background)
            started = time.perf_counter()
            loader.start()
            time.sleep(1)
            answer = http_request(
                server.port, "POST", "/api/v1/models/train", headers={"Authorization": f"Token {setup['token']}"}
            )
            if answer.status != 202:
                raise RuntimeError(f"train answered {answer.status}: {answer.body[:300]!r}")
            new_version = answer.json()["id"]
            try:
                version, how = _wait_for_activation(server.port, setup["token"], new_version, timeout=1800)
            finally:
                activated_at = time.perf_counter() - started
                time.sleep(after_seconds)
                stop.set()
                loader.join()
            retrain_elapsed = time.perf_counter() - started
            retrain = busy["samples"]
        finally:
            worker.stop()
            server.stop()
        checks = {"idle": consistency_check(url, idle), "retrain": consistency_check(url, retrain)}

    rows, problems = [], []
    summaries = {"idle": latency_summary(idle, idle_elapsed), "retrain": latency_summary(retrain, retrain_elapsed)}
    for phase, summary in summaries.items():
        check = checks[phase]
        rows.append(
            [
                phase,
                summary["requests"],
                round(summary["requests_per_second"], 1),
                round(summary["p50_ms"], 1),
                round(summary["p99_ms"], 1),
                round(summary["max_ms"], 1),
                summary["5xx"],
                summary["transport_errors"],
                ", ".join(f"v{v}: {check.get(f'v{v}', 0)}" for v in check["versions"]),
                check.get("mixed_or_wrong", 0),
                check.get("fallback", 0),
            ]
        )
        if summary["5xx"] or summary["transport_errors"]:
            problems.append(f"{phase}: {summary['5xx']} 5xx, {summary['transport_errors']} transport errors")
        if check.get("mixed_or_wrong"):
            problems.append(f"{phase}: {check['mixed_or_wrong']} answers whose scores do not match their version")
    ratio = summaries["retrain"]["p99_ms"] / summaries["idle"]["p99_ms"]
    if ratio > 2.0:
        problems.append(f"p99 during the retrain is {ratio:.2f}× the idle p99 (promise: ≤ 2×)")
    if set(checks["retrain"]["versions"]) != {version["id"], *checks["idle"]["versions"]}:
        problems.append(
            f"the retrain phase served {checks['retrain']['versions']}, expected the old and the new version"
        )
    facts = {
        "new version": f"v{new_version}",
        "activated by": how,
        "activation at (s into the phase)": round(activated_at, 1),
        "training phases (s)": version["phase_seconds"],
        "p99 retrain / idle": round(ratio, 2),
        "answers checked against vectors": checks["idle"]["checked"] + checks["retrain"]["checked"],
        "answers matching both versions (no check power)": checks["retrain"].get("indistinguishable", 0)
        + checks["idle"].get("indistinguishable", 0),
    }
    if use_wrk:
        facts["wrk p99 idle (ms)"] = wrk_idle if wrk_idle is not None else "wrk not installed"
    return rows, facts, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 s idle, 4 s after the activation.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--idle", type=float, default=20.0, help="Seconds of the idle phase.")
    parser.add_argument("--after", type=float, default=8.0, help="Seconds of load after the activation.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--wrk", action="store_true", help="Also measure the idle p99 with wrk when installed.")
    args = parser.parse_args(argv)
    if args.quick:
        args.idle, args.after = 8.0, 4.0
    directory = movielens_dir()
    if directory is None:
        print("MovieLens 100k not found (set MOVIELENS_DIR); load_retrain skipped.")
        return 0
    rows, facts, problems = run(
        directory=directory,
        clients=args.clients,
        idle_seconds=args.idle,
        after_seconds=args.after,
        workers=args.workers,
        threads=args.threads,
        use_wrk=args.wrk,
    )
    print_table(
        f"Recommendations API under load during a retrain + activation (ml-100k, gunicorn {args.workers}×"
        f"{args.threads}, {args.clients} clients, Celery worker at nice 19)",
        [
            "phase",
            "requests",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "5xx",
            "transport errors",
            "answers per version",
            "mixed or wrong",
            "fallback",
        ],
        rows,
        note="Every 200 answer's scores were recomputed from the vector tables of the version it names.",
    )
    print_table(
        "Retrain facts and verdict",
        ["fact", "value"],
        [[name, value] for name, value in facts.items()]
        + [["promises", "all held" if not problems else "FAILED: " + "; ".join(problems)]],
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
