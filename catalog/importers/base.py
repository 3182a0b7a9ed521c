"""Shared machinery of the bulk importers: bad-row reports, summaries, COPY staging, progress.

Every importer follows the same shape, so that a run is streaming, idempotent and atomic:

1. rows are parsed one line at a time (never a whole file in memory) and bad ones are kept
   aside as :class:`BadRow` (file, line, reason) while good ones go on;
2. good rows are streamed with PostgreSQL ``COPY`` into ``TEMP`` staging tables;
3. ``INSERT … SELECT … ON CONFLICT DO NOTHING`` moves them into the real tables, so a second
   run adds nothing, and the whole run sits in one transaction, so an abort half-way leaves
   no partial rows visible to anyone.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import psycopg

# How many bad rows a summary keeps verbatim; the count is always exact.
BAD_ROWS_KEPT = 1000


class CatalogImportError(Exception):
    """An import cannot run at all (as opposed to a bad row, which is reported and skipped)."""


class BadRowError(ValueError):
    """One line cannot be imported; the message is the reason shown to the person importing."""


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ImportSummary:
    """What one import run did: rows added per table and the rows it skipped."""

    source: str
    layout: str = ""
    added: dict[str, int] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)
    bad_row_count: int = 0
    seconds: float = 0.0
    # Interaction rows read (good ones staged, whether or not a re-run adds them): the unit of
    # the run's throughput, which bench/import_speed.py reads from the --json summary.
    events: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def add(self, table: str, count: int) -> None:
        self.added[table] = self.added.get(table, 0) + max(count, 0)

    def bad(self, file: str, line: int, reason: str) -> None:
        self.bad_row_count += 1
        if len(self.bad_rows) < BAD_ROWS_KEPT:
            self.bad_rows.append(BadRow(file=file, line=line, reason=reason))

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layout": self.layout,
            "added": dict(self.added),
            "bad_row_count": self.bad_row_count,
            "bad_rows": [{"file": row.file, "line": row.line, "reason": row.reason} for row in self.bad_rows],
            "bad_rows_truncated": self.bad_row_count > len(self.bad_rows),
            "seconds": round(self.seconds, 3),
            "events": self.events,
            "events_per_second": round(self.events_per_second, 1),
        }


def progress_bar(*, enabled: bool, total: int | None, desc: str, unit: str = "B"):
    """A tqdm bar on stderr, silent when disabled or when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=not (enabled and sys.stderr.isatty()),
        leave=False,
    )


# --- COPY helpers -------------------------------------------------------------------------------

_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text_field(value: Any) -> str:
    """One field in COPY text format; ``None`` becomes ``\\N``."""
    if value is None:
        return "\\N"
    return str(value).translate(_TEXT_ESCAPES)


def copy_text_lines(rows: Iterable[tuple]) -> bytes:
    """Pre-format rows as COPY text bytes: one ``write`` per chunk is far cheaper than per row.

    Most rows need no escaping, and finding that out on the joined line takes a few C-level
    string scans; a ``translate`` per field was 7 times slower (12 µs against 1.7 µs a row of the
    generic importer, most of its Python time). A row whose joined text holds a backslash, a line
    break or more tabs than separators is escaped field by field, exactly as before.
    """
    lines = []
    for row in rows:
        fields = ["" if value is None else str(value) for value in row]
        line = "\t".join(fields)
        if line.count("\t") != len(fields) - 1 or "\\" in line or "\n" in line or "\r" in line:
            line = "\t".join(copy_text_field(value) for value in row)
        elif None in row:
            line = "\t".join("\\N" if value is None else text for value, text in zip(row, fields, strict=True))
        lines.append(line)
    if not lines:
        return b""
    lines.append("")
    return "\n".join(lines).encode("utf-8")


_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_BINARY_TRAILER = struct.pack(">h", -1)
_BINARY_TYPES = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4", "float8": ">f8"}


def copy_binary_block(columns: list[tuple[str, np.ndarray]]) -> bytes:
    """Encode numeric columns as one COPY BINARY stream (header, tuples, trailer).

    Parameters
    ----------
    columns : list of (pg_type, ndarray)
        ``pg_type`` is one of int2, int4, int8, float4, float8; every array has shape (n,).
        No NULLs: these blocks carry generated numbers only.

    Returns
    -------
    bytes
        Ready for ``copy.write`` after ``COPY … FROM STDIN (FORMAT BINARY)``. Built with one
        numpy structured array, so a million rows take milliseconds instead of a Python loop.
    """
    if not columns:
        raise ValueError("copy_binary_block needs at least one column")
    length = len(columns[0][1])
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for position, (pg_type, values) in enumerate(columns):
        if len(values) != length:
            raise ValueError(f"column {position} has {len(values)} values, expected {length}")
        fields += [(f"size{position}", ">i4"), (f"value{position}", _BINARY_TYPES[pg_type])]
    block = np.empty(length, dtype=np.dtype(fields))
    block["count"] = len(columns)
    for position, (pg_type, values) in enumerate(columns):
        numpy_type = np.dtype(_BINARY_TYPES[pg_type])
        block[f"size{position}"] = numpy_type.itemsize
        block[f"value{position}"] = values
    return _BINARY_HEADER + block.tobytes() + _BINARY_TRAILER


def copy_binary(cursor, table: str, column_names: list[str], columns: list[tuple[str, np.ndarray]]) -> int:
    """COPY numeric numpy columns into ``table`` (a staging table) in one binary write; returns bytes sent."""
    statement = f"COPY {table} ({', '.join(column_names)}) FROM STDIN (FORMAT BINARY)"
    block = copy_binary_block(columns)
    with cursor.copy(statement) as copy:
        copy.write(block)
    return len(block)


def copy_text(cursor, table: str, column_names: list[str], payload: bytes) -> int:
    """COPY pre-formatted text bytes (see :func:`copy_text_lines`) into ``table``; returns bytes sent."""
    if not payload:
        return 0
    with cursor.copy(f"COPY {table} ({', '.join(column_names)}) FROM STDIN") as copy:
        copy.write(payload)
    return len(payload)


def temp_table_create(cursor, name: str, columns_sql: str) -> None:
    """(Re)create a TEMP staging table that disappears with the transaction.

    The explicit DROP matters when the import runs inside an outer transaction (tests, or a
    caller's ``atomic``): ON COMMIT DROP would only fire at the outer commit.
    """
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    cursor.execute(f"CREATE TEMP TABLE {name} ({columns_sql}) ON COMMIT DROP")


def foreign_keys_checked_per_statement(cursor) -> None:
    """Check Django's deferred foreign keys at each statement instead of at COMMIT.

    Django creates foreign keys ``DEFERRABLE INITIALLY DEFERRED``: left so, ten million rows
    queue thirty million pending checks in the backend's memory until COMMIT. Checked per
    statement the work is the same but the queue stays one chunk long. Call
    :func:`foreign_keys_deferred_again` before leaving the transaction, so a caller's outer
    transaction (tests, a larger ``atomic``) keeps Django's usual behaviour afterwards.
    """
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def foreign_keys_deferred_again(cursor) -> None:
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def raw_cursor() -> psycopg.Cursor[Any]:
    """The psycopg 3 cursor under Django's connection, for COPY; call inside ``atomic``."""
    from django.db import connection

    connection.ensure_connection()
    return connection.connection.cursor()
