"""Delimited text files (CSV, TSV, ``.dat``) read as numbered rows, with columns named or numbered.

The generic importer reads any such file through here: the delimiter is given or detected, the
encoding is given (UTF-8 by default), CRLF and LF endings both work, and a column is named by its
header text or by its 1-based position (``3``, as ``cut -f3`` counts). Whether line 1 is a header
is given or detected (see :func:`table_open`). Rows stream one at a time; nothing is held.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from catalog.importers.base import CatalogImportError

HEADER_AUTO, HEADER_YES, HEADER_NO = "auto", "yes", "no"
# Detected from line 1 when the extension does not say: the candidate found most often wins,
# ties in this order (tab first: a title may hold commas, rarely tabs).
DELIMITER_CANDIDATES = ("\t", ",", ";", "|")
_DELIMITERS_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


@dataclass(frozen=True)
class TableFormat:
    """How to read a delimited file.

    ``delimiter`` None detects it; ``header`` is ``auto``, ``yes`` or ``no``. Tab-separated files
    are read without quote processing (Last.fm and MovieLens write titles like ``"Weird Al"
    Yankovic`` bare); any other delimiter follows CSV quoting (``"a, b"`` is one field).
    """

    delimiter: str | None = None
    encoding: str = "utf-8"
    header: str = HEADER_AUTO

    def __post_init__(self) -> None:
        if self.header not in (HEADER_AUTO, HEADER_YES, HEADER_NO):
            raise CatalogImportError(f"header must be auto, yes or no, not {self.header!r}.")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise CatalogImportError(f"The delimiter must be one character, not {self.delimiter!r} (use \\t for tab).")
        try:
            "".encode(self.encoding)
        except LookupError:
            raise CatalogImportError(f"Unknown encoding {self.encoding!r}; try utf-8 or latin-1.") from None


def delimiter_name(delimiter: str) -> str:
    return _DELIMITER_NAMES.get(delimiter, repr(delimiter))


def delimiter_detect(path: Path, first_line: str) -> str:
    """The delimiter of ``path``: from a .csv/.tsv/.tab extension, else the commonest candidate on line 1."""
    by_suffix = _DELIMITERS_BY_SUFFIX.get(path.suffix.lower())
    if by_suffix:
        return by_suffix
    counts = {candidate: first_line.count(candidate) for candidate in DELIMITER_CANDIDATES}
    best = max(DELIMITER_CANDIDATES, key=lambda candidate: counts[candidate])
    return best if counts[best] else "\t"


class _CountingReader(io.RawIOBase):
    """A binary file that advances a progress bar by the bytes read."""

    def __init__(self, handle, bar) -> None:
        self._handle, self._bar = handle, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._handle.readinto(buffer)
        self._bar.update(count)
        return count


def _first_line(path: Path, encoding: str) -> str:
    with path.open("rb") as handle:
        return handle.readline(1 << 20).decode(encoding, errors="replace").rstrip("\r\n")


def _records(path: Path, table_format: TableFormat, delimiter: str, bar) -> Iterator[tuple[int, list[str] | str]]:
    """(line number, fields) per record, or (line number, reason) for a line csv cannot read.

    Line numbers are physical lines (a quoted field may span several; the record's last line is
    given). Blank lines are skipped. A byte sequence that is not valid in the encoding stops the
    import: guessing would store mangled titles.
    """
    with path.open("rb") as raw:
        text = io.TextIOWrapper(
            io.BufferedReader(_CountingReader(raw, bar)), encoding=table_format.encoding, errors="strict", newline=""
        )
        if delimiter == "\t":
            reader = csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield reader.line_num, f"unreadable line ({error})"
                continue
            except UnicodeDecodeError as error:
                raise CatalogImportError(
                    f"{path.name}: near line {reader.line_num + 1}, the bytes are not valid {table_format.encoding} "
                    f"({error.reason}); pass the file's encoding (for example --encoding latin-1)."
                ) from None
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            yield reader.line_num, fields


def _column_index(spec: str, header: list[str] | None, path: Path) -> int:
    spec = spec.strip()
    if spec.isdigit():
        if int(spec) < 1:
            raise CatalogImportError(f"Column positions start at 1 (as in `cut -f`); got {spec} for {path.name}.")
        return int(spec) - 1
    if header is None:
        raise CatalogImportError(f"{path.name} has no header line, so name its columns by position (1, 2, …).")
    names = [name.strip() for name in header]
    for wanted in (spec, spec.lower()):
        matches = [index for index, name in enumerate(names) if (name if wanted == spec else name.lower()) == wanted]
        if matches:
            return matches[0]
    raise CatalogImportError(f"{path.name} has no column {spec!r}; its header names {', '.join(map(repr, names))}.")


@dataclass
class Table:
    """An open delimited file: its column positions by role, and its data rows."""

    path: Path
    delimiter: str
    header: list[str] | None
    columns: dict[str, int]  # role -> 0-based position
    rows: Iterator[tuple[int, list[str] | str]]  # (line, fields) or (line, reason of an unreadable line)

    @property
    def width(self) -> int:
        """The fewest fields a row needs to hold every mapped column."""
        return max(self.columns.values()) + 1

    def describe(self) -> str:
        header = "header on line 1" if self.header is not None else "no header"
        return f"{self.path.name}: {delimiter_name(self.delimiter)}-separated, {header}"


def table_open(
    path: Path,
    table_format: TableFormat,
    columns: dict[str, str],
    *,
    bar,
    typed: dict[str, Callable[[str], bool]] | None = None,
) -> Table:
    """Open ``path`` and resolve ``columns`` (role -> header name or 1-based position).

    Header detection (``header="auto"``): line 1 is a header when any column is named; with
    positions only, it is a header when some mapped column reads as a number (or, for a role in
    ``typed``, passes that role's check) on line 2 but not on line 1 — ``userID`` over ``2``.
    So a file of ids and counts without a header is read from line 1, and one with a header
    skips it, without being told.
    """
    if not path.is_file():
        raise CatalogImportError(f"{path} is not a file.")
    delimiter = table_format.delimiter or delimiter_detect(path, _first_line(path, table_format.encoding))
    records = _records(path, table_format, delimiter, bar)
    first = list(itertools.islice(records, 2))
    named = any(not spec.strip().isdigit() for spec in columns.values())
    if table_format.header == HEADER_NO and named:
        raise CatalogImportError(f"{path.name}: columns named without a header; name them by position (1, 2, …).")
    has_header = table_format.header == HEADER_YES or (table_format.header == HEADER_AUTO and named)
    if table_format.header == HEADER_AUTO and not named and len(first) == 2:
        has_header = _looks_like_header(first[0][1], first[1][1], columns, typed or {})
    header: list[str] | None = None
    if has_header and first:
        line, fields = first.pop(0)
        if isinstance(fields, str):
            raise CatalogImportError(f"{path.name}:{line}: the header line is unreadable: {fields}.")
        header = fields
    resolved = {role: _column_index(spec, header, path) for role, spec in columns.items()}
    return Table(path=path, delimiter=delimiter, header=header, columns=resolved, rows=itertools.chain(first, records))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_header(first, second, columns: dict[str, str], typed: dict[str, Callable[[str], bool]]) -> bool:
    if isinstance(first, str) or isinstance(second, str):
        return False
    for role, spec in columns.items():
        index = int(spec) - 1
        if index < 0 or index >= len(first) or index >= len(second):
            continue
        check = typed.get(role, _is_number)
        if check(second[index].strip()) and not check(first[index].strip()):
            return True
    return False


def lines_estimate(path: Path, *, sample_bytes: int = 1 << 20) -> int:
    """About how many lines ``path`` holds: its size over the mean line length of its first MiB.

    Cheap (one read of the sample); it decides whether an import is large next to the table it
    fills (`catalog.importers.bulk.rebuild_pays`), where a rough count is all that is needed.
    A pipe or other stream is 0 (unknown): reading a sample would consume the rows it holds.
    """
    if not path.is_file():
        return 0
    size = path.stat().st_size
    with path.open("rb") as handle:
        sample = handle.read(sample_bytes)
    if not sample:
        return 0
    return max(1, round(size * max(sample.count(b"\n"), 1) / len(sample)))
