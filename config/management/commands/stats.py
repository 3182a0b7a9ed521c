"""`manage.py stats [--json]`: what the catalogue holds, and which model is active."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from catalog.selectors import catalog_counts
from recommender.selectors import active_version


def project_stats_get() -> dict[str, Any]:
    """The catalogue's counts (`catalog.selectors.catalog_counts`) and the active model, or None."""
    active = active_version()
    return {
        **catalog_counts(),
        "active_model": None if active is None else {"id": active.pk, "metrics": active.metrics},
    }


class Command(BaseCommand):
    help = "Print catalogue counts (users, items, current feedback by kind, features) and the active model."
    requires_system_checks = []  # read-only counts need the database only

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print exactly one JSON object.")

    def handle(self, *args, json: bool = False, **options):
        stats = project_stats_get()
        if json:
            self.stdout.write(_json_dumps(stats))
            return
        self.stdout.write(f"users         {stats['users']}")
        self.stdout.write(f"items         {stats['items']} ({stats['items_active']} active)")
        for kind, count in stats["feedback"].items():
            self.stdout.write(f"feedback      {kind}: {count}")
        for subject, types in stats["features"].items():
            listed = ", ".join(f"{feature_type}={count}" for feature_type, count in types.items())
            self.stdout.write(f"features      {subject}: {listed}")
        active = stats["active_model"]
        self.stdout.write(f"active model  {'none' if active is None else active['id']}")


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
