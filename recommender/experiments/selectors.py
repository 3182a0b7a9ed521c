"""Reads for experiments: the live plans serving splits traffic by, and the results.

`live_plans` is what every recommendation request reads: the running experiments as plain frozen
data, kept per process for the ``global`` generation (every experiment, variant and rule-set
write bumps it, `recommender/receivers.py`), so assignment costs no query. `experiment_results`
reads one experiment's exposures and outcomes in one set-based statement and hands per-user
arrays to `stats.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
from django.db import connection
from django.db.models import Q

from recommender.memo import GenerationMemo
from recommender.models import ModelVersion, VersionStatus

from .models import Experiment, ExperimentEvent, ExperimentMode, ExperimentStatus, Variant


@dataclass(frozen=True)
class Arm:
    """What serves one variant's users."""

    variant_id: int
    key: str
    version_id: int | None  # None: the active version
    rule_set_id: int | None  # None: the rules in force
    candidate_sizes: tuple[tuple[str, int], ...] | None  # None: the surface's configured sizes
    is_control: bool
    scorer: str = "model"  # a key of recommender.ranking.SCORERS


@dataclass(frozen=True)
class Plan:
    """A running experiment as serving reads it."""

    experiment_id: int
    name: str
    salt: str
    mode: str
    surfaces: frozenset[str]
    starts_at: datetime | None
    ends_at: datetime | None
    arms: tuple[Arm, ...]  # in position order
    shares: tuple[int, ...]

    def is_live(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and (self.ends_at is None or now < self.ends_at)

    @property
    def interleaved(self) -> bool:
        return self.mode == ExperimentMode.INTERLEAVE


def _arm(variant: Variant) -> Arm:
    sizes = variant.candidate_sizes
    return Arm(
        variant_id=variant.pk,
        key=variant.key,
        version_id=variant.version_id,
        rule_set_id=variant.rule_set_id,
        candidate_sizes=tuple(sorted((str(name), int(n)) for name, n in sizes.items())) if sizes else None,
        is_control=variant.is_control,
        scorer=variant.scorer,
    )


def _plans_read(_key: None) -> tuple[Plan, ...]:
    plans = []
    running = Experiment.objects.filter(status=ExperimentStatus.RUNNING).prefetch_related("variants").order_by("id")
    for experiment in running:
        variants = sorted(experiment.variants.all(), key=lambda variant: (variant.position, variant.pk))
        plans.append(
            Plan(
                experiment_id=experiment.pk,
                name=experiment.name,
                salt=experiment.salt,
                mode=experiment.mode,
                surfaces=experiment.surfaces(),
                starts_at=experiment.starts_at,
                ends_at=experiment.ends_at,
                arms=tuple(_arm(variant) for variant in variants),
                shares=tuple(variant.share for variant in variants),
            )
        )
    return tuple(plans)


PLANS: GenerationMemo[None, tuple[Plan, ...]] = GenerationMemo("experiment_plans", _plans_read, max_entries=1)


def live_plan(*, surface: str, generation: int | None, now: datetime) -> Plan | None:
    """The running experiment on ``surface`` at ``now``, if any (validation allows one per surface)."""
    for plan in PLANS.get(None, generation=generation):
        if surface in plan.surfaces and plan.is_live(now):
            return plan
    return None


def experiment_list():
    return (
        Experiment.objects.select_related("created_by", "winner")
        .prefetch_related("variants")
        .order_by("-created_at", "-id")
    )


def experiment_events(experiment: Experiment) -> list[ExperimentEvent]:
    """The audit of one experiment, newest first."""
    return list(experiment.events.select_related("actor").order_by("-at", "-id"))


def experiment_variants(experiment: Experiment) -> list[Variant]:
    return list(experiment.variants.select_related("version", "rule_set").order_by("position", "id"))


SERVABLE_STATUSES = (VersionStatus.READY, VersionStatus.ACTIVE)


def servable_versions():
    """Versions a variant may name: ready or active, with published vectors (newest first)."""
    return ModelVersion.objects.filter(status__in=SERVABLE_STATUSES, vectors_published=True).order_by("-id")


@dataclass(frozen=True)
class UserOutcomes:
    """Per exposed user of one variant (arrays of shape (n_users,), aligned)."""

    profile_ids: np.ndarray  # int64
    shown: np.ndarray  # distinct items shown
    impressions: np.ndarray  # impression rows
    clicked: np.ndarray  # shown items clicked within the window
    converted: np.ndarray  # shown items converted within the window
    rating_sum: np.ndarray  # ratings given to shown items within the window
    rating_count: np.ndarray


# One statement per experiment: each (user, item) shown, joined to that user's later feedback on
# the item, counted when it falls inside the window after one of the pair's impressions.
_OUTCOMES_SQL = """
WITH shown AS (
    SELECT variant_id, profile_id, item_id, count(*) AS impressions,
           array_agg(shown_at) AS shown_times, min(shown_at) AS first_shown
    FROM recommender_impression
    WHERE experiment_id = %(experiment)s AND variant_id IS NOT NULL
    GROUP BY variant_id, profile_id, item_id
),
pair AS (
    SELECT shown.variant_id, shown.profile_id, shown.item_id, shown.impressions,
           coalesce(bool_or(kind.code = 'click'), false) AS clicked,
           coalesce(bool_or(kind.code = ANY(%(conversion_kinds)s)
                            OR (kind.is_explicit AND feedback.value >= %(threshold)s)), false) AS converted,
           sum(feedback.value) FILTER (WHERE kind.is_explicit) AS rating_sum,
           count(*) FILTER (WHERE kind.is_explicit) AS rating_count
    FROM shown
    LEFT JOIN catalog_feedback AS feedback
      ON feedback.user_id = shown.profile_id AND feedback.item_id = shown.item_id
     AND feedback.created_at >= shown.first_shown
     AND EXISTS (SELECT 1 FROM unnest(shown.shown_times) AS at
                 WHERE feedback.created_at >= at AND feedback.created_at < at + %(window_hours)s * interval '1 hour')
    LEFT JOIN catalog_feedbackkind AS kind ON kind.code = feedback.kind_id
    GROUP BY shown.variant_id, shown.profile_id, shown.item_id, shown.impressions
)
SELECT variant_id, profile_id, count(*), sum(impressions), count(*) FILTER (WHERE clicked),
       count(*) FILTER (WHERE converted), coalesce(sum(rating_sum), 0), coalesce(sum(rating_count), 0)
FROM pair GROUP BY variant_id, profile_id ORDER BY variant_id, profile_id
"""


def experiment_outcomes(*, experiment: Experiment, positive_threshold: float) -> dict[int, UserOutcomes]:
    """Per variant id: every exposed user's counts (`UserOutcomes`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _OUTCOMES_SQL,
            {
                "experiment": experiment.pk,
                "conversion_kinds": experiment.conversion_kind_codes(),
                "threshold": positive_threshold,
                "window_hours": float(experiment.outcome_window_hours),
            },
        )
        rows = cursor.fetchall()
    by_variant: dict[int, list[tuple]] = {}
    for row in rows:
        by_variant.setdefault(int(row[0]), []).append(row[1:])
    outcomes = {}
    for variant_id, user_rows in by_variant.items():
        columns = np.asarray(user_rows, dtype=np.float64).T
        outcomes[variant_id] = UserOutcomes(
            profile_ids=columns[0].astype(np.int64),
            shown=columns[1],
            impressions=columns[2],
            clicked=columns[3],
            converted=columns[4],
            rating_sum=columns[5],
            rating_count=columns[6],
        )
    return outcomes


def _window_params(experiment: Experiment) -> dict:
    return {"experiment": experiment.pk, "window_hours": float(experiment.outcome_window_hours)}


_DAILY_SQL = """
WITH shown AS (
    SELECT variant_id, profile_id, item_id, min(shown_at) AS first_shown, count(*) AS impressions
    FROM recommender_impression
    WHERE experiment_id = %(experiment)s AND variant_id IS NOT NULL
    GROUP BY variant_id, profile_id, item_id
)
SELECT shown.variant_id, date_trunc('day', shown.first_shown AT TIME ZONE 'UTC')::date AS day,
       count(*) AS shown, sum(shown.impressions) AS impressions,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM catalog_feedback AS feedback
           WHERE feedback.user_id = shown.profile_id AND feedback.item_id = shown.item_id
             AND feedback.kind_id = 'click' AND feedback.created_at >= shown.first_shown
             AND feedback.created_at < shown.first_shown + %(window_hours)s * interval '1 hour')) AS clicked
