"""Concurrent writers: many clients post ratings through gunicorn; none is lost or doubled.

Setup: a scratch database (migrated), ``--items`` items and one profile + API token per client,
gunicorn (``--workers`` × ``--threads``) on it. Then ``--clients`` threads post ratings for
``--seconds`` with token auth, each with its own idempotency key. Half of the clients also
RE-SEND: with probability ``--resend`` a request goes out again, same token, same body, same
key, taken from any client's recent requests (so the copy often races its original, still in
flight on another connection).

Checked afterwards, from the database (exit status 1 on any failure):

- every acknowledged rating (201, or 200 ``replayed``) is stored exactly once under its key,
  with the id, user, item and value the answer gave;
- each key was written once: exactly one 201 per key, every other answer for it is a 200
  ``replayed`` carrying the same id;
- no row exists that no client was told about, and each (user, item) has one current rating;
- 0 answers 5xx, 0 transport errors.

Usage: python -m bench.load_feedback [--quick] [--clients 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench._common import REPO, print_table, scratch_database
from bench.serving_load_common import (
    GunicornServer,
    Sample,
    api_clients_create,
    latency_summary,
    load_run,
    manage_on,
)

KEY_PREFIX = "lf-"


class RatingTraffic:
    """Builds each client's next request: a fresh rating, or (re-senders only) a copy of a recent one."""

    def __init__(self, *, clients: list[dict], items: list[str], resend: float, seed: int = 0):
        self.clients, self.items, self.resend = clients, items, resend
        self.recent: list[dict] = []  # recent fresh requests of every client, for re-sending
        self.lock = threading.Lock()
        self.randoms = [random.Random(seed * 1000 + client) for client in range(len(clients))]

    def __call__(self, client: int, n: int) -> dict:
        rng = self.randoms[client]
        if client % 2 == 1 and rng.random() < self.resend:
            with self.lock:
                original = rng.choice(self.recent[-200:]) if self.recent else None
            if original is not None:
                return {**original, "resent": True}
        identity = self.clients[client]
        spec = {
            "method": "POST",
            "path": "/api/v1/feedback",
            "headers": {"Authorization": f"Token {identity['token']}"},
            "body": {
                "item": rng.choice(self.items),
                "kind": "rating",
                "value": float(rng.randint(2, 10)) / 2,
                "idempotency_key": f"{KEY_PREFIX}{client}-{n}",
            },
            "user": identity["user"],
            "resent": False,
        }
        with self.lock:
            self.recent.append(spec)
        return spec


def integrity_check(database_url: str, samples: list[Sample]) -> tuple[dict, list[str]]:
    """Compare what the clients were told with what the database holds; (figures, problems)."""
    import json

    import psycopg

    problems: list[str] = []
    answers_by_key: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for sample in samples:
        if sample.status in (200, 201):
            answers_by_key[sample.request["body"]["idempotency_key"]].append((sample.status, json.loads(sample.body)))
        elif sample.status != 0 and sample.status < 500:
            problems.append(f"unexpected {sample.status}: {sample.body[:200]!r}")
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT f.idempotency_key, f.id, u.external_id, i.external_id, f.value FROM catalog_feedback f "
            "JOIN catalog_userprofile u ON u.id = f.user_id JOIN catalog_item i ON i.id = f.item_id "
            "WHERE f.idempotency_key LIKE %s",
            [KEY_PREFIX + "%"],
        ).fetchall()
        current_twice = connection.execute(
            "SELECT count(*) FROM (SELECT 1 FROM catalog_feedback WHERE kind_id = 'rating' AND is_current "
            "GROUP BY user_id, item_id HAVING count(*) > 1) AS doubled"
        ).fetchone()[0]
        pairs_without_current = connection.execute(
            "SELECT count(*) FROM (SELECT 1 FROM catalog_feedback WHERE kind_id = 'rating' "
            "GROUP BY user_id, item_id HAVING NOT bool_or(coalesce(is_current, false))) AS none_current"
        ).fetchone()[0]
    stored: dict[str, list[tuple]] = defaultdict(list)
    for key, row_id, user, item, value in rows:
        stored[key].append((row_id, user, item, value))

    for key, answers in answers_by_key.items():
        rows_for_key = stored.get(key, [])
        if len(rows_for_key) != 1:
            problems.append(f"key {key}: acknowledged but stored {len(rows_for_key)} times")
            continue
        row_id, user, item, value = rows_for_key[0]
        written = [body for status, body in answers if status == 201]
        if len(written) != 1:
            problems.append(f"key {key}: {len(written)} answers said 'written' (201), expected exactly 1")
        for status, body in answers:
            if (body["id"], body["user"], body["item"], body["value"]) != (row_id, user, item, value):
                problems.append(f"key {key}: answer {body} differs from the stored row {(row_id, user, item, value)}")
            if status == 200 and not body.get("replayed"):
                problems.append(f"key {key}: a 200 that is not marked replayed")
    unacknowledged = set(stored) - set(answers_by_key)
    transport_errors = sum(sample.status == 0 for sample in samples)
    if unacknowledged and not transport_errors:
        problems.append(f"{len(unacknowledged)} stored keys were never acknowledged, e.g. {sorted(unacknowledged)[:3]}")
    if current_twice:
        problems.append(f"{current_twice} (user, item) pairs have two current ratings")
    if pairs_without_current:
        problems.append(f"{pairs_without_current} (user, item) pairs have ratings but none current")
    figures = {
        "keys acknowledged": len(answers_by_key),
        "rows stored": len(rows),
        "re-sent requests": sum(1 for s in samples if s.request.get("resent")),
        "re-sends answered 'replayed'": sum(1 for s in samples if s.status == 200),
        "keys answered more than once": sum(1 for answers in answers_by_key.values() if len(answers) > 1),
        "stored but unacknowledged": len(unacknowledged),
    }
    return figures, problems


