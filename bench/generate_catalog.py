"""Time and memory of `manage.py generate_catalog` at scale, in a fresh throw-away database.

Creates the database ``bench_generate`` on the embedded PostgreSQL, migrates it, generates the
catalogue in a subprocess (then once more, to time an idempotent re-run), prints a table, and
drops the database again (also on failure or Ctrl-C).

Usage: .venv/bin/python bench/generate_catalog.py [--items 1000000] [--interactions 10000000]
       [--users 100000] [--clusters 8] [--seed 0] [--keep]

Peak RSS is the generating Python process's (getrusage RUSAGE_CHILDREN: the largest child
waited for); PostgreSQL's own backends are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from config.embedded_postgres import ensure_running  # noqa: E402  (after the sys.path insert)

DATABASE = "bench_generate"


def _manage(arguments: list[str], environment: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=REPO, env=environment, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"manage.py {' '.join(arguments)} failed with exit code {result.returncode}")
    return time.monotonic() - started, result.stdout


def _drop(server) -> None:
    import psycopg

    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100k items, 1M interactions, 10k users (the full size takes about 20 minutes).",
    )
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.items, arguments.interactions, arguments.users = 100_000, 1_000_000, 10_000

    server = ensure_running()
    _drop(server)  # a previous run that was killed may have left it
    ensure_running(database=DATABASE)
    environment = {**os.environ, "DATABASE_URL": server.url(DATABASE)}
    try:
        migrate_seconds, _ = _manage(["migrate", "--noinput", "--skip-checks"], environment)
        generate = [
            "generate_catalog",
            "--users",
            str(arguments.users),
            "--items",
            str(arguments.items),
            "--interactions",
            str(arguments.interactions),
            "--seed",
            str(arguments.seed),
            "--clusters",
            str(arguments.clusters),
            "--no-progress",
            "--json",
        ]
        generate_seconds, output = _manage(generate, environment)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = json.loads(output.strip().splitlines()[-1])
        rerun_seconds, rerun_output = _manage(generate, environment)
        rerun_added = sum(json.loads(rerun_output.strip().splitlines()[-1])["added"].values())
        import psycopg

        with psycopg.connect(server.url(DATABASE)) as connection:
            size_mb = connection.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20
    finally:
        if not arguments.keep:
            _drop(server)

    added = summary["added"]
    rows = [
        ("users / items / interactions", f"{arguments.users:,} / {arguments.items:,} / {arguments.interactions:,}"),
        ("rows added: items", f"{added.get('items', 0):,}"),
        ("rows added: item features", f"{added.get('item_features', 0):,}"),
        ("rows added: users", f"{added.get('users', 0):,}"),
        ("rows added: feedback", f"{added.get('feedback', 0):,}"),
        ("migrate", f"{migrate_seconds:.1f} s"),
        ("generate_catalog wall time", f"{generate_seconds:.1f} s"),
        ("feedback rows per second", f"{added.get('feedback', 0) / generate_seconds:,.0f}"),
        ("peak RSS (generating process)", f"{peak_rss_mb:,.0f} MB"),
        ("database size", f"{size_mb:,.0f} MB"),
        ("second run (same seed)", f"{rerun_seconds:.1f} s, {rerun_added} rows added"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'generate_catalog benchmark'.ljust(width)} | value")
    print(f"{'-' * width}-+-{'-' * 30}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()
