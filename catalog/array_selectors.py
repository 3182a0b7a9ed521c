"""Array selectors: the catalogue read as plain arrays and scored id lists, for the recommender.

The recommender's numeric core and its serving sources read catalogue data in bulk or in one
set-based statement per request. These selectors are that read, written where the catalogue's
schema lives, so the recommender never spells a catalogue table: it gets numpy arrays and
``[(item id, score)]`` lists. Item filters are the keyword arguments of
`catalog.sql.item_filter_clauses` (``active_only``, ``exclude_feature_ids``,
``require_feature_ids``, ``exclude_item_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.db import connection
from psycopg import sql

from catalog.models import ValueTransform
from catalog.sql import POSITIVE_RATING, feedback_in_force_sql, feedback_positive_sql, item_filter_clauses
from config.db_router import reading_connection

FETCH_BATCH = 200_000


@dataclass(frozen=True)
class CatalogArrays:
    """The catalogue as numpy arrays (database primary keys), for a numeric core (the recommender's ``ml.dataset``)."""

    user_ids: np.ndarray  # (n_users,) int64, UserProfile pks
    item_ids: np.ndarray  # (n_items,) int64, Item pks
    feedback_user: np.ndarray  # (m,) int64
    feedback_item: np.ndarray  # (m,) int64
    feedback_kind_weight: np.ndarray  # (m,) float64
    feedback_value: np.ndarray  # (m,) float64
    feedback_is_explicit: np.ndarray  # (m,) bool
    feedback_time: np.ndarray  # (m,) float64 unix seconds
    item_feature_item: np.ndarray  # (f,) int64
    item_feature_id: np.ndarray  # (f,) int64
    item_feature_weight: np.ndarray  # (f,) float64
    user_feature_user: np.ndarray
    user_feature_id: np.ndarray
    user_feature_weight: np.ndarray
    feature_ids: np.ndarray  # (n_features,) int64, Feature pks
    feature_names: list[str]  # "type=value" per feature id
    # Per feedback row, its kind's value transform as an index into ``value_transform_names``
    # (int8, shape (m,)); None (for arrays built by hand) means "none" for every row.
    feedback_value_transform: np.ndarray | None = None
    value_transform_names: tuple[str, ...] = field(default_factory=lambda: tuple(ValueTransform.values))


# The kind's transform as its index in ValueTransform's order; -1 for a name the code does not
# know (the numeric core refuses it with a named error instead of guessing).
_VALUE_TRANSFORM_CODE_SQL = (
    "CASE k.value_transform "
    + " ".join(f"WHEN '{name}' THEN {code}" for code, name in enumerate(ValueTransform.values))
    + " ELSE -1 END"
)


def _fetch_columns(query: str, n_columns: int, dtype=np.float64) -> list[np.ndarray]:
    """Stream a query through a server-side cursor into column arrays without Python row objects piling up."""
    chunks: list[np.ndarray] = []
    with connection.cursor() as django_cursor:
        raw = django_cursor.connection
    with raw.transaction(), raw.cursor(name="catalog_export") as cursor:
        cursor.itersize = FETCH_BATCH
        cursor.execute(query)
        while rows := cursor.fetchmany(FETCH_BATCH):
            chunks.append(np.asarray(rows, dtype=dtype).reshape(len(rows), n_columns))
    if not chunks:
        return [np.zeros(0, dtype=dtype) for _ in range(n_columns)]
    table = np.concatenate(chunks)
    return [table[:, column] for column in range(n_columns)]


def catalog_arrays_fetch() -> CatalogArrays:
    """Export users, items, current feedback and features for training.

    Superseded stateful feedback (``is_current = false``) is left out: a re-rating counts once.
    """
    (user_ids,) = _fetch_columns("SELECT id FROM catalog_userprofile ORDER BY id", 1, np.int64)
    (item_ids,) = _fetch_columns("SELECT id FROM catalog_item ORDER BY id", 1, np.int64)
    user, item, weight, value, explicit, seconds, transform = _fetch_columns(
        "SELECT f.user_id, f.item_id, k.weight, f.value, k.is_explicit::int, extract(epoch FROM f.created_at), "
        f"{_VALUE_TRANSFORM_CODE_SQL} "
        "FROM catalog_feedback f JOIN catalog_feedbackkind k ON k.code = f.kind_id "
        f"WHERE {feedback_in_force_sql('f')}",
        7,
    )
    if_item, if_feature, if_weight = _fetch_columns("SELECT item_id, feature_id, weight FROM catalog_itemfeature", 3)
    uf_user, uf_feature, uf_weight = _fetch_columns("SELECT profile_id, feature_id, weight FROM catalog_userfeature", 3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, type || '=' || value FROM catalog_feature ORDER BY id")
        features = cursor.fetchall()
    return CatalogArrays(
        user_ids=user_ids,
        item_ids=item_ids,
        feedback_user=user.astype(np.int64),
        feedback_item=item.astype(np.int64),
        feedback_kind_weight=weight,
        feedback_value=value,
        feedback_is_explicit=explicit.astype(bool),
        feedback_time=seconds,
        item_feature_item=if_item.astype(np.int64),
        item_feature_id=if_feature.astype(np.int64),
        item_feature_weight=if_weight,
        user_feature_user=uf_user.astype(np.int64),
        user_feature_id=uf_feature.astype(np.int64),
        user_feature_weight=uf_weight,
        feature_ids=np.asarray([row[0] for row in features], dtype=np.int64),
        feature_names=[row[1] for row in features],
        feedback_value_transform=transform.astype(np.int8),
        value_transform_names=tuple(ValueTransform.values),
    )


def _where(filters: dict, item_column: str, *, glue: str = " AND ") -> tuple[sql.Composable, dict]:
    clauses, params = item_filter_clauses(item_column=item_column, **filters)
    return sql.SQL("").join(sql.SQL(glue) + clause for clause in clauses), params


def _rows(statement: sql.Composable | str, params: Any) -> list[tuple]:
    # The serving read connection: a replica inside a routed serving call (config.db_router).
    with reading_connection().cursor() as cursor:
        text = statement.as_string(cursor.connection) if isinstance(statement, sql.Composable) else statement
        cursor.execute(text, params)
        return cursor.fetchall()


def feedback_newest_id() -> int:
    """The whole feedback log's newest id (0 when empty): a cheap "has anything changed" key."""
    return int(_rows("SELECT coalesce(max(id), 0) FROM catalog_feedback", [])[0][0])


def user_seen_item_ids(*, profile_id: int) -> frozenset[int]:
    """Items with in-force feedback of the user (one plain query on the feedback (user, ...) index)."""
    rows = _rows(
        f"SELECT DISTINCT item_id FROM catalog_feedback WHERE user_id = %s AND {feedback_in_force_sql()}", [profile_id]
    )
    return frozenset(row[0] for row in rows)


def user_feedback_weight_rows(*, profile_id: int) -> list[tuple[int, float, float, bool, float | None, str]]:
    """The user's in-force feedback with its kind's weighting: (item id, value, kind weight,
    is explicit, kind max value, kind value transform), one plain query on the (user, ...) index.

    Serving reads it on every uncached homepage; as SQL rather than the ORM it skips building
    the query each time (about a millisecond of a 12 ms request, profiled).
    """
    return _rows(
        "SELECT f.item_id, f.value, k.weight, k.is_explicit, k.max_value, k.value_transform "
        "FROM catalog_feedback f JOIN catalog_feedbackkind k ON k.code = f.kind_id "
        f"WHERE f.user_id = %s AND {feedback_in_force_sql('f')}",
        [profile_id],
    )


def user_positive_item_ids(*, profile_id: int, limit: int, min_rating: float = POSITIVE_RATING) -> list[int]:
    """Items the user recently reacted to positively, newest first (at most ``limit``).

    Served by the feedback (user, -created_at) index; a re-rating below the threshold
    supersedes the old rating (``is_current``), so it no longer counts.
    """
    rows = _rows(
        f"SELECT item_id FROM catalog_feedback WHERE user_id = %s AND {feedback_positive_sql()} "
        "GROUP BY item_id ORDER BY max(created_at) DESC, item_id DESC LIMIT %s",
        [profile_id, min_rating, limit],
    )
    return [row[0] for row in rows]


@dataclass(frozen=True)
class UserFeedbackSummary:
    """One user's feedback as serving needs it, read in one round trip (`user_feedback_summary`)."""

    seen_item_ids: frozenset[int]  # items with in-force feedback (any kind)
    positive_item_ids: list[int]  # every positive item, newest first (as `user_positive_item_ids`)
    newest_feedback_id: int  # the whole log's newest id (as `feedback_newest_id`)
    extra: object = None  # the caller's ``extra_column`` value, when one was given


def user_feedback_summary(
    *, profile_id: int, min_rating: float = POSITIVE_RATING, extra_column: sql.Composable | None = None
) -> UserFeedbackSummary:
    """The user's seen items, all their positive items and the log's newest id, in ONE statement.

    ``extra_column`` is a scalar SQL expression of the caller's (it may use the named parameter
    ``%(profile)s``) returned in the same round trip: serving reads the user's stored vector with
    it. One grouped pass over the user's rows on the feedback (user, ...) index; the positive
    order is ranked in SQL so no timestamps travel; the scalars come once, in a header row.
    """
    extra = extra_column if extra_column is not None else sql.SQL("NULL")
    statement = sql.SQL(
        "WITH mine AS (SELECT item_id, bool_or(" + feedback_in_force_sql() + ") AS seen, "
        "  max(created_at) FILTER (WHERE " + feedback_positive_sql(threshold="%(rating)s") + ") AS liked_at "
        "  FROM catalog_feedback WHERE user_id = %(profile)s GROUP BY item_id) "
        "SELECT item_id, seen, liked, newest, extra FROM ("
        "  SELECT 0 AS part, NULL::timestamptz AS liked_at, NULL::bigint AS item_id, NULL::boolean AS seen, "
        "    false AS liked, (SELECT coalesce(max(id), 0) FROM catalog_feedback) AS newest, {extra} AS extra "
        "  UNION ALL SELECT 1, liked_at, item_id, seen, liked_at IS NOT NULL, NULL, NULL FROM mine"
        ") summary ORDER BY part, liked_at DESC NULLS LAST, item_id DESC"
    ).format(extra=extra)
    header, *rows = _rows(statement, {"rating": min_rating, "profile": profile_id})
    return UserFeedbackSummary(
        seen_item_ids=frozenset(row[0] for row in rows if row[1]),
        positive_item_ids=[row[0] for row in rows if row[2]],
        newest_feedback_id=int(header[3]),
        extra=header[4],
    )


def items_sharing_features(
    *, seed_item_ids: list[int], max_features: int, n: int, filters: dict
) -> list[tuple[int, float]]:
    """Items by TF-IDF feature overlap with the seeds: [(item id, score)], best first, ties by id.

    Score = sum over shared features f of profile(f) · idf(f)² · weight(item, f), where profile(f)
    sums f's weight over the seeds and idf(f) = ln((1 + N) / (1 + df(f))) + 1. Only the postings
    of the profile's ``max_features`` strongest features are read (the (feature, item) index).
    The seeds are never returned.
    """
    filters = {**filters, "exclude_item_ids": tuple(filters.get("exclude_item_ids", ())) + tuple(seed_item_ids)}
    where, params = _where(filters, "f.item_id")
    statement = sql.SQL("""
        WITH catalogue AS (SELECT count(*) AS n_items FROM catalog_item), profile AS (
            SELECT f.feature_id, sum(f.weight) AS weight FROM catalog_itemfeature f
            WHERE f.item_id = ANY(%(seeds)s::bigint[]) GROUP BY f.feature_id
        ), weighted AS (
            SELECT p.feature_id,
                   p.weight * power(ln((1.0 + catalogue.n_items) / (1.0 + d.df)) + 1.0, 2) AS weight
            FROM profile p CROSS JOIN catalogue
            CROSS JOIN LATERAL (SELECT count(*) AS df FROM catalog_itemfeature c
                                WHERE c.feature_id = p.feature_id) d
            ORDER BY weight DESC, p.feature_id LIMIT %(max_features)s
        )
        SELECT f.item_id, sum(w.weight * f.weight) AS score
        FROM weighted w JOIN catalog_itemfeature f ON f.feature_id = w.feature_id
        WHERE true{where}
        GROUP BY f.item_id ORDER BY score DESC, f.item_id LIMIT %(n)s
    """).format(where=where)
    params.update(seeds=list(seed_item_ids), max_features=max_features, n=n)
    return [(item_id, float(score)) for item_id, score in _rows(statement, params)]


def items_newest(*, now: datetime, n: int, filters: dict) -> list[tuple[int, float]]:
    """Published items (never after ``now``), newest first, ties by id descending; score 1 / (1 + age in days).

    Served by the ``published_at`` index read backwards.
    """
    where, params = _where(filters, "it.id")
    statement = sql.SQL("""
        SELECT it.id, 1.0 / (1.0 + extract(epoch FROM (%(now)s - it.published_at))::float8 / 86400.0) AS score
        FROM catalog_item it
        WHERE it.published_at IS NOT NULL AND it.published_at <= %(now)s{where}
        ORDER BY it.published_at DESC, it.id DESC LIMIT %(n)s
    """).format(where=where)
    params.update(now=now, n=n)
    return [(item_id, float(score)) for item_id, score in _rows(statement, params)]


def items_decayed_popularity(
    *, now: datetime, since: datetime, half_life_seconds: float, limit: int, filters: dict | None = None
) -> tuple[list[int], list[float]]:
    """(item ids, scores) by in-force, positively weighted feedback in (since, now], each decayed by age.

    Score = sum of 0.5^(age / half-life); dislikes (kinds with a weight ≤ 0) are not popularity.
    Served by the feedback (created_at, item) index. ``filters`` (``AnnFilters.item_filter()``)
    restrict the items inside the aggregate, so the best ``limit`` matching items come back
    however far down the unfiltered list they sit.
    """
    where, params = _where(filters or {}, "f.item_id")
    # extract() yields numeric: cast to float8, numeric power() is ten times slower. The
    # exponent is capped because PostgreSQL raises an underflow error for power(0.5, 2000).
    statement = sql.SQL(
        "SELECT f.item_id, sum(power(0.5, least("
        "    extract(epoch FROM (%(now)s - f.created_at))::float8 / %(half_life)s, 1000))) AS score "
        "FROM catalog_feedback f JOIN catalog_feedbackkind k ON k.code = f.kind_id "
        "WHERE f.created_at > %(since)s AND f.created_at <= %(now)s "
        "  AND {in_force} AND k.weight > 0{where} "
        "GROUP BY f.item_id ORDER BY score DESC, f.item_id LIMIT %(limit)s"
    ).format(in_force=sql.SQL(feedback_in_force_sql("f")), where=where)
    params.update(now=now, since=since, half_life=half_life_seconds, limit=limit)
    rows = _rows(statement, params)
    return [row[0] for row in rows], [float(row[1]) for row in rows]


def items_scored_filter(*, item_ids: list[int], scores: list[float], n: int, filters: dict) -> list[tuple[int, float]]:
    """The best ``n`` of the given (item id, score) pairs that pass ``filters``, ties by id."""
    where, params = _where(filters, "p.item_id")
    statement = sql.SQL(
        "SELECT p.item_id, p.score FROM unnest(%(ids)s::bigint[], %(scores)s::float8[]) AS p(item_id, score) "
        "WHERE true{where} ORDER BY p.score DESC, p.item_id LIMIT %(n)s"
    ).format(where=where)
    params.update(ids=list(item_ids), scores=list(scores), n=n)
    return [(item_id, float(score)) for item_id, score in _rows(statement, params)]


def item_feedback_counts(*, item_ids: list[int]) -> dict[int, int]:
    """All-time count of in-force, positively weighted feedback per item (the (item, kind) index)."""
    rows = _rows(
        "SELECT fb.item_id, count(*) FROM catalog_feedback fb JOIN catalog_feedbackkind k ON k.code = fb.kind_id "
        f"WHERE fb.item_id = ANY(%s) AND {feedback_in_force_sql('fb')} AND k.weight > 0 GROUP BY fb.item_id",
        [list(item_ids)],
    )
    return dict(rows)


def item_states(*, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every item as arrays (ids ascending, ``is_active``, ``published_at`` unix seconds or NaN).

    None when there are more than ``limit`` items.
    """
    rows = _rows(
        "SELECT id, is_active, extract(epoch FROM published_at)::float8 FROM catalog_item ORDER BY id LIMIT %s",
        [limit + 1],
    )
    if len(rows) > limit:
        return None
    return (
        np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
        np.fromiter((bool(row[1]) for row in rows), dtype=bool, count=len(rows)),
        np.fromiter((np.nan if row[2] is None else row[2] for row in rows), dtype=np.float64, count=len(rows)),
    )


def item_feature_postings(*, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every (item, feature, weight) posting as arrays; None when there are more than ``limit``."""
    rows = _rows("SELECT item_id, feature_id, weight FROM catalog_itemfeature LIMIT %s", [limit + 1])
    if len(rows) > limit:
        return None
    return (
        np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
        np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows)),
        np.fromiter((row[2] for row in rows), dtype=np.float64, count=len(rows)),
    )


def item_active_popularity() -> list[tuple[int, int]]:
    """(item id, count of in-force feedback) for every active item, zeros included: one aggregation."""
    return _rows(
        "SELECT i.id, coalesce(f.total, 0) FROM catalog_item i LEFT JOIN ("
        f"  SELECT item_id, count(*) AS total FROM catalog_feedback WHERE {feedback_in_force_sql()} GROUP BY item_id"
        ") f ON f.item_id = i.id WHERE i.is_active",
        [],
    )


def item_attribute_rows(*, item_ids: list[int], external_ids: list[str] | tuple[str, ...] = ()) -> list[tuple]:
    """(id, external id, provider, published_at as unix seconds or None, is_active) of items by id or external id.

    Plain rows with times as epoch seconds: on a 300-item pool the ORM's per-row cost and
    timestamptz parsing were most of the re-ranking engine's time (≈7 ms against 0.5 ms).
    """
    return _rows(
        "SELECT id, external_id, provider, extract(epoch FROM published_at)::float8, is_active "
        "FROM catalog_item WHERE id = ANY(%s) OR external_id = ANY(%s)",
        [list(item_ids), list(external_ids)],
    )


def item_feature_value_rows(*, item_ids: list[int], feature_types: list[str]) -> list[tuple[int, str, str]]:
    """(item id, feature type, value) of the items' features of the given types."""
    return _rows(
        "SELECT link.item_id, feature.type, feature.value FROM catalog_itemfeature link "
        "JOIN catalog_feature feature ON feature.id = link.feature_id "
        "WHERE link.item_id = ANY(%s) AND feature.subject = 'item' AND feature.type = ANY(%s)",
        [list(item_ids), list(feature_types)],
    )


def _feature_weights(link_table: str, owner_column: str, owner_id: int) -> dict[str, float]:
    return {
        f"{kind}={value}": float(weight)
        for kind, value, weight in _rows(
            sql.SQL(
                "SELECT feature.type, feature.value, link.weight FROM {} link "
                "JOIN catalog_feature feature ON feature.id = link.feature_id WHERE link.{} = %s"
            ).format(sql.Identifier(link_table), sql.Identifier(owner_column)),
            [owner_id],
        )
    }


def item_feature_weights(*, item_id: int) -> dict[str, float]:
    """The item's side features as ``{"type=value": weight}``: how a model's feature columns are named."""
    return _feature_weights("catalog_itemfeature", "item_id", item_id)


def user_feature_weights(*, profile_id: int) -> dict[str, float]:
    """The user's side features as ``{"type=value": weight}`` (see `item_feature_weights`)."""
    return _feature_weights("catalog_userfeature", "profile_id", profile_id)


def user_feedback_rows(*, profile_id: int, item_ids: list[int]) -> list[tuple]:
    """(item id, kind, kind weight, value, is_current) of the user's in-force feedback on the items."""
    return _rows(
        "SELECT f.item_id, f.kind_id, k.weight, f.value, f.is_current FROM catalog_feedback f "
        "JOIN catalog_feedbackkind k ON k.code = f.kind_id "
        f"WHERE f.user_id = %s AND f.item_id = ANY(%s) AND {feedback_in_force_sql('f')}",
        [profile_id, list(item_ids)],
    )


def item_strongest_feature_values(*, item_ids: list[int], feature_type: str) -> dict[int, str]:
    """Each item's value of ``feature_type`` (its strongest, then alphabetically first: a stable choice)."""
    return dict(
        _rows(
            "SELECT DISTINCT ON (link.item_id) link.item_id, feature.value "
            "FROM catalog_itemfeature link JOIN catalog_feature feature ON feature.id = link.feature_id "
            "WHERE feature.subject = 'item' AND feature.type = %s AND link.item_id = ANY(%s) "
            "ORDER BY link.item_id, link.weight DESC, feature.value",
            [feature_type, list(item_ids)],
        )
    )


def feedback_newest_time() -> datetime | None:
    """When the newest feedback event happened (None for an empty log)."""
    return _rows("SELECT max(created_at) FROM catalog_feedback", [])[0][0]
