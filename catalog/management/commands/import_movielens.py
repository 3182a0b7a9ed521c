"""`manage.py import_movielens DIR`: load a MovieLens folder (ml-100k or the CSV family)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.importers.base import CatalogImportError, ImportSummary
from catalog.importers.movielens import movielens_import

# Past this many, bad rows are counted but not each printed: a broken 25M-line file should not
# bury the summary under millions of lines.
BAD_ROWS_PRINTED = 50


class Command(BaseCommand):
    # A data load needs the database only; skipping the URL/admin checks keeps it usable while
    # a half-finished view elsewhere would otherwise block every management command.
    requires_system_checks = []
    help = (
        "Import a MovieLens folder (ml-100k, ml-latest-small, ml-25m). Idempotent: a second run adds 0. "
        "Bad rows are reported as FILE:LINE: reason and skipped; the rest is imported."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
        parser.add_argument("--json", action="store_true", help="End with the summary as one JSON line.")

    def handle(self, *args, directory: Path, no_progress: bool, json: bool, **options):
        try:
            summary = movielens_import(directory=directory, progress=not no_progress)
        except CatalogImportError as error:
            raise CommandError(str(error)) from error
        summary_print(self, summary, as_json=json)


def summary_print(command: BaseCommand, summary: ImportSummary, *, as_json: bool) -> None:
    for row in summary.bad_rows[:BAD_ROWS_PRINTED]:
        command.stderr.write(str(row))
    hidden = summary.bad_row_count - min(len(summary.bad_rows), BAD_ROWS_PRINTED)
    if hidden > 0:
        command.stderr.write(f"... and {hidden} more bad rows")
    added = ", ".join(f"{table}={count}" for table, count in sorted(summary.added.items())) or "nothing"
    command.stdout.write(
        f"Imported {summary.source} ({summary.layout}) in {summary.seconds:.1f}s: added {added}; "
        f"bad rows: {summary.bad_row_count}; {summary.events} events at {summary.events_per_second:,.0f} events/s"
    )
    if as_json:
        command.stdout.write(json.dumps(summary.as_dict()))
