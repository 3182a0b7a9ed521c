"""Bulk mode and the import budget (catalog/importers/bulk.py), on the real PostgreSQL."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psycopg
import pytest
from django.db import connection, transaction
from django.db.models import Count, Q

from catalog.importers.base import copy_text_field, copy_text_lines, raw_cursor
from catalog.importers.bulk import (
    POPULARITY_INSERT_TRIGGER,
    ImportBudget,
    feedback_bulk_window,
    rebuild_pays,
    table_rows_estimate,
)
from catalog.importers.interactions import InteractionColumns, interactions_import
from catalog.importers.synthetic import plan_catalog
from catalog.importers.synthetic_loader import synthetic_catalog_generate
from catalog.importers.tables import lines_estimate
from catalog.models import Feedback, Item


def _schema() -> dict:
    """What bulk mode drops and must give back: feedback's indexes, foreign keys, trigger state."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'catalog_feedback'")
        indexes = sorted(cursor.fetchall())
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'catalog_feedback'::regclass ORDER BY 1"
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'catalog_feedback'::regclass "
            "AND NOT tgisinternal ORDER BY 1"
        )
        triggers = cursor.fetchall()
    return {"indexes": indexes, "constraints": constraints, "triggers": triggers}


def _popularity_mismatches() -> list:
    in_force = Q(feedback__is_current=True) | Q(feedback__is_current__isnull=True)
    counted = Item.objects.annotate(n=Count("feedback", filter=in_force))
    return [(item.external_id, item.popularity, item.n) for item in counted if item.popularity != item.n]


# --- pure parts ---------------------------------------------------------------------------------


def test_the_budget_splits_into_work_mem_maintenance_batches_and_copy_blocks():
    budget = ImportBudget(memory_bytes=256 << 20)
    assert budget.work_mem_bytes == 64 << 20
    assert budget.maintenance_work_mem_bytes == 128 << 20
    assert budget.batch_bytes == 64 << 20
    assert budget.copy_block_bytes == 4 << 20
    assert ImportBudget.staged_bytes(1000, 10) == 1000 + 10 * 48
    with pytest.raises(ValueError, match="below 1 MiB"):
        ImportBudget(memory_bytes=512 << 10)


def test_rebuild_pays_from_the_ratio_on():
    assert rebuild_pays(incoming_rows=25, existing_rows=100, ratio=0.25)
    assert not rebuild_pays(incoming_rows=24, existing_rows=100, ratio=0.25)
    assert rebuild_pays(incoming_rows=1, existing_rows=0, ratio=0.25)  # an empty table
    assert not rebuild_pays(incoming_rows=0, existing_rows=0, ratio=0.25)  # nothing coming


def test_copy_text_lines_escapes_exactly_as_field_by_field():
    rows = [
        (1, "plain", "ids", 4.0, None),
        (2, "tab\tinside", "back\\slash", None, "x"),
        (3, "line\nbreak", "carriage\rreturn", 1.5, ""),
        (4, None, None, None, None),
    ]
    expected = "".join("\t".join(copy_text_field(value) for value in row) + "\n" for row in rows)
    assert copy_text_lines(rows) == expected.encode()
    assert copy_text_lines([]) == b""


