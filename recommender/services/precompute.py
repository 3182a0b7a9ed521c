"""Precomputed related-item lists (seed 000: precompute static queries).

"Items related to X" does not depend on who asks, so after each activation a Celery task runs
the candidate and scoring stages once per item and stores the ranked list in a per-version
table, like the vector tables::

    rec_related_v<N>(item_id bigint PRIMARY KEY, related_ids bigint[], scores real[],
                     sources jsonb, computed_at timestamptz)

Serving reads one row (`recommender.selectors.related_precomputed_fetch`) and still applies the
re-ranking rules (they may change at any time and may depend on the visitor). An item without a
row (new since the run, or the table not yet filled) is computed live. A plain table rather than
a Django model: it lives and dies with a version, and is dropped here when a newer version's
table is written and the version it belongs to has lost its vectors (retired or failed);
`vectors_drop` does not know about it.
"""

from __future__ import annotations

import json
import logging
import time

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from catalog.models import Item

from ..candidates.base import Context
from ..models import ModelVersion, VersionStatus
from ..selectors import related_table
from ..serving.surfaces import ranked_candidates
from ..vectors.base import AnnFilters
from ..vectors.pgvector import PgvectorIndex

logger = logging.getLogger(__name__)

RELATED_STORED = 100  # per item, before the rules: enough for filters to leave k standing
WRITE_BATCH = 500


def _table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return bool(cursor.fetchone()[0])


def _table_create(version_id: int) -> None:
    table = sql.Identifier(related_table(version_id))
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table).as_string(connection.connection))
        cursor.execute(
            sql.SQL(
                "CREATE TABLE {} (item_id bigint PRIMARY KEY, related_ids bigint[] NOT NULL, scores real[] NOT NULL, "
                "sources jsonb NOT NULL, computed_at timestamptz NOT NULL)"
            )
            .format(table)
            .as_string(connection.connection)
        )


def _rows_write(version_id: int, rows: list[tuple]) -> None:
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.executemany(
            sql.SQL("INSERT INTO {} (item_id, related_ids, scores, sources, computed_at) VALUES (%s, %s, %s, %s, %s)")
            .format(sql.Identifier(related_table(version_id)))
            .as_string(connection.connection),
            rows,
        )


def related_tables_drop_stale() -> list[int]:
    """Drop the related tables of versions whose vectors are gone (retired, failed or deleted)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^rec_related_v[0-9]+$'")
        version_ids = [int(name.removeprefix("rec_related_v")) for (name,) in cursor.fetchall()]
    serving = set(
        ModelVersion.objects.filter(
            pk__in=version_ids, vectors_published=True, status__in=[VersionStatus.READY, VersionStatus.ACTIVE]
        ).values_list("pk", flat=True)
    )
    dropped = [version_id for version_id in version_ids if version_id not in serving]
    with connection.cursor() as cursor:
        for version_id in dropped:
            cursor.execute(
                sql.SQL("DROP TABLE IF EXISTS {}")
                .format(sql.Identifier(related_table(version_id)))
                .as_string(connection.connection)
            )
    if dropped:
        logger.info("precompute.related_dropped versions=%s", dropped)
    return dropped


def related_items_precompute(*, version: ModelVersion, limit: int = RELATED_STORED) -> int:
    """Compute and store the related lists of ``version``; returns the rows written.

    Only the ``settings.RELATED_PRECOMPUTE_MAX_ITEMS`` most popular active items: each costs one
    pipeline run, so a million-item catalogue would keep a worker busy for hours, while the head
    of the popularity curve is where related lists are asked for; the tail is computed live.
    Idempotent: the table is rebuilt from scratch in one transaction, so readers see either the
    previous complete table or the new complete one.
    """
    started = time.perf_counter()
    most_popular = Item.objects.filter(is_active=True).order_by("-popularity", "pk")
    item_ids = sorted(most_popular.values_list("pk", flat=True)[: settings.RELATED_PRECOMPUTE_MAX_ITEMS])
    written = 0
    with transaction.atomic():
        _table_create(version.pk)
        batch: list[tuple] = []
        now = timezone.now()
        for item_id in item_ids:
            context = Context(
                surface="related", now=now, version_id=version.pk, item_id=item_id, filters=AnnFilters(active_only=True)
            )
            ranked = [c for c in ranked_candidates(context) if c.item_id != item_id][:limit]
            batch.append(
                (
                    item_id,
                    [c.item_id for c in ranked],
                    [float(c.score or 0.0) for c in ranked],
                    json.dumps([c.sources for c in ranked]),
                    now,
                )
            )
            if len(batch) >= WRITE_BATCH:
                _rows_write(version.pk, batch)
                written += len(batch)
                batch = []
        _rows_write(version.pk, batch)
        written += len(batch)
    related_tables_drop_stale()
    logger.info(
        "precompute.related_done version=%s items=%s seconds=%.1f", version.pk, written, time.perf_counter() - started
    )
    return written


def related_precomputed_invalidate_near(*, version_id: int, item_id: int, n: int = RELATED_STORED) -> int:
    """Forget the stored lists that a changed item may now belong to; returns rows removed.

    A cold-start item was not there when the lists were computed. Its ``n`` nearest items by
    embedding are the ones whose related list it can enter (cosine is symmetric up to the
    neighbourhood size), so their rows, and its own, are deleted and computed live until the
    next precomputation.
    """
    table = related_table(version_id)
    if not _table_exists(table):
        return 0
    # The store's own index, not a request's: the in-process copy predates the new item.
    nearest = PgvectorIndex(version_id).item_neighbours([item_id], k=n, filters=AnnFilters(active_only=False))
    neighbours = [related_id for related_id, _ in nearest[item_id]]
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("DELETE FROM {} WHERE item_id = ANY(%s)")
            .format(sql.Identifier(table))
            .as_string(connection.connection),
            [[item_id, *neighbours]],
        )
        removed = cursor.rowcount
    logger.info("precompute.related_invalidated version=%s item=%s rows=%s", version_id, item_id, removed)
    return removed
