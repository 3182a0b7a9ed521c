"""Serving throughput at ml-100k: ``wrk`` against gunicorn, cached homepage and related, against the floor.

Issue 12's second line: with ``wrk -c8`` sustained for 60 s with no error, a cached homepage >= 1,500
requests/s and a cached related list >= 800, p99 <= 4x p50 in both. The same run measures the
floor, ``/health/live`` through the same gunicorn: other agents share this 2-core machine, so
quote ratios against it (and the load average printed with the table).

Each target cycles over its paths (20 warmed users, 40 warmed items) with token auth through the
Lua script of `bench.scale`. Before measuring, every path is asked of every worker often enough
that each worker holds its list and the stored body (`recommender.serving.stored`), so the
measured requests are hits. ``gunicorn CPU ms/request`` is the master's and workers' CPU time
(``/proc/<pid>/stat``) over the requests answered.

Usage: python -m bench.serving_throughput [--database-url URL] [--seconds 60] [--workers 3]
                                          [--threads 2] [--worker-class gthread] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, manage, movielens_dir, print_table, scratch_database
from bench.scale import _WRK_SCRIPT, _cpu_seconds, _wrk_latency  # the wrk script and its readers, shared
from bench.serving_latency import _SETUP_SCRIPT
from bench.serving_load_common import GunicornServer, http_request, manage_on

GOALS = {"homepage, cached": 1500.0, "related, cached": 800.0}
GOAL_TAIL = 4.0  # p99 <= 4x p50


def _wrk(port: int, *, paths: list[str], token: str, seconds: int, connections: int, logs: Path) -> str:
    paths_file = logs / f"paths-{len(list(logs.iterdir()))}.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    script = logs / f"{paths_file.stem}.lua"
    script.write_text(_WRK_SCRIPT % {"paths": paths_file, "token": token})
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
    return subprocess.run([*command, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout


def measure(url: str, args) -> list[list]:
    setup = manage_on(url, "shell", "-c", _SETUP_SCRIPT)
    data = json.loads(next(line for line in setup.stdout.splitlines() if line.startswith("SETUP "))[6:])
    token = data["token"]
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    targets = [
        ("/health/live (floor)", ["/health/live"]),
        ("homepage, cached", [f"/api/v1/users/{user}/recommendations?k=10" for user in data["users"][:20]]),
        ("related, cached", [f"/api/v1/items/{item}/related?k=10" for item in data["items"][:40]]),
    ]
    logs = Path(tempfile.mkdtemp(prefix="bench-serving-throughput-"))
    server = GunicornServer(
        database_url=url,
        log_path=logs / "gunicorn.log",
        workers=args.workers,
        threads=args.threads,
        worker_class=args.worker_class,
    )
    rows: list[list] = []
    try:
        server.wait_ready()
        # Connections are spread over the workers by the kernel: asking each path 12x per worker
        # leaves a worker without one with probability ((w-1)/w)^(12w), under 1e-4 for 3 workers.
        for _ in range(12 * args.workers):
            for _label, paths in targets[1:]:
                for path in paths:
                    answer = http_request(server.port, "GET", path, headers=headers)
                    if answer.status != 200 or answer.json().get("fallback"):
                        raise SystemExit(f"warming {path}: {answer.status} {answer.body[:300]!r}")
        floor_rps = floor_p50 = float("nan")
        for label, paths in targets:
            pids = [server.process.pid, *server.worker_pids()]
            before = sum(_cpu_seconds(pid) for pid in pids)
            output = _wrk(
                server.port, paths=paths, token=token, seconds=args.seconds, connections=args.connections, logs=logs
            )
            cpu = sum(_cpu_seconds(pid) for pid in pids) - before
            rps = next(float(line.split()[1]) for line in output.splitlines() if line.startswith("Requests/sec:"))
            p50, p99 = _wrk_latency(output, "50%"), _wrk_latency(output, "99%")
            errors = [line.strip() for line in output.splitlines() if "Non-2xx" in line or "Socket errors" in line]
            if label.endswith("(floor)"):
                floor_rps, floor_p50 = rps, p50
            goal = GOALS.get(label)
            verdict = "" if goal is None else ("yes" if rps >= goal and p99 <= GOAL_TAIL * p50 and not errors else "NO")
            rows.append(
                [
                    label,
                    len(paths),
                    rps,
                    round(rps / floor_rps, 2),
                    p50,
                    p99,
                    round(p99 / p50, 1),
                    round(p50 / floor_p50, 1),
                    1000 * cpu / (rps * args.seconds),
                    "; ".join(errors) or "0 errors",
                    verdict,
                ]
            )
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="", help="An imported, trained database (else a scratch one).")
    parser.add_argument("--database-name", default="bench_serving_throughput", help="The scratch database's name.")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--quick", action="store_true", help="10 s per target.")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 10
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk): serving_throughput skipped.")
        return 0
    os.chdir(REPO)
    if args.database_url:
        rows = measure(args.database_url, args)
    else:
        directory = movielens_dir()
        if directory is None:
            print("MovieLens 100k not found (set MOVIELENS_DIR); serving_throughput skipped.")
            return 0
        with scratch_database(args.database_name) as url:
            started = time.perf_counter()
            manage(url, "migrate", "--noinput")
            manage(url, "import_movielens", str(directory), "--no-progress")
            manage(url, "train", "--inline")
            print(f"scratch database ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            rows = measure(url, args)
    load = os.getloadavg()
    threads = f" x {args.threads} threads" if args.worker_class == "gthread" else ""
    print_table(
        f"Serving throughput on ml-100k (wrk -t2 -c{args.connections}, {args.seconds} s each; gunicorn "
        f"{args.worker_class}, {args.workers} workers{threads}; {os.cpu_count()} cores, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after the run)",
        [
            "target",
            "paths",
            "req/s",
            "req/s / floor",
            "p50 ms",
            "p99 ms",
            "p99 / p50",
            "p50 / floor p50",
            "gunicorn CPU ms/request",
            "errors",
            f"goal: home>={GOALS['homepage, cached']:,.0f}, related>={GOALS['related, cached']:,.0f} req/s, "
            f"p99<={GOAL_TAIL:.0f}x p50",
        ],
        rows,
        note="Closed loop: wrk's connections each send the next request when the last is answered. "
        "Throttling is off (bench.serving_load_common.UNTHROTTLED_ENV), as in every load benchmark.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
