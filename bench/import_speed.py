"""Import throughput: the synthetic load, the same rows as CSV through the generic importer, and raw COPY.

1. ``generate_catalog`` loads a synthetic catalogue into a fresh database; its ``--json``
   summary gives events (ratings) per second over the whole command.
2. The same ratings are written as a CSV (``user,item,rating,timestamp`` with the synthetic
   external ids) and imported by ``import_interactions`` into another fresh database, which
   creates the users and items from the rows.
3. The floor, measured in the same run: a plain ``COPY … (FORMAT csv)`` of that CSV into an
   unindexed, logged table with the same four columns — what PostgreSQL does before any of the
   catalogue's work (joins, ids, indexes, constraints, popularity).

Usage: python -m bench.import_speed [--quick] [--users N --items M --interactions K] [--keep]
[--database-prefix P]
(defaults 100k users / 1M items / 5M interactions; --quick 20k / 100k / 1M).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import REPO, manage, print_table, scratch_database

sys.path.insert(0, str(REPO))


def _summary(completed) -> dict:
    return json.loads(completed.stdout.strip().splitlines()[-1])


def csv_write(path: Path, *, users: int, items: int, interactions: int, seed: int) -> int:
    """Write the plan's ratings as CSV; returns rows written. Pure numpy per chunk, no Django."""
    from catalog.importers.synthetic import plan_catalog

    plan = plan_catalog(users=users, items=items, interactions=interactions, seed=seed)
    rows = 0
    with path.open("w") as handle:
        handle.write("user,item,rating,timestamp\n")
        for chunk in plan.interaction_chunks():
            lines = np.char.add(np.char.add("syn-user-", chunk.user.astype("U10")), ",syn-item-")
            lines = np.char.add(np.char.add(lines, chunk.item.astype("U10")), ",")
            lines = np.char.add(np.char.add(lines, chunk.rating.astype(np.int32).astype("U1")), ",")
            lines = np.char.add(lines, chunk.created_unix.astype("U12"))
            handle.write("\n".join(lines.tolist()))
            handle.write("\n")
            rows += len(chunk.user)
    return rows


def copy_floor(url: str, path: Path) -> float:
    """Seconds for one COPY of ``path`` into an unindexed table (created and dropped here)."""
    import psycopg

    with psycopg.connect(url) as connection:
        connection.execute("CREATE TABLE bench_copy_floor (user_id text, item_id text, rating float8, created int8)")
        connection.commit()
        started = time.monotonic()
        with (
            connection.cursor().copy("COPY bench_copy_floor FROM STDIN (FORMAT csv, HEADER)") as copy,
            path.open("rb") as handle,
        ):
            while block := handle.read(1 << 20):
                copy.write(block)
        connection.commit()
        seconds = time.monotonic() - started
        connection.execute("DROP TABLE bench_copy_floor")
        connection.commit()
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k users, 100k items, 1M interactions.")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="Keep the two databases afterwards.")
    parser.add_argument(
        "--database-prefix",
        default="bench_import",
        help="Names of the two scratch databases (<prefix>_synthetic, <prefix>_csv): give your own on a shared server.",
    )
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.users, arguments.items, arguments.interactions = 20_000, 100_000, 1_000_000
    sizes = ["--users", str(arguments.users), "--items", str(arguments.items)]
    sizes += ["--interactions", str(arguments.interactions), "--seed", str(arguments.seed)]

    with scratch_database(f"{arguments.database_prefix}_synthetic", keep=arguments.keep) as url:
        manage(url, "migrate", "--noinput", "--skip-checks")
        started = time.monotonic()
        synthetic = _summary(manage(url, "generate_catalog", *sizes, "--no-progress", "--json"))
        synthetic_wall = time.monotonic() - started

    with (
        tempfile.TemporaryDirectory() as directory,
        scratch_database(f"{arguments.database_prefix}_csv", keep=arguments.keep) as url,
    ):
        path = Path(directory) / "ratings.csv"
        started = time.monotonic()
        rows = csv_write(
            path, users=arguments.users, items=arguments.items, interactions=arguments.interactions, seed=arguments.seed
        )
        write_seconds = time.monotonic() - started
        manage(url, "migrate", "--noinput", "--skip-checks")
        floor_seconds = copy_floor(url, path)
        columns = ["--user-col", "user", "--item-col", "item", "--value-col", "rating", "--timestamp-col", "timestamp"]
        started = time.monotonic()
        generic = _summary(
            manage(url, "import_interactions", str(path), *columns, "--kind", "rating", "--no-progress", "--json")
        )
        generic_wall = time.monotonic() - started
        size_mb = path.stat().st_size / 2**20

    floor_rate = rows / floor_seconds
    table = [
        ["raw COPY of the CSV into an unindexed table (floor)", f"{rows:,}", floor_seconds, f"{floor_rate:,.0f}", 1.0],
    ]
    for name, summary, wall in (
        ("generate_catalog (synthetic: items, users, ratings)", synthetic, synthetic_wall),
        ("import_interactions (the same ratings as CSV)", generic, generic_wall),
    ):
        rate = summary["events_per_second"]
        table.append([f"{name}; {wall:.0f} s with process start", f"{summary['events']:,}", summary["seconds"]])
        table[-1] += [f"{rate:,.0f}", rate / floor_rate]
    print_table(
        f"Import speed: {arguments.users:,} users, {arguments.items:,} items, {arguments.interactions:,} interactions",
        ["path", "events", "seconds", "events/s", "vs COPY floor"],
        table,
        note=(
            f"CSV: {size_mb:,.0f} MB, written in {write_seconds:.0f} s. Seconds are the commands' own (their --json "
            "summary), each into a fresh migrated database, so both run in bulk mode (catalog/importers/bulk.py). "
            f"Added: synthetic {synthetic['added'].get('feedback', 0):,} feedback rows, "
            f"CSV {generic['added'].get('feedback', 0):,} feedback rows, {generic['added'].get('items', 0):,} items, "
            f"{generic['bad_row_count']} bad rows."
        ),
    )


if __name__ == "__main__":
    main()
