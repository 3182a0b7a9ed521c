"""Fresh: the newest published items, so new items get exposure before anyone interacts with them."""
from __future__ import annotations

from django.db import connection
from psycopg import sql

from recommender import ann

from ._catalogue import catalogue_memo
from ._shared import source_filters
from .base import Candidate, Context


class FreshSource:
    """Items by ``published_at`` descending (never in the future of ``context.now``).

    Score = 1 / (1 + age in days), so the newest item scores near 1. Served by the
    ``published_at`` index read backwards.
    """

    name = "fresh"

    def generate(self, context: Context, n: int) -> list[Candidate]:
        if n < 1:
            return []
        extra = (context.item_id,) if context.item_id is not None else ()
        memo = catalogue_memo(generation=context.memo.get("global_generation"))
        if memo is not None:  # the same answer from the process's catalogue copy (see _catalogue)
            rows = memo.fresh(now_epoch=context.now.timestamp(), filters=source_filters(context), excluded_ids=extra,
                              n=n)
            return [Candidate(item_id=item_id, source=self.name, score=score) for item_id, score in rows]
        clauses, params = ann.filter_clauses(source_filters(context), item_column="it.id", extra_excluded_ids=extra)
        where = sql.SQL("").join(sql.SQL(" AND ") + clause for clause in clauses)
        statement = sql.SQL("""
            SELECT it.id, 1.0 / (1.0 + extract(epoch FROM (%(now)s - it.published_at))::float8 / 86400.0) AS score
            FROM catalog_item it
            WHERE it.published_at IS NOT NULL AND it.published_at <= %(now)s{where}
            ORDER BY it.published_at DESC, it.id DESC LIMIT %(n)s
        """).format(where=where)
        params.update(now=context.now, n=n)
        with connection.cursor() as cursor:
            cursor.execute(statement.as_string(cursor.connection), params)
            rows = cursor.fetchall()
        return [Candidate(item_id=item_id, source=self.name, score=float(score)) for item_id, score in rows]
