"""The whole path at one size, measured end to end: generate, train, publish and index, precompute, serve.

Every step runs as its own process on one database, and prints into ONE table (also written to
``bench/results/scale.md``, or ``scale_quick.md`` with ``--quick``):

- **build steps** (generate, train with each of its phases, related precompute, homepage
  precompute when the command exists): wall time, the process's peak RSS (``wait4``'s
  ``ru_maxrss``; per training phase from the version's ``phase_peak_rss_mib``), and the database
  size afterwards;
- **ANN**: recall@10 of the serving query against exact top-10 of the same vectors, user → items
  and item → items (`bench.ann_curve` at the serving ef_search);
- **latency** through gunicorn (``WORKERS`` × ``THREADS``) at 1 and 8 clients: homepage uncached
  and cached, related live and precomputed, each quoted against the floors of the same run
  (the raw pgvector query through psycopg, and ``/health/live`` through the same server);
- **throughput** with ``wrk`` (``--latency``, a Lua script cycling over users or items): requests/s
  sustained for ``--seconds``, errors, p50/p99, and the CPU share of the load generator against
  the gunicorn processes (``/proc/<pid>/stat``). Without ``wrk`` on the PATH those rows say so.

Other agents may share the machine: quote ratios against the floors, not absolute figures.

Usage: python -m bench.scale [--quick] [--users N --items N --interactions N] [--reuse-db NAME]
                             [--reuse-model] [--seconds 60] [--keep-database]
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
from dataclasses import dataclass
from pathlib import Path

from bench._common import REPO, print_table
from bench.serving_latency import raw_pgvector_latency, run_phase, run_repeated
from bench.serving_load_common import GunicornServer, manage_on, server_env

FULL = {"users": 100_000, "items": 1_000_000, "interactions": 5_000_000}
QUICK = {"users": 20_000, "items": 100_000, "interactions": 1_000_000}
WORKERS, THREADS = 3, 2
COLUMNS = [
    "step",
    "clients",
    "n",
    "wall s",
    "peak RSS MiB",
    "DB MiB",
    "p50 ms",
    "p99 ms",
    "p50 / floor",
    "req/s",
    "note",
]


@dataclass
class Row:
    step: str
    clients: int | str = ""
    n: int | str = ""
    wall: float | str = ""
    rss: float | str = ""
    db: float | str = ""
    p50: float | str = ""
    p99: float | str = ""
    ratio: float | str = ""
    rps: float | str = ""
    note: str = ""

    def cells(self) -> list:
        return [
            self.step,
            self.clients,
            self.n,
            self.wall,
            self.rss,
            self.db,
            self.p50,
            self.p99,
            self.ratio,
            self.rps,
            self.note,
        ]


def run_measured(args: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run ``args`` to completion; (wall seconds, peak RSS MiB of that process, its output)."""
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({process.returncode}):\n{text[-4000:]}")
    return wall, usage.ru_maxrss / 1024, text  # Linux: ru_maxrss in KiB


def database_url(name: str) -> str:
    from config.embedded_postgres import ensure_running

    base = os.environ.get("DATABASE_URL")
    if base:
        query = "?" + base.split("?", 1)[1] if "?" in base else ""
        return base.split("?")[0].rsplit("/", 1)[0] + f"/{name}" + query
    return ensure_running(database="postgres").url(name)


def admin_execute(url: str, statement: str) -> None:
    import psycopg

    admin = url.split("?")[0].rsplit("/", 1)[0] + "/postgres" + ("?" + url.split("?", 1)[1] if "?" in url else "")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(statement)


def query_one(url: str, statement: str, params: list | None = None):
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(statement, params or []).fetchone()
    return row[0] if row else None


def database_mib(url: str) -> float:
    return round(query_one(url, "SELECT pg_database_size(current_database())") / 2**20)


def catalogue_counts(url: str) -> tuple[int, int, int]:
    try:
        return (
            int(query_one(url, "SELECT count(*) FROM catalog_userprofile")),
            int(query_one(url, "SELECT count(*) FROM catalog_item")),
            int(query_one(url, "SELECT count(*) FROM catalog_feedback")),
        )
    except Exception:
        return 0, 0, 0