FROM shown GROUP BY 1, 2 ORDER BY 2, 1
"""


def experiment_daily(*, experiment: Experiment) -> list[tuple[int, date, int, int, int]]:
    """(variant id, day, items shown, impressions, shown items clicked) per day of first showing (UTC)."""
    with connection.cursor() as cursor:
        cursor.execute(_DAILY_SQL, _window_params(experiment))
        return [(int(v), day, int(s), int(i), int(c)) for v, day, s, i, c in cursor.fetchall()]


# Interleaving: per user, clicks on each team's items within the window.
_INTERLEAVED_SQL = """
SELECT impression.profile_id, impression.variant_id, count(DISTINCT impression.item_id)
FROM recommender_impression AS impression
JOIN catalog_feedback AS feedback
  ON feedback.user_id = impression.profile_id AND feedback.item_id = impression.item_id
 AND feedback.kind_id = 'click'
 AND feedback.created_at >= impression.shown_at
 AND feedback.created_at < impression.shown_at + %(window_hours)s * interval '1 hour'
WHERE impression.experiment_id = %(experiment)s AND impression.variant_id IS NOT NULL
GROUP BY 1, 2
"""


def interleaved_credits(*, experiment: Experiment) -> dict[int, dict[int, int]]:
    """profile id → {variant id: items of that team the user clicked within the window}."""
    credits: dict[int, dict[int, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_INTERLEAVED_SQL, _window_params(experiment))
        for profile_id, variant_id, clicks in cursor.fetchall():
            credits.setdefault(int(profile_id), {})[int(variant_id)] = int(clicks)
    return credits


def interleaved_exposed_users(*, experiment: Experiment) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT profile_id) FROM recommender_impression WHERE experiment_id = %s",
            [experiment.pk],
        )
        return int(cursor.fetchone()[0])


def versions_in_experiments() -> set[int]:
    """Versions a draft or running experiment names: retirement keeps their vectors."""
    return set(
        Variant.objects.filter(
            Q(experiment__status=ExperimentStatus.DRAFT) | Q(experiment__status=ExperimentStatus.RUNNING),
            version__isnull=False,
        ).values_list("version_id", flat=True)
    )
