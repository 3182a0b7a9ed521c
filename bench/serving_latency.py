"""Serving latency over HTTP: homepage and related items, 1 and 8 clients, cached and uncached.

A scratch database gets ml-100k and a model trained in-process; then a real gunicorn (3 workers,
2 threads each) serves the API and keep-alive clients send token-authenticated requests:

- ``GET /api/v1/users/{id}/recommendations?k=10``: *uncached* asks for a user nobody asked for
  before in this run (every request misses the per-user cache and runs context → candidates →
  scoring → rules → items); *cached* repeats a small set of warmed users (a cache hit still
  reads the cache generations, loads the items and records impressions).
- ``GET /api/v1/items/{id}/related?k=10``: *live* before the precompute task has run (every
  request runs the related candidates and the scorer), *precomputed* after it.

As the floor, the same run measures the raw pgvector query a request cannot beat: a bare
``SELECT item_id FROM rec_item_vectors_v<N> ORDER BY score_vector <#> q LIMIT 10`` through
psycopg (the serving HNSW settings, one connection, user vectors of the version), and the same
query with an HTTP round trip to a trivial endpoint (``/health/live``) as the server floor.
Quote ratios against these: other processes share this 2-core machine.

Goals at 1 client: uncached homepage p50 <= 10 ms and p99 <= 50 ms (issues 4 and 12), live and from
the precomputed pool (``manage.py precompute --home`` runs between the two); cached homepage p50
<= 2x the HTTP floor (issue 12).

Experiment overhead (issue 13): the homepage, uncached and cached, with no experiment and with a
running A/B experiment whose two variants both serve the active version (so the difference is
the experiment's own cost: assignment, labels, the variant's cache key, the impressions'
columns). The two states alternate in blocks on the same users, each block after a start or a
stop (which moves every cache key, so the uncached blocks do miss); goal: p50 added <= 1 ms.

Two-tower user tower (issue 14): a second version is trained with the default stack plus the
two-tower family, whose candidate source runs the user tower on the live history at request time
and queries its own pgvector space. The homepage, uncached and live, alternates between the base
version and that one in blocks on the same users (each activation moves every cache key); goal:
p50 <= 20 ms with the tower in the path.

Usage: python -m bench.serving_latency [--quick] [--keep-database] [--database-name NAME | --database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, manage, movielens_dir, print_table, scratch_database
from bench.serving_load_common import GunicornServer, http_request, latency_summary, manage_on, server_env

# Issue 12 at ml-100k: uncached homepage p50 <= 10 ms (the p99 goal kept from issue 4), and a
# cached one within 2x the same server's trivial endpoint.
GOAL_P50_MS, GOAL_P99_MS = 10.0, 50.0
CACHED_GOAL_FLOORS = 2.0
WORKERS, THREADS = 3, 2
EXPERIMENT_GOAL_MS = 1.0  # issue 13: added to the homepage p50 by a running experiment
EXPERIMENT_ROUNDS = 3
TWO_TOWER_GOAL_MS = 20.0  # issue 14: homepage p50 with the user tower in the path
TWO_TOWER_ROUNDS = 3

# A copy of the default configuration with the two-tower family added; prints the new version's id.
_TWO_TOWER_TRAIN_SCRIPT = """
from recommender.models import TrainingConfig
from recommender.selectors import default_training_config
from recommender.services.training import model_training_request, model_version_train
TrainingConfig.objects.filter(name="bench two-tower").delete()
config = default_training_config()
config.pk, config.name, config.is_default = None, "bench two-tower", False
config.families = config.families + ",two_tower"
config.save()
version = model_version_train(version_id=model_training_request(config=config, enqueue=False).pk)
print("TRAINED", version.pk, version.status)
"""

_ACTIVATE_SCRIPT = """
from recommender.models import ModelVersion
from recommender.services.activation import model_version_activate
model_version_activate(version=ModelVersion.objects.get(pk={version_id}), reason="bench: two-tower overhead")
print("ACTIVE {version_id}")
"""

_EXPERIMENT_START_SCRIPT = """
from recommender.experiments.services import VariantSpec, experiment_create, experiment_start
experiment = experiment_create(name={name!r}, surface="home", variants=[
    VariantSpec(key="A", share=50, is_control=True), VariantSpec(key="B", share=50)])
