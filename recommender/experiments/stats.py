"""The statistics of an experiment's results: estimates per variant, comparisons to control,
and the verdict. Pure numpy and the standard library; no Django.

The unit of analysis is the user, because the user is what assignment randomises. A user's
impressions are not independent of each other (one user clicks a lot, another never), so a rate
such as click-through (clicked items / shown items, summed over users) is a *ratio* of two
per-user sums. Its variance comes from the delta method over users (Deng, Knoblich and Lu 2018,
"Applying the Delta Method in Metric Analytics"), which a two-proportion test over impressions
would understate.

The p-value is *always valid* (a mixture sequential probability ratio test: Johari, Pekelis and
Walsh 2017, "Always Valid Inference"). A team looks at the Experiments page every day; with a
fixed-horizon test, stopping at the first p < 0.05 would declare a difference that is not there
far more often than 5% of the time. With the mixture statistic the chance that an A/A test ever
shows significance, at any number of looks, stays below alpha. The price is power: it needs
somewhat more users than a fixed-horizon test planned for one look.

The mixture is normal with standard deviation ``MIXING_RELATIVE_EFFECT`` of the pooled rate: the
effects the test is most sensitive to are of that order (10% relative by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MIXING_RELATIVE_EFFECT = 0.10
POWER = 0.80
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Estimate:
    """A rate over users: its value, the variance of that value, a 95% interval, the users behind it.

    ``unit_variance`` is the per-user variance of the linearised metric (``variance × users``),
    what a sample-size calculation needs.
    """

    value: float
    variance: float
    low: float
    high: float
    users: int
    unit_variance: float

    @property
    def defined(self) -> bool:
        return self.users > 0 and math.isfinite(self.value)


_EMPTY = Estimate(value=math.nan, variance=math.nan, low=math.nan, high=math.nan, users=0, unit_variance=math.nan)


def ratio_estimate(numerators: np.ndarray, denominators: np.ndarray, *, confidence: float = 0.95) -> Estimate:
    """Σ numerators / Σ denominators over users, with the delta-method variance.

    Parameters
    ----------
    numerators, denominators : ndarray of shape (n_users,)
        Per user: e.g. items clicked and items shown. Users with a zero denominator count for nothing.
    """
    numerators = np.asarray(numerators, dtype=np.float64)
    denominators = np.asarray(denominators, dtype=np.float64)
    keep = denominators > 0
    numerators, denominators = numerators[keep], denominators[keep]
    users = len(denominators)
    if users == 0:
        return _EMPTY
    mean_denominator = float(denominators.mean())
    value = float(numerators.sum() / denominators.sum())
    # Linearisation: (x - R·y) / ȳ per user; its sample variance over n is the estimate's variance.
    linear = (numerators - value * denominators) / mean_denominator
    unit_variance = float(linear.var(ddof=1)) if users > 1 else math.inf
    return _estimate(value, unit_variance, users, confidence)


def mean_estimate(values: np.ndarray, *, confidence: float = 0.95) -> Estimate:
    """The mean of per-user values (a 0/1 conversion flag, a preference in {-1, 0, 1})."""
    values = np.asarray(values, dtype=np.float64)
    users = len(values)
    if users == 0:
        return _EMPTY
    unit_variance = float(values.var(ddof=1)) if users > 1 else math.inf
    return _estimate(float(values.mean()), unit_variance, users, confidence)


def _estimate(value: float, unit_variance: float, users: int, confidence: float) -> Estimate:
    variance = unit_variance / users
    half = _NORMAL.inv_cdf(0.5 + confidence / 2) * math.sqrt(variance) if math.isfinite(variance) else math.inf
    return Estimate(
        value=value, variance=variance, low=value - half, high=value + half, users=users, unit_variance=unit_variance
    )


def mixture_p_value(difference: float, variance: float, mixing_sd: float) -> float:
    """The always-valid p-value of a normal estimate ``difference`` of zero, with variance ``variance``.

    1 / Λ, where Λ = sqrt(V / (V + τ²)) · exp(θ² τ² / (2 V (V + τ²))) is the likelihood ratio of
    "the difference is drawn from N(0, τ²)" against "it is 0", capped at 1.
    """
    if not (math.isfinite(difference) and math.isfinite(variance)) or mixing_sd <= 0:
        return 1.0
    if variance <= 0:
        return 0.0 if difference != 0 else 1.0
    tau2 = mixing_sd * mixing_sd
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + difference * difference * tau2 / (
        2 * variance * (variance + tau2)
    )
    return float(min(1.0, math.exp(-log_ratio)))


@dataclass(frozen=True)
class Comparison:
    """A treatment against control on one metric."""

    difference: float  # treatment - control
    relative: float | None  # difference / control, None when control is 0
    p_value: float  # always valid (`mixture_p_value`)
    alpha: float  # the level the verdict uses (Bonferroni-corrected for several treatments)
    significant: bool
    users_needed: int | None  # more users per variant for a verdict at POWER, None when undefined


def compare(control: Estimate, treatment: Estimate, *, alpha: float = 0.05) -> Comparison:
    """Compare two independent estimates; the mixing scale is ``MIXING_RELATIVE_EFFECT`` of the pooled value."""
    if not (control.defined and treatment.defined):
        return Comparison(math.nan, None, 1.0, alpha, False, None)
    difference = treatment.value - control.value
    variance = control.variance + treatment.variance
    pooled = (control.value * control.users + treatment.value * treatment.users) / (control.users + treatment.users)
    mixing_sd = MIXING_RELATIVE_EFFECT * abs(pooled)
    p_value = mixture_p_value(difference, variance, mixing_sd)
    significant = p_value < alpha
    needed = None
    if not significant:
        needed = users_needed(
            effect=max(abs(difference), mixing_sd),
            unit_variance=control.unit_variance + treatment.unit_variance,
            mixing_sd=mixing_sd,
            alpha=alpha,
            users_now=min(control.users, treatment.users),
        )
    relative = difference / control.value if control.value else None
    return Comparison(difference, relative, p_value, alpha, significant, needed)


def users_needed(
    *, effect: float, unit_variance: float, mixing_sd: float, alpha: float, users_now: int, limit: int = 10**9
) -> int | None:
    """More users per variant until a true difference of ``effect`` is declared with probability ``POWER``.

    Solved for the mixture test itself: the smallest n at which the estimate's ``POWER``
    quantile under that effect (effect − z_power·sqrt(V/n)) crosses the test's threshold. None
    when the variance or the effect is unknown (too few users yet).
    """
    if not (math.isfinite(unit_variance) and unit_variance > 0 and effect > 0 and mixing_sd > 0):
        return None
    z_power = _NORMAL.inv_cdf(POWER)

    def declared(n: int) -> bool:
        variance = unit_variance / n
        observed = effect - z_power * math.sqrt(variance)
        return observed > 0 and mixture_p_value(observed, variance, mixing_sd) < alpha

    high = max(2, users_now)
    while not declared(high):
        high *= 2
        if high > limit:
            return None
    low = max(1, high // 2)
    while low < high:
        middle = (low + high) // 2
        if declared(middle):
            high = middle
        else:
            low = middle + 1
    return max(0, high - users_now)


def verdict(control_name: str, treatment_name: str, comparison: Comparison, *, metric: str) -> str:
    """One sentence a product manager can act on."""
    confidence = f"{100 * (1 - comparison.alpha):.4g}%"
    if comparison.significant:
        better = comparison.difference > 0
        return f"{treatment_name} is {'better' if better else 'worse'} than {control_name} on {metric} at {confidence}."
    if comparison.users_needed is None:
        return f"Not significant yet: too few users to estimate how many more are needed ({metric})."
    return (
        f"Not significant yet ({metric}): about {comparison.users_needed:,} more users per variant needed "
        f"to tell a difference of this size at {confidence}."
    )
