"""Server time of every dashboard page (and the catalogue/serving pages) on ml-100k.

A scratch database gets ml-100k, a model trained in-process and a few re-ranking rules; then each
URL is requested through Django's test Client as a signed-in staff user (middleware, view,
queries and template, no network). Goal: every page <= 200 ms. The first request of each URL is
reported apart ("cold": per-process caches such as the embedding map's PCA are empty).

Usage: python -m bench.page_speed [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench._common import REPO, manage, movielens_dir, print_table, scratch_database

GOAL_MS = 200.0


def _pages(item_external_id: str, user_external_id: str) -> list[tuple[str, str]]:
    return [
        ("models", "/models/"),
        ("models progress partial", "/models/progress"),
        ("embedding map page", "/models/map/"),
        ("embedding map JSON (genre)", "/models/map.json?color=genre"),
        ("embedding map JSON (year)", "/models/map.json?color=year"),
        ("rules", "/rules/"),
        ("rules preview (a user)", f"/rules/preview?user={user_external_id}"),
        ("rules preview (signed out)", "/rules/preview"),
        ("data", "/data/"),
        ("health page", "/health/"),
        ("health JSON", "/health.json"),
        ("health ready", "/health/ready"),
        ("health live", "/health/live"),
        ("view-as suggestions", "/view-as/suggestions?user=1"),
        ("home (personalised)", "/"),
        ("catalogue", "/catalogue/"),
        ("item detail", f"/items/{item_external_id}/"),
    ]


def measure(repetitions: int) -> list[list]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from catalog.models import Feedback, Item, UserProfile
    from recommender.rerank.services import rule_create

    for name, kind, params in [
        ("Hide what was rated", "filter_seen", {}),
        ("Diversity", "diversity_mmr", {"lambda": 0.7}),
        ("At most 3 per genre", "diversity_feature_cap", {"feature_type": "genre", "max_per_value": 3}),
    ]:
        rule_create(name=name, kind=kind, params=params)
    staff = get_user_model().objects.create_user("bench-staff", password="bench-password", is_staff=True)
    # The staff member browses as one of the ml-100k users (their homepage is personalised).
    profile = UserProfile.objects.order_by("pk").first()
    client = Client()
    client.force_login(staff)
    item = Item.objects.get(pk=Feedback.objects.values("item_id").order_by("item_id").first()["item_id"])
    rows = []
    for label, url in _pages(item.external_id, profile.external_id):
        started = time.perf_counter()
        response = client.get(url)
        cold = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}: {response.content[:500]!r}")
        times = []
        for _ in range(repetitions):
            started = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        median = statistics.median(times)
        rows.append([label, url, round(cold, 1), round(median, 1), round(p95, 1), "yes" if p95 <= GOAL_MS else "NO"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions per page.")
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="Measure against DATABASE_URL as it is (already imported and trained).",
    )
    args = parser.parse_args(argv)
    repetitions = 5 if args.quick else 20
    if args.measure_only:
        rows = measure(repetitions)
    else:
        directory = movielens_dir()
        if directory is None:
            print("MovieLens 100k not found (set MOVIELENS_DIR); page_speed skipped.")
            return 0
        with scratch_database("bench_page_speed") as url:
            manage(url, "migrate", "--noinput")
            manage(url, "import_movielens", str(directory), "--no-progress")
            manage(url, "train", "--inline")
            os.environ["DATABASE_URL"] = url
            os.environ.pop("CELERY_BROKER_URL", None)
            rows = measure(repetitions)
            from django.db import connections

            connections.close_all()  # let scratch_database drop the database
    print_table(
        f"Page server time on ml-100k (Django test Client, staff user, {repetitions} requests after the first)",
        ["page", "URL", "first (cold) ms", "median ms", "p95 ms", f"p95 <= {GOAL_MS:.0f} ms"],
        rows,
        note="Server time only: middleware, view, queries and template rendering, without the network. "
        "`first` includes per-process caches filling (the embedding map's PCA, the broker connection).",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
