"""How a large import stays set-based all the way down: its memory budget, and bulk mode.

Profiling the 1M-rating synthetic load (docs/importing.md, "Where the time went") showed the
COPY into staging costs seconds while the ``INSERT … SELECT`` into ``catalog_feedback`` costs
over a minute, spent per row: twelve index insertions (nine of them non-unique secondary
indexes, three ordered by time and so written at random places), three foreign-key triggers
(each a ``SELECT … FOR KEY SHARE`` per row) and, once per chunk, the popularity trigger
rewriting every touched item (a non-HOT update through nine item indexes).

Two tools remove that, both inside the import's one transaction:

- :func:`import_session_tune` gives the transaction its memory budget (``work_mem`` for the
  batch's sorts and hashes, ``maintenance_work_mem`` for index builds) and
  ``synchronous_commit = off`` (the commit is still atomic; only its fsync wait is skipped, so a
  crash right after COMMIT may lose the import as a whole, never a part of it);
- :func:`indexes_suspended` and :func:`feedback_bulk_window` drop a table's secondary
  indexes (and, for feedback, its foreign keys and the popularity insert trigger) and build them
  again at the end of the batch — one sort per index and one anti-join per foreign key instead of
  millions of random insertions and checks — when :func:`rebuild_pays` says the incoming rows
  are a large enough share of the table. For feedback the unique indexes go too, and the rows
  move in with one anti-join statement per import instead of ``ON CONFLICT`` (the rebuilt
  unique index checks the result).

The DDL takes ACCESS EXCLUSIVE locks on the tables it touches until COMMIT: other sessions
reading them wait (web requests give up after ``WEB_LOCK_TIMEOUT_MS`` and answer 503). They
never see partial rows either way. That is why bulk mode is kept for loads that are large
relative to what is already there; a small import into a large catalogue keeps every index and
runs alongside serving with row locks only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from catalog.sql import FEEDBACK_TABLE, ITEM_TABLE, feedback_in_force_sql

logger = logging.getLogger(__name__)

# The trigger of migration 0005 that bulk mode replaces by one UPDATE per import.
POPULARITY_INSERT_TRIGGER = "catalog_feedback_popularity_insert"
# Bytes a staged row costs in a sort or hash beyond its data (tuple header, slot, pointer):
# measured on PostgreSQL 18 with EXPLAIN's "Memory Usage" for the synthetic ratings stage.
STAGED_ROW_OVERHEAD_BYTES = 48


@dataclass(frozen=True)
class ImportBudget:
    """The memory one import may use, and the sizes derived from it.

    ``memory_bytes`` is split: a quarter is ``work_mem`` (a batch statement has a sort and two
    hashes, plus the trigger's aggregate), half is ``maintenance_work_mem`` (one index build at a
    time), and a batch of staged rows is sized to sort within ``work_mem``. Python holds at most
    one COPY block (1/16 of a batch) of parsed rows.
    """

    memory_bytes: int

    def __post_init__(self) -> None:
        if self.memory_bytes < 1 << 20:
            raise ValueError(f"An import budget of {self.memory_bytes} bytes is below 1 MiB; raise it.")

    @property
    def work_mem_bytes(self) -> int:
        return self.memory_bytes // 4

    @property
    def maintenance_work_mem_bytes(self) -> int:
        return self.memory_bytes // 2

    @property
    def batch_bytes(self) -> int:
        """Staged bytes (COPY payload plus :data:`STAGED_ROW_OVERHEAD_BYTES` a row) applied at once."""
        return self.work_mem_bytes

    @property
    def copy_block_bytes(self) -> int:
        return max(self.batch_bytes // 16, 64 << 10)

    @staticmethod
    def staged_bytes(payload_bytes: int, rows: int) -> int:
        return payload_bytes + rows * STAGED_ROW_OVERHEAD_BYTES


def import_budget() -> ImportBudget:
    from django.conf import settings

    return ImportBudget(memory_bytes=settings.IMPORT_MEMORY_BUDGET_BYTES)


def import_session_tune(cursor, budget: ImportBudget) -> None:
    """Per-transaction settings of an import (``SET LOCAL``: gone at COMMIT or ROLLBACK)."""
    cursor.execute(f"SET LOCAL work_mem = '{budget.work_mem_bytes // 1024}kB'")
    cursor.execute(f"SET LOCAL maintenance_work_mem = '{budget.maintenance_work_mem_bytes // 1024}kB'")
    cursor.execute("SET LOCAL synchronous_commit = off")


def rebuild_pays(*, incoming_rows: int, existing_rows: int, ratio: float | None = None) -> bool:
    """Is dropping and rebuilding a table's secondary indexes cheaper than maintaining them?

    Measured on the synthetic load (bench/import_speed.py, docs/importing.md): keeping the
    indexes cost about 18 times more per incoming row than a rebuild costs per stored row, so a
    rebuild wins from about 6–7 % of the table. ``IMPORT_REBUILD_RATIO`` (default 0.25) asks for
    more, because the rebuild also locks the table for the import's duration.
    """
    if ratio is None:
        from django.conf import settings

        ratio = settings.IMPORT_REBUILD_RATIO
    return incoming_rows > 0 and incoming_rows >= existing_rows * ratio


def table_rows_estimate(cursor, table: str) -> int:
    """About how many rows ``table`` holds, as the planner reckons it: the last ANALYZE's rows
    per page times the pages the table has now (so rows added since still count); an exact count
    when there is no such statistic (never analysed, or analysed empty)."""
    row = cursor.execute(
        "SELECT reltuples, relpages, pg_relation_size(oid) / current_setting('block_size')::int "
        "FROM pg_class WHERE oid = %s::regclass",
        [table],
    ).fetchone()
    if row is not None and row[0] > 0 and row[1] > 0:
        return int(row[0] / row[1] * row[2])
    return int(cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@contextmanager
def indexes_suspended(cursor, table: str, *, foreign_keys: bool = False, unique: bool = False) -> Iterator[int]:
    """Drop ``table``'s non-unique indexes (and its foreign keys) now; build them again on exit.

    With ``unique``, the unique indexes that back no constraint (partial ones such as
    ``feedback_one_current_state``) and unique constraints go too, and come back first:
    building one checks every row, so a duplicate the caller let through fails the import
    instead of being stored. The caller owns uniqueness meanwhile (an anti-join instead of
    ``ON CONFLICT``). The primary key always stays.

    Yields how many indexes were dropped. Definitions are read from the catalogue
    (``pg_get_indexdef``, ``pg_get_constraintdef``), so they come back exactly as migrations
    made them, names included. On an exception nothing is rebuilt: the transaction rolls the
    DROPs back with everything else. Foreign keys are validated again by one anti-join each.
    """
    indexes = cursor.execute(
        "SELECT index.indexrelid::regclass::text, pg_get_indexdef(index.indexrelid) FROM pg_index AS index "
        "WHERE index.indrelid = %s::regclass AND (NOT index.indisunique OR (%s AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint WHERE conindid = index.indexrelid))) "
        "ORDER BY index.indisunique DESC, 1",
        [table, unique],
    ).fetchall()
    # Unique constraints (not the primary key) first, so they are added back before the foreign keys.
    constraints = cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND ((%s AND contype = 'f') OR (%s AND contype = 'u')) "
        "ORDER BY contype DESC, 1",
        [table, foreign_keys, unique],
    ).fetchall()
    for name, _ in constraints:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {name}")
    if unique:
        # The caller's anti-joins now scan the table without an index: give the planner its size.
        cursor.execute(f"ANALYZE {table}")
        with hash_anti_joins(cursor):
            yield len(indexes)
    else:
        yield len(indexes)
    started = time.monotonic()
    for _, definition in indexes:
        cursor.execute(definition)
    for name, definition in constraints:
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    cursor.execute(f"ANALYZE {table}")
    logger.info(
        "import.indexes_rebuilt table=%s indexes=%d foreign_keys=%d seconds=%.1f",
        table,
        len(indexes),
        len(constraints),
        time.monotonic() - started,
    )


@contextmanager
def table_bulk_window(
    cursor, table: str, *, incoming_rows: int, foreign_keys: bool = False, unique: bool = False
) -> Iterator[bool]:
    """:func:`indexes_suspended` when :func:`rebuild_pays` for ``incoming_rows``; yields whether it did."""
    existing = table_rows_estimate(cursor, table)
    bulk = rebuild_pays(incoming_rows=incoming_rows, existing_rows=existing)
    logger.info("import.bulk_mode table=%s bulk=%s incoming=%d existing=%d", table, bulk, incoming_rows, existing)
    if not bulk:
        yield False
        return
    with indexes_suspended(cursor, table, foreign_keys=foreign_keys, unique=unique):
        yield True


@contextmanager
def feedback_bulk_window(cursor, *, incoming_rows: int) -> Iterator[bool]:
    """Bulk mode for ``catalog_feedback`` around one import's feedback; yields whether it is on.

    On top of :func:`indexes_suspended` (foreign keys and the two partial unique indexes
    included), the popularity insert trigger is disabled and replaced by one set-based UPDATE
    at the end, counting the rows added since a watermark id. The watermark is exact: it is read
    under the ACCESS EXCLUSIVE lock the DROPs took, so no other session can add a row after it
    until COMMIT, and importers only insert (never supersede or delete), which the update and
    delete triggers, still enabled, would see.

    When it is on, the caller must move its rows in with **one statement per kind of row** and
    the anti-joins of `catalog.importers.loading` (``bulk=True``): ``ON CONFLICT`` has no unique
    index to arbitrate on. Measured on 1M synthetic ratings, ``ON CONFLICT``'s speculative
    insertion into the two unique indexes cost 18 s of a 26 s ``INSERT`` (5 WAL records a row
    instead of 2); the rebuilt unique index then checks the result once.
    """
    with table_bulk_window(cursor, FEEDBACK_TABLE, incoming_rows=incoming_rows, foreign_keys=True, unique=True) as bulk:
        if not bulk:
            yield False
            return
        cursor.execute(f"ALTER TABLE {FEEDBACK_TABLE} DISABLE TRIGGER {POPULARITY_INSERT_TRIGGER}")
        watermark = cursor.execute(f"SELECT coalesce(max(id), 0) FROM {FEEDBACK_TABLE}").fetchone()[0]
        yield True
        popularity_add_since(cursor, watermark=watermark)
        cursor.execute(f"ALTER TABLE {FEEDBACK_TABLE} ENABLE TRIGGER {POPULARITY_INSERT_TRIGGER}")


@contextmanager
def hash_anti_joins(cursor) -> Iterator[None]:
    """Plan the bulk-mode anti-joins (``NOT EXISTS`` against the table being filled) as hash joins.

    With the table's indexes suspended, a nested loop would rescan the table for every staged
    row — and a sequential scan reads the rows the same statement has just inserted too (it
    must test their visibility), so it grows quadratically: 100k synthetic items took 520 s
    that way, against under a second with the existing rows hashed once before the insert.
    """
    cursor.execute("SET LOCAL enable_nestloop = off")
    yield
    # Not in a ``finally``: after an error the transaction is aborted, and its rollback undoes SET LOCAL.
    cursor.execute("SET LOCAL enable_nestloop = on")


def popularity_add_since(cursor, *, watermark: int) -> int:
    """Add the in-force feedback rows with ``id > watermark`` to their items' popularity.

    One UPDATE per touched item for the whole import. When the touched items are a large share
    of the catalogue, the item table's secondary indexes (``popularity`` is one of them, so the
    update can never be HOT) are suspended around it by the same rule. Returns items updated.
    """
    started = time.monotonic()
    cursor.execute("DROP TABLE IF EXISTS import_popularity")
    cursor.execute(
        f"""
        CREATE TEMP TABLE import_popularity ON COMMIT DROP AS
        SELECT item_id, count(*) AS n FROM {FEEDBACK_TABLE}
        WHERE id > %s AND {feedback_in_force_sql()} GROUP BY item_id
        """,
        [watermark],
    )
    touched = cursor.rowcount
    # Unique ones too: the UPDATE is not HOT, so each row would enter ``external_id``'s index again.
    with table_bulk_window(cursor, ITEM_TABLE, incoming_rows=touched, unique=True):
        cursor.execute(
            f"UPDATE {ITEM_TABLE} AS item SET popularity = item.popularity + counted.n "
            "FROM import_popularity AS counted WHERE item.id = counted.item_id"
        )
    cursor.execute("DROP TABLE import_popularity")
    logger.info("import.popularity_added items=%d seconds=%.1f", touched, time.monotonic() - started)
    return touched
