"""Import a MovieLens folder: ml-100k (``u.data`` …) or the CSV family (ml-latest-small, ml-25m).

Streaming: each file is read one line at a time and staged through COPY in chunks, so ml-25m's
25 million ratings never sit in Python memory; only the id sets of items and users do (tens of
thousands of short strings), because a rating naming an unknown item is a bad row.

Ratings are checked against the ``rating`` FeedbackKind's own range as configured in the
database. The seeded kind is 1.0..5.0, so the CSV family's half-star 0.5 ratings are reported
as bad rows unless an admin widens ``min_value`` to 0.5 first — the importer never clamps,
because a silently changed rating is worse than a visible skipped one.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction

from catalog.importers import loading
from catalog.importers.base import (
    BadRowError,
    CatalogImportError,
    ImportSummary,
    copy_text,
    copy_text_lines,
    foreign_keys_checked_per_statement,
    foreign_keys_deferred_again,
    progress_bar,
    raw_cursor,
    temp_table_create,
)
from catalog.importers.bulk import ImportBudget, feedback_bulk_window, import_budget, import_session_tune
from catalog.importers.tables import lines_estimate
from config import metrics

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

LAYOUT_100K = "ml-100k"
LAYOUT_CSV = "csv"
USERNAME_PREFIX = "ml-"
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_CSV_NO_GENRES = "(no genres listed)"

# Staging tables; their columns follow catalog.importers.loading's documented shapes.
_STAGES = {
    "stage_items": "external_id text, title text, published_at timestamptz, provider text",
    "stage_item_features": "external_id text, type text, value text, weight float8",
    "stage_users": "external_id text, username text",
    "stage_user_features": "external_id text, type text, value text, weight float8",
    "stage_ratings": "user_external_id text, item_external_id text, value float8, created_unix int8",
}


@dataclass(frozen=True)
class RatingRange:
    low: float | None
    high: float | None

    def check(self, value: float) -> None:
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise BadRowError(f"rating {value:g} is outside the rating kind's range {self.low:g}..{self.high:g}")


def movielens_layout_detect(directory: Path) -> str:
    if (directory / "u.data").exists():
        return LAYOUT_100K
    if (directory / "ratings.csv").exists() and (directory / "movies.csv").exists():
        return LAYOUT_CSV
    raise CatalogImportError(
        f"{directory} is not a MovieLens folder: expected u.data (ml-100k) or ratings.csv and "
        "movies.csv (ml-latest-small, ml-25m)."
    )


@metrics.import_observed("movielens")
def movielens_import(*, directory: Path, progress: bool = True, budget: ImportBudget | None = None) -> ImportSummary:
    """Import one MovieLens folder in one transaction; returns what was added and skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogImportError(f"{directory} is not a folder.")
    layout = movielens_layout_detect(directory)
    summary = ImportSummary(source=str(directory), layout=layout)
    started = time.monotonic()
    budget = budget or import_budget()
    with transaction.atomic():
        run = _Run(cursor=raw_cursor(), directory=directory, summary=summary, progress=progress, budget=budget)
        import_session_tune(run.cursor, budget)
        foreign_keys_checked_per_statement(run.cursor)
        run.rating_range = _rating_range(run.cursor)
        for name, columns in _STAGES.items():
            temp_table_create(run.cursor, name, columns)
        if layout == LAYOUT_100K:
            run.import_100k()
        else:
            run.import_csv()
        for name in _STAGES:
            run.cursor.execute(f"DROP TABLE IF EXISTS {name}")
        foreign_keys_deferred_again(run.cursor)
    summary.seconds = time.monotonic() - started
    logger.info(
        "movielens.imported layout=%s added=%s bad_rows=%d seconds=%.1f",
        layout,
        summary.added,
        summary.bad_row_count,
        summary.seconds,
    )
    return summary


def _rating_range(cursor) -> RatingRange:
    row = cursor.execute("SELECT min_value, max_value FROM catalog_feedbackkind WHERE code = 'rating'").fetchone()
    if row is None:
        raise CatalogImportError("The 'rating' feedback kind is missing: run `manage.py migrate` (0003 seeds it).")
    return RatingRange(low=row[0], high=row[1])


