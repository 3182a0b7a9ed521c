"""Catalogue writes: items, user profiles, their side features, and feedback.

Every function here validates with ``full_clean``, writes inside ``transaction.atomic`` and
returns what it wrote. Signals in ``catalog.signals`` are sent after commit only. One module per
concept; callers import from the package. The feedback history rules (append-only log, one
current row per stateful kind, like/dislike interplay, idempotency, deletion) are described in
docs/feedback.md.
"""

from catalog.models import FEATURE_WEIGHT_MAX

from .features import FeatureSpec
from .feedback import (
    FEEDBACK_BATCH_LIMIT,
    FEEDBACK_VALUE_LIMIT,
    OPPOSING_KINDS,
    FeedbackBatchError,
    feedback_delete,
    feedback_pairs_delete,
    feedback_record,
    feedback_record_batch,
)
from .items import ITEM_UPDATABLE_FIELDS, item_change_announce, item_create, item_update
from .users import user_profile_create, user_profile_get_or_create_for_user, user_profile_update

__all__ = [
    "FEATURE_WEIGHT_MAX",
    "FEEDBACK_BATCH_LIMIT",
    "FEEDBACK_VALUE_LIMIT",
    "ITEM_UPDATABLE_FIELDS",
    "OPPOSING_KINDS",
    "FeatureSpec",
    "FeedbackBatchError",
    "feedback_delete",
    "feedback_pairs_delete",
    "feedback_record",
    "feedback_record_batch",
    "item_change_announce",
    "item_create",
    "item_update",
    "user_profile_create",
    "user_profile_get_or_create_for_user",
    "user_profile_update",
]
