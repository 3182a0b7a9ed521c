"""Side features of items and user profiles: any accepted spelling in, one row per (type, value).

Features are shared rows (``Feature``), linked with a weight; writing an entity's features
replaces its whole set. Weights are 0..``FEATURE_WEIGHT_MAX`` (training refuses anything else).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

from django.core.exceptions import ValidationError

from catalog.models import FEATURE_WEIGHT_MAX, Feature, FeatureSubject, Item, ItemFeature, UserFeature, UserProfile

FeatureSpec = list[tuple[str, str, float]] | list[tuple[str, str]] | list[Mapping[str, Any]] | Mapping[str, Any]


def _features_normalize(features: FeatureSpec) -> dict[tuple[str, str], float]:
    """Turn any accepted feature spelling into ``{(type, value): weight}``.

    Accepted: ``[("genre", "Comedy", 1.0)]``, ``[("genre", "Comedy")]``,
    ``[{"type": "genre", "value": "Comedy", "weight": 1.0}]`` and
    ``{"genre": ["Comedy", "Drama"], "year": "1995", "tag": {"funny": 0.5}}``.
    A repeated (type, value) keeps its last weight.
    """
    triples: list[tuple[Any, Any, Any]] = []
    if isinstance(features, Mapping):
        for feature_type, values in features.items():
            if isinstance(values, Mapping):
                triples.extend((feature_type, value, weight) for value, weight in values.items())
            elif isinstance(values, (list, tuple, set)):
                triples.extend((feature_type, value, 1.0) for value in values)
            else:
                triples.append((feature_type, values, 1.0))
    elif isinstance(features, Iterable) and not isinstance(features, (str, bytes)):
        for entry in features:
            if isinstance(entry, Mapping):
                triples.append((entry.get("type"), entry.get("value"), entry.get("weight", 1.0)))
            elif isinstance(entry, (list, tuple)) and len(entry) in (2, 3):
                triples.append((entry[0], entry[1], entry[2] if len(entry) == 3 else 1.0))
            else:
                raise ValidationError({"features": f"Cannot read feature {entry!r}: use (type, value, weight)."})
    else:
        raise ValidationError({"features": "Features must be a list of (type, value, weight) or a mapping."})

    normalized: dict[tuple[str, str], float] = {}
    for feature_type, value, weight in triples:
        feature_type = str(feature_type or "").strip()
        value = str(value if value is not None else "").strip()
        if not feature_type or not value:
            raise ValidationError({"features": "Every feature needs a non-empty type and value."})
        if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(float(weight)):
            raise ValidationError({"features": f"The weight of {feature_type}={value} must be a finite number."})
        if not 0 <= weight <= FEATURE_WEIGHT_MAX:
            # Training refuses the whole feature matrix otherwise (negative, or beyond float32):
            # one stored bad weight would fail every run until someone found it.
            raise ValidationError(
                {
                    "features": f"The weight of {feature_type}={value} must be between 0 and "
                    f"{FEATURE_WEIGHT_MAX:g}; got {weight:g}."
                }
            )
        normalized[(feature_type, value)] = float(weight)
    return normalized


def _features_resolve(*, subject: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Feature]:
    """Return the Feature rows for ``keys``, creating the missing ones (race-safe)."""
    keys = set(keys)
    for feature_type, value in keys:
        # Field rules only (slug type, lengths); uniqueness is the database's job below.
        Feature(subject=subject, type=feature_type, value=value).full_clean(
            validate_unique=False,
            validate_constraints=False,
        )
    if not keys:
        return {}
    existing = _features_fetch(subject=subject, keys=keys)
    missing = keys - existing.keys()
    if missing:
        # ignore_conflicts: a concurrent writer may create the same feature; we read it back after.
        Feature.objects.bulk_create(
            [Feature(subject=subject, type=t, value=v) for t, v in missing],
            ignore_conflicts=True,
        )
        existing.update(_features_fetch(subject=subject, keys=missing))
    return existing


def _features_fetch(*, subject: str, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Feature]:
    types = {feature_type for feature_type, _ in keys}
    values = {value for _, value in keys}
    rows = Feature.objects.filter(subject=subject, type__in=types, value__in=values)
    return {(row.type, row.value): row for row in rows if (row.type, row.value) in keys}


def _features_validation_error(error: ValidationError) -> ValidationError:
    """Report feature field errors under ``features`` so API clients see which input was wrong."""
    if hasattr(error, "error_dict") and "features" not in error.error_dict:
        messages = [f"{field}: {message}" for field, items in error.message_dict.items() for message in items]
        return ValidationError({"features": messages})
    return error


def item_features_replace(*, item: Item, features: FeatureSpec) -> None:
    try:
        weights = _features_normalize(features)
        rows = _features_resolve(subject=FeatureSubject.ITEM, keys=weights.keys())
    except ValidationError as error:
        raise _features_validation_error(error) from error
    ItemFeature.objects.filter(item=item).delete()
    ItemFeature.objects.bulk_create(
        [ItemFeature(item=item, feature=rows[key], weight=weight) for key, weight in weights.items()]
    )


def profile_features_replace(*, profile: UserProfile, features: FeatureSpec) -> None:
    try:
        weights = _features_normalize(features)
        rows = _features_resolve(subject=FeatureSubject.USER, keys=weights.keys())
    except ValidationError as error:
        raise _features_validation_error(error) from error
    UserFeature.objects.filter(profile=profile).delete()
    UserFeature.objects.bulk_create(
        [UserFeature(profile=profile, feature=rows[key], weight=weight) for key, weight in weights.items()]
    )