def feedback_load(
    *,
    database_url: str,
    log_dir: Path,
    clients: int,
    seconds: float,
    items: int,
    workers: int,
    threads: int,
    resend: float,
) -> dict:
    """Seed, serve, load, check; returns the figures and the problems found (empty: all promises held)."""
    seeded = api_clients_create(database_url, users=clients, items=items, prefix="lf-")
    server = GunicornServer(
        database_url=database_url, log_path=log_dir / "load_feedback_gunicorn.log", workers=workers, threads=threads
    )
    try:
        server.wait_ready()
        traffic = RatingTraffic(clients=seeded["clients"], items=seeded["items"], resend=resend)
        started = time.perf_counter()
        samples = load_run(port=server.port, clients=clients, duration=seconds, next_request=traffic)
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    summary = latency_summary(samples, elapsed)
    figures, problems = integrity_check(database_url, samples)
    if summary["5xx"]:
        problems.append(f"{summary['5xx']} answers were 5xx")
    if summary["transport_errors"]:
        problems.append(f"{summary['transport_errors']} transport errors")
    return {"summary": summary, "figures": figures, "problems": problems, "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 clients for 8 s.")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--resend", type=float, default=0.3, help="Share of a re-sending client's requests that are copies."
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds = 10, 8.0
    log_dir = REPO / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    with scratch_database("bench_load_feedback") as url:
        manage_on(url, "migrate", "--noinput")
        result = feedback_load(
            database_url=url,
            log_dir=log_dir,
            clients=args.clients,
            seconds=args.seconds,
            items=args.items,
            workers=args.workers,
            threads=args.threads,
            resend=args.resend,
        )
    summary, figures = result["summary"], result["figures"]
    print_table(
        f"Concurrent writers: {args.clients} clients posting ratings for {args.seconds:g} s "
        f"(gunicorn {args.workers} workers × {args.threads} threads, token auth)",
        ["requests", "requests/s", "p50 ms", "p99 ms", "max ms", "2xx", "4xx", "5xx", "transport errors"],
        [
            [
                summary["requests"],
                round(summary["requests_per_second"], 1),
                round(summary["p50_ms"], 1),
                round(summary["p99_ms"], 1),
                round(summary["max_ms"], 1),
                summary["2xx"],
                summary["4xx"],
                summary["5xx"],
                summary["transport_errors"],
            ]
        ],
        note="Load generator: Python threads with keep-alive http.client connections, on the same machine.",
    )
    print_table(
        "Integrity (checked in the database after the run)",
        ["check", "value"],
        [[name, value] for name, value in figures.items()]
        + [["problems", "; ".join(result["problems"][:5]) or "none"]],
    )
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
