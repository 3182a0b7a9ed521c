"""User-profile writes: a profile is Django's auth user plus an external id and side features."""

from __future__ import annotations

import hashlib
import logging
import re

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from catalog.models import UserProfile

from .features import FeatureSpec, profile_features_replace

logger = logging.getLogger(__name__)


_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


def _username_for_external_id(external_id: str) -> str:
    """A valid, unused username derived from an external id (ids may hold any characters)."""
    User = get_user_model()
    candidate = external_id[:150]
    if _USERNAME_UNSAFE.search(candidate) or User.objects.filter(username=candidate).exists():
        digest = hashlib.sha1(external_id.encode()).hexdigest()[:10]
        candidate = f"{_USERNAME_UNSAFE.sub('-', external_id)[:120]}-{digest}"
    return candidate


@transaction.atomic
def user_profile_create(
    *,
    external_id: str,
    features: FeatureSpec | None = None,
    username: str | None = None,
    user=None,
) -> UserProfile:
    """Create a profile; without ``user`` an auth User with an unusable password is created.

    The username is ``username`` when given (it must be valid and free), otherwise derived
    from the external id.
    """
    external_id = (external_id or "").strip()
    profile = UserProfile(external_id=external_id)
    profile.full_clean(exclude=["user"])  # before creating a User we would have to roll back
    if user is None:
        User = get_user_model()
        user = User(username=username.strip() if username else _username_for_external_id(external_id))
        user.set_unusable_password()
        try:
            user.full_clean(exclude=["password"])
        except ValidationError as error:
            # error_dict keeps the codes: a taken username stays code "unique" (the API's 409).
            username_errors = error.error_dict.get("username") if hasattr(error, "error_dict") else None
            raise ValidationError({"username": username_errors or error.messages}) from error
        user.save()
    profile.user = user
    profile.full_clean()
    profile.save()
    if features:
        profile_features_replace(profile=profile, features=features)
    logger.info("catalog.profile.created profile_id=%s external_id=%s", profile.pk, external_id)
    return profile


def user_profile_get_or_create_for_user(*, user) -> UserProfile:
    """The profile of a person who signed up in the UI, created on first use as ``u-<user.pk>``.

    Safe when two requests of the same person race: the loser reads the winner's profile.
    """
    existing = UserProfile.objects.filter(user=user).first()
    if existing is not None:
        return existing
    external_id = f"u-{user.pk}"
    if UserProfile.objects.filter(external_id=external_id).exists():
        # An imported profile already uses that id; stay unique without guessing in a loop.
        external_id = f"u-{user.pk}-{hashlib.sha1(str(user.pk).encode()).hexdigest()[:8]}"
    try:
        with transaction.atomic():
            return user_profile_create(external_id=external_id, user=user)
    except (IntegrityError, ValidationError):
        existing = UserProfile.objects.filter(user=user).first()
        if existing is None:
            raise
        return existing


@transaction.atomic
def user_profile_update(
    *,
    profile: UserProfile,
    external_id: str | None = None,
    features: FeatureSpec | None = None,
) -> UserProfile:
    """Change the external id and/or replace the side features (when given)."""
    if external_id is not None and external_id.strip() != profile.external_id:
        profile.external_id = external_id.strip()
        profile.full_clean()
        profile.save(update_fields=["external_id"])
    if features is not None:
        profile_features_replace(profile=profile, features=features)
    logger.info("catalog.profile.updated profile_id=%s", profile.pk)
    return profile
