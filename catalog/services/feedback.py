"""Feedback writes: an append-only log with one current row per stateful kind (docs/feedback.md).

Like/dislike interplay, idempotency keys, all-or-nothing batches and deletion live here.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from catalog import signals
from catalog.models import Feedback, FeedbackKind, Item, UserProfile
from config.validation import CONFLICT, is_conflict

logger = logging.getLogger(__name__)

# A stateful kind listed here ends the current state of its opposite on the same item:
# liking an item you disliked replaces the dislike (and vice versa), so a pair never has both.
OPPOSING_KINDS: dict[str, str] = {"like": "dislike", "dislike": "like"}

# Kinds without bounds still get a sanity limit: one absurd value would dominate training.
FEEDBACK_VALUE_LIMIT = 1e6
FEEDBACK_BATCH_LIMIT = 1000


def _feedback_kind_get(code: Any) -> FeedbackKind:
    kind = FeedbackKind.objects.filter(pk=str(code or "")).first() if isinstance(code, str) else None
    if kind is None:
        known = ", ".join(FeedbackKind.objects.values_list("code", flat=True))
        raise ValidationError({"kind": f"Unknown feedback kind {code!r}; known kinds: {known}."})
    return kind


def _feedback_value_clean(kind: FeedbackKind, value: Any) -> float:
    if value is None:
        return float(kind.default_value)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValidationError({"value": f"The value must be a number, not {type(value).__name__}."})
    value = float(value)
    if not math.isfinite(value):
        raise ValidationError({"value": "The value must be a finite number."})
    low, high = kind.min_value, kind.max_value
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"between {low:g} and {high:g}"
            if low is not None and high is not None
            else (f"at least {low:g}" if low is not None else f"at most {high:g}")
        )
        raise ValidationError({"value": f"A {kind.code} must be {bounds}; got {value:g}."})
    if abs(value) > FEEDBACK_VALUE_LIMIT:
        raise ValidationError({"value": f"The value must be within ±{FEEDBACK_VALUE_LIMIT:g}; got {value:g}."})
    return value


def _created_at_clean(created_at: Any) -> dt.datetime:
    if created_at is None:
        return timezone.now()
    if not isinstance(created_at, dt.datetime):
        raise ValidationError({"created_at": "created_at must be a datetime."})
    if timezone.is_naive(created_at):
        raise ValidationError({"created_at": "created_at must carry a time zone (e.g. 2024-05-01T12:00:00Z)."})
    return created_at


def _idempotency_key_clean(key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str):
        raise ValidationError({"idempotency_key": "The idempotency key must be a string."})
    key = key.strip()
    if len(key) > 128:
        raise ValidationError({"idempotency_key": "The idempotency key must be at most 128 characters."})
    return key or None


def _feedback_replay(*, key: str, profile: UserProfile, item: Item, kind: FeedbackKind) -> Feedback | None:
    """The row already stored under ``key``; an error when the key belongs to another event."""
    existing = Feedback.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if (existing.user_id, existing.item_id, existing.kind_id) != (profile.pk, item.pk, kind.pk):
        raise ValidationError(
            {
                "idempotency_key": ValidationError(
                    "This idempotency key was already used for a different event.", code=CONFLICT
                )
            }
        )
    existing.replayed = True
    return existing


def _feedback_pair_lock(*, profile_id: int, item_id: int) -> None:
    """Serialise stateful writes of one (user, item) until the transaction ends.

    ``select_for_update`` alone is not enough: with three writers, the one that waited on a
    row another writer has just superseded finds no current row, inserts, and collides again,
    so a single retry can fail. An advisory lock keyed on the pair (which also covers the
    like/dislike interplay) lets exactly one writer at a time read and replace the state.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"catalog.feedback:{profile_id}:{item_id}"]
        )


def _feedback_insert_stateful(row: Feedback) -> None:
    """Supersede the current state of (user, item, kind) — and of its opposite — then insert ``row``.

    Writers of the pair are serialised by an advisory lock, and the current rows are locked
    with ``select_for_update``; a writer that bypasses this service (the admin, a bulk import)
    can still race us, so a violation of the partial unique index is retried once.
    """
    codes = [row.kind_id, *([OPPOSING_KINDS[row.kind_id]] if row.kind_id in OPPOSING_KINDS else [])]
    _feedback_pair_lock(profile_id=row.user_id, item_id=row.item_id)
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                current = list(
                    Feedback.objects.select_for_update()
                    .filter(user_id=row.user_id, item_id=row.item_id, kind_id__in=codes, is_current=True)
                    .order_by("-created_at", "-id")
                )
                # The newest event is the current one, so an older event arriving late
                # (an import, a delayed batch) is stored as history and changes nothing.
                if current and row.created_at < current[0].created_at:
                    row.is_current = False
                else:
                    row.is_current = True
                    Feedback.objects.filter(pk__in=[c.pk for c in current]).update(is_current=False)
                row.save(force_insert=True)
            return
        except IntegrityError as error:
            row.pk = None
            if row.idempotency_key and Feedback.objects.filter(idempotency_key=row.idempotency_key).exists():
                raise  # the caller turns this into a replay
            if attempt == 2:
                raise
            logger.info(
                "feedback.record.retry user_id=%s item_id=%s kind=%s error=%s",
                row.user_id,
                row.item_id,
                row.kind_id,
                type(error).__name__,
            )