# --- line readers and field parsers -------------------------------------------------------------


def _lines(path: Path, *, encoding: str, bar) -> Iterator[str]:
    """Decoded lines without their end-of-line, advancing ``bar`` by bytes read."""
    pending = 0
    with path.open("rb") as handle:
        for raw in handle:
            pending += len(raw)
            if pending > 1 << 20:
                bar.update(pending)
                pending = 0
            yield raw.decode(encoding, errors="replace").rstrip("\r\n")
    bar.update(pending)


def _identifier(text: str, what: str) -> str:
    text = text.strip()
    if not text:
        raise BadRowError(f"empty {what}")
    try:
        return str(int(text))
    except ValueError:
        raise BadRowError(f"{what} {text!r} is not an integer") from None


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRowError(f"{what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise BadRowError(f"{what} {text.strip()!r} is not a finite number")
    return value


def _integer(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise BadRowError(f"{what} {text.strip()!r} is not an integer") from None


def _columns(fields: list[str], expected: int) -> list[str]:
    if len(fields) != expected:
        raise BadRowError(f"expected {expected} columns, found {len(fields)}")
    return fields


def _year_features(year: int | None) -> list[tuple[str, str]]:
    if year is None:
        return []
    return [("year", str(year)), ("decade", f"{year // 10 * 10}s")]


def _age_bucket(age: int) -> str:
    for upper, label in ((18, "under-18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55")):
        if age < upper:
            return label
    return "56-plus"


def _zip_features(zip_code: str) -> list[tuple[str, str]]:
    zip_code = zip_code.strip().upper()
    if re.fullmatch(r"\d{5}", zip_code):
        return [("country", "US"), ("zip_region", zip_code[0])]
    if re.fullmatch(r"[A-Z]\d[A-Z]\d?[A-Z]?\d?", zip_code):
        return [("country", "CA"), ("zip_region", zip_code[0])]
    return [("country", "unknown")]


class _Run:
    """One import: holds the cursor, the id sets, and the per-file loops."""

    def __init__(
        self,
        *,
        cursor: psycopg.Cursor[Any],
        directory: Path,
        summary: ImportSummary,
        progress: bool,
        budget: ImportBudget,
    ):
        self.cursor = cursor
        self.directory = directory
        self.summary = summary
        self.progress = progress
        self.budget = budget
        self.rating_range = RatingRange(None, None)
        self.item_ids: set[str] = set()
        self.user_ids: set[str] = set()
        self.bulk = False

    # -- the loop every file shares: parse each line, report bad ones, stage good ones by COPY
    # block (``stage`` returns the bytes it staged) and move them in by batch (``apply``), both
    # sized by the import budget (catalog.importers.bulk.ImportBudget).
    def _each_row(
        self,
        file_name: str,
        rows: Iterator[tuple[int, list[str]]],
        parse: Callable[[list[str]], None],
        stage: Callable[[], int],
        apply: Callable[[], None] = lambda: None,
    ) -> None:
        pending = staged = 0
        # In feedback bulk mode everything staged moves in with one apply at the end (see
        # catalog.importers.bulk.feedback_bulk_window); otherwise one apply per budget batch.
        block, batch = self.budget.copy_block_bytes, math.inf if self.bulk else self.budget.batch_bytes
        for line_number, fields in rows:
            try:
                parse(fields)
            except BadRowError as error:
                self.summary.bad(file_name, line_number, str(error))
                continue
            pending += len(fields) + sum(map(len, fields))  # about the row's COPY text
            if pending >= block:
                staged += stage()
                pending = 0
                if staged >= batch:
                    apply()
                    staged = 0
        stage()
        apply()

    def _split_rows(
        self, file_name: str, separator: str, *, encoding: str = "utf-8", skip_header: bool = False
    ) -> Iterator[tuple[int, list[str]]]:
        path = self.directory / file_name
        with progress_bar(enabled=self.progress, total=path.stat().st_size, desc=file_name) as bar:
            for line_number, line in enumerate(_lines(path, encoding=encoding, bar=bar), start=1):
                if (skip_header and line_number == 1) or not line.strip():
                    continue
                yield line_number, line.split(separator)

    def _csv_rows(self, file_name: str) -> Iterator[tuple[int, list[str]]]:
        path = self.directory / file_name
        with progress_bar(enabled=self.progress, total=path.stat().st_size, desc=file_name) as bar:
            reader = csv.reader(_lines(path, encoding="utf-8", bar=bar))
            for fields in reader:
                if reader.line_num == 1 or not fields:
                    continue  # the header
                yield reader.line_num, fields

    def _copy(self, stage: str, columns: list[str], rows: list[tuple]) -> int:
        staged = ImportBudget.staged_bytes(copy_text(self.cursor, stage, columns, copy_text_lines(rows)), len(rows))
        rows.clear()
        return staged

    # -- ml-100k ---------------------------------------------------------------------------------
    def import_100k(self) -> None:
        genres = self._genres_100k()
        items: list[tuple] = []
        features: list[tuple] = []

        def parse_item(fields: list[str]) -> None:
            fields = _columns(fields, 5 + len(genres))
            item_id = _identifier(fields[0], "item id")
            title = fields[1].strip() or f"MovieLens item {item_id}"
            published = None
            if fields[2].strip():
                try:
                    published = datetime.strptime(fields[2].strip(), "%d-%b-%Y").replace(tzinfo=UTC)
                except ValueError:
                    raise BadRowError(f"release date {fields[2]!r} is not like 01-Jan-1995") from None
            flags = fields[5:]
            if any(flag.strip() not in {"0", "1"} for flag in flags):
                raise BadRowError("genre flags must be 0 or 1")
            self.item_ids.add(item_id)
            items.append((item_id, title, published.isoformat() if published else None, ""))
            year = published.year if published else _title_year(title)
            for feature_type, value in _year_features(year):
                features.append((item_id, feature_type, value, 1.0))
            for genre, flag in zip(genres, flags, strict=True):  # _columns checked the count
                if flag.strip() == "1":
                    features.append((item_id, "genre", genre, 1.0))

        def flush_items() -> int:
            staged = self._copy("stage_items", ["external_id", "title", "published_at", "provider"], items)
            return staged + self._copy("stage_item_features", ["external_id", "type", "value", "weight"], features)

        self._each_row("u.item", self._split_rows("u.item", "|", encoding="latin-1"), parse_item, flush_items)
        self._items_load()

        users: list[tuple] = []
        user_features: list[tuple] = []

        def parse_user(fields: list[str]) -> None:
            user_id, age, gender, occupation, zip_code = _columns(fields, 5)
            user_id = _identifier(user_id, "user id")
            age_years = _integer(age, "age")
            self.user_ids.add(user_id)
            users.append((user_id, USERNAME_PREFIX + user_id))
            described = [
                ("age", _age_bucket(age_years)),
                ("gender", gender.strip().upper()),
                ("occupation", occupation.strip().lower()),
                *_zip_features(zip_code),
            ]
            user_features.extend((user_id, kind, value, 1.0) for kind, value in described if value)

        def flush_users() -> int:
            staged = self._copy("stage_users", ["external_id", "username"], users)
            return staged + self._copy("stage_user_features", ["external_id", "type", "value", "weight"], user_features)

        self._each_row("u.user", self._split_rows("u.user", "|", encoding="latin-1"), parse_user, flush_users)
        self._users_load()
        features_added, links = loading.user_features_insert(self.cursor, stage="stage_user_features")
        self.summary.add("features", features_added)
        self.summary.add("user_features", links)

        self._ratings_load("u.data", self._split_rows("u.data", "\t"), users_from_ratings=False)

    def _genres_100k(self) -> list[str]:
        path = self.directory / "u.genre"
        if not path.exists():
            raise CatalogImportError(f"{path} is missing: ml-100k names its genre flags there.")
        named: dict[int, str] = {}
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.strip():
                name, _, index = line.rpartition("|")
                named[int(index)] = name
        return [named[index] for index in sorted(named)]

    # -- CSV family ------------------------------------------------------------------------------
    def import_csv(self) -> None:
        items: list[tuple] = []
        features: list[tuple] = []

        def parse_movie(fields: list[str]) -> None:
            movie_id, title, genres = _columns(fields, 3)
            movie_id = _identifier(movie_id, "movie id")
            title = title.strip() or f"MovieLens item {movie_id}"
            year = _title_year(title)
            published = datetime(year, 1, 1, tzinfo=UTC).isoformat() if year else None
            self.item_ids.add(movie_id)
            items.append((movie_id, title, published, ""))
            for feature_type, value in _year_features(year):
                features.append((movie_id, feature_type, value, 1.0))
            for genre in genres.split("|"):
                if genre.strip() and genre.strip() != _CSV_NO_GENRES:
                    features.append((movie_id, "genre", genre.strip(), 1.0))

        def flush_items() -> int:
            staged = self._copy("stage_items", ["external_id", "title", "published_at", "provider"], items)
            return staged + self._copy("stage_item_features", ["external_id", "type", "value", "weight"], features)

        self._each_row("movies.csv", self._csv_rows("movies.csv"), parse_movie, flush_items)
        if (self.directory / "tags.csv").exists():

            def parse_tag(fields: list[str]) -> None:
                _user, movie_id, tag, _timestamp = _columns(fields, 4)
                movie_id = _identifier(movie_id, "movie id")
                if movie_id not in self.item_ids:
                    raise BadRowError(f"unknown movie id {movie_id} (not in movies.csv)")
                tag = " ".join(tag.split()).lower()[:200]
                if not tag:
                    raise BadRowError("empty tag")
                features.append((movie_id, "tag", tag, 1.0))

            self._each_row("tags.csv", self._csv_rows("tags.csv"), parse_tag, flush_items)
        self._items_load()
        self._ratings_load(
            "ratings.csv", self._split_rows("ratings.csv", ",", skip_header=True), users_from_ratings=True
        )

    # -- shared loaders --------------------------------------------------------------------------
    def _items_load(self) -> None:
        self.summary.add("items", loading.items_insert(self.cursor, stage="stage_items"))
        features_added, links = loading.item_features_insert(self.cursor, stage="stage_item_features")
        self.summary.add("features", features_added)
        self.summary.add("item_features", links)

    def _users_load(self) -> None:
        users, profiles = loading.users_insert(self.cursor, stage="stage_users")
        self.summary.add("users", users)
        self.summary.add("user_profiles", profiles)
        self.cursor.execute("TRUNCATE stage_users")

    def _ratings_load(self, file_name: str, rows, *, users_from_ratings: bool) -> None:
        ratings: list[tuple] = []
        new_users: list[tuple] = []
        source = "u.user" if not users_from_ratings else ""

        def parse_rating(fields: list[str]) -> None:
            user_id, item_id, value, timestamp = _columns(fields, 4)
            user_id = _identifier(user_id, "user id")
            item_id = _identifier(item_id, "item id")
            rating = _number(value, "rating")
            created = _integer(timestamp, "timestamp")
            self.rating_range.check(rating)
            if item_id not in self.item_ids:
                raise BadRowError(f"unknown item id {item_id} (not in the items file)")
            if user_id not in self.user_ids:
                if not users_from_ratings:
                    raise BadRowError(f"unknown user id {user_id} (not in {source})")
                self.user_ids.add(user_id)
                new_users.append((user_id, USERNAME_PREFIX + user_id))
            ratings.append((user_id, item_id, repr(rating), created))
            self.summary.events += 1

        def stage() -> int:
            staged = self._copy("stage_users", ["external_id", "username"], new_users)
            columns = ["user_external_id", "item_external_id", "value", "created_unix"]
            return staged + self._copy("stage_ratings", columns, ratings)

        def apply() -> None:
            self._users_load()
            self.summary.add("feedback", loading.ratings_insert(self.cursor, stage="stage_ratings", bulk=self.bulk))
            self.cursor.execute("TRUNCATE stage_ratings")

        with feedback_bulk_window(self.cursor, incoming_rows=lines_estimate(self.directory / file_name)) as self.bulk:
            self._each_row(file_name, rows, parse_rating, stage, apply)
        self.bulk = False


def _title_year(title: str) -> int | None:
    match = _TITLE_YEAR.search(title)
    return int(match.group(1)) if match else None