print("STARTED", experiment_start(experiment=experiment).pk)
"""

_EXPERIMENT_STOP_SCRIPT = """
from recommender.experiments.models import Experiment
from recommender.experiments.services import experiment_stop
print("STOPPED", experiment_stop(experiment=Experiment.objects.get(name={name!r})).pk)
"""

_SETUP_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from catalog.models import Item, UserProfile
from recommender.selectors import active_version
# Idempotent, so --database-url can measure the same (e.g. --keep-database) database again.
staff = get_user_model().objects.filter(username="bench-latency").first() or get_user_model().objects.create_user(
    "bench-latency", password="bench-latency-password", is_staff=True)
version = active_version()
print("SETUP " + json.dumps({
    "token": Token.objects.get_or_create(user=staff)[0].key,
    "version_id": version.pk,
    "users": list(UserProfile.objects.order_by("pk").values_list("external_id", flat=True)),
    "items": list(Item.objects.filter(is_active=True).order_by("pk").values_list("external_id", flat=True)),
}))
"""

_PRECOMPUTE_SCRIPT = """
from recommender.selectors import active_version
from recommender.services.precompute import related_items_precompute
print("PRECOMPUTED", related_items_precompute(version=active_version()))
"""


def raw_pgvector_latency(url: str, version_id: int, n_queries: int) -> dict[str, float]:
    """p50/p99 ms of the bare inner-product top-10 query over the version's user vectors."""
    import numpy as np
    import psycopg
    from pgvector.psycopg import register_vector

    sys.path.insert(0, str(REPO))
    # The serving HNSW settings (constants only: no Django setup needed to read them).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    from recommender.vectors.pgvector import DEFAULT_EF_SEARCH, MAX_SCAN_TUPLES

    with psycopg.connect(url, autocommit=True) as connection:
        register_vector(connection)
        connection.execute(f"SET hnsw.ef_search = {DEFAULT_EF_SEARCH}")
        connection.execute("SET hnsw.iterative_scan = relaxed_order")
        connection.execute(f"SET hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
        queries = [
            row[0]
            for row in connection.execute(
                f"SELECT score_vector FROM rec_user_vectors_v{int(version_id)} ORDER BY profile_id LIMIT %s",
                [n_queries],
            ).fetchall()
        ]
        statement = f"SELECT item_id FROM rec_item_vectors_v{int(version_id)} ORDER BY score_vector <#> %s LIMIT 10"
        times = []
        for query in queries:
            started = time.perf_counter()
            rows = connection.execute(statement, [np.asarray(query.to_numpy(), dtype=np.float32)]).fetchall()
            times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == 10
    times.sort()
    return {
        "p50_ms": times[len(times) // 2],
        "p99_ms": times[min(len(times) - 1, int(0.99 * (len(times) - 1)))],
        "requests": len(times),
    }


def _send(port: int, *, clients: int, per_client: list[list[str]], token: str) -> tuple[list, float]:
    """Each client thread sends its own paths in order on one keep-alive connection."""
    import http.client
    import threading

    from bench.serving_load_common import Sample

    headers = {"Authorization": f"Token {token}"}
    samples: list[Sample] = []
    lock = threading.Lock()
    began = time.perf_counter()

    def client_loop(client: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for path in per_client[client]:
            started = time.perf_counter()
            answer = http_request(port, "GET", path, headers=headers, connection=connection)
            mine.append(Sample(client, started - began, answer.seconds, answer.status, {"path": path}, answer.body))
        connection.close()
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=client_loop, args=(client,)) for client in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, time.perf_counter() - began


def run_phase(port: int, *, clients: int, paths: list[str], token: str) -> dict[str, float]:
    """Every path exactly once, split over the clients (uncached: nobody asked for them before)."""
    samples, seconds = _send(port, clients=clients, per_client=[paths[c::clients] for c in range(clients)], token=token)
    _check(samples)
    return latency_summary(samples, seconds)


def run_repeated(port: int, *, clients: int, paths: list[str], token: str, requests: int) -> dict[str, float]:
    """``requests`` requests cycling over ``paths`` (cached: the same few paths again and again)."""
    budget = max(1, requests // clients)
    per_client = [[paths[(client * 7 + n) % len(paths)] for n in range(budget)] for client in range(clients)]
    samples, seconds = _send(port, clients=clients, per_client=per_client, token=token)
    _check(samples)
    return latency_summary(samples, seconds)


def _check(samples) -> None:
    bad = [sample for sample in samples if sample.status != 200]
    if bad:
        raise SystemExit(
            f"{len(bad)} requests failed, first: {bad[0].status} {bad[0].request['path']} "
            f"{bad[0].body[:300]!r} {bad[0].error}"
        )
    fallbacks = [
        sample for sample in samples if sample.body.startswith(b"{") and json.loads(sample.body).get("fallback") is True
    ]
    if fallbacks:
        raise SystemExit(f"{len(fallbacks)} answers were fallbacks, first: {fallbacks[0].body[:300]!r}")


def _labelled(samples, *, running: bool) -> None:
    """Every answer names the experiment while one runs, and none does otherwise."""
    for sample in samples:
        experiment = json.loads(sample.body).get("experiment")
        if (experiment is not None) != running:
            raise SystemExit(f"expected experiment={'set' if running else 'null'}: {sample.body[:300]!r}")


def experiment_overhead(url: str, port: int, *, token: str, users: list[str], hot: list[str]) -> list[list]:
    """Rows: the homepage p50/p99 (1 client) with and without a running experiment, alternating blocks."""
    uncached: dict[bool, list] = {False: [], True: []}
    cached: dict[bool, list] = {False: [], True: []}
    paths = [f"/api/v1/users/{user}/recommendations?k=10" for user in users]
    for round_number in range(EXPERIMENT_ROUNDS):
        name = f"bench overhead {round_number} {time.time_ns()}"
        # On first, then off: each block follows a start or a stop, which moves every cache key.
        for running in (True, False):
            script = _EXPERIMENT_START_SCRIPT if running else _EXPERIMENT_STOP_SCRIPT
            manage_on(url, "shell", "-c", script.format(name=name), env=server_env(url))
            samples, _ = _send(port, clients=1, per_client=[paths], token=token)
            _check(samples)
            _labelled(samples, running=running)
            uncached[running] += samples
            # Warm the hot users in every worker (see the cached phase above), then measure hits.
            run_repeated(port, clients=WORKERS * THREADS, paths=hot, token=token, requests=8 * len(hot))
            per_client = [[hot[n % len(hot)] for n in range(4 * len(hot))]]
            samples, _ = _send(port, clients=1, per_client=per_client, token=token)
            _check(samples)
            _labelled(samples, running=running)
            cached[running] += samples
    rows = []
    for label, by_state in (("homepage, uncached, precomputed pool", uncached), ("homepage, cached", cached)):
        off, on = (latency_summary(by_state[state], 1.0) for state in (False, True))
        added = on["p50_ms"] - off["p50_ms"]
        rows.append([f"{label}: no experiment", 1, off["requests"], off["p50_ms"], off["p99_ms"], ""])
        rows.append(
            [
                f"{label}: A/B experiment running (p50 {added:+.2f} ms)",
                1,
                on["requests"],
                on["p50_ms"],
                on["p99_ms"],
                "yes" if added <= EXPERIMENT_GOAL_MS else "NO",
            ]
        )
    return rows


def _two_tower_share(samples) -> float:
    """Share of answers with at least one item the two-tower source nominated."""
    hits = sum(
        any("two_tower" in item.get("sources", {}) for item in json.loads(sample.body).get("items", []))
        for sample in samples
    )
    return hits / max(len(samples), 1)


def two_tower_overhead(url: str, port: int, *, token: str, users: list[str], base_version_id: int) -> list[list]:
    """Rows: the uncached live homepage (1 client) on the base version and on one with the two-tower
    family, alternating blocks on the same users; the base version is active again at the end."""
    trained = manage_on(url, "shell", "-c", _TWO_TOWER_TRAIN_SCRIPT, env=server_env(url))
    line = next(line for line in trained.stdout.splitlines() if line.startswith("TRAINED "))
    tower_version_id = int(line.split()[1])
    print(line, file=sys.stderr)
    paths = [f"/api/v1/users/{user}/recommendations?k=10" for user in users]
    by_version: dict[int, list] = {base_version_id: [], tower_version_id: []}
    for _ in range(TWO_TOWER_ROUNDS):
        for version_id in (tower_version_id, base_version_id):
            manage_on(url, "shell", "-c", _ACTIVATE_SCRIPT.format(version_id=version_id), env=server_env(url))
            # Warm requests (the new version's stack and vectors in every worker) outside the measured set.
            run_repeated(port, clients=WORKERS * THREADS, paths=paths[:1], token=token, requests=4 * WORKERS * THREADS)
            samples, _ = _send(port, clients=1, per_client=[paths[1:]], token=token)
            _check(samples)
            by_version[version_id] += samples
    share = _two_tower_share(by_version[tower_version_id])
    if share == 0 or _two_tower_share(by_version[base_version_id]) > 0:
        raise SystemExit(f"two-tower candidates in {share:.0%} of the tower version's lists (want >0, and 0 without)")
    rows = []
    for version_id, label in (
        (base_version_id, "homepage, uncached, live: default stack"),
        (tower_version_id, f"homepage, uncached, live: + two-tower user tower (in {share:.0%} of lists)"),
    ):
        summary = latency_summary(by_version[version_id], 1.0)
        verdict = "" if version_id == base_version_id else ("yes" if summary["p50_ms"] <= TWO_TOWER_GOAL_MS else "NO")
        rows.append([label, 1, summary["requests"], summary["p50_ms"], summary["p99_ms"], verdict])
    return rows


def measure(url: str, *, quick: bool) -> list[list]:
    setup = manage_on(url, "shell", "-c", _SETUP_SCRIPT)
    data = json.loads(next(line for line in setup.stdout.splitlines() if line.startswith("SETUP "))[6:])
    token, users, items = data["token"], data["users"], data["items"]
    uncached_per_phase = 60 if quick else 200
    cached_requests = 100 if quick else 400
    rows: list[list] = []

    raw = raw_pgvector_latency(url, data["version_id"], 100 if quick else 400)
    rows.append(
        [
            "raw pgvector: ORDER BY score_vector <#> q LIMIT 10 (psycopg, no HTTP)",
            1,
            raw["requests"],
            raw["p50_ms"],
            raw["p99_ms"],
            "",
        ]
    )

    log_path = Path(tempfile.mkstemp(prefix="bench-serving-latency-", suffix=".log")[1])
    server = GunicornServer(database_url=url, log_path=log_path, workers=WORKERS, threads=THREADS)
    try:
        server.wait_ready()
        # Warm every worker (imports, the artifact, per-process memos) on users kept out of the measured sets.
        warm_users, users = users[:30], users[30:]
        run_repeated(
            server.port,
            clients=WORKERS * THREADS,
            paths=[f"/api/v1/users/{user}/recommendations?k=10" for user in warm_users],
            token=token,
            requests=WORKERS * 40,
        )
        floor = run_repeated(server.port, clients=1, paths=["/health/live"], token=token, requests=200)
        rows.append(["HTTP floor: GET /health/live", 1, floor["requests"], floor["p50_ms"], floor["p99_ms"], ""])
        # Before anything is precomputed, so both versions run the live pipeline; later phases ask
        # these users again, but only after an activation (new cache keys).
        tower_users = users[-(41 if quick else 101) :]
        rows += two_tower_overhead(url, server.port, token=token, users=tower_users, base_version_id=data["version_id"])

        offset = 0
        for label in ("homepage, uncached (a user not asked before)", "homepage, uncached, precomputed pool"):
            if label.endswith("precomputed pool"):
                # Every user's pool stored (seed 000); users not asked before then miss the cache and read their row.
                home = manage_on(url, "precompute", "--home", "--json", env=server_env(url))
                print("PRECOMPUTED " + home.stdout.strip().splitlines()[-1], file=sys.stderr)
            for clients in (1, 8):
                fresh = users[offset : offset + uncached_per_phase]
                offset += uncached_per_phase
                summary = run_phase(
                    server.port,
                    clients=clients,
                    token=token,
                    paths=[f"/api/v1/users/{user}/recommendations?k=10" for user in fresh],
                )
                verdict = ""
                if clients == 1:
                    verdict = "yes" if summary["p50_ms"] <= GOAL_P50_MS and summary["p99_ms"] <= GOAL_P99_MS else "NO"
                rows.append([label, clients, summary["requests"], summary["p50_ms"], summary["p99_ms"], verdict])
        hot = [f"/api/v1/users/{user}/recommendations?k=10" for user in warm_users[:20]]
        # The cache is per process: eight asks per hot user leave each of the 3 workers without a
        # given user's entry with probability (2/3)^8, about 4%.
        run_repeated(server.port, clients=WORKERS * THREADS, paths=hot, token=token, requests=8 * len(hot))
        for clients in (1, 8):
            summary = run_repeated(server.port, clients=clients, paths=hot, token=token, requests=cached_requests)
            verdict = ""
            if clients == 1:
                verdict = "yes" if summary["p50_ms"] <= CACHED_GOAL_FLOORS * floor["p50_ms"] else "NO"
            rows.append(
                [
                    "homepage, cached (20 warmed users)",
                    clients,
                    summary["requests"],
                    summary["p50_ms"],
                    summary["p99_ms"],
                    verdict,
                ]
            )

        rows += experiment_overhead(
            url, server.port, token=token, users=users[offset - uncached_per_phase : offset], hot=hot
        )

        related_paths = [f"/api/v1/items/{item}/related?k=10" for item in items]
        for clients in (1, 8):
            fresh = related_paths[(clients // 8) * uncached_per_phase :][:uncached_per_phase]
            summary = run_phase(server.port, clients=clients, token=token, paths=fresh)
            rows.append(
                [
                    "related, live (not precomputed)",
                    clients,
                    summary["requests"],
                    summary["p50_ms"],
                    summary["p99_ms"],
                    "",
                ]
            )
        precomputed = manage_on(url, "shell", "-c", _PRECOMPUTE_SCRIPT, env=server_env(url))
        print(precomputed.stdout.strip().splitlines()[-1], file=sys.stderr)
        for clients in (1, 8):
            summary = run_repeated(
                server.port, clients=clients, paths=related_paths[:200], token=token, requests=cached_requests
            )
            rows.append(
                ["related, precomputed table", clients, summary["requests"], summary["p50_ms"], summary["p99_ms"], ""]
            )
    finally:
        server.stop()
        log_path.unlink(missing_ok=True)
    for row in rows:
        row.insert(5, round(row[3] / raw["p50_ms"], 1))
        row.insert(6, round(row[3] / floor["p50_ms"], 1))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer requests per phase.")
    parser.add_argument("--keep-database", action="store_true", help="Leave the scratch database behind.")
    parser.add_argument(
        "--database-name",
        default="bench_serving_latency",
        help="The scratch database's name (agents sharing one server each pick their own).",
    )
    parser.add_argument(
        "--database-url", default="", help="Measure an already imported and trained database instead of building one."
    )
    args = parser.parse_args(argv)
    os.chdir(REPO)
    if args.database_url:
        rows = measure(args.database_url, quick=args.quick)
    else:
        directory = movielens_dir()
        if directory is None:
            print("MovieLens 100k not found (set MOVIELENS_DIR); serving_latency skipped.")
            return 0
        with scratch_database(args.database_name, keep=args.keep_database) as url:
            started = time.perf_counter()
            manage(url, "migrate", "--noinput")
            manage(url, "import_movielens", str(directory), "--no-progress")
            manage(url, "train", "--inline")
            print(f"scratch database ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            rows = measure(url, quick=args.quick)
    print_table(
        f"API latency over HTTP on ml-100k (gunicorn {WORKERS} workers x {THREADS} threads, token auth, k = 10)",
        [
            "request",
            "clients",
            "n",
            "p50 ms",
            "p99 ms",
            "p50 / raw pgvector p50",
            "p50 / HTTP floor p50",
            f"goal: uncached p50<={GOAL_P50_MS:.0f} p99<={GOAL_P99_MS:.0f}; "
            f"cached p50<={CACHED_GOAL_FLOORS:.0f}x floor; experiment adds <={EXPERIMENT_GOAL_MS:.0f} ms; "
            f"two-tower p50<={TWO_TOWER_GOAL_MS:.0f}",
        ],
        rows,
        note="Client-side wall time per request (keep-alive). `raw pgvector` is the bare HNSW inner-product query "
        "through psycopg in the same run; `HTTP floor` a trivial endpoint through the same server. "
        "Uncached homepage requests each ask for a different user: live ones run the whole pipeline, precomputed "
        "ones read the user's stored pool and apply the rules. The experiment rows alternate "
        f"{EXPERIMENT_ROUNDS} blocks with and {EXPERIMENT_ROUNDS} without a running A/B experiment on the same users. "
        f"The two-tower rows alternate {TWO_TOWER_ROUNDS} blocks per version on the same users, each after activating.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
