"""Per-version tables of precomputed lists (seed 000), shared by the related and homepage runs.

A run fills ``<name>_building`` in autocommit, under `building_lock`, so the process's memos serve
its pipeline runs, and swaps it in at the end in one transaction (`table_swap`): readers see the
previous complete table or the new complete one, and wait on a lock only for the swap. Plain
tables rather than Django models: they live and die with a version, and `tables_drop_stale`
drops those whose version lost its vectors (retired or failed). What a run covered is kept as
the table's comment (JSON).
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from contextlib import contextmanager

from django.db import connection
from psycopg import sql

from ..models import ModelVersion, VersionStatus

logger = logging.getLogger(__name__)


def _run(statement: sql.Composable, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement.as_string(connection.connection), params)


def table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return bool(cursor.fetchone()[0])


@contextmanager
def building_lock(name: str):
    """Hold a session advisory lock on ``name`` while a run fills its ``_building`` table.

    A run fills that table in autocommit, outside any transaction, so the in-process copies
    (`recommender.memo.GenerationMemo`, off inside a transaction) answer its pipeline runs: at a
    million items the content-based SQL statement they replace took 1.5 s a list. Two runs of the
    same table would otherwise drop each other's half-filled table; the second waits here.
    """
    key = zlib.crc32(name.encode())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def table_create(name: str, *, columns: str) -> None:
    """(Re)create ``name`` with ``columns`` (trusted SQL, from this package), without its key."""
    _run(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    _run(sql.SQL("CREATE TABLE {} (" + columns + ")").format(sql.Identifier(name)))


def table_swap(*, building: str, name: str, key: str, coverage: dict) -> None:
    """Replace ``name`` by the filled ``building`` table, its primary key and comment added last.

    The previous table's exclusive lock (taken by DROP) is held only from here to the commit (the
    key's build: ~10 ms for 20k rows), so readers keep reading it while the new one fills.
    """
    for statement in (
        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)),
        # After the drop: the previous table's key holds the name (a bulk build, faster than keeping
        # the key up to date on every insert).
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            sql.Identifier(building), sql.Identifier(f"{name}_pkey"), sql.Identifier(key)
        ),
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(building), sql.Identifier(name)),
        sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(name), sql.Literal(json.dumps(coverage))),
    ):
        _run(statement)


def rows_write(table: str, *, columns: list[str], rows: list[tuple]) -> None:
    if not rows:
        return
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(column) for column in columns),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    with connection.cursor() as cursor:
        cursor.executemany(statement.as_string(connection.connection), rows)


def table_comment(name: str) -> dict | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", [name])
        row = cursor.fetchone()
    return json.loads(row[0]) if row and row[0] else None


def tables_drop_stale(*, prefix: str) -> list[int]:
    """Drop the ``<prefix><version id>`` tables of versions whose vectors are gone; returns their ids."""
    pattern = re.compile(rf"^{re.escape(prefix)}([0-9]+)$")
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND starts_with(relname, %s)", [prefix])
        version_ids = [int(match.group(1)) for (name,) in cursor.fetchall() if (match := pattern.match(name))]
    serving = set(
        ModelVersion.objects.filter(
            pk__in=version_ids, vectors_published=True, status__in=[VersionStatus.READY, VersionStatus.ACTIVE]
        ).values_list("pk", flat=True)
    )
    dropped = [version_id for version_id in version_ids if version_id not in serving]
    for version_id in dropped:
        _run(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"{prefix}{version_id}")))
    if dropped:
        logger.info("precompute.tables_dropped prefix=%s versions=%s", prefix, dropped)
    return dropped
