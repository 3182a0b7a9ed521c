"""Feedback: ``POST /api/v1/feedback``, one event or an all-or-nothing batch."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors
from catalog.models import UserProfile
from catalog.services import (
    FEEDBACK_BATCH_LIMIT,
    FEEDBACK_VALUE_LIMIT,
    FeedbackBatchError,
    feedback_record_batch,
    user_profile_get_or_create_for_user,
)
from config.exception_handlers import ConflictError
from config.strict_json import StrictSerializer

from .common import StrictFloatField, is_staff, validated, without_schema


class FeedbackEventInputSerializer(StrictSerializer):
    user = serializers.CharField(
        max_length=128,
        required=False,
        help_text="External user id; defaults to the caller. Only staff may name another user.",
    )
    item = serializers.CharField(max_length=128, help_text="External item id.")
    kind = serializers.CharField(
        max_length=32,
        help_text="A feedback kind code: rating, like, dislike, view, click, purchase, play, … "
        "``play`` is an implicit count (value = plays so far, 0 or more); it is stateful, so a newer "
        "count replaces the pair's current one, and training weighs it by log(1 + value).",
    )
    value = StrictFloatField(
        required=False,
        allow_null=True,
        min_value=-FEEDBACK_VALUE_LIMIT,
        max_value=FEEDBACK_VALUE_LIMIT,
        help_text="Defaults to the kind's default; each kind may narrow the range (ratings: 0.5–5; "
        "counts such as play: 0 and more).",
    )
    created_at = serializers.DateTimeField(required=False, allow_null=True)
    idempotency_key = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)


class FeedbackBatchInputSerializer(StrictSerializer):
    events = FeedbackEventInputSerializer(many=True, allow_empty=False, max_length=FEEDBACK_BATCH_LIMIT)


class FeedbackRecordInputSerializer(serializers.Serializer):
    """The body of ``POST /feedback`` for the schema only (catalog.openapi); the view reads either
    serializer above itself."""


class FeedbackOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    user = serializers.CharField(source="user.external_id")
    item = serializers.CharField(source="item.external_id")
    kind = serializers.CharField(source="kind_id")
    value = serializers.FloatField()
    created_at = serializers.DateTimeField()
    is_current = serializers.BooleanField(
        allow_null=True, help_text="True: current state; false: superseded; null: repeatable event."
    )
    idempotency_key = serializers.CharField(allow_null=True)


class FeedbackRecordedSerializer(FeedbackOutputSerializer):
    replayed = serializers.BooleanField(help_text="True when the idempotency key was seen before: nothing was written.")


class FeedbackBatchOutputSerializer(serializers.Serializer):
    events = FeedbackRecordedSerializer(many=True)


def _feedback_batch_errors(errors: dict[int, dict[str, list[str]]]) -> dict[str, dict[str, Any]]:
    return {"events": {str(index): fields for index, fields in sorted(errors.items())}}


class FeedbackRecordApi(APIView):
    """Record one event, or ``{"events": [...]}`` all-or-nothing.

    201 with the stored rows; 200 when every idempotency key had been seen before (nothing
    written). Errors of a batch are keyed by the index of the bad event.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="feedback_record",
        request=FeedbackRecordInputSerializer,
        responses={
            201: PolymorphicProxySerializer(
                component_name="FeedbackRecordResponse",
                serializers=[FeedbackRecordedSerializer, FeedbackBatchOutputSerializer],
                resource_type_field_name=None,
            ),
            200: OpenApiResponse(description="Idempotency key repeated: the stored rows, nothing written."),
            400: OpenApiResponse(description="Field errors; for a batch keyed by event index."),
            409: OpenApiResponse(
                description="An idempotency key already names a different event (field errors "
                "as for 400); nothing written."
            ),
        },
    )
    def post(self, request):
        is_batch = isinstance(request.data, dict) and "events" in request.data
        if is_batch:
            serializer = FeedbackBatchInputSerializer(data=request.data)
            if not serializer.is_valid():
                raise exceptions.ValidationError(self._batch_serializer_errors(serializer.errors))
            events = [dict(event) for event in serializer.validated_data["events"]]
        else:
            events = [dict(validated(FeedbackEventInputSerializer, request.data))]

        own_profile = self._caller_profile(request, events)
        try:
            rows = feedback_record_batch(profile=own_profile, events=events)
        except FeedbackBatchError as error:
            error_class = ConflictError if error.conflict else exceptions.ValidationError
            if is_batch:
                raise error_class(_feedback_batch_errors(error.event_errors)) from error
            raise error_class(error.event_errors[min(error.event_errors)]) from error

        written = any(not row.replayed for row in rows)
        answer_status = status.HTTP_201_CREATED if written else status.HTTP_200_OK
        if is_batch:
            return Response({"events": FeedbackRecordedSerializer(rows, many=True).data}, status=answer_status)
        return Response(FeedbackRecordedSerializer(rows[0]).data, status=answer_status)

    @staticmethod
    def _batch_serializer_errors(errors: dict) -> dict:
        events = errors.get("events")
        if isinstance(events, list) and all(isinstance(e, dict) for e in events):
            errors = {**errors, "events": {str(i): e for i, e in enumerate(events) if e}}
        return errors

    @staticmethod
    def _caller_profile(request, events: list[dict[str, Any]]) -> UserProfile | None:
        """The caller's own profile (created on first use) for events that name no user.

        Naming a user other than yourself needs staff; the check runs before anything is written.
        """
        own = selectors.user_profile_for_user(user=request.user)
        named = {event["user"].strip() for event in events if event.get("user") is not None}
        foreign = named - ({own.external_id} if own else set())
        if foreign and not is_staff(request):
            raise exceptions.PermissionDenied("Only staff may record feedback for another user.")
        if own is None and any(event.get("user") is None for event in events):
            own = user_profile_get_or_create_for_user(user=request.user)
        return own


FeedbackRecordSlashApi = without_schema(FeedbackRecordApi)
