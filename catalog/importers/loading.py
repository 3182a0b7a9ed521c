"""Set-based moves from TEMP staging tables into the catalogue tables.

Each function runs one or two ``INSERT … SELECT … ON CONFLICT DO NOTHING`` statements and
returns how many rows were really added, so re-running an import adds 0 everywhere. Staging
tables are keyed by external ids (text); the joins to real ids happen here, in the database.

Staging shapes (column names matter, types are the usual ones):

- features:      ``type text, value text`` (``subject`` passed as an argument)
- items:         ``external_id text, title text, published_at timestamptz, provider text``
- item features: ``external_id text, type text, value text, weight float8``
- users:         ``external_id text, username text``
- user features: ``external_id text, type text, value text, weight float8``
- ratings:       ``user_external_id text, item_external_id text, value float8, created_unix int8``
- feedback:      ``line int8, user_external_id text, item_external_id text, kind text, value float8,
  created_unix float8`` (``created_unix`` NULL: the time of the import)
"""

from __future__ import annotations


def planner_statistics_refresh(cursor, *, tables: list[str]) -> None:
    """ANALYZE tables an import has just filled, before joining staged rows to them.

    Inside the import's transaction the planner otherwise plans with the statistics of before —
    an empty catalogue, or a TEMP table autovacuum never sees — and estimates one row where
    there are tens of thousands: it then picks a nested loop of sequential scans, and a 93k-row
    chunk that takes a second with hash joins ran for over ten minutes. Sampling is bounded
    (30k rows per table), so this costs milliseconds to a fraction of a second per call.
    """
    for table in tables:
        cursor.execute(f"ANALYZE {table}")


def features_insert(cursor, *, stage: str, subject: str) -> int:
    cursor.execute(
        f"""
        INSERT INTO catalog_feature (subject, type, value)
        SELECT DISTINCT %s, type, value FROM {stage}
        ON CONFLICT (subject, type, value) DO NOTHING
        """,
        [subject],
    )
    return cursor.rowcount


def items_insert(cursor, *, stage: str) -> int:
    cursor.execute(
        f"""
        INSERT INTO catalog_item (external_id, title, description, published_at, provider, is_active,
                                  metadata, created_at, updated_at)
        SELECT DISTINCT ON (external_id) external_id, title, '', published_at, coalesce(provider, ''),
               true, '{{}}'::jsonb, now(), now()
        FROM {stage}
        ORDER BY external_id
        ON CONFLICT (external_id) DO NOTHING
        """
    )
    return cursor.rowcount


def item_features_insert(cursor, *, stage: str) -> tuple[int, int]:
    """Add the features named in ``stage`` and link them; returns (features, links) added."""
    features = features_insert(cursor, stage=stage, subject="item")
    cursor.execute(
        f"""
        INSERT INTO catalog_itemfeature (item_id, feature_id, weight)
        SELECT item.id, feature.id, max(staged.weight)
        FROM {stage} AS staged
        JOIN catalog_item AS item ON item.external_id = staged.external_id
        JOIN catalog_feature AS feature
          ON feature.subject = 'item' AND feature.type = staged.type AND feature.value = staged.value
        GROUP BY item.id, feature.id
        ON CONFLICT (item_id, feature_id) DO NOTHING
        """
    )
    return features, cursor.rowcount


def users_insert(cursor, *, stage: str) -> tuple[int, int]:
    """Create auth users (unusable password) and their profiles; returns (users, profiles) added.

    The password is ``!`` plus random hex, which Django's ``has_usable_password`` reads as
    unusable, the same convention as ``make_password(None)``: imported people cannot log in
    until someone sets a password for them.
    """
    cursor.execute(
        f"""
        INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                               is_staff, is_active, date_joined)
        SELECT DISTINCT ON (username) '!' || md5(random()::text || username), false, username, '', '', '',
               false, true, now()
        FROM {stage}
        ORDER BY username
        ON CONFLICT (username) DO NOTHING
        """
    )
    users = cursor.rowcount
    cursor.execute(
        f"""
        INSERT INTO catalog_userprofile (user_id, external_id, created_at)
        SELECT DISTINCT ON (staged.external_id) account.id, staged.external_id, now()
        FROM {stage} AS staged
        JOIN auth_user AS account ON account.username = staged.username
        ORDER BY staged.external_id
        ON CONFLICT DO NOTHING
        """
    )
    return users, cursor.rowcount


def user_features_insert(cursor, *, stage: str) -> tuple[int, int]:
    """Add the user features named in ``stage`` and link them; returns (features, links) added."""
    features = features_insert(cursor, stage=stage, subject="user")
    cursor.execute(
        f"""
        INSERT INTO catalog_userfeature (profile_id, feature_id, weight)
        SELECT profile.id, feature.id, max(staged.weight)
        FROM {stage} AS staged
        JOIN catalog_userprofile AS profile ON profile.external_id = staged.external_id
        JOIN catalog_feature AS feature
          ON feature.subject = 'user' AND feature.type = staged.type AND feature.value = staged.value
        GROUP BY profile.id, feature.id
        ON CONFLICT (profile_id, feature_id) DO NOTHING
        """
    )
    return features, cursor.rowcount


