"""Writes for re-ranking: rules, rule sets and impressions (recorded after serving).

Every rule write (the API, the admin, the dashboard's toggles) goes through `rule_create`,
`rule_update` and `rule_delete`: they validate with ``Rule.full_clean`` (per-kind parameters,
`params.py`), write inside one transaction, and log. The homepage cache generation is bumped by the
Rule ``post_save``/``post_delete`` receivers (`recommender/receivers.py`), which run inside that
transaction, so the new generation becomes visible exactly when the rule change does.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from config import metrics
from config.exception_handlers import ApplicationError

from .models import Impression, Rule, RuleSet

logger = logging.getLogger(__name__)

RULE_FIELDS = frozenset({"name", "kind", "enabled", "order", "scope", "params", "starts_at", "ends_at", "rule_set"})
RULE_SET_FIELDS = frozenset({"name", "description", "enabled"})


class RuleSetInUseError(ApplicationError):
    """A rule set still named by rules or by experiment variants cannot be deleted (409)."""

    status_code = 409


def impressions_record_fast(
    *,
    profile_id: int,
    item_ids: list[int],
    surface: str,
    experiment_id: int | None = None,
    variant_ids: list[int | None] | None = None,
) -> int:
    """Serving's impression write: ONE round trip, without waiting for the WAL flush.

    Telemetry for "demote recently shown": a crash may lose the last impressions, never corrupt
    anything, so the transaction commits with ``synchronous_commit = off`` (the flush wait was
    ~97 ms of a 150 ms homepage request). In autocommit the BEGIN, the setting, the insert and
    the COMMIT go as one multi-statement query; inside an outer transaction (tests,
    ATOMIC_REQUESTS) the insert joins it and commits with it. Returns the number of rows.
    ``variant_ids`` (aligned with ``item_ids``) and ``experiment_id``: what served each item.
    """
    variants = list(variant_ids) if variant_ids is not None else [None] * len(item_ids)
    by_item = dict(zip((int(item_id) for item_id in item_ids), variants, strict=True))
    unique_ids = list(by_item)
    if not unique_ids:
        return 0
    insert = (
        "INSERT INTO recommender_impression (profile_id, item_id, surface, shown_at, experiment_id, variant_id) "
        "SELECT %s, row.item_id, %s, now(), %s, row.variant_id "
        "FROM unnest(%s::bigint[], %s::bigint[]) AS row(item_id, variant_id)"
    )
    params: list[Any] = [profile_id, surface, experiment_id, unique_ids, list(by_item.values())]
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            cursor.execute(insert, params)
        else:
            # Client-side binding (Django's default cursor) sends this as one simple query.
            cursor.execute("BEGIN; SET LOCAL synchronous_commit = off; " + insert + "; COMMIT", params)
    logger.debug("impressions.recorded profile_id=%s surface=%s count=%s", profile_id, surface, len(unique_ids))
    metrics.impressions_count(surface, len(unique_ids))
    return len(unique_ids)


def impressions_record_batch(rows: list[tuple]) -> int:
    """Write buffered impressions in one statement: ``(profile_id, item_id, surface, shown_at_unix)``,
    optionally followed by ``experiment_id, variant_id`` (None outside an experiment).

    The write-behind buffer's flush (`recommender.serving.impressions`): one round trip for any
    number of requests, without waiting for the WAL flush (as `impressions_record_fast`). Rows of
    profiles or items deleted since they were shown are skipped rather than failing the whole batch.
    """
    if not rows:
        return 0
    full = [tuple(row) + (None, None)[: 6 - len(row)] for row in rows]
    profile_ids, item_ids, surfaces, shown_at, experiment_ids, variant_ids = (
        list(column) for column in zip(*full, strict=True)
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        # An experiment or variant deleted since the row was queued is written as NULL (the
        # impression still counts for "demote recently shown").
        cursor.execute(
            "INSERT INTO recommender_impression "
            "(profile_id, item_id, surface, shown_at, experiment_id, variant_id) "
            "SELECT row.profile_id, row.item_id, row.surface, to_timestamp(row.shown_at), "
            "experiment.id, variant.id "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::float8[], %s::bigint[], %s::bigint[]) "
            "AS row(profile_id, item_id, surface, shown_at, experiment_id, variant_id) "
            "JOIN catalog_userprofile AS profile ON profile.id = row.profile_id "
            "JOIN catalog_item AS item ON item.id = row.item_id "
            "LEFT JOIN experiments_experiment AS experiment ON experiment.id = row.experiment_id "
            "LEFT JOIN experiments_variant AS variant ON variant.id = row.variant_id",
            [profile_ids, item_ids, surfaces, shown_at, experiment_ids, variant_ids],
        )
        written = cursor.rowcount
    logger.debug("impressions.batch_recorded rows=%s written=%s", len(rows), written)
    for surface, count in Counter(surfaces).items():
        metrics.impressions_count(surface, count)  # queued rows; those of deleted profiles or items included
    return written


def impressions_record(
    *, profile_id: int, item_ids: list[int], surface: str, shown_at: datetime | None = None
) -> list[Impression]:
    """Insert one impression per shown item in a single statement (duplicates in ``item_ids`` count once)."""
    shown_at = shown_at or timezone.now()
    unique_ids = list(dict.fromkeys(item_ids))
    rows = Impression.objects.bulk_create(
        [
            Impression(profile_id=profile_id, item_id=item_id, surface=surface, shown_at=shown_at)
            for item_id in unique_ids
        ]
    )
    logger.debug("impressions.recorded profile_id=%s surface=%s count=%s", profile_id, surface, len(rows))
    metrics.impressions_count(surface, len(rows))
    return rows


def rule_create(
    *,
    name: str,
    kind: str,
    params: Any = None,
    enabled: bool = True,
    order: int = 100,
    scope: str = "both",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    rule_set: RuleSet | None = None,
) -> Rule:
    """Validate (parameters per kind, see params.py) and save a new rule; raises ValidationError.

    ``rule_set`` puts the rule in a named set: it then applies while the set is enabled, and to
    the experiment variants that name the set (docs/experiments.md); None: it always applies.

    ``params`` None means "no parameters" ({}); any other value is validated as given, so a list or
    a string is refused as not being an object rather than silently read as {}.
    """
    rule = Rule(
        name=name,
        kind=kind,
        params={} if params is None else params,
        enabled=enabled,
        order=order,
        scope=scope,
        starts_at=starts_at,
        ends_at=ends_at,
        rule_set=rule_set,
    )
    with transaction.atomic():  # the row and the cache generation bump of its post_save receiver
        rule.full_clean()
        rule.save()
    logger.info("rule.created id=%s kind=%s", rule.pk, rule.kind)
    return rule


def rule_update(*, rule: Rule, **fields: Any) -> Rule:
    """Change the given fields (only rule fields, checked against an allow-list) and re-validate.

    Fields not given keep their values; with none given the rule is re-validated and saved as it is
    (the admin sets the form's values on the instance first).
    """
    unknown = set(fields) - RULE_FIELDS
    if unknown:
        raise ValueError(f"Not rule fields: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(RULE_FIELDS))}.")
    for name, value in fields.items():
        setattr(rule, name, value)
    with transaction.atomic():
        rule.full_clean()
        rule.save()
    logger.info("rule.updated id=%s fields=%s", rule.pk, ",".join(sorted(fields)))
    return rule


def rule_delete(*, rule: Rule) -> None:
    """Delete one rule. Django's delete already runs in a transaction that includes the post_delete
    receiver's cache generation bump, so no outer one is needed."""
    rule_id = rule.pk
    rule.delete()
    logger.info("rule.deleted id=%s kind=%s", rule_id, rule.kind)


def rule_set_create(*, name: str, description: str = "", enabled: bool = True) -> RuleSet:
    """Validate and save a new rule set; raises ValidationError (a taken name is a conflict, 409)."""
    rule_set = RuleSet(name=name, description=description, enabled=enabled)
    with transaction.atomic():  # the row and the global generation bump of its post_save receiver
        rule_set.full_clean()
        rule_set.save()
    logger.info("rule_set.created id=%s name=%s", rule_set.pk, rule_set.name)
    return rule_set


def rule_set_update(*, rule_set: RuleSet, **fields: Any) -> RuleSet:
    """Change the given fields (name, description, enabled) and re-validate."""
    unknown = set(fields) - RULE_SET_FIELDS
    if unknown:
        raise ValueError(
            f"Not rule set fields: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(RULE_SET_FIELDS))}."
        )
    for name, value in fields.items():
        setattr(rule_set, name, value)
    with transaction.atomic():
        rule_set.full_clean()
        rule_set.save()
    logger.info("rule_set.updated id=%s fields=%s", rule_set.pk, ",".join(sorted(fields)))
    return rule_set


def rule_set_delete(*, rule_set: RuleSet) -> None:
    """Delete a rule set no rule and no experiment variant names; else RuleSetInUseError (409).

    Both foreign keys PROTECT the set; the checks name what holds it, and the row lock keeps a
    concurrent write from slipping in between (a ProtectedError that still happens is the same 409).
    """
    with transaction.atomic():
        locked = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
        rules = locked.rules.count()
        experiments = sorted(set(locked.variants.values_list("experiment__name", flat=True)))
        if rules or experiments:
            raise RuleSetInUseError(_in_use_message(locked, rules=rules, experiments=experiments))
        try:
            locked.delete()
        except ProtectedError as error:
            raise RuleSetInUseError(f"Rule set {locked.name!r} is in use and cannot be deleted.") from error
    logger.info("rule_set.deleted id=%s name=%s", rule_set.pk, locked.name)


def _in_use_message(rule_set: RuleSet, *, rules: int, experiments: list[str]) -> str:
    holders = []
    if rules:
        holders.append(f"{rules} {'rule belongs' if rules == 1 else 'rules belong'} to it")
    if experiments:
        holders.append(f"experiment variants use it ({', '.join(repr(name) for name in experiments)})")
    return (
        f"Rule set {rule_set.name!r} cannot be deleted: {' and '.join(holders)}. "
        "Move its rules out and remove it from the variants first."
    )
