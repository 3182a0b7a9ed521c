"""The parameters each rule kind accepts, their defaults and limits, and their validation.

Kept free of the database: `params_clean` checks types and ranges only. The two checks that
need data (the feature type exists, the pinned item exists) are made by ``Rule.clean``.
Parameters are plain data for the rule functions; none of them ever names an ORM field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.db import models


class RuleKind(models.TextChoices):
    FILTER_SEEN = "filter_seen", "Filter: already rated or seen"
    FILTER_DISLIKED = "filter_disliked", "Filter: disliked"
    FILTER_FEATURE = "filter_feature", "Filter: feature values"
    FILTER_AGE = "filter_age", "Filter: older than N days"
    FILTER_INACTIVE = "filter_inactive", "Filter: inactive items"
    BOOST_FEATURE = "boost_feature", "Boost: feature match"
    BOOST_FRESHNESS = "boost_freshness", "Boost: freshness (half-life)"
    DEMOTE_SHOWN = "demote_shown", "Boost: demote recently shown"
    DIVERSITY_MMR = "diversity_mmr", "Diversity: MMR on embeddings"
    DIVERSITY_FEATURE_CAP = "diversity_feature_cap", "Diversity: at most N per feature value"
    FAIRNESS_PROVIDER_CAP = "fairness_provider_cap", "Fairness: at most X% per provider"
    FAIRNESS_LONG_TAIL = "fairness_long_tail", "Fairness: at least Y% long tail"
    PIN = "pin", "Pin: item at a slot"


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "int" | "float" | "bool" | "str" | "str_list" | "choice"
    help: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False


FEATURE_TYPE = Param("feature_type", "str", "An item feature type, e.g. genre.", required=True)
FEATURE_VALUES = Param("values", "str_list", 'Feature values, e.g. ["Comedy", "Horror"].', required=True)
FILL_WHEN_SHORT = Param(
    "fill_when_short",
    "bool",
    "When fewer than k items satisfy the cap, fill the top k with the best "
    "remaining items anyway (false: the list stays short, the cap is never broken).",
    default=False,
)

KIND_PARAMS: dict[str, tuple[Param, ...]] = {
    RuleKind.FILTER_SEEN: (
        Param("include_views", "bool", "Also exclude items the user viewed or clicked.", default=True),
        Param(
            "impressions_within_days",
            "float",
            "Also exclude items shown to the user within this many days (null: impressions do not count).",
            minimum=0,
            minimum_exclusive=True,
            nullable=True,
        ),
    ),
    RuleKind.FILTER_DISLIKED: (
        Param(
            "rating_at_most",
            "float",
            "Also treat a current rating at or below this value as a dislike "
            "(null: only feedback kinds with a negative weight, such as dislike).",
            nullable=True,
        ),
    ),
    RuleKind.FILTER_FEATURE: (FEATURE_TYPE, FEATURE_VALUES),
    RuleKind.FILTER_AGE: (
        Param(
            "max_age_days",
            "float",
            "Exclude items published more than this many days ago.",
            required=True,
            minimum=0,
            minimum_exclusive=True,
        ),
        Param("keep_undated", "bool", "Keep items without a publication date.", default=True),
    ),
    RuleKind.FILTER_INACTIVE: (),
    RuleKind.BOOST_FEATURE: (
        FEATURE_TYPE,
        FEATURE_VALUES,
        Param(
            "mode",
            "choice",
            "multiply: score gains (factor − 1)·|score|; add: score + amount.",
            default="multiply",
            choices=("multiply", "add"),
        ),
        Param(
            "amount", "float", "The factor (multiply, > 0; below 1 demotes) or the added value (add).", required=True
        ),
    ),
    RuleKind.BOOST_FRESHNESS: (
        Param(
            "half_life_days",
            "float",
            "Age at which the boost has halved.",
            required=True,
            minimum=0,
            minimum_exclusive=True,
        ),
        Param(
            "weight",
            "float",
            "Boost of a brand-new item: score gains weight·|score|·0.5^(age/half_life).",
            default=0.5,
            minimum=0,
        ),
    ),
    RuleKind.DEMOTE_SHOWN: (
        Param(
            "within_hours",
            "float",
            "Items shown to the user within this many hours are demoted.",
            required=True,
            minimum=0,
            minimum_exclusive=True,
        ),
        Param(
            "factor",
            "float",
            "Score keeps this share: score − (1 − factor)·|score|.",
            default=0.5,
            minimum=0,
            maximum=1,
            maximum_exclusive=True,
        ),
    ),
    RuleKind.DIVERSITY_MMR: (
        Param(
            "lambda",
            "float",
            "Relevance weight in [0, 1]: 1 is plain ranking, 0 is pure novelty.",
            required=True,
            minimum=0,
            maximum=1,
        ),
    ),
    RuleKind.DIVERSITY_FEATURE_CAP: (
        FEATURE_TYPE,
        Param(
            "max_per_value", "int", "At most this many items per feature value in the top k.", required=True, minimum=1
        ),
        FILL_WHEN_SHORT,
    ),
    RuleKind.FAIRNESS_PROVIDER_CAP: (
        Param(
            "max_percent",
            "float",
            "At most this percentage of the k slots per provider (at least one slot).",
            required=True,
            minimum=0,
            maximum=100,
            minimum_exclusive=True,
        ),
        FILL_WHEN_SHORT,
    ),
    RuleKind.FAIRNESS_LONG_TAIL: (
        Param(
            "min_percent",
            "float",
            "At least this percentage of the k slots go to long-tail items.",
            required=True,
            minimum=0,
            maximum=100,
        ),
        Param(
            "percentile",
            "float",
            "Long tail: popularity at or below this percentile of the catalogue.",
            default=80,
            minimum=0,
            maximum=100,
            minimum_exclusive=True,
        ),
    ),
    RuleKind.PIN: (
        Param("item", "str", "External id of the item to pin.", required=True),
        Param("slot", "int", "1-based position in the list.", required=True, minimum=1),
    ),
}

KIND_HELP: dict[str, str] = {
    RuleKind.FILTER_SEEN: "Removes items the user already rated, liked, bought (and viewed, and was shown).",
    RuleKind.FILTER_DISLIKED: "Removes items the user disliked.",
    RuleKind.FILTER_FEATURE: "Removes items having any of the given feature values.",
    RuleKind.FILTER_AGE: "Removes items older than N days.",
    RuleKind.FILTER_INACTIVE: "Removes inactive (and deleted) items.",
    RuleKind.BOOST_FEATURE: "Raises (or lowers) the score of items having any of the given feature values.",
    RuleKind.BOOST_FRESHNESS: "Raises the score of new items, halving the boost every half-life.",
    RuleKind.DEMOTE_SHOWN: "Lowers the score of items the user was recently shown.",
    RuleKind.DIVERSITY_MMR: "Picks the top k greedily by maximal marginal relevance on item embeddings.",
    RuleKind.DIVERSITY_FEATURE_CAP: "Picks the top k with at most N items per value of a feature type.",
    RuleKind.FAIRNESS_PROVIDER_CAP: "Picks the top k with at most X% of the slots per provider.",
    RuleKind.FAIRNESS_LONG_TAIL: "Swaps long-tail items into the top k until Y% of it is long tail.",
    RuleKind.PIN: "Puts an item at a slot (loaded even when no source nominated it), within the rule's period.",
}


def _describe_range(param: Param) -> str:
    low = "" if param.minimum is None else ("> " if param.minimum_exclusive else "≥ ") + f"{param.minimum:g}"
    high = "" if param.maximum is None else ("< " if param.maximum_exclusive else "≤ ") + f"{param.maximum:g}"
    return " and ".join(part for part in (low, high) if part)


def _clean_value(param: Param, value: Any) -> tuple[Any, str | None]:
    """Return (clean value, None) or (None, message)."""
    if value is None:
        if param.nullable:
            return None, None
        return None, f"{param.name}: may not be null."
    if param.type == "bool":
        if not isinstance(value, bool):
            return None, f"{param.name}: must be true or false (got {value!r})."
        return value, None
    if param.type in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"{param.name}: must be a number (got {value!r})."
        if param.type == "int" and not float(value).is_integer():
            return None, f"{param.name}: must be a whole number (got {value!r})."
        if not math.isfinite(value):
            return None, f"{param.name}: must be finite (got {value!r})."
        value = int(value) if param.type == "int" else float(value)
        too_low = param.minimum is not None and (
            value <= param.minimum if param.minimum_exclusive else value < param.minimum
        )
        too_high = param.maximum is not None and (
            value >= param.maximum if param.maximum_exclusive else value > param.maximum
        )
        if too_low or too_high:
            return None, f"{param.name}: must be {_describe_range(param)} (got {value:g})."
        return value, None
    if param.type in ("str", "choice"):
        if not isinstance(value, str) or not value.strip():
            return None, f"{param.name}: must be a non-empty string (got {value!r})."
        if param.type == "choice" and value not in param.choices:
            return None, f"{param.name}: must be one of {', '.join(param.choices)} (got {value!r})."
        return value.strip(), None
    if param.type == "str_list":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            return None, f"{param.name}: must be a non-empty list of strings (got {value!r})."
        return [v.strip() for v in value], None
    raise AssertionError(f"unknown parameter type {param.type}")


def params_clean(kind: str, params: Any) -> tuple[dict, list[str]]:
    """Check ``params`` against ``kind``'s parameters; return (params with defaults, error messages).

    Unknown keys are refused rather than ignored, so a typo never silently disables a rule.
    """
    if kind not in KIND_PARAMS:
        return {}, [f"Unknown rule kind {kind!r}."]
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return {}, ['Parameters must be a JSON object, e.g. {"lambda": 0.7}.']
    specs = {param.name: param for param in KIND_PARAMS[kind]}
    errors = [
        f"{name}: unknown parameter for this kind; allowed: {', '.join(specs) or 'none'}."
        for name in params
        if name not in specs
    ]
    cleaned: dict[str, Any] = {}
    for name, param in specs.items():
        if name not in params:
            if param.required:
                errors.append(f"{name}: required. {param.help}")
            else:
                cleaned[name] = param.default
            continue
        value, error = _clean_value(param, params[name])
        if error:
            errors.append(error)
        else:
            cleaned[name] = value
    if (
        kind == RuleKind.BOOST_FEATURE
        and cleaned.get("mode") == "multiply"
        and "amount" in cleaned
        and cleaned["amount"] <= 0
    ):
        errors.append(f"amount: a multiplying factor must be > 0 (got {cleaned['amount']:g}).")
    return cleaned, errors


def params_help_lines(kind: str) -> list[str]:
    """One line per parameter of ``kind``, for the admin form's help text and the docs."""
    lines = []
    for param in KIND_PARAMS[kind]:
        bits = [param.type.replace("str_list", "list of strings")]
        if param.required:
            bits.append("required")
        else:
            bits.append(
                f"default {param.default!r}".replace("None", "null").replace("True", "true").replace("False", "false")
            )
        if param.choices:
            bits.append("one of " + "/".join(param.choices))
        if _describe_range(param):
            bits.append(_describe_range(param))
        lines.append(f"{param.name} ({', '.join(bits)}): {param.help}")
    return lines