# In bulk mode (catalog.importers.bulk.feedback_bulk_window) the unique indexes are suspended,
# so the moves below test for the existing rows with these anti-joins instead of ON CONFLICT.
# Inside one statement they see the table as it was before it, so each kind of row must move
# in with one statement per import, and DISTINCT ON keeps the staged rows unique among themselves.
_NO_CURRENT_STATE = """
    NOT EXISTS (SELECT 1 FROM catalog_feedback AS existing
                WHERE existing.user_id = {user} AND existing.item_id = {item} AND existing.kind_id = {kind}
                  AND existing.is_current)
"""
_CURRENT_STATE_CONFLICT = "ON CONFLICT (user_id, item_id, kind_id) WHERE is_current DO NOTHING"


def ratings_insert(cursor, *, stage: str, kind: str = "rating", bulk: bool = False) -> int:
    """Move staged ratings in as the current state of a stateful kind.

    ``ON CONFLICT`` targets the partial unique index ``feedback_one_current_state`` — a pair that
    already has a current rating keeps it, which is what makes a re-import add 0 (in bulk mode,
    an anti-join does the same). A pair staged twice keeps its newest rating (DISTINCT ON …
    ORDER BY time DESC).
    """
    absent = _NO_CURRENT_STATE.format(user="profile.id", item="item.id", kind="%(kind)s") if bulk else "true"
    cursor.execute(
        f"""
        INSERT INTO catalog_feedback (user_id, item_id, kind_id, value, created_at, is_current)
        SELECT DISTINCT ON (profile.id, item.id) profile.id, item.id, %(kind)s, staged.value,
               to_timestamp(staged.created_unix), true
        FROM {stage} AS staged
        JOIN catalog_userprofile AS profile ON profile.external_id = staged.user_external_id
        JOIN catalog_item AS item ON item.external_id = staged.item_external_id
        WHERE {absent}
        ORDER BY profile.id, item.id, staged.created_unix DESC
        {"" if bulk else _CURRENT_STATE_CONFLICT}
        """,
        {"kind": kind},
    )
    return cursor.rowcount


def feedback_insert(cursor, *, stage: str, bulk: bool = False) -> int:
    """Move staged feedback of any kinds in; returns rows added (0 for a repeated import).

    Stateful kinds (rating, like, play) become the pair's current state, as
    :func:`ratings_insert` does: a pair that already has one keeps it, and a pair staged twice
    keeps its newest row (latest time, then latest line). Repeatable kinds (view, click,
    purchase) get an idempotency key hashed from (user, item, kind, time, value), so the same
    file again adds nothing — and two identical events in one file, at the same time, are one.
    The text ids are joined to row ids once per batch (into ``import_feedback_ids``), and both
    statements read that; the popularity triggers count each statement once.
    """
    cursor.execute("DROP TABLE IF EXISTS import_feedback_ids")
    cursor.execute(
        f"""
        CREATE TEMP TABLE import_feedback_ids ON COMMIT DROP AS
        SELECT staged.line, profile.id AS user_id, item.id AS item_id, kind.code AS kind_id, kind.is_stateful,
               staged.value, staged.created_unix, staged.user_external_id, staged.item_external_id
        FROM {stage} AS staged
        JOIN catalog_feedbackkind AS kind ON kind.code = staged.kind
        JOIN catalog_userprofile AS profile ON profile.external_id = staged.user_external_id
        JOIN catalog_item AS item ON item.external_id = staged.item_external_id
        """
    )
    cursor.execute("ANALYZE import_feedback_ids")
    absent = _NO_CURRENT_STATE.format(user="user_id", item="item_id", kind="kind_id") if bulk else "true"
    cursor.execute(
        f"""
        INSERT INTO catalog_feedback (user_id, item_id, kind_id, value, created_at, is_current)
        SELECT DISTINCT ON (user_id, item_id, kind_id) user_id, item_id, kind_id, value,
               coalesce(to_timestamp(created_unix), now()), true
        FROM import_feedback_ids
        WHERE is_stateful AND {absent}
        ORDER BY user_id, item_id, kind_id, created_unix DESC NULLS LAST, line DESC
        {"" if bulk else _CURRENT_STATE_CONFLICT}
        """
    )
    added = cursor.rowcount
    key = "'import:' || md5(row(user_external_id, item_external_id, kind_id, created_unix, value)::text)"
    if bulk:
        cursor.execute(
            f"""
            INSERT INTO catalog_feedback (user_id, item_id, kind_id, value, created_at, is_current, idempotency_key)
            SELECT DISTINCT ON (key) user_id, item_id, kind_id, value, coalesce(to_timestamp(created_unix), now()),
                   NULL, key
            FROM (SELECT *, {key} AS key FROM import_feedback_ids WHERE NOT is_stateful) AS keyed
            WHERE NOT EXISTS (SELECT 1 FROM catalog_feedback AS existing WHERE existing.idempotency_key = keyed.key)
            ORDER BY key, line
            """
        )
    else:
        cursor.execute(
            f"""
            INSERT INTO catalog_feedback (user_id, item_id, kind_id, value, created_at, is_current, idempotency_key)
            SELECT user_id, item_id, kind_id, value, coalesce(to_timestamp(created_unix), now()), NULL, {key}
            FROM import_feedback_ids
            WHERE NOT is_stateful
            ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            """
        )
    added += cursor.rowcount
    cursor.execute("DROP TABLE import_feedback_ids")
    return added