def feedback_record(
    *,
    profile: UserProfile,
    item: Item,
    kind: str,
    value: float | None = None,
    created_at: dt.datetime | None = None,
    idempotency_key: str | None = None,
) -> Feedback:
    """Store one feedback event and return its row.

    Stateful kinds (rating, like, dislike) supersede the current row of the same user, item and
    kind (like and dislike also supersede each other). A repeated ``idempotency_key`` writes
    nothing and returns the stored row. The returned row has ``replayed`` set: False when this
    call wrote it, True for a repeated key. ``feedback_recorded`` is sent after commit.
    """
    feedback_kind = _feedback_kind_get(kind)
    value = _feedback_value_clean(feedback_kind, value)
    created_at = _created_at_clean(created_at)
    key = _idempotency_key_clean(idempotency_key)
    if profile.pk is None or item.pk is None:
        raise ValidationError("The profile and the item must be saved before recording feedback.")

    with transaction.atomic():
        if key:
            replay = _feedback_replay(key=key, profile=profile, item=item, kind=feedback_kind)
            if replay is not None:
                return replay
        row = Feedback(
            user=profile,
            item=item,
            kind=feedback_kind,
            value=value,
            created_at=created_at,
            idempotency_key=key,
            is_current=None,
        )
        # Foreign keys are loaded objects already, and the unique rules are enforced by the
        # database below (a check-then-insert query would be racy), so full_clean skips them.
        row.full_clean(exclude=["user", "item", "kind"], validate_unique=False, validate_constraints=False)
        try:
            if feedback_kind.is_stateful:
                _feedback_insert_stateful(row)
            else:
                with transaction.atomic():
                    row.save(force_insert=True)
        except IntegrityError:
            # Another request stored the same idempotency key between our check and insert.
            replay = _feedback_replay(key=key, profile=profile, item=item, kind=feedback_kind) if key else None
            if replay is None:
                raise
            return replay

        row.replayed = False
        transaction.on_commit(
            lambda: signals.feedback_recorded.send(
                sender=Feedback,
                profile_id=row.user_id,
                item_id=row.item_id,
                kind=row.kind_id,
                feedback_id=row.pk,
            )
        )
    logger.debug(
        "feedback.recorded id=%s user_id=%s item_id=%s kind=%s current=%s",
        row.pk,
        row.user_id,
        row.item_id,
        row.kind_id,
        row.is_current,
    )
    return row


class FeedbackBatchError(ValidationError):
    """Some events of a batch are invalid; nothing of the batch was written.

    ``event_errors`` maps the index of each bad event to ``{field: [messages]}``. As a plain
    ValidationError it reads ``{"events.3.value": [...]}``.
    """

    def __init__(self, event_errors: dict[int, dict[str, list[str]]], *, conflict: bool = False):
        self.event_errors = event_errors
        self.conflict = conflict  # the event clashes with stored data (see config.exception_handlers)
        super().__init__(
            {
                f"events.{index}.{field}": messages
                for index, fields in sorted(event_errors.items())
                for field, messages in fields.items()
            }
        )


def _errors_of(error: ValidationError) -> dict[str, list[str]]:
    return error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": list(error.messages)}


def _batch_lookup(events: list[Mapping[str, Any]], field: str, model) -> dict[str, Any]:
    """Load every object named by external id in ``events[*][field]`` with one query."""
    names = {e.get(field) for e in events if isinstance(e, Mapping) and isinstance(e.get(field), str)}
    names = {name.strip() for name in names if name and name.strip()}
    return {obj.external_id: obj for obj in model.objects.filter(external_id__in=names)}


def _batch_event_resolve(
    event: Any,
    *,
    profile: UserProfile | None,
    items: dict[str, Item],
    profiles: dict[str, UserProfile],
) -> dict[str, Any]:
    """Turn one batch event into ``feedback_record`` keyword arguments, or raise with field errors."""
    if not isinstance(event, Mapping):
        raise ValidationError("Each event must be an object.")
    errors: dict[str, str] = {}

    user = event.get("user")
    if user is None:
        user = profile
        if user is None:
            errors["user"] = "Name the user (external id): there is no default profile."
    elif isinstance(user, str):
        if not user.strip():
            errors["user"] = "The user may not be empty."
        else:
            user = profiles.get(user.strip())
            if user is None:
                errors["user"] = f"Unknown user {event['user']!r}."
    elif not isinstance(user, UserProfile):
        errors["user"] = "The user must be an external id."

    item = event.get("item")
    if isinstance(item, str):
        if not item.strip():
            errors["item"] = "The item may not be empty."
        else:
            item = items.get(item.strip())
            if item is None:
                errors["item"] = f"Unknown item {event.get('item')!r}."
    elif not isinstance(item, Item):
        errors["item"] = "The item must be an external id."

    if "kind" not in event:
        errors["kind"] = "The kind is required."
    if errors:
        raise ValidationError(errors)
    return {
        "profile": user,
        "item": item,
        "kind": event["kind"],
        "value": event.get("value"),
        "created_at": event.get("created_at"),
        "idempotency_key": event.get("idempotency_key"),
    }


