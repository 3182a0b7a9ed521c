"""Content-based: items sharing features with what the user liked (or with the seed item), by TF-IDF."""
from __future__ import annotations

from django.db import connection
from psycopg import sql

from recommender import ann

from ._shared import context_positive_seeds, source_filters
from ._catalogue import catalogue_memo
from .base import Candidate, Context

DEFAULT_LIKED_ITEMS = 50
# Only the profile's strongest features fan out to their postings: a user who liked 50 films
# touches every genre, and scanning all of them at 100k items would cost more than it adds.
DEFAULT_MAX_FEATURES = 20


class ContentBasedSource:
    """Score = sum over shared features f of profile(f) · idf(f)² · weight(item, f).

    profile(f) sums f's weight over the liked items (home: the user's recent positive items;
    related: the seed item); idf(f) = ln((1 + N) / (1 + df(f))) + 1 over the catalogue's item
    feature frequency, so a rare shared feature counts more than a common one. Everything is
    aggregated in one SQL statement on the (feature, item) index: only the postings of the
    profile's strongest features are read. A serving request computes the same from the
    process's catalogue copy (`_catalogue.CatalogueMemo.content_scores`) when it may.
    """

    name = "content_based"

    def __init__(self, liked_items: int = DEFAULT_LIKED_ITEMS, max_features: int = DEFAULT_MAX_FEATURES):
        self.liked_items = liked_items
        self.max_features = max_features

    def _seeds(self, context: Context) -> list[int]:
        if context.surface == "related":
            return [context.item_id] if context.item_id is not None else []
        if context.profile_id is None:
            return []
        return context_positive_seeds(context, limit=self.liked_items)

    def generate(self, context: Context, n: int) -> list[Candidate]:
        seeds = self._seeds(context)
        if not seeds or n < 1:
            return []
        reason = {"related_to_item_id": context.item_id} if context.surface == "related" else {}
        memo = catalogue_memo(generation=context.memo.get("global_generation"))
        if memo is not None:
            rows = memo.content_scores(seeds=seeds, filters=source_filters(context), max_features=self.max_features, n=n)
            return [Candidate(item_id=item_id, source=self.name, score=score, reason=reason) for item_id, score in rows]
        clauses, params = ann.filter_clauses(source_filters(context), item_column="f.item_id",
                                         extra_excluded_ids=tuple(seeds))
        where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")
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
            WHERE {where}
            GROUP BY f.item_id ORDER BY score DESC, f.item_id LIMIT %(n)s
        """).format(where=where)
        with connection.cursor() as cursor:
            params.update(seeds=seeds, max_features=self.max_features, n=n)
            cursor.execute(statement.as_string(cursor.connection), params)
            rows = cursor.fetchall()
        return [Candidate(item_id=item_id, source=self.name, score=float(score), reason=reason)
                for item_id, score in rows]