_VERSION_SCRIPT = """
import json
from recommender.selectors import active_version
v = active_version()
print("VERSION " + json.dumps(None if v is None else {
    "id": v.pk, "phase_seconds": v.phase_seconds, "phase_peak_rss_mib": v.phase_peak_rss_mib,
    "n_items": v.n_items, "n_users": v.n_users, "n_interactions": v.n_interactions,
    "precision": v.metrics.get("precision_at_10"), "choice": v.metrics.get("stack", {}).get("choice"),
}))
"""

_SETUP_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from catalog.models import UserProfile
from recommender.selectors import active_version
staff = get_user_model().objects.filter(username="bench-scale").first() or get_user_model().objects.create_user(
    "bench-scale", password="bench-scale-password", is_staff=True)
print("SETUP " + json.dumps({
    "token": Token.objects.get_or_create(user=staff)[0].key,
    "version_id": active_version().pk,
    "users": list(UserProfile.objects.order_by("?").values_list("external_id", flat=True)[:%(users)d]),
}))
"""

_RELATED_ITEMS_SCRIPT = """
import json
from django.db import connection
from recommender.selectors import active_version, related_table
v = active_version()
with connection.cursor() as c:
    c.execute("SELECT setseed(0.3)")
    c.execute(f"SELECT i.external_id, r.item_id IS NOT NULL FROM catalog_item i "
              f"LEFT JOIN {related_table(v.pk)} r ON r.item_id = i.id WHERE i.is_active "
              f"AND i.id IN (SELECT item_id FROM rec_item_vectors_v{v.pk}) ORDER BY random() LIMIT %(items)d")
    live = [row[0] for row in c.fetchall() if not row[1]]
    c.execute(f"SELECT i.external_id FROM {related_table(v.pk)} r JOIN catalog_item i ON i.id = r.item_id "
              f"ORDER BY random() LIMIT %(items)d")
    precomputed = [row[0] for row in c.fetchall()]
