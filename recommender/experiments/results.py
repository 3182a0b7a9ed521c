"""An experiment's results: per variant users, impressions, click-through, conversion and mean
rating with 95% intervals, each treatment against control, and one verdict.

Reads through `selectors` (one statement for the outcomes, one for the daily series), computes
through `stats` (pure), and returns plain data the page, the API and the admin all show.

Definitions (docs/experiments.md):

- *click-through rate*: of the items shown to a variant's users (each (user, item) pair once),
  the share the user clicked within the outcome window after an impression of it;
- *conversion*: the share of a variant's exposed users with at least one conversion (a kind named
  in ``conversion_kinds``, or a rating at or above the default configuration's positive threshold)
  on a shown item within the window;
- *mean rating*: the mean of the ratings given to shown items within the window.

With several treatments the verdict's level is Bonferroni-corrected (alpha / treatments).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from recommender.selectors import default_training_config

from . import stats
from .models import Experiment, ExperimentMode
from .selectors import (
    experiment_daily,
    experiment_outcomes,
    experiment_variants,
    interleaved_credits,
    interleaved_exposed_users,
)

ALPHA = 0.05
# Interleaving's preference lies in [-1, 1]; the mixture is scaled to a preference of 0.1.
MIXING_PREFERENCE = 0.10


@dataclass
class VariantResult:
    variant_id: int
    key: str
    label: str
    is_control: bool
    share: int
    users: int = 0
    impressions: int = 0
    items_shown: int = 0
    click_through: stats.Estimate | None = None
    conversion: stats.Estimate | None = None
    mean_rating: stats.Estimate | None = None
    against_control: dict[str, stats.Comparison] = field(default_factory=dict)  # metric -> comparison


@dataclass
class ExperimentReport:
    experiment_id: int
    name: str
    status: str
    mode: str
    variants: list[VariantResult]
    verdicts: list[str]
    winner_key: str | None  # a treatment significantly better than control on click-through, else None
    daily: list[dict]
    interleaving: dict | None = None


def _variant_result(variant, outcomes) -> VariantResult:
    result = VariantResult(
        variant_id=variant.pk, key=variant.key, label=variant.label, is_control=variant.is_control, share=variant.share
    )
    if outcomes is None:
        return result
    result.users = len(outcomes.profile_ids)
    result.impressions = int(outcomes.impressions.sum())
    result.items_shown = int(outcomes.shown.sum())
    result.click_through = stats.ratio_estimate(outcomes.clicked, outcomes.shown)
    result.conversion = stats.mean_estimate((outcomes.converted > 0).astype(np.float64))
    rated = outcomes.rating_count > 0
    result.mean_rating = (
        stats.ratio_estimate(outcomes.rating_sum[rated], outcomes.rating_count[rated]) if rated.any() else None
    )
    return result


def experiment_report(experiment: Experiment) -> ExperimentReport:
    variants = experiment_variants(experiment)
    if experiment.mode == ExperimentMode.INTERLEAVE:
        return _interleaving_report(experiment, variants)
    outcomes = experiment_outcomes(
        experiment=experiment, positive_threshold=float(default_training_config().positive_threshold)
    )
    results = [_variant_result(variant, outcomes.get(variant.pk)) for variant in variants]
    control = next((result for result in results if result.is_control), None)
    treatments = [result for result in results if not result.is_control]
    alpha = ALPHA / max(1, len(treatments))
    verdicts: list[str] = []
    winner: VariantResult | None = None
    for treatment in treatments:
        if control is None:
            break
        for attribute in ("click_through", "conversion"):
            mine, theirs = getattr(treatment, attribute), getattr(control, attribute)
            if mine is None or theirs is None:
                continue
            treatment.against_control[attribute] = stats.compare(theirs, mine, alpha=alpha)
        comparison = treatment.against_control.get("click_through")
        if comparison is None:
            verdicts.append(f"Not significant yet: no traffic on {treatment.label} or {control.label}.")
            continue
        verdicts.append(stats.verdict(control.label, treatment.label, comparison, metric="click-through"))
        if comparison.significant and comparison.difference > 0:
            best = winner.against_control["click_through"].difference if winner else -math.inf
            if comparison.difference > best:
                winner = treatment
    return ExperimentReport(
        experiment_id=experiment.pk,
        name=experiment.name,
        status=experiment.status,
        mode=experiment.mode,
        variants=results,
        verdicts=verdicts,
        winner_key=winner.key if winner else None,
        daily=_daily(experiment, variants),
    )


def _daily(experiment: Experiment, variants) -> list[dict]:
    keys = {variant.pk: variant.key for variant in variants}
    return [
        {
            "day": day.isoformat(),
            "variant": keys.get(variant_id, str(variant_id)),
            "items_shown": shown,
            "impressions": impressions,
            "clicked": clicked,
            "click_through": clicked / shown if shown else None,
        }
        for variant_id, day, shown, impressions, clicked in experiment_daily(experiment=experiment)
    ]


def _interleaving_report(experiment: Experiment, variants) -> ExperimentReport:
    """Team-draft interleaving: each clicking user prefers the team whose items they clicked more."""
    control = next((variant for variant in variants if variant.is_control), variants[0])
    treatment = next(variant for variant in variants if variant.pk != control.pk)
    credits = interleaved_credits(experiment=experiment)
    preferences = np.asarray(
        [np.sign(team.get(treatment.pk, 0) - team.get(control.pk, 0)) for team in credits.values()], dtype=np.float64
    )
    estimate = stats.mean_estimate(preferences)
    p_value = stats.mixture_p_value(estimate.value, estimate.variance, MIXING_PREFERENCE) if estimate.defined else 1.0
    significant = p_value < ALPHA
    needed = None
    if not significant and estimate.defined:
        needed = stats.users_needed(
            effect=max(abs(estimate.value), MIXING_PREFERENCE),
            unit_variance=estimate.unit_variance,
            mixing_sd=MIXING_PREFERENCE,
            alpha=ALPHA,
            users_now=estimate.users,
        )
    comparison = stats.Comparison(
        difference=estimate.value if estimate.defined else math.nan,
        relative=None,
        p_value=p_value,
        alpha=ALPHA,
        significant=significant,
        users_needed=needed,
    )
    wins = {
        treatment.key: int((preferences > 0).sum()),
        control.key: int((preferences < 0).sum()),
        "ties": int((preferences == 0).sum()),
    }
    results = [
        VariantResult(variant_id=v.pk, key=v.key, label=v.label, is_control=v.pk == control.pk, share=v.share)
        for v in (control, treatment)
    ]
    for result in results:
        result.users = int(sum(1 for team in credits.values() if team.get(result.variant_id, 0) > 0))
    return ExperimentReport(
        experiment_id=experiment.pk,
        name=experiment.name,
        status=experiment.status,
        mode=experiment.mode,
        variants=results,
        verdicts=[
            stats.verdict(control.label, treatment.label, comparison, metric="interleaved clicks").replace(
                "more users per variant", "more clicking users"
            )
        ],
        winner_key=treatment.key if significant and comparison.difference > 0 else None,
        daily=_daily(experiment, variants),
        interleaving={
            "exposed_users": interleaved_exposed_users(experiment=experiment),
            "clicking_users": estimate.users,
            "preference": None if not estimate.defined else estimate.value,
            "preference_low": None if not estimate.defined else estimate.low,
            "preference_high": None if not estimate.defined else estimate.high,
            "p_value": p_value,
            "wins": wins,
        },
    )


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def report_data(report: ExperimentReport) -> dict:
    """The report as JSON-ready data (non-finite numbers become null)."""
    return _plain(asdict(report))