def feedback_record_batch(*, profile: UserProfile | None = None, events: list[Mapping[str, Any]]) -> list[Feedback]:
    """Record several events all-or-nothing and return their rows in input order.

    Each event is a mapping with ``item`` (Item or external id), ``kind``, and optionally
    ``user`` (UserProfile or external id; defaults to ``profile``), ``value``, ``created_at``
    and ``idempotency_key``. Every event is validated first; if any is invalid,
    ``FeedbackBatchError`` names each bad event by index and nothing is written. An error
    that only shows while writing (an idempotency key used for another event) rolls the whole
    batch back and is reported the same way.
    """
    if not isinstance(events, list) or not events:
        raise ValidationError({"events": "Send a non-empty list of events."})
    if len(events) > FEEDBACK_BATCH_LIMIT:
        raise ValidationError({"events": f"Send at most {FEEDBACK_BATCH_LIMIT} events at once; got {len(events)}."})

    items = _batch_lookup(events, "item", Item)
    profiles = _batch_lookup(events, "user", UserProfile)
    kinds = {kind.code: kind for kind in FeedbackKind.objects.all()}
    resolved: list[dict[str, Any]] = []
    errors: dict[int, dict[str, list[str]]] = {}
    for index, event in enumerate(events):
        try:
            arguments = _batch_event_resolve(event, profile=profile, items=items, profiles=profiles)
            kind = kinds.get(arguments["kind"]) if isinstance(arguments["kind"], str) else None
            if kind is None:
                # Raises the error that lists the known kinds (or finds one created since `kinds` was read).
                kind = _feedback_kind_get(arguments["kind"])
            _feedback_value_clean(kind, arguments["value"])
            _created_at_clean(arguments["created_at"])
            _idempotency_key_clean(arguments["idempotency_key"])
            resolved.append(arguments)
        except ValidationError as error:
            errors[index] = _errors_of(error)
    if errors:
        raise FeedbackBatchError(errors)

    rows: list[Feedback] = []
    with transaction.atomic():
        for index, arguments in enumerate(resolved):
            try:
                rows.append(feedback_record(**arguments))
            except ValidationError as error:
                raise FeedbackBatchError({index: _errors_of(error)}, conflict=is_conflict(error)) from error
    # A single API post also comes through here; only real batches are worth an INFO line.
    logger.log(
        logging.INFO if len(rows) > 1 else logging.DEBUG,
        "feedback.batch.recorded events=%s replayed=%s",
        len(rows),
        sum(r.replayed for r in rows),
    )
    return rows


@transaction.atomic
def feedback_delete(*, feedback: Feedback) -> None:
    """Remove one feedback row (the "my activity" page).

    Removing the current row of a stateful kind restores nothing: older superseded rows stay
    as history with ``is_current=False`` and the pair has no current state, which is what a
    person who removes a rating means. ``feedback_deleted`` is sent after commit.
    """
    profile_id, item_id, kind, was_current = feedback.user_id, feedback.item_id, feedback.kind_id, feedback.is_current
    deleted, _ = Feedback.objects.filter(pk=feedback.pk).delete()
    if not deleted:
        return
    logger.info("feedback.deleted user_id=%s item_id=%s kind=%s current=%s", profile_id, item_id, kind, was_current)
    transaction.on_commit(
        lambda: signals.feedback_deleted.send(
            sender=Feedback,
            profile_id=profile_id,
            item_id=item_id,
            kind=kind,
            was_current=bool(was_current),
        )
    )


def feedback_pairs_delete(*, user_ids: list[int], item_ids: list[int]) -> int:
    """Delete every feedback row of the given (user, item) pairs in one statement; returns rows deleted.

    For offline evaluation only, which hides held-out feedback inside a transaction it rolls back:
    no signals are sent and no caches are told. Must run inside a transaction.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("feedback_pairs_delete runs only inside a transaction that will be rolled back.")
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM catalog_feedback f USING unnest(%s::bigint[], %s::bigint[]) AS p(user_id, item_id) "
            "WHERE f.user_id = p.user_id AND f.item_id = p.item_id",
            [list(user_ids), list(item_ids)],
        )
        return cursor.rowcount