print("ITEMS " + json.dumps({"live": live, "precomputed": precomputed}))
"""

_PRECOMPUTE_SCRIPT = """
from recommender.selectors import active_version
from recommender.services.precompute import related_items_precompute
print("PRECOMPUTED", related_items_precompute(version=active_version()))
"""


def _marked(output: str, marker: str):
    return json.loads(next(line for line in output.splitlines() if line.startswith(marker + " "))[len(marker) + 1 :])


def build_steps(args, url: str, env: dict[str, str], logs: Path, rows: list[Row]) -> None:
    """Generate (unless reused), train, and precompute, one row each (training: one per phase too)."""
    python = sys.executable
    users, items, interactions = catalogue_counts(url)
    if args.reuse_db and items:
        rows.append(
            Row("generate", note=f"reused {args.reuse_db}: {users:,} users, {items:,} items, {interactions:,} events")
        )
        rows[-1].db = database_mib(url)
    else:
        run_measured([python, "manage.py", "migrate", "--noinput", "-v0"], env, logs / "migrate.log")
        wall, rss, output = run_measured(
            [
                *[python, "manage.py", "generate_catalog", "--users", str(args.users), "--items", str(args.items)],
                *["--interactions", str(args.interactions), "--seed", "0", "--no-progress", "--json"],
            ],
            env,
            logs / "generate.log",
        )
        rate = args.interactions / wall
        rows.append(Row("generate (synthetic loader)", wall=wall, rss=rss, db=database_mib(url), rps=rate))
        rows[
            -1
        ].note = f"{args.users:,} users, {args.items:,} items, {args.interactions:,} events: {rate:,.0f} events/s"
    run_measured([python, "manage.py", "migrate", "--noinput", "-v0"], env, logs / "migrate.log")

    version = _marked(manage_on(url, "shell", "-c", _VERSION_SCRIPT, env=env).stdout, "VERSION")
    output = ""
    if args.reuse_model and version is not None:
        rows.append(Row("train", note=f"reused active v{version['id']}: trained before this run, its phases below"))
    else:
        wall, rss, output = run_measured([python, "manage.py", "train", "--inline", "--json"], env, logs / "train.log")
        version = _marked(manage_on(url, "shell", "-c", _VERSION_SCRIPT, env=env).stdout, "VERSION")
        if version is None:
            raise RuntimeError(f"training left no active version:\n{output[-3000:]}")
        goal = "yes" if wall <= 600 and rss <= 6 * 1024 else "NO"
        rows.append(
            Row("train: request -> active (manage.py train --inline)", wall=wall, rss=rss, db=database_mib(url))
        )
        rows[-1].note = (
            f"v{version['id']}, {version['n_items']:,} items, P@10 {version['precision']:.4f}, "
            f"scorer {version['choice']}; goal <= 600 s and <= 6 GiB: {goal}"
        )
    index_seconds = [line for line in output.splitlines() if "vectors.index_built" in line]
    # jsonb does not keep key order: the run's own order.
    order = ["building_dataset", "training", "evaluating", "publishing"]
    for phase, seconds in sorted(
        version["phase_seconds"].items(), key=lambda p: order.index(p[0]) if p[0] in order else 9
    ):
        note = ""
        if phase == "publishing" and index_seconds:
            line = index_seconds[-1]
            method = line.split("method=", 1)[1].split()[0] if "method=" in line else "hnsw"
            note = f"{method} index builds " + line.rsplit("seconds=", 1)[-1] + " s"
        rows.append(Row(f"  phase {phase}", wall=seconds, rss=version["phase_peak_rss_mib"].get(phase, ""), note=note))

    wall, rss, output = run_measured(
        [python, "manage.py", "shell", "-c", _PRECOMPUTE_SCRIPT], env, logs / "related.log"
    )
    summary = next((line for line in output.splitlines() if line.startswith("PRECOMPUTED")), "")
    rows.append(Row("precompute related lists", wall=wall, rss=rss, db=database_mib(url), note=summary[12:][:120]))
    wall, rss, output = run_measured([python, "manage.py", "precompute", "--home", "--json"], env, logs / "home.log")
    report = next((line for line in reversed(output.splitlines()) if line.startswith('{"home"')), "")
    home = json.loads(report)["home"] if report else {}
    note = (
        f"{home.get('users')} of {home.get('of')} users, {home.get('users_per_second')}/s, {home.get('stopped_by')}"
        if home
        else output.strip()[-120:]
    )
    rows.append(Row("precompute homepage pools", wall=wall, rss=rss, db=database_mib(url), note=note))


def ann_rows(args, url: str, env: dict[str, str], logs: Path, rows: list[Row]) -> None:
    out = logs / "ann.json"
    run_measured(
        [
            sys.executable,
            "-m",
            "bench.ann_curve",
            "--queries",
            str(args.ann_queries),
            "--ef-search",
            "serving",
            "--json",
            str(out),
        ],
        env,
        logs / "ann.log",
    )
    for row in json.loads(out.read_text())["rows"]:
        rows.append(
            Row(
                f"ANN recall@10 vs exact: {row['query']}",
                1,
                row["n"],
                p50=row["p50_ms"],
                p99=row["p99_ms"],
                note=f"recall {row['recall']:.4f} (min {row['min_recall']:.2f}), "
                f"full answers {row['full_answers']:.0%}",
            )
        )


def latency_rows(server: GunicornServer, url: str, env: dict[str, str], args, rows: list[Row]) -> dict:
    """Floors, homepage and related latency; returns what the throughput step needs."""
    n_uncached = 60 if args.quick else 150
    setup = _marked(
        manage_on(url, "shell", "-c", _SETUP_SCRIPT % {"users": 40 + 2 * n_uncached + 20_000}, env=env).stdout, "SETUP"
    )
    token, users = setup["token"], setup["users"]
    items = _marked(
        manage_on(url, "shell", "-c", _RELATED_ITEMS_SCRIPT % {"items": 4 * n_uncached}, env=env).stdout, "ITEMS"
    )
    raw = raw_pgvector_latency(url, setup["version_id"], 100 if args.quick else 300)
    rows.append(
        Row("floor: raw pgvector top-10 (psycopg, no HTTP)", 1, raw["requests"], p50=raw["p50_ms"], p99=raw["p99_ms"])
    )
    warm, users = users[:40], users[40:]
    home = "/api/v1/users/{}/recommendations?k=10"
    run_repeated(
        server.port, clients=WORKERS * THREADS, paths=[home.format(u) for u in warm], token=token, requests=WORKERS * 60
    )
    floor = run_repeated(server.port, clients=1, paths=["/health/live"], token=token, requests=300)
    rows.append(Row("floor: HTTP GET /health/live", 1, floor["requests"], p50=floor["p50_ms"], p99=floor["p99_ms"]))
    http_floor = floor["p50_ms"]

    def add(step: str, clients: int, summary: dict, note: str = "") -> None:
        rows.append(
            Row(
                step,
                clients,
                summary["requests"],
                p50=summary["p50_ms"],
                p99=summary["p99_ms"],
                ratio=summary["p50_ms"] / http_floor,
                note=note,
            )
        )

    for clients in (1, 8):
        fresh, users = users[:n_uncached], users[n_uncached:]
        add(
            "homepage, uncached (live pipeline)",
            clients,
            run_phase(server.port, clients=clients, paths=[home.format(u) for u in fresh], token=token),
            "goal p50 <= 20 ms, p99 <= 60 ms" if clients == 1 else "",
        )
    hot = [home.format(u) for u in warm[:20]]
    for clients in (1, 8):
        add(
            "homepage, cached (per-user cache)",
            clients,
            run_repeated(server.port, clients=clients, paths=hot, token=token, requests=300),
            "goal p50 <= 2x HTTP floor" if clients == 1 else "",
        )
    related = "/api/v1/items/{}/related?k=10"
    live = [related.format(i) for i in items["live"]]
    for clients in (1, 8):
        chosen, live = live[:n_uncached], live[n_uncached:]
        if chosen:
            add(
                "related, live",
                clients,
                run_phase(server.port, clients=clients, paths=chosen, token=token),
                "goal p50 <= 10 ms" if clients == 1 else "",
            )
    precomputed = [related.format(i) for i in items["precomputed"]]
    for clients in (1, 8):
        if precomputed:
            add(
                "related, precomputed",
                clients,
                run_phase(server.port, clients=clients, paths=precomputed[:n_uncached], token=token),
            )
    return {
        "token": token,
        "users": users,
        "warm": warm[:20],
        "live": items["live"],
        "precomputed": items["precomputed"],
        "floor": http_floor,
    }


_WRK_SCRIPT = """
-- Cycles over the paths in %(paths)s, each wrk thread from its own offset; token auth.
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local counter = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
function init(args)
  counter = offset or 0
