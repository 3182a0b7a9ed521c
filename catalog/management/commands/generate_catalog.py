"""`manage.py generate_catalog`: a synthetic catalogue with planted taste clusters."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from catalog.importers.base import CatalogImportError
from catalog.importers.synthetic import CatalogPlanError, plan_catalog
from catalog.importers.synthetic_loader import synthetic_catalog_generate
from catalog.management.commands.import_movielens import summary_print


class Command(BaseCommand):
    help = (
        "Generate a synthetic catalogue (syn-item-<i>, syn-user-<i>) with planted taste clusters, "
        "streamed through COPY. The same arguments twice add 0 rows."
    )
    # Bulk generation needs the database only (see import_movielens).
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, required=True)
        parser.add_argument("--items", type=int, required=True)
        parser.add_argument("--interactions", type=int, required=True, help="Ratings to create (distinct pairs).")
        parser.add_argument("--seed", type=int, required=True)
        parser.add_argument("--clusters", type=int, default=8, help="Latent taste clusters (default 8).")
        parser.add_argument("--chunk-size", type=int, default=200_000, help="Rows per COPY chunk.")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
        parser.add_argument("--json", action="store_true", help="End with the summary as one JSON line.")

    def handle(self, *args, **options):
        try:
            plan = plan_catalog(
                users=options["users"],
                items=options["items"],
                interactions=options["interactions"],
                seed=options["seed"],
                clusters=options["clusters"],
                chunk_size=options["chunk_size"],
            )
            summary = synthetic_catalog_generate(plan=plan, progress=not options["no_progress"])
        except (CatalogPlanError, CatalogImportError) as error:
            raise CommandError(str(error)) from error
        summary_print(self, summary, as_json=options["json"])
