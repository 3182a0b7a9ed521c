"""`manage.py import_interactions FILE`: load any interactions file (CSV/TSV) with a column mapping."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.importers.base import CatalogImportError
from catalog.importers.interactions import (
    DEFAULT_KIND,
    DEFAULT_USERNAME_PREFIX,
    InteractionColumns,
    SideFile,
    feature_columns_parse,
    interactions_import,
)
from catalog.importers.tables import HEADER_AUTO, HEADER_NO, HEADER_YES, TableFormat

from .import_movielens import summary_print

_DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


class Command(BaseCommand):
    requires_system_checks = []  # a data load needs the database only (as import_movielens)
    help = (
        "Import an interactions file (CSV, TSV, .dat) with a column mapping, plus optional item and user "
        "files. Columns are header names or 1-based positions. Idempotent: a second run adds 0. "
        "Bad rows are reported as FILE:LINE: reason and skipped. See docs/importing.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="The interactions file.")
        columns = parser.add_argument_group("interaction columns (header names or 1-based positions)")
        columns.add_argument("--user-col", required=True)
        columns.add_argument("--item-col", required=True)
        columns.add_argument("--value-col", "--count-col", dest="value_col", help="A rating or a count.")
        columns.add_argument("--timestamp-col", help="Unix seconds or ISO 8601 (no zone = UTC).")
        kinds = columns.add_mutually_exclusive_group()
        kinds.add_argument("--kind-col", help="A column holding a feedback kind code per row.")
        kinds.add_argument("--kind", help=f"One feedback kind for every row (default {DEFAULT_KIND}).")
        items = parser.add_argument_group("item file (interactions naming other items are bad rows)")
        items.add_argument("--items-file", type=Path)
        items.add_argument("--item-id-col", help="Default: column 1.")
        items.add_argument("--item-title-col")
        items.add_argument(
            "--item-feature-col", action="append", default=[], help="[TYPE=]COLUMN, repeatable: item features."
        )
        users = parser.add_argument_group("user file (interactions naming other users are bad rows)")
        users.add_argument("--users-file", type=Path)
        users.add_argument("--user-id-col", help="Default: column 1.")
        users.add_argument("--user-feature-col", action="append", default=[], help="[TYPE=]COLUMN, repeatable.")
        parser.add_argument(
            "--feature-sep", help="Split feature cells on this (e.g. '|'); default: one value per cell."
        )
        parser.add_argument("--delimiter", help="tab, comma, semicolon, pipe or one character; default: detected.")
        parser.add_argument("--encoding", default="utf-8", help="Of every file (default utf-8; e.g. latin-1).")
        parser.add_argument(
            "--header",
            choices=[HEADER_AUTO, HEADER_YES, HEADER_NO],
            default=HEADER_AUTO,
            help="Is line 1 of the interactions and side files a header? Default: detected (docs/importing.md).",
        )
        parser.add_argument("--username-prefix", default=DEFAULT_USERNAME_PREFIX)
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
        parser.add_argument("--json", action="store_true", help="End with the summary as one JSON line.")

    def handle(self, *args, **options):
        delimiter = options["delimiter"]
        delimiter = _DELIMITER_WORDS.get(delimiter, delimiter) if delimiter else None
        if options["items_file"] is None and (options["item_title_col"] or options["item_feature_col"]):
            raise CommandError("--item-title-col and --item-feature-col need --items-file.")
        if options["users_file"] is None and options["user_feature_col"]:
            raise CommandError("--user-feature-col needs --users-file.")
        try:
            items = None
            if options["items_file"] is not None:
                items = SideFile(
                    path=options["items_file"],
                    id_column=options["item_id_col"] or "1",
                    title_column=options["item_title_col"],
                    features=feature_columns_parse(options["item_feature_col"]),
                    feature_separator=options["feature_sep"],
                )
            users = None
            if options["users_file"] is not None:
                users = SideFile(
                    path=options["users_file"],
                    id_column=options["user_id_col"] or "1",
                    features=feature_columns_parse(options["user_feature_col"]),
                    feature_separator=options["feature_sep"],
                )
            summary = interactions_import(
                path=options["file"],
                columns=InteractionColumns(
                    user=options["user_col"],
                    item=options["item_col"],
                    value=options["value_col"],
                    timestamp=options["timestamp_col"],
                    kind=options["kind_col"],
                ),
                kind=options["kind"],
                items=items,
                users=users,
                table_format=TableFormat(delimiter=delimiter, encoding=options["encoding"], header=options["header"]),
                username_prefix=options["username_prefix"],
                progress=not options["no_progress"],
            )
        except CatalogImportError as error:
            raise CommandError(str(error)) from error
        summary_print(self, summary, as_json=options["json"])
