"""Precomputed related-item lists (seed 000: precompute static queries).

"Items related to X" does not depend on who asks, so after each activation a Celery task runs
the candidate and scoring stages once per item and stores the ranked list in a per-version
table, like the vector tables::

    rec_related_v<N>(item_id bigint PRIMARY KEY, related_ids bigint[], scores real[],
                     sources jsonb, computed_at timestamptz)

Serving reads one row (`recommender.selectors.related_precomputed_fetch`) and still applies the
re-ranking rules (they may change at any time and may depend on the visitor). An item without a
row (beyond the run's time budget, new since the run, or the table not yet filled) is computed
live by the same stages, so it gets the list a row would have held. A plain table rather than
a Django model: it lives and dies with a version, and is dropped here when a newer version's
table is written and the version it belongs to has lost its vectors (retired or failed);
`vectors_drop` does not know about it. What a run covered (items, of how many, seconds) is kept
as the table's comment (`recommender.selectors.related_precompute_coverage`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from catalog.models import Item

from ..candidates.base import Context
from ..generations import global_generation_fetch
from ..models import ModelVersion
from ..selectors import related_table
from ..serving.surfaces import ranked_candidates
from ..vectors.base import AnnFilters
from ..vectors.pgvector import PgvectorIndex
from .precompute_tables import building_lock, rows_write, table_create, table_exists, table_swap, tables_drop_stale

logger = logging.getLogger(__name__)

# The nearest items whose related lists a changed item can enter: the related source's default
# candidate count (recommender.candidates.DEFAULT_CANDIDATE_SIZES).
RELATED_NEIGHBOURHOOD = 100
WRITE_BATCH = 500


@dataclass(frozen=True)
class RelatedCoverage:
    """What one precomputation covered: the ``items`` most popular of ``of`` active items."""

    items: int
    of: int
    seconds: float
    stopped_by: str  # "complete", "time_budget" or "max_items"

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


_COLUMNS = ["item_id", "related_ids", "scores", "sources", "computed_at"]


def related_tables_drop_stale() -> list[int]:
    """Drop the related tables of versions whose vectors are gone (retired, failed or deleted)."""
    return tables_drop_stale(prefix="rec_related_v")


def _related_row(*, version: ModelVersion, item_id: int, now, limit: int | None, generation: int | None) -> tuple:
    context = Context(
        surface="related",
        now=now,
        version_id=version.pk,
        item_id=item_id,
        filters=AnnFilters(active_only=True),
        generation=generation,
    )
    ranked = [c for c in ranked_candidates(context) if c.item_id != item_id][:limit]
    return (
        item_id,
        [c.item_id for c in ranked],
        [float(c.score or 0.0) for c in ranked],
        json.dumps([c.sources for c in ranked]),
        now,
    )


def related_items_precompute(
    *, version: ModelVersion, limit: int | None = None, clock: Callable[[], float] = time.monotonic
) -> RelatedCoverage:
    """Compute and store the related lists of ``version``, most popular items first, within budget.

    Each item costs one pipeline run (10-18 ms on ml-100k), so a million-item catalogue would keep
    a worker busy for hours: items are computed in popularity order until
    ``settings.RELATED_PRECOMPUTE_SECONDS`` are spent (checked before each item, so a run
    overshoots by at most one item and the last write), or ``settings.RELATED_PRECOMPUTE_MAX_ITEMS``
    when that optional cap is set. The head of the popularity curve is where related lists are
    asked for; the tail is computed live, and answers the same list. The coverage is logged,
    returned and kept as the table's comment. Each row holds the whole ranked pool (``limit``
    None; 130 candidates at most with the default sizes), so the re-ranking rules, applied at
    request time, see what they would see live: a fixed cut (it was 100) left a filter that
    removes most items fewer survivors from the row than from the live pool. Idempotent: the
    table is rebuilt from scratch in one transaction, so readers see either the previous
    complete table or the new complete one. The table fills outside any transaction (under
    `building_lock`) with the ``global`` generation read first, so the process's copies (the
    catalogue, the vector index) answer each item's pipeline run as they answer a request.
    """
    budget_seconds = float(settings.RELATED_PRECOMPUTE_SECONDS)
    max_items = settings.RELATED_PRECOMPUTE_MAX_ITEMS
    started = clock()
    active = Item.objects.filter(is_active=True)
    name, building = related_table(version.pk), f"{related_table(version.pk)}_building"
    written, stopped_by = 0, "complete"
    generation = global_generation_fetch()
    with building_lock(building):
        total = active.count()
        table_create(
            building,
            columns="item_id bigint NOT NULL, related_ids bigint[] NOT NULL, scores real[] NOT NULL, "
            "sources jsonb NOT NULL, computed_at timestamptz NOT NULL",
        )
        batch: list[tuple] = []
        now = timezone.now()
        item_ids = list(active.order_by("-popularity", "pk").values_list("pk", flat=True))
        for item_id in item_ids:
            if max_items is not None and written + len(batch) >= max_items:
                stopped_by = "max_items"
                break
            if clock() - started >= budget_seconds:
                stopped_by = "time_budget"
                break
            batch.append(_related_row(version=version, item_id=item_id, now=now, limit=limit, generation=generation))
            if len(batch) >= WRITE_BATCH:
                rows_write(building, columns=_COLUMNS, rows=batch)
                written += len(batch)
                batch = []
        with transaction.atomic():
            rows_write(building, columns=_COLUMNS, rows=batch)
            written += len(batch)
            coverage = RelatedCoverage(
                items=written, of=total, seconds=round(clock() - started, 3), stopped_by=stopped_by
            )
            table_swap(building=building, name=name, key="item_id", coverage=asdict(coverage))
    related_tables_drop_stale()
    logger.info(
        "precompute.related_done version=%s items=%s of=%s seconds=%.1f items_per_second=%.1f stopped_by=%s "
        "budget_seconds=%s max_items=%s",
        version.pk,
        coverage.items,
        coverage.of,
        coverage.seconds,
        coverage.items_per_second,
        coverage.stopped_by,
        budget_seconds,
        max_items,
    )
    return coverage


def related_precomputed_invalidate_near(
    *, version_id: int, item_id: int, n: int = RELATED_NEIGHBOURHOOD, space: str = ""
) -> int:
    """Forget the stored lists that a changed item may now belong to; returns rows removed.

    A cold-start item was not there when the lists were computed. Its ``n`` nearest items by
    embedding are the ones whose related list it can enter (cosine is symmetric up to the
    neighbourhood size), so their rows, and its own, are deleted and computed live until the
    next precomputation. ``space``: the vector space the item joined (a vector family's name, or
    "" for LightFM's), whose neighbourhood it can enter through that family's related candidates.
    """
    table = related_table(version_id)
    if not table_exists(table):
        return 0
    # The store's own index, not a request's: the in-process copy predates the new item.
    nearest = PgvectorIndex(version_id, space=space).item_neighbours(
        [item_id], k=n, filters=AnnFilters(active_only=False)
    )
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
