"""The catalogue's SQL vocabulary, for apps that write raw statements over catalogue tables.

Some reads cannot go through the ORM without losing what makes them fast: the vector index's
filters run *inside* an HNSW scan as correlated probes, and the serving path reads a user's
whole feedback summary in one statement. Those statements embed the fragments below, so the
catalogue's table names, columns and rules ("in force", "positive") are spelled here, once,
next to the models they describe. `catalog.selectors` builds its ORM reads from the same rules
(`feedback_in_force`).
"""

from __future__ import annotations

from psycopg import sql

# Feedback that counts now: current states (``is_current``) and repeatable events
# (``is_current IS NULL``); superseded history (``is_current = false``) does not. Written as an
# explicit OR so PostgreSQL can combine two simple predicates with the feedback indexes.
_IN_FORCE = "({alias}is_current OR {alias}is_current IS NULL)"
# Positive feedback: a current rating of at least the threshold, a current like, or any purchase.
_POSITIVE = (
    "(({alias}kind_id = 'rating' AND {alias}is_current AND {alias}value >= {threshold}) "
    "OR ({alias}kind_id = 'like' AND {alias}is_current) OR {alias}kind_id = 'purchase')"
)
POSITIVE_RATING = 4.0

FEEDBACK_TABLE = "catalog_feedback"
FEEDBACK_KIND_TABLE = "catalog_feedbackkind"
ITEM_TABLE = "catalog_item"
ITEM_FEATURE_TABLE = "catalog_itemfeature"


def feedback_in_force_sql(alias: str = "") -> str:
    """The "in force" predicate on ``catalog_feedback`` (``alias`` like ``"f"``, or none)."""
    return _IN_FORCE.format(alias=f"{alias}." if alias else "")


def feedback_positive_sql(alias: str = "", *, threshold: str = "%s") -> str:
    """The "positive" predicate; ``threshold`` is the placeholder bound to the minimum rating."""
    return _POSITIVE.format(alias=f"{alias}." if alias else "", threshold=threshold)


def item_filter_clauses(
    *,
    item_column: str,
    active_only: bool = False,
    exclude_feature_ids: tuple[int, ...] = (),
    require_feature_ids: tuple[int, ...] = (),
    exclude_item_ids: tuple[int, ...] = (),
) -> tuple[list[sql.Composable], dict]:
    """SQL predicates (and named parameters) restricting the item id in ``item_column``.

    Written as correlated EXISTS / NOT EXISTS probes on primary-key and (item, feature) indexes so
    that, under an HNSW ORDER BY, they become nested loops on the index scan's output rows.
    """
    item = sql.SQL(item_column)
    clauses: list[sql.Composable] = []
    params: dict = {}
    if active_only:
        clauses.append(sql.SQL("EXISTS (SELECT 1 FROM catalog_item fi WHERE fi.id = {} AND fi.is_active)").format(item))
    if exclude_feature_ids:
        clauses.append(
            sql.SQL(
                "NOT EXISTS (SELECT 1 FROM catalog_itemfeature fx WHERE fx.item_id = {} "
                "AND fx.feature_id = ANY(%(excluded_features)s::bigint[]))"
            ).format(item)
        )
        params["excluded_features"] = list(exclude_feature_ids)
    if require_feature_ids:
        clauses.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM catalog_itemfeature fr WHERE fr.item_id = {} "
                "AND fr.feature_id = ANY(%(required_features)s::bigint[]))"
            ).format(item)
        )
        params["required_features"] = list(require_feature_ids)
    if exclude_item_ids:
        clauses.append(sql.SQL("{} <> ALL(%(excluded_ids)s::bigint[])").format(item))
        params["excluded_ids"] = list(exclude_item_ids)
    return clauses, params
