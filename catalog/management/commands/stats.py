"""`manage.py stats [--json]`: what the catalogue holds, and which model is active."""
from __future__ import annotations

import json
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection
from django.db.models import Count, Q

from catalog.models import Feature, Feedback, Item, UserProfile


def catalog_stats_get() -> dict[str, Any]:
    """Counts of users, items, current feedback by kind, features by subject/type, active model.

    Feedback counts are *current* rows: the current state of stateful kinds (``is_current``
    True) plus every repeatable event (``is_current`` NULL); superseded ratings are left out,
    so "ratings" means how many (user, item) pairs hold a rating now.
    """
    items = Item.objects.aggregate(total=Count("id"), active=Count("id", filter=Q(is_active=True)))
    feedback = (
        Feedback.objects.exclude(is_current=False)
        .values_list("kind_id").annotate(count=Count("id")).order_by("kind_id")
    )
    features: dict[str, dict[str, int]] = {}
    for subject, feature_type, count in (
        Feature.objects.values_list("subject", "type").annotate(count=Count("id")).order_by("subject", "type")
    ):
        features.setdefault(subject, {})[feature_type] = count
    return {
        "users": UserProfile.objects.count(),
        "items": items["total"],
        "items_active": items["active"],
        "feedback": dict(feedback),
        "features": features,
        "active_model": _active_model(),
    }


def _active_model() -> dict[str, Any] | None:
    # ModelVersion belongs to the recommender app (training work); until it exists, or while
    # its table is not migrated yet, the key is present and null so scripts reading
    # `stats --json` need no change when it appears.
    try:
        model_version = apps.get_model("recommender", "ModelVersion")
    except LookupError:
        return None
    if model_version._meta.db_table not in connection.introspection.table_names():
        return None
    field_names = {field.name for field in model_version._meta.get_fields()}
    versions = model_version.objects.order_by("-id")
    if "is_active" in field_names:
        active = versions.filter(is_active=True).first()
    elif "status" in field_names:
        active = versions.filter(status="active").first()
    else:
        return None
    if active is None:
        return None
    return {"id": active.id, "metrics": getattr(active, "metrics", None)}


class Command(BaseCommand):
    help = "Print catalogue counts (users, items, current feedback by kind, features) and the active model."
    requires_system_checks = []  # read-only counts need the database only

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print exactly one JSON object.")

    def handle(self, *args, json: bool = False, **options):
        stats = catalog_stats_get()
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