end
function request()
  counter = counter + 1
  local headers = {["Authorization"] = "Token %(token)s", ["Accept"] = "application/json"}
  return wrk.format("GET", paths[(counter %% #paths) + 1], headers)
end
"""


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk_latency(text: str, label: str) -> float:
    """A percentile line of ``wrk --latency`` ('99%   12.34ms') in milliseconds."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == label:
            value = parts[1]
            for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
                if value.endswith(unit):
                    return float(value[: -len(unit)]) * factor
    return float("nan")


def throughput_rows(server: GunicornServer, args, served: dict, logs: Path, rows: list[Row]) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        rows.append(
            Row("throughput (wrk)", note="wrk is not installed (apt-get install -y wrk): throughput not measured")
        )
        return
    home = "/api/v1/users/{}/recommendations?k=10"
    related = "/api/v1/items/{}/related?k=10"
    targets = [
        ("/health/live (floor)", ["/health/live"]),
        ("homepage, cached", [home.format(u) for u in served["warm"]]),
        ("homepage, uncached (fresh users)", [home.format(u) for u in served["users"]]),
        ("related, precomputed", [related.format(i) for i in served["precomputed"]]),
        ("related, live", [related.format(i) for i in served["live"]]),
    ]
    for label, paths in targets:
        if not paths:
            continue
        paths_file = logs / f"wrk-paths-{len(rows)}.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        script = logs / f"wrk-{len(rows)}.lua"
        script.write_text(_WRK_SCRIPT % {"paths": paths_file, "token": served["token"]})
        workers = [server.process.pid, *server.worker_pids()]
        before = sum(_cpu_seconds(pid) for pid in workers)
        command = [wrk, "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", str(script)]
        command.append(f"http://127.0.0.1:{server.port}")
        wrk_log = logs / f"wrk-{len(rows)}.out"
        with open(wrk_log, "w") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
            _, _, usage = os.wait4(process.pid, 0)  # wrk's own CPU time, from its rusage
        wrk_cpu = usage.ru_utime + usage.ru_stime
        server_cpu = sum(_cpu_seconds(pid) for pid in workers) - before
        output = wrk_log.read_text(errors="replace")
        requests_per_second = next(
            (float(line.split()[1]) for line in output.splitlines() if line.startswith("Requests/sec:")), float("nan")
        )
        errors = [line.strip() for line in output.splitlines() if "Non-2xx" in line or "Socket errors" in line]
        share = wrk_cpu / (wrk_cpu + server_cpu) if wrk_cpu + server_cpu > 0 else float("nan")
        rows.append(
            Row(
                f"throughput (wrk -t2 -c{args.connections}, {args.seconds} s): {label}",
                args.connections,
                len(paths),
                wall=float(args.seconds),
                p50=_wrk_latency(output, "50%"),
                p99=_wrk_latency(output, "99%"),
                rps=requests_per_second,
                note=("errors: " + "; ".join(errors) if errors else "0 errors")
                + f"; load generator {share:.0%} of wrk+gunicorn CPU ({wrk_cpu:.1f} s vs {server_cpu:.1f} s)",
            )
        )


def serve(args, url: str, env: dict[str, str], logs: Path, rows: list[Row]) -> None:
    ann_rows(args, url, env, logs, rows)
    server = GunicornServer(database_url=url, log_path=logs / "gunicorn.log", workers=WORKERS, threads=THREADS)
    try:
        server.wait_ready(timeout=180)
        served = latency_rows(server, url, env, args, rows)
        throughput_rows(server, args, served, logs, rows)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k items, 20k users, 1M interactions.")
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--interactions", type=int)
    parser.add_argument("--reuse-db", default="", help="Use this database; its catalogue is reused when it has one.")
    parser.add_argument(
        "--reuse-model", action="store_true", help="With --reuse-db: serve its active version, no training."
    )
    parser.add_argument("--seconds", type=int, help="Each wrk run's duration (default 60, quick 15).")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8).")
    parser.add_argument("--ann-queries", type=int, help="Queries per ANN recall measure (default 100, quick 40).")
    parser.add_argument("--keep-database", action="store_true", help="Leave the scratch database behind.")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    args.users, args.items = args.users or size["users"], args.items or size["items"]
    args.interactions = args.interactions or size["interactions"]
    args.seconds = args.seconds or (15 if args.quick else 60)
    args.ann_queries = args.ann_queries or (40 if args.quick else 100)
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    name = args.reuse_db or ("bench_scale_quick" if args.quick else "bench_scale")
    url = database_url(name)
    if not args.reuse_db:
        admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_execute(url, f'CREATE DATABASE "{name}"')
    env = server_env(url, LOG_LEVEL="INFO")
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        build_steps(args, url, env, logs, rows)
        serve(args, url, server_env(url), logs, rows)
    finally:
        if not args.reuse_db and not args.keep_database:
            admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        title = (
            f"The whole path at {args.items:,} items / {args.users:,} users / {args.interactions:,} interactions "
            f"({time.perf_counter() - started:.0f} s in all; gunicorn {WORKERS} workers x {THREADS} threads, "
            f"{os.cpu_count()} cores shared with other work)"
        )
        note = (
            "Build steps: wall time, the step's own peak RSS (wait4 ru_maxrss; training phases: the version's "
            "per-phase VmHWM) and the database size after it. Latency: client wall time per request on keep-alive "
            "connections; `p50 / floor` is against the HTTP floor of this run. Throughput: wrk closed loop for the "
            f"stated seconds. Logs: {logs}"
        )
        print_table(title, COLUMNS, [row.cells() for row in rows], note=note)
        results = REPO / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        output = results / ("scale_quick.md" if args.quick else "scale.md")
        lines = [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        from bench._common import _cell

        lines += ["| " + " | ".join(_cell(value) for value in row.cells()) + " |" for row in rows]
        output.write_text("\n".join([*lines, "", note, ""]))
        print(f"\nWrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
