"""Write a :class:`~catalog.importers.synthetic.CatalogPlan` into the catalogue through COPY.

Every chunk of the plan is encoded as one COPY BINARY block (numbers only; the text columns
such as ``syn-item-<i>`` are built by PostgreSQL in the ``INSERT … SELECT``), so a million items
and ten million ratings stream through without a Python object per row. Ratings chunks
accumulate in staging up to the import budget's batch size and move in with one statement per
batch; a plan that is large next to what the catalogue holds loads in bulk mode
(`catalog.importers.bulk`). All of it runs in one transaction: an interrupted run leaves nothing
behind, and a second run of the same plan adds 0.
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
from django.db import transaction

from catalog.importers.base import (
    CatalogImportError,
    ImportSummary,
    copy_binary,
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
from catalog.importers.synthetic import CatalogPlan
from catalog.sql import ITEM_FEATURE_TABLE, ITEM_TABLE
from config import metrics

logger = logging.getLogger(__name__)

ITEM_PREFIX = "syn-item-"
USER_PREFIX = "syn-user-"
PROVIDER_PREFIX = "syn-provider-"


@metrics.import_observed("synthetic")
def synthetic_catalog_generate(
    *, plan: CatalogPlan, progress: bool = True, budget: ImportBudget | None = None
) -> ImportSummary:
    """Load ``plan`` into the catalogue; refuses to mix with a different synthetic plan."""
    budget = budget or import_budget()
    summary = ImportSummary(source=plan.signature(), layout="synthetic")
    started = time.monotonic()
    total = plan.items + plan.users + plan.interactions
    with transaction.atomic(), progress_bar(enabled=progress, total=total, desc="generate", unit="row") as bar:
        cursor = raw_cursor()
        import_session_tune(cursor, budget)
        foreign_keys_checked_per_statement(cursor)
        _refuse_other_plan(cursor, plan)
        cluster_features, noise_features, segment_features = _features_create(cursor, plan, summary)
        phase_started = time.monotonic()
        # The item windows stay open through the ratings: the popularity update at the end of
        # the feedback window then rewrites items without their secondary indexes too.
        with (
            table_bulk_window(cursor, ITEM_TABLE, incoming_rows=plan.items, unique=True) as items_bulk,
            table_bulk_window(
                cursor, ITEM_FEATURE_TABLE, incoming_rows=2 * plan.items, foreign_keys=True, unique=True
            ) as links_bulk,
        ):
            _items_load(cursor, plan, summary, cluster_features, noise_features, bar, bulk=(items_bulk, links_bulk))
            phase_started = _phase_logged("items", phase_started)
            _users_load(cursor, plan, summary, segment_features, bar)
            phase_started = _phase_logged("users", phase_started)
            with feedback_bulk_window(cursor, incoming_rows=plan.interactions) as feedback_bulk:
                _ratings_load(cursor, plan, summary, bar, budget, bulk=feedback_bulk)
            phase_started = _phase_logged("ratings", phase_started)
        _phase_logged("indexes", phase_started)
        foreign_keys_deferred_again(cursor)
    summary.seconds = time.monotonic() - started
    logger.info("synthetic.generated plan=%r added=%s seconds=%.1f", plan.signature(), summary.added, summary.seconds)
    return summary


def _phase_logged(phase: str, started: float) -> float:
    now = time.monotonic()
    logger.info("synthetic.phase_done phase=%s seconds=%.1f", phase, now - started)
    return now


def _refuse_other_plan(cursor, plan: CatalogPlan) -> None:
    # Mixing two plans would give items two genres and users ratings from two structures, so
    # the planted answer would be wrong; the first item records which plan made the catalogue.
    row = cursor.execute(
        "SELECT metadata -> 'synthetic' ->> 'plan' FROM catalog_item WHERE external_id = %s", [f"{ITEM_PREFIX}0"]
    ).fetchone()
    if row is not None and row[0] != plan.signature():
        raise CatalogImportError(
            f"This database already holds a synthetic catalogue made with '{row[0]}', not "
            f"'{plan.signature()}'. Use a fresh database, or repeat the same arguments (that adds 0)."
        )


def _features_create(cursor, plan: CatalogPlan, summary: ImportSummary):
    """The few features a plan uses, created once; returns their ids as lookup arrays."""
    wanted = (
        [("item", "genre", f"cluster-{c}") for c in range(plan.clusters)]
        + [("item", "tag", f"noise-{k}") for k in range(plan.noise_tags)]
        + [("user", "segment", str(c)) for c in range(plan.clusters)]
    )
    cursor.execute(
        """
        INSERT INTO catalog_feature (subject, type, value)
        SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
        ON CONFLICT (subject, type, value) DO NOTHING
        """,
        [[w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted]],
    )
    summary.add("features", cursor.rowcount)
    ids = {
        (subject, kind, value): feature_id
        for feature_id, subject, kind, value in cursor.execute(
            "SELECT id, subject, type, value FROM catalog_feature WHERE (type = 'genre' AND value LIKE 'cluster-%') "
            "OR (type = 'tag' AND value LIKE 'noise-%') OR type = 'segment'"
        ).fetchall()
    }

    def lookup(subject: str, kind: str, values: list[str]) -> np.ndarray:
        return np.array([ids[(subject, kind, value)] for value in values], dtype=np.int64)

    return (
        lookup("item", "genre", [f"cluster-{c}" for c in range(plan.clusters)]),
        lookup("item", "tag", [f"noise-{k}" for k in range(plan.noise_tags)]),
        lookup("user", "segment", [str(c) for c in range(plan.clusters)]),
    )


def _items_load(cursor, plan, summary, cluster_features, noise_features, bar, *, bulk: tuple[bool, bool]) -> None:
    """Stage every item and feature link, then move each in with one statement.

    One statement per table, not one per chunk: in bulk mode (``bulk``, for the items and the
    links: each table's unique index suspended too) the anti-join against existing items sees the table as it was before
    the statement, so it must see every staged item at once. The links join the plan numbers to
    row ids through the integer map (:func:`_id_map_create`), not through text external ids.
    """
    temp_table_create(cursor, "syn_items", "idx int4, cluster int4, provider int4, published_unix int8")
    temp_table_create(cursor, "syn_item_features", "idx int4, feature_id int8")
    metadata = json.dumps({"plan": plan.signature()})
    for chunk in plan.item_chunks():
        copy_binary(
            cursor,
            "syn_items",
            ["idx", "cluster", "provider", "published_unix"],
            [("int4", chunk.index), ("int4", chunk.cluster), ("int4", chunk.provider), ("int8", chunk.published_unix)],
        )
        has_second = chunk.noise_tag[:, 1] >= 0
        idx = np.concatenate([chunk.index, chunk.index, chunk.index[has_second]])
        features = np.concatenate(
            [
                cluster_features[chunk.cluster],
                noise_features[chunk.noise_tag[:, 0]],
                noise_features[chunk.noise_tag[has_second, 1]],
            ]
        )
        copy_binary(cursor, "syn_item_features", ["idx", "feature_id"], [("int4", idx), ("int8", features)])
        bar.update(len(chunk.index))
    cursor.execute("ANALYZE syn_items")
    items_bulk, links_bulk = bulk
    absent = (
        f"NOT EXISTS (SELECT 1 FROM {ITEM_TABLE} AS existing WHERE existing.external_id = '{ITEM_PREFIX}' || idx)"
        if items_bulk
        else "true"
    )
    cursor.execute(
        f"""
        INSERT INTO catalog_item (external_id, title, description, published_at, provider, is_active,
                                  metadata, created_at, updated_at)
        SELECT '{ITEM_PREFIX}' || idx, 'Synthetic item ' || idx, '', to_timestamp(published_unix),
               '{PROVIDER_PREFIX}' || provider, true,
               jsonb_build_object('synthetic', %s::jsonb || jsonb_build_object('cluster', cluster)),
               now(), now()
        FROM syn_items
        WHERE {absent}
        {"" if items_bulk else "ON CONFLICT (external_id) DO NOTHING"}
        """,
        [metadata],
    )
    summary.add("items", cursor.rowcount)
    _id_map_create(cursor, "syn_item_map", ITEM_TABLE, ITEM_PREFIX)
    cursor.execute("ANALYZE syn_item_features")
    absent = (
        f"NOT EXISTS (SELECT 1 FROM {ITEM_FEATURE_TABLE} AS existing "
        "WHERE existing.item_id = items.id AND existing.feature_id = staged.feature_id)"
        if links_bulk
        else "true"
    )
    cursor.execute(
        f"""
        INSERT INTO catalog_itemfeature (item_id, feature_id, weight)
        SELECT items.id, staged.feature_id, 1.0
        FROM syn_item_features AS staged JOIN syn_item_map AS items ON items.idx = staged.idx
        WHERE {absent}
        {"" if links_bulk else "ON CONFLICT (item_id, feature_id) DO NOTHING"}
        """
    )
    summary.add("item_features", cursor.rowcount)
    cursor.execute("DROP TABLE syn_items, syn_item_features")


def _id_map_create(cursor, name: str, table: str, prefix: str) -> None:
    """A TEMP map plan number -> row id, so later joins use int4 keys instead of 'syn-…' strings."""
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    cursor.execute(
        f"""
        CREATE TEMP TABLE {name} ON COMMIT DROP AS
        SELECT substr(external_id, {len(prefix) + 1})::int4 AS idx, id FROM {table}
        WHERE external_id ~ '^{prefix}[0-9]+$'
        """
    )
    cursor.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (idx)")
    cursor.execute(f"ANALYZE {name}")


def _users_load(cursor, plan, summary, segment_features, bar) -> None:
    temp_table_create(cursor, "syn_users", "idx int4, feature_id int8")
    for chunk in plan.user_chunks():
        copy_binary(
            cursor,
            "syn_users",
            ["idx", "feature_id"],
            [("int4", chunk.index), ("int8", segment_features[chunk.cluster])],
        )
        # An unusable password ('!' prefix, as Django's make_password(None)): no one logs in as these.
        cursor.execute(
            f"""
            INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                                   is_staff, is_active, date_joined)
            SELECT '!' || md5(random()::text || idx), false, '{USER_PREFIX}' || idx, '', '', '', false, true, now()
            FROM syn_users
            ON CONFLICT (username) DO NOTHING
            """
        )
        summary.add("users", cursor.rowcount)
        cursor.execute(
            f"""
            INSERT INTO catalog_userprofile (user_id, external_id, created_at)
            SELECT account.id, '{USER_PREFIX}' || staged.idx, now()
            FROM syn_users AS staged JOIN auth_user AS account ON account.username = '{USER_PREFIX}' || staged.idx
            ON CONFLICT DO NOTHING
            """
        )
        summary.add("user_profiles", cursor.rowcount)
        cursor.execute(
            f"""
            INSERT INTO catalog_userfeature (profile_id, feature_id, weight)
            SELECT profile.id, staged.feature_id, 1.0
            FROM syn_users AS staged
            JOIN catalog_userprofile AS profile ON profile.external_id = '{USER_PREFIX}' || staged.idx
            ON CONFLICT (profile_id, feature_id) DO NOTHING
            """
        )
        summary.add("user_features", cursor.rowcount)
        cursor.execute("TRUNCATE syn_users")
        bar.update(len(chunk.index))


def _ratings_load(cursor, plan, summary, bar, budget: ImportBudget, *, bulk: bool) -> None:
    _id_map_create(cursor, "syn_user_map", "catalog_userprofile", USER_PREFIX)
    temp_table_create(cursor, "syn_ratings", "user_idx int4, item_idx int4, value float4, created_unix int8")
    # In bulk mode every chunk stays staged for one statement (feedback_bulk_window says why).
    batch = math.inf if bulk else budget.batch_bytes
    staged = 0
    for chunk in plan.interaction_chunks():
        staged += budget.staged_bytes(
            copy_binary(
                cursor,
                "syn_ratings",
                ["user_idx", "item_idx", "value", "created_unix"],
                [("int4", chunk.user), ("int4", chunk.item), ("float4", chunk.rating), ("int8", chunk.created_unix)],
            ),
            len(chunk.user),
        )
        summary.events += len(chunk.user)
        bar.update(len(chunk.user))
        if staged >= batch:
            _ratings_apply(cursor, summary, bulk=bulk)
            staged = 0
    if staged:
        _ratings_apply(cursor, summary, bulk=bulk)


def _ratings_apply(cursor, summary: ImportSummary, *, bulk: bool) -> None:
    """Move staged ratings in: one statement, so one popularity update outside bulk mode.

    The plan's pairs are distinct, so only pairs already stored (a repeated run) are skipped:
    by ``ON CONFLICT``, or in bulk mode by an anti-join (the unique index is suspended).
    """
    cursor.execute("ANALYZE syn_ratings")
    absent = (
        "NOT EXISTS (SELECT 1 FROM catalog_feedback AS existing WHERE existing.user_id = users.id "
        "AND existing.item_id = items.id AND existing.kind_id = 'rating' AND existing.is_current)"
        if bulk
        else "true"
    )
    cursor.execute(
        f"""
        INSERT INTO catalog_feedback (user_id, item_id, kind_id, value, created_at, is_current)
        SELECT users.id, items.id, 'rating', staged.value, to_timestamp(staged.created_unix), true
        FROM syn_ratings AS staged
        JOIN syn_user_map AS users ON users.idx = staged.user_idx
        JOIN syn_item_map AS items ON items.idx = staged.item_idx
        WHERE {absent}
        {"" if bulk else "ON CONFLICT (user_id, item_id, kind_id) WHERE is_current DO NOTHING"}
        """
    )
    summary.add("feedback", cursor.rowcount)
    cursor.execute("TRUNCATE syn_ratings")
