"""Import any interactions file (CSV, TSV, ``.dat``) with a column mapping, plus optional item and user files.

The interactions file names, per line, a user, an item and optionally a value (a rating, a
count), a time (unix seconds or ISO 8601) and a kind (a column, or one kind for the whole file,
``play`` by default). Columns are header names or 1-based positions (`catalog.importers.tables`).

Items and users referenced by interactions:

- with an item file, an interaction naming an item that is not in it is a **bad row** (a typo'd
  id should not invent an item); without one, items are created with ``title = external id``;
- the same for users and the user file; users are created with the username
  ``<prefix><external id>`` and an unusable password, as the MovieLens importer does.

Values are checked against the kind's range as stored in the database (``play``: 0 and more),
and never clamped. The run is the MovieLens importer's shape (`catalog.importers.base`): lines
are parsed one at a time, good rows go by COPY into TEMP staging tables in chunks, and
`catalog.importers.loading` moves each chunk with ``INSERT … SELECT … ON CONFLICT DO NOTHING``
in one transaction, so a second run adds 0 and an aborted run adds nothing. Only the id sets of
items and users stay in Python memory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils.text import slugify

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
from catalog.importers.bulk import (
    ImportBudget,
    feedback_bulk_window,
    import_budget,
    import_session_tune,
    table_bulk_window,
)
from catalog.importers.interactions_copy import CopyRules, interactions_copy_stage
from catalog.importers.tables import Table, TableFormat, lines_estimate, table_open
from catalog.services.feedback import FEEDBACK_VALUE_LIMIT
from catalog.sql import ITEM_TABLE
from config import metrics

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

DEFAULT_KIND = "play"
DEFAULT_USERNAME_PREFIX = "imp-"
# Column sizes of the catalogue tables: a longer value is a bad row, never silently cut.
ID_MAX, TITLE_MAX, FEATURE_VALUE_MAX, FEATURE_TYPE_MAX, USERNAME_MAX = 128, 500, 200, 50, 150
# Years 1 to 9999, the range both Python and PostgreSQL timestamps hold.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62_135_596_800.0, 253_402_300_799.0

_STAGES = {
    "stage_items": "external_id text, title text, published_at timestamptz, provider text",
    "stage_item_features": "external_id text, type text, value text, weight float8",
    "stage_users": "external_id text, username text",
    "stage_user_features": "external_id text, type text, value text, weight float8",
    "stage_feedback": "line int8, user_external_id text, item_external_id text, kind text, value float8, "
    "created_unix float8",
}


@dataclass(frozen=True)
class InteractionColumns:
    """Which column holds what: header names or 1-based positions; ``kind`` None = one kind for the file."""

    user: str
    item: str
    value: str | None = None
    timestamp: str | None = None
    kind: str | None = None

    def mapping(self) -> dict[str, str]:
        named = {"user": self.user, "item": self.item, "value": self.value, "timestamp": self.timestamp}
        return {role: spec for role, spec in {**named, "kind": self.kind}.items() if spec is not None}


@dataclass(frozen=True)
class SideFile:
    """An item or user file: its id column, a title column (items), and feature columns.

    ``features`` holds ``(feature type or None, column)``; None takes the type from the header
    (slugified: ``Genres`` → ``genres``). With ``feature_separator`` a cell holds several values
    (``Comedy|Drama``); each becomes one feature of weight 1.
    """

    path: Path
    id_column: str
    title_column: str | None = None
    features: tuple[tuple[str | None, str], ...] = ()
    feature_separator: str | None = None


def feature_columns_parse(specs: list[str] | tuple[str, ...]) -> tuple[tuple[str | None, str], ...]:
    """``["genre=3", "tags"]`` → ``(("genre", "3"), (None, "tags"))``: ``TYPE=COLUMN`` or just a column."""
    parsed: list[tuple[str | None, str]] = []
    for spec in specs:
        feature_type, separator, column = spec.partition("=")
        parsed.append((feature_type.strip(), column.strip()) if separator else (None, spec.strip()))
    return tuple(parsed)


@dataclass(frozen=True)
class KindRule:
    code: str
    low: float | None
    high: float | None
    default: float

    def value(self, text: str) -> float:
        text = text.strip()
        try:
            value = float(text)
        except ValueError:
            raise BadRowError(f"value {text!r} is not a number") from None
        if not math.isfinite(value) or abs(value) > FEEDBACK_VALUE_LIMIT:
            raise BadRowError(f"value {text!r} is not a finite number within ±{FEEDBACK_VALUE_LIMIT:g}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            low = "" if self.low is None else f"{self.low:g}"
            high = "" if self.high is None else f"{self.high:g}"
            raise BadRowError(f"value {value:g} is outside the {self.code} kind's range {low}..{high}")
        return value


def timestamp_parse(text: str) -> float:
    """Unix seconds (``1262304000``, ``1262304000.5``) or ISO 8601 (``2010-01-01T00:00:00Z``; no zone = UTC)."""
    text = text.strip()
    if not text:
        raise BadRowError("empty timestamp")
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise BadRowError(f"timestamp {text!r} is neither unix seconds nor ISO 8601") from None
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not (math.isfinite(seconds) and TIMESTAMP_MIN <= seconds <= TIMESTAMP_MAX):
        raise BadRowError(f"timestamp {text!r} is outside the years 1 to 9999")
    return seconds


def _timestamp_readable(text: str) -> bool:
    try:
        timestamp_parse(text)
    except BadRowError:
        return False
    return True


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise BadRowError(f"empty {what}")
    if "\x00" in value:
        raise BadRowError(f"{what} holds a NUL character")
    if len(value) > limit:
        raise BadRowError(f"{what} is longer than {limit} characters")
    return value


@metrics.import_observed("interactions")
def interactions_import(
    *,
    path: Path,
    columns: InteractionColumns,
    kind: str | None = None,
    items: SideFile | None = None,
    users: SideFile | None = None,
    table_format: TableFormat | None = None,
    username_prefix: str = DEFAULT_USERNAME_PREFIX,
    progress: bool = True,
    budget: ImportBudget | None = None,
) -> ImportSummary:
    """Import one interactions file (and its item and user files) in one transaction.

    ``kind`` is the kind of every row when ``columns.kind`` is None (default ``play``); naming
    both is an error. Returns what was added and the bad rows (``file:line: reason``).
    """
    path = Path(path)
    table_format = table_format or TableFormat()
    if columns.kind is not None and kind is not None:
        raise CatalogImportError("Give either a kind column or one kind for the whole file, not both.")
    if len(username_prefix) + ID_MAX > USERNAME_MAX:
        raise CatalogImportError(f"The username prefix may have at most {USERNAME_MAX - ID_MAX} characters.")
    summary = ImportSummary(source=str(path))
    started = time.monotonic()
    budget = budget or import_budget()
    with transaction.atomic():
        run = _Run(cursor=raw_cursor(), summary=summary, table_format=table_format, progress=progress)
        run.budget, run.username_prefix = budget, username_prefix
        import_session_tune(run.cursor, budget)
        run.kinds = _kind_rules(run.cursor)
        fixed_kind = None if columns.kind is not None else (kind or DEFAULT_KIND)
        if fixed_kind is not None and fixed_kind not in run.kinds:
            raise CatalogImportError(f"Unknown feedback kind {fixed_kind!r}; known kinds: {', '.join(run.kinds)}.")
        foreign_keys_checked_per_statement(run.cursor)
        for name, stage_columns in _STAGES.items():
            temp_table_create(run.cursor, name, stage_columns)
        layouts = []
        if items is not None:
            layouts.append(run.side_file_load(items, subject="item"))
        if users is not None:
            layouts.append(run.side_file_load(users, subject="user"))
        with feedback_bulk_window(run.cursor, incoming_rows=lines_estimate(path)) as run.bulk:
            layouts.insert(0, run.interactions_load(path, columns, fixed_kind=fixed_kind, items=items, users=users))
        for name in _STAGES:
            run.cursor.execute(f"DROP TABLE IF EXISTS {name}")
        foreign_keys_deferred_again(run.cursor)
    summary.layout = "; ".join(layouts)
    summary.seconds = time.monotonic() - started
    logger.info(
        "interactions.imported source=%s added=%s bad_rows=%d seconds=%.1f",
        path,
        summary.added,
        summary.bad_row_count,
        summary.seconds,
    )
    return summary


def _kind_rules(cursor) -> dict[str, KindRule]:
    rows = cursor.execute(
        "SELECT code, min_value, max_value, default_value FROM catalog_feedbackkind ORDER BY code"
    ).fetchall()
    return {code: KindRule(code=code, low=low, high=high, default=default) for code, low, high, default in rows}


class _Run:
    """One import: the cursor, the id sets of the side files, and the per-file loops."""

    def __init__(self, *, cursor: psycopg.Cursor[Any], summary: ImportSummary, table_format: TableFormat, progress):
        self.cursor = cursor
        self.summary = summary
        self.table_format = table_format
        self.progress = progress
        self.budget = import_budget()
        self.username_prefix = DEFAULT_USERNAME_PREFIX
        self.kinds: dict[str, KindRule] = {}
        self.ids: dict[str, dict[str, int]] = {"item": {}, "user": {}}  # external id -> line in its file
        self.filled: set[str] = set()  # catalogue tables rows were added to since their last ANALYZE
        # In feedback bulk mode everything staged moves in with one apply at the end (see
        # catalog.importers.bulk.feedback_bulk_window); otherwise one apply per budget batch.
        self.bulk = False

    def _each_row(
        self,
        table: Table,
        parse: Callable[[int, list[str]], None],
        stage: Callable[[], int],
        apply: Callable[[], None],
    ) -> None:
        """Parse every row of ``table`` and report bad ones; ``stage`` COPYs the parsed rows every
        COPY block (returning the bytes staged) and ``apply`` moves them in every batch."""
        pending = staged = 0
        block, batch = self.budget.copy_block_bytes, math.inf if self.bulk else self.budget.batch_bytes
        for line, fields in table.rows:
            try:
                if isinstance(fields, str):
                    raise BadRowError(fields)
                if len(fields) < table.width:
                    raise BadRowError(f"expected at least {table.width} columns, found {len(fields)}")
                parse(line, fields)
            except BadRowError as error:
                self.summary.bad(table.path.name, line, str(error))
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

    def _copy(self, stage: str, columns: list[str], rows: list[tuple]) -> int:
        staged = ImportBudget.staged_bytes(copy_text(self.cursor, stage, columns, copy_text_lines(rows)), len(rows))
        rows.clear()
        return staged

    # -- item and user files -----------------------------------------------------------------
    def side_file_load(self, side: SideFile, *, subject: str) -> str:
        mapping = {"id": side.id_column}
        if side.title_column is not None:
            mapping["title"] = side.title_column
        mapping |= {f"feature{position}": column for position, (_, column) in enumerate(side.features)}
        with progress_bar(enabled=self.progress, total=side.path.stat().st_size, desc=side.path.name) as bar:
            table = table_open(side.path, self.table_format, mapping, bar=bar)
            feature_types = [
                self._feature_type(table, position, named) for position, (named, _) in enumerate(side.features)
            ]
            rows: list[tuple] = []
            features: list[tuple] = []
            known = self.ids[subject]

            def parse(line: int, fields: list[str]) -> None:
                external_id = _text(fields[table.columns["id"]], f"{subject} id", ID_MAX)
                if external_id in known:
                    raise BadRowError(f"duplicate {subject} id {external_id} (first on line {known[external_id]})")
                title = external_id
                if "title" in table.columns:
                    title = fields[table.columns["title"]].strip() or external_id
                    if len(title) > TITLE_MAX or "\x00" in title:
                        raise BadRowError(f"title is longer than {TITLE_MAX} characters or holds a NUL character")
                found = []
                for position, feature_type in enumerate(feature_types):
                    cell = fields[table.columns[f"feature{position}"]]
                    parts = cell.split(side.feature_separator) if side.feature_separator else [cell]
                    for part in parts:
                        if part.strip():
                            found.append((external_id, feature_type, _text(part, feature_type, FEATURE_VALUE_MAX), 1.0))
                known[external_id] = line
                if subject == "item":
                    rows.append((external_id, title, None, ""))
                else:
                    rows.append((external_id, self.username_prefix + external_id))
                features.extend(found)

            self._each_row(
                table, parse, lambda: self._side_stage(subject, rows, features), lambda: self._side_apply(subject)
            )
        return table.describe()

    @staticmethod
    def _feature_type(table: Table, position: int, named: str | None) -> str:
        source = named or (table.header[table.columns[f"feature{position}"]] if table.header else "")
        feature_type = slugify(source)[:FEATURE_TYPE_MAX]
        if not feature_type:
            raise CatalogImportError(
                f"{table.path.name}: feature column {position + 1} needs a type: write TYPE=COLUMN (genre=3)."
            )
        return feature_type

    def _side_stage(self, subject: str, rows: list[tuple], features: list[tuple]) -> int:
        if subject == "item":
            staged = self._copy("stage_items", ["external_id", "title", "published_at", "provider"], rows)
        else:
            staged = self._copy("stage_users", ["external_id", "username"], rows)
        return staged + self._copy(f"stage_{subject}_features", ["external_id", "type", "value", "weight"], features)

    def _side_apply(self, subject: str) -> None:
        if subject == "item":
            self._items_load()
        else:
            self._users_load()
        stage = f"stage_{subject}_features"
        self._statistics_refresh(stage)
        insert = loading.item_features_insert if subject == "item" else loading.user_features_insert
        added, links = insert(self.cursor, stage=stage)
        self.summary.add("features", added)
        self.summary.add(f"{subject}_features", links)
        self.cursor.execute(f"TRUNCATE {stage}")

    def _items_load(self) -> None:
        loading.planner_statistics_refresh(self.cursor, tables=["stage_items"])
        added = loading.items_insert(self.cursor, stage="stage_items")
        self.summary.add("items", added)
        self.filled |= {"catalog_item"} if added else set()
        self.cursor.execute("TRUNCATE stage_items")

    def _users_load(self) -> None:
        loading.planner_statistics_refresh(self.cursor, tables=["stage_users"])
        users, profiles = loading.users_insert(self.cursor, stage="stage_users")
        self.summary.add("users", users)
        self.summary.add("user_profiles", profiles)
        self.filled |= {"auth_user", "catalog_userprofile"} if users or profiles else set()
        self.cursor.execute("TRUNCATE stage_users")

    def _statistics_refresh(self, stage: str) -> None:
        loading.planner_statistics_refresh(self.cursor, tables=[stage, *sorted(self.filled)])
        self.filled.clear()

    # -- the interactions file ---------------------------------------------------------------
    def interactions_load(
        self,
        path: Path,
        columns: InteractionColumns,
        *,
        fixed_kind: str | None,
        items: SideFile | None,
        users: SideFile | None,
    ) -> str:
        item_source = items.path.name if items else None
        user_source = users.path.name if users else None
        feedback: list[tuple] = []
        new_items: list[tuple] = []
        new_users: list[tuple] = []
        seen_items, seen_users = self.ids["item"], self.ids["user"]
        for table_name in ("items", "users", "user_profiles", "feedback"):
            self.summary.add(table_name, 0)  # a repeated import reports its zeros

        with progress_bar(enabled=self.progress, total=path.stat().st_size, desc=path.name) as bar:
            table = table_open(
                path, self.table_format, columns.mapping(), bar=bar, typed={"timestamp": _timestamp_readable}
            )
            at = table.columns

            def parse(line: int, fields: list[str]) -> None:
                user = _text(fields[at["user"]], "user id", ID_MAX)
                item = _text(fields[at["item"]], "item id", ID_MAX)
                code = fixed_kind or _text(fields[at["kind"]], "kind", 32)
                rule = self.kinds.get(code)
                if rule is None:
                    raise BadRowError(f"unknown kind {code!r} (known: {', '.join(self.kinds)})")
                value = rule.value(fields[at["value"]]) if "value" in at else rule.default
                created = timestamp_parse(fields[at["timestamp"]]) if "timestamp" in at else None
                if item not in seen_items:
                    if item_source:
                        raise BadRowError(f"unknown item id {item} (not in {item_source})")
                    seen_items[item] = line
                    new_items.append((item, item, None, ""))
                if user not in seen_users:
                    if user_source:
                        raise BadRowError(f"unknown user id {user} (not in {user_source})")
                    seen_users[user] = line
                    new_users.append((user, self.username_prefix + user))
                feedback.append((line, user, item, code, repr(value), None if created is None else repr(created)))
                self.summary.events += 1

            def stage() -> int:
                staged = self._copy("stage_items", ["external_id", "title", "published_at", "provider"], new_items)
                staged += self._copy("stage_users", ["external_id", "username"], new_users)
                stage_columns = ["line", "user_external_id", "item_external_id", "kind", "value", "created_unix"]
                return staged + self._copy("stage_feedback", stage_columns, feedback)

            def apply() -> None:
                # In feedback bulk mode this runs once, so the items the file creates are known:
                # when they are many next to the catalogue (678,876 new items of the 5M-row load
                # took 52 s through the item indexes), the item table's indexes are rebuilt too.
                window: AbstractContextManager = nullcontext()
                if self.bulk:
                    incoming = (self.cursor.execute("SELECT count(*) FROM stage_items").fetchone() or (0,))[0]
                    window = table_bulk_window(self.cursor, ITEM_TABLE, incoming_rows=incoming)
                with window:
                    self._items_load()
                self._users_load()
                self._statistics_refresh("stage_feedback")
                added = loading.feedback_insert(self.cursor, stage="stage_feedback", bulk=self.bulk)
                self.summary.add("feedback", added)
                self.cursor.execute("TRUNCATE stage_feedback")

            rules = CopyRules(
                id_max=ID_MAX,
                value_limit=FEEDBACK_VALUE_LIMIT,
                timestamp_min=TIMESTAMP_MIN,
                timestamp_max=TIMESTAMP_MAX,
                fixed_kind=fixed_kind,
                known_items=set(seen_items) if item_source else None,
                known_users=set(seen_users) if user_source else None,
            )
            staged = interactions_copy_stage(
                self.cursor,
                path=path,
                table=table,
                encoding=self.table_format.encoding,
                rules=rules,
                parse=parse,
                report=lambda line, reason: self.summary.bad(table.path.name, line, reason),
            )
            if staged is None:
                self._each_row(table, parse, stage, apply)
            else:
                self.summary.events += staged
                self._copied_side_rows_stage(items=item_source is None, users=user_source is None)
                stage()
                apply()
        return table.describe()

    def _copied_side_rows_stage(self, *, items: bool, users: bool) -> None:
        """Stage the items and users the fast path's rows name, as ``parse`` does for its rows."""
        if items:
            self.cursor.execute(
                "INSERT INTO stage_items (external_id, title, published_at, provider) "
                "SELECT DISTINCT item_external_id, item_external_id, NULL::timestamptz, '' FROM stage_feedback"
            )
        if users:
            self.cursor.execute(
                "INSERT INTO stage_users (external_id, username) "
                "SELECT DISTINCT user_external_id, %s || user_external_id FROM stage_feedback",
                [self.username_prefix],
            )