def test_lines_estimate_scales_the_sample_and_leaves_pipes_alone(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("".join(f"{n:06d},item,1\n" for n in range(100_000)))  # 14 bytes a line
    assert lines_estimate(path, sample_bytes=14 * 1000) == 100_000
    assert abs(lines_estimate(path, sample_bytes=4096) - 100_000) < 500  # a sample that cuts a line
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    assert lines_estimate(pipe) == 0  # reading it would consume (and here block on) its rows


# --- on the database ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_bulk_load_gives_back_every_index_constraint_and_trigger_and_exact_popularity(caplog, settings):
    # The row estimate (pg_class.reltuples) survives a rolled-back test's ANALYZE, so an
    # emptied table may still look full: force bulk mode rather than rely on it.
    settings.IMPORT_REBUILD_RATIO = 0.0
    before = _schema()
    caplog.set_level(logging.INFO, logger="catalog.importers.bulk")
    plan = plan_catalog(users=200, items=300, interactions=5000, clusters=3, seed=3)
    summary = synthetic_catalog_generate(plan=plan, progress=False)

    assert "import.bulk_mode table=catalog_feedback bulk=True" in caplog.text
    assert summary.added["feedback"] == summary.events == 5000
    assert _schema() == before
    assert _popularity_mismatches() == []
    # The trigger is back on: a later write through the service counts again.
    item = Item.objects.get(external_id="syn-item-0")
    Feedback.objects.create(
        user_id=Feedback.objects.first().user_id, item=item, kind_id="view", created_at=item.created_at
    )
    assert _popularity_mismatches() == []


def _write_events(path: Path, rows: list[tuple[str, str, float, int]]) -> None:
    path.write_text("user,item,count,time\n" + "".join(f"{u},{i},{v:g},{t}\n" for u, i, v, t in rows))


@pytest.mark.django_db
@pytest.mark.parametrize("ratio", [0.0, 1e12], ids=["bulk", "indexed"])
def test_bulk_and_indexed_imports_add_the_same_rows_over_many_batches(tmp_path, settings, caplog, ratio):
    settings.IMPORT_REBUILD_RATIO = ratio
    caplog.set_level(logging.INFO, logger="catalog.importers.bulk")
    rows = [(f"u{n % 97}", f"i{n % 1013}", float(n % 7), 1_600_000_000 + n) for n in range(30_000)]
    _write_events(tmp_path / "plays.csv", rows)
    columns = InteractionColumns(user="user", item="item", value="count", timestamp="time")
    # A 1 MiB budget: 256 KiB batches, so the 30k rows cross several batch seams.
    budget = ImportBudget(memory_bytes=1 << 20)

    summary = interactions_import(path=tmp_path / "plays.csv", columns=columns, progress=False, budget=budget)

    assert f"table=catalog_feedback bulk={ratio == 0.0}" in caplog.text
    distinct_pairs = {(u, i) for u, i, _, _ in rows}
    assert summary.events == 30_000
    assert summary.added["feedback"] == len(distinct_pairs) == Feedback.objects.filter(kind="play").count()
    assert _popularity_mismatches() == []
    again = interactions_import(path=tmp_path / "plays.csv", columns=columns, progress=False, budget=budget)
    assert again.added["feedback"] == 0 and again.events == 30_000


@pytest.mark.django_db
def test_an_error_inside_bulk_mode_rolls_the_dropped_indexes_back(settings):
    settings.IMPORT_REBUILD_RATIO = 0.0  # whatever the planner's row estimate says
    before = _schema()
    with pytest.raises(RuntimeError), transaction.atomic():
        cursor = raw_cursor()
        with feedback_bulk_window(cursor, incoming_rows=10) as bulk:
            assert bulk
            # Only the primary key stays: the partial unique indexes are rebuilt (and so checked) at the end.
            assert [name for name, _ in _schema()["indexes"]] == ["catalog_feedback_pkey"]
            raise RuntimeError("the import fails half-way")
    assert _schema() == before


@pytest.mark.django_db(transaction=True)
def test_other_sessions_wait_for_a_bulk_import_and_never_see_its_rows(settings):
    from tests.recommender.conftest import _test_database_url

    settings.IMPORT_REBUILD_RATIO = 0.0
    url = _test_database_url()
    with psycopg.connect(url) as importer, psycopg.connect(url, autocommit=True) as reader:
        cursor = importer.cursor()
        window = feedback_bulk_window(cursor, incoming_rows=10)
        assert window.__enter__()
        reader.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            reader.execute("SELECT count(*) FROM catalog_feedback")
        importer.rollback()
        assert reader.execute("SELECT count(*) FROM catalog_feedback").fetchone()[0] == 0
        triggers = reader.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = %s", [POPULARITY_INSERT_TRIGGER]
        ).fetchall()
        assert triggers == [("O",)]


@pytest.mark.django_db
def test_the_row_estimate_counts_rows_added_since_the_last_analyze():
    cursor = raw_cursor()
    cursor.execute("CREATE TEMP TABLE estimate_probe (n int8, padding text)")
    cursor.execute("INSERT INTO estimate_probe SELECT n, repeat('x', 50) FROM generate_series(1, 300) AS n")
    assert table_rows_estimate(cursor, "estimate_probe") == 300  # never analysed: counted
    cursor.execute("INSERT INTO estimate_probe SELECT n, repeat('x', 50) FROM generate_series(1, 19700) AS n")
    cursor.execute("ANALYZE estimate_probe")
    cursor.execute("INSERT INTO estimate_probe SELECT n, repeat('x', 50) FROM generate_series(1, 20000) AS n")
    assert 38_000 <= table_rows_estimate(cursor, "estimate_probe") <= 42_000  # 40,000 by density x pages


@pytest.mark.django_db
def test_feedback_keeps_only_the_indexes_a_query_reads():
    # Migration 0008: no single-column copies of the composite indexes' leading columns, no
    # varchar_pattern_ops copies, and the idempotency key unique only where it is set.
    assert [name for name, _ in _schema()["indexes"]] == [
        "catalog_feedback_pkey",
        "feedback_idempotency_key_unique",
        "feedback_item_kind_idx",
        "feedback_one_current_state",
        "feedback_time_item_idx",
        "feedback_user_time_idx",
    ]
    definition = dict(_schema()["indexes"])["feedback_idempotency_key_unique"]
    assert "UNIQUE" in definition and "WHERE (idempotency_key IS NOT NULL)" in definition


@pytest.mark.django_db
@pytest.mark.parametrize("ratio", [0.0, 1e9], ids=["bulk", "indexes kept"])
def test_repeatable_events_are_stored_once_and_a_second_import_adds_nothing(tmp_path, settings, ratio):
    settings.IMPORT_REBUILD_RATIO = ratio
    lines = ["user,item,time", "u1,i1,100", "u1,i1,100", "u1,i1,200", "u2,i1,100"]
    (tmp_path / "views.csv").write_text("\n".join(lines) + "\n")
    columns = InteractionColumns(user="user", item="item", timestamp="time")

    first = interactions_import(path=tmp_path / "views.csv", columns=columns, kind="view", progress=False)
    again = interactions_import(path=tmp_path / "views.csv", columns=columns, kind="view", progress=False)

    assert first.added["feedback"] == 3 == Feedback.objects.filter(kind="view").count()
    assert again.added["feedback"] == 0
    assert Item.objects.get(external_id="i1").popularity == 3
