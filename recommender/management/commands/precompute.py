"""Precompute the active version's stored lists now, instead of waiting for the activation's tasks.

``manage.py precompute`` fills both tables; ``--home`` or ``--related`` one of them. Each stops at
its time budget (``HOME_PRECOMPUTE_SECONDS``, ``RELATED_PRECOMPUTE_SECONDS``, or ``--seconds``);
what it covered is printed, and with ``--json`` the last line is ``{"home": {...}, "related": {...}}``.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

from recommender.selectors import active_version
from recommender.services.home_precompute import home_lists_precompute
from recommender.services.precompute import related_items_precompute


class Command(BaseCommand):
    help = "Precompute the active version's homepage pools and related lists (within their time budgets)."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--home", action="store_true", help="Only the homepage pools.")
        which.add_argument("--related", action="store_true", help="Only the related lists.")
        parser.add_argument(
            "--seconds", type=float, default=None, help="Time budget of each run (overrides the settings)."
        )
        parser.add_argument("--json", action="store_true", help="Print the coverage as JSON on the last line.")

    def handle(self, *args, **options):
        version = active_version()
        if version is None:
            raise CommandError("No active model version: train and activate one first (manage.py train).")
        seconds = options["seconds"]
        if seconds is not None and seconds < 0:
            raise CommandError("--seconds must be 0 or more.")
        budgets = {} if seconds is None else {"HOME_PRECOMPUTE_SECONDS": seconds, "RELATED_PRECOMPUTE_SECONDS": seconds}
        report: dict[str, dict] = {}
        with override_settings(**budgets):
            if not options["related"]:
                home = home_lists_precompute(version=version)
                report["home"] = {**asdict(home), "users_per_second": round(home.users_per_second, 1)}
                self.stdout.write(
                    f"home v{version.pk}: {home.users} of {home.of} users ({home.unknown} without a vector) "
                    f"in {home.seconds:.1f} s, {home.users_per_second:.1f}/s, {home.stopped_by}"
                )
            if not options["home"]:
                related = related_items_precompute(version=version)
                report["related"] = {**asdict(related), "items_per_second": round(related.items_per_second, 1)}
                self.stdout.write(
                    f"related v{version.pk}: {related.items} of {related.of} items in {related.seconds:.1f} s, "
                    f"{related.items_per_second:.1f}/s, {related.stopped_by}"
                )
        if options["json"]:
            self.stdout.write(json.dumps(report))
