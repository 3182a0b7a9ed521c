"""The catalogue REST API (``/api/v1/``): items, users and feedback.

Thin views: an input serializer checks the shape of a request, a service writes, a selector
reads, an output serializer answers. Domain errors become JSON 4xx in
``config.exception_handlers``; nothing a client sends should end in a 500.
"""
from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors
from config.exception_handlers import ConflictError
from config.strict_json import StrictSerializer
from catalog.models import Item, UserProfile
from catalog.services import (
    FEATURE_WEIGHT_MAX,
    FEEDBACK_BATCH_LIMIT,
    FEEDBACK_VALUE_LIMIT,
    FeedbackBatchError,
    feedback_record_batch,
    item_create,
    item_update,
    user_profile_create,
    user_profile_get_or_create_for_user,
    user_profile_update,
)

MAX_PAGE_SIZE = 200


class CatalogPagination(PageNumberPagination):
    """A huge ``page_size`` is capped at MAX_PAGE_SIZE; one that is not a positive integer is a 400
    (DRF would silently fall back to the default, hiding the client's mistake)."""

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_number(self, request, paginator):
        # DRF would read "?page=" as page 1 and "?page=last" as the last page; the schema says a
        # positive integer, so anything else is the 404 of a page that does not exist.
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            raise exceptions.NotFound(f"Invalid page {raw!r}: pages are numbered from 1.")
        return super().get_page_number(request, paginator)

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            raise exceptions.ValidationError({"page_size": ["Must be a positive integer."]})
        return super().get_page_size(request)


class StrictFloatField(serializers.FloatField):
    """A JSON number only: DRF's FloatField would also take ``true`` (as 1.0) and numeric strings."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


# The paging query parameters as the API checks them: positive integers, page_size capped (not refused).
PAGE_PARAMETERS = [
    OpenApiParameter("page", {"type": "integer", "minimum": 1}, description="1-based; past the end: 404."),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1},
                     description=f"Default {CatalogPagination.page_size}; larger than {MAX_PAGE_SIZE} is capped."),
]


def _conflict(what: str) -> OpenApiResponse:
    return OpenApiResponse(description=f"{what} (field errors as for 400); nothing written.")


ITEM_ID_TAKEN = _conflict("Another item has this external id")
PROFILE_ID_TAKEN = _conflict("Another user has this external id (or username)")


def _paginated(view: APIView, queryset, serializer_class) -> Response:
    paginator = CatalogPagination()
    page = paginator.paginate_queryset(queryset, view.request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


# --------------------------------------------------------------------------------------------
# Serializers
# --------------------------------------------------------------------------------------------

class FeatureSerializer(StrictSerializer):
    type = serializers.SlugField(max_length=50, trim_whitespace=False)  # exactly the schema's pattern
    value = serializers.CharField(max_length=200)
    weight = StrictFloatField(default=1.0, min_value=0, max_value=FEATURE_WEIGHT_MAX)


def _features_out(links) -> list[dict[str, Any]]:
    ordered = sorted(links, key=lambda link: (link.feature.type, link.feature.value))
    return [{"type": l.feature.type, "value": l.feature.value, "weight": l.weight} for l in ordered]


def _features_in(features: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    return [(f["type"], f["value"], f["weight"]) for f in features]


class MetadataField(serializers.JSONField):
    """A JSON object; PostgreSQL's jsonb cannot store the NUL character, so it is refused here."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if not isinstance(data, dict):
            raise serializers.ValidationError("Metadata must be a JSON object.")
        if "\\u0000" in json.dumps(data):
            raise serializers.ValidationError("Metadata may not contain the NUL character.")
        return data


class ItemOutputSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    published_at = serializers.DateTimeField(allow_null=True)
    provider = serializers.CharField()
    is_active = serializers.BooleanField()
    metadata = serializers.JSONField()
    features = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(FeatureSerializer(many=True))
    def get_features(self, item: Item) -> list[dict[str, Any]]:
        return _features_out(item.feature_links.all())


class ItemInputSerializer(StrictSerializer):
    external_id = serializers.CharField(max_length=128)
    title = serializers.CharField(max_length=500)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    published_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    provider = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    is_active = serializers.BooleanField(required=False, default=True)
    metadata = MetadataField(required=False, default=dict)
    features = FeatureSerializer(many=True, required=False, max_length=1000)


class ItemUpdateInputSerializer(ItemInputSerializer):
    """PUT and PATCH: a field left out is left unchanged; ``features`` replaces the set."""

    external_id = serializers.CharField(max_length=128, required=False)
    title = serializers.CharField(max_length=500, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    published_at = serializers.DateTimeField(required=False, allow_null=True)
    provider = serializers.CharField(required=False, allow_blank=True, max_length=200)
    is_active = serializers.BooleanField(required=False)
    metadata = MetadataField(required=False)


class UserOutputSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    username = serializers.CharField(source="user.username")
    features = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    @extend_schema_field(FeatureSerializer(many=True))
    def get_features(self, profile: UserProfile) -> list[dict[str, Any]]:
        return _features_out(profile.feature_links.all())


class UserCreateInputSerializer(StrictSerializer):
    external_id = serializers.CharField(max_length=128)
    username = serializers.CharField(max_length=150, required=False, validators=[UnicodeUsernameValidator()])
    features = FeatureSerializer(many=True, required=False, max_length=1000)


class UserUpdateInputSerializer(StrictSerializer):
    external_id = serializers.CharField(max_length=128, required=False, help_text="Staff only.")
    features = FeatureSerializer(many=True, required=False, max_length=1000)


class FeedbackEventInputSerializer(StrictSerializer):
    user = serializers.CharField(max_length=128, required=False,
                                 help_text="External user id; defaults to the caller. Only staff may name another user.")
    item = serializers.CharField(max_length=128, help_text="External item id.")
    kind = serializers.CharField(max_length=32, help_text="A feedback kind code: rating, like, dislike, view, …")
    value = StrictFloatField(required=False, allow_null=True,
                             min_value=-FEEDBACK_VALUE_LIMIT, max_value=FEEDBACK_VALUE_LIMIT,
                             help_text="Defaults to the kind's default; each kind may narrow the range "
                                       "(ratings: 0.5–5).")
    created_at = serializers.DateTimeField(required=False, allow_null=True)
    idempotency_key = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)


class FeedbackBatchInputSerializer(StrictSerializer):
    events = FeedbackEventInputSerializer(many=True, allow_empty=False, max_length=FEEDBACK_BATCH_LIMIT)


class FeedbackRecordInputSerializer(serializers.Serializer):
    """The body of ``POST /feedback`` for the schema only (catalog.openapi); the view reads either
    serializer above itself."""


from catalog import openapi as _feedback_input_schema  # noqa: E402,F401  registers the schema above


class FeedbackOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    user = serializers.CharField(source="user.external_id")
    item = serializers.CharField(source="item.external_id")
    kind = serializers.CharField(source="kind_id")
    value = serializers.FloatField()
    created_at = serializers.DateTimeField()
    is_current = serializers.BooleanField(allow_null=True,
                                          help_text="True: current state; false: superseded; null: repeatable event.")
    idempotency_key = serializers.CharField(allow_null=True)


class FeedbackRecordedSerializer(FeedbackOutputSerializer):
    replayed = serializers.BooleanField(help_text="True when the idempotency key was seen before: nothing was written.")


class FeedbackBatchOutputSerializer(serializers.Serializer):
    events = FeedbackRecordedSerializer(many=True)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _is_staff(request) -> bool:
    return bool(request.user and request.user.is_authenticated and request.user.is_staff)


def _item_get(*, external_id: str, request) -> Item:
    """The item, with weighted features; inactive items are visible to staff only."""
    try:
        item = selectors.item_detail(external_id=external_id)
    except Item.DoesNotExist:
        raise exceptions.NotFound(f"No item with external id {external_id!r}.") from None
    if not item.is_active and not _is_staff(request):
        raise exceptions.NotFound(f"No item with external id {external_id!r}.")
    return item


def _profile_get(*, external_id: str, request) -> UserProfile:
    """The profile if the caller is staff or its owner; 404 when missing, 403 for someone else's."""
    # Why not a selector: catalog.selectors has no profile-by-external-id read yet.
    profile = get_object_or_404(UserProfile.objects.select_related("user"), external_id=external_id)
    if not (_is_staff(request) or profile.user_id == request.user.pk):
        raise exceptions.PermissionDenied("You may only see or change your own profile.")
    return profile


def _validated(serializer_class, data, **kwargs) -> dict[str, Any]:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------

class ItemListApi(APIView):
    """``GET`` anyone: active items (staff: add ``?include_inactive=true``). ``POST`` staff: create."""

    pagination_class = CatalogPagination  # read by drf-spectacular: the list answers are paginated

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    @extend_schema(
        operation_id="items_list",
        parameters=[
            OpenApiParameter("search", str, description="Words that must all appear in the title."),
            OpenApiParameter("sort", str, enum=list(selectors.ITEM_SORTS), description="Default: title."),
            OpenApiParameter("include_inactive", bool, description="Staff only."),
            *PAGE_PARAMETERS,
        ],
        responses=ItemOutputSerializer(many=True),
    )
    def get(self, request):
        sort = request.query_params.get("sort", "title")
        if sort not in selectors.ITEM_SORTS:
            raise exceptions.ValidationError({"sort": [f"Use one of {', '.join(selectors.ITEM_SORTS)}."]})
        include_inactive = request.query_params.get("include_inactive", "false")
        if include_inactive not in {"1", "0", "true", "false"}:
            raise exceptions.ValidationError({"include_inactive": ["Use true or false."]})
        include_inactive = _is_staff(request) and include_inactive in {"1", "true"}
        items = selectors.item_list(
            search=request.query_params.get("search", ""), sort=sort, active_only=not include_inactive,
        ).prefetch_related("feature_links__feature")
        return _paginated(self, items, ItemOutputSerializer)

    @extend_schema(operation_id="items_create", request=ItemInputSerializer,
                   responses={201: ItemOutputSerializer, 409: ITEM_ID_TAKEN})
    def post(self, request):
        data = _validated(ItemInputSerializer, request.data)
        features = data.pop("features", None)
        item = item_create(**data, features=_features_in(features) if features is not None else None)
        item = _item_get(external_id=item.external_id, request=request)
        return Response(ItemOutputSerializer(item).data, status=status.HTTP_201_CREATED)


class ItemDetailApi(APIView):
    """``GET`` anyone; ``PUT``/``PATCH`` staff (fields left out stay); ``DELETE`` staff: deactivates.

    Deleting is soft (``is_active=False``): the item's feedback stays as training history and
    the item disappears from lists and recommendations. A PATCH with ``is_active: true`` restores it.
    """

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    def get_item(self, external_id: str) -> Item:
        return _item_get(external_id=external_id, request=self.request)

    @extend_schema(operation_id="items_retrieve", responses=ItemOutputSerializer)
    def get(self, request, external_id: str):
        return Response(ItemOutputSerializer(self.get_item(external_id)).data)

    @extend_schema(operation_id="items_update", request=ItemUpdateInputSerializer,
                   responses={200: ItemOutputSerializer, 409: ITEM_ID_TAKEN})
    def put(self, request, external_id: str):
        return self._update(request, external_id)

    @extend_schema(operation_id="items_partial_update", request=ItemUpdateInputSerializer,
                   responses={200: ItemOutputSerializer, 409: ITEM_ID_TAKEN})
    def patch(self, request, external_id: str):
        return self._update(request, external_id)

    def _update(self, request, external_id: str):
        item = self.get_item(external_id)
        data = _validated(ItemUpdateInputSerializer, request.data)
        if "features" in data:
            data["features"] = _features_in(data["features"])
        item = item_update(item=item, **data)
        return Response(ItemOutputSerializer(self.get_item(item.external_id)).data)

    @extend_schema(operation_id="items_destroy", responses={204: OpenApiResponse(description="Deactivated.")})
    def delete(self, request, external_id: str):
        item_update(item=self.get_item(external_id), is_active=False)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------

class UserListApi(APIView):
    """Staff only: list and create user profiles (the auth user gets an unusable password)."""

    pagination_class = CatalogPagination  # read by drf-spectacular: the list answers are paginated

    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="users_list",
                   parameters=PAGE_PARAMETERS,
                   responses=UserOutputSerializer(many=True))
    def get(self, request):
        # Why not a selector: catalog.selectors has no profile list yet.
        profiles = UserProfile.objects.select_related("user").prefetch_related("feature_links__feature")
        return _paginated(self, profiles.order_by("id"), UserOutputSerializer)

    @extend_schema(operation_id="users_create", request=UserCreateInputSerializer,
                   responses={201: UserOutputSerializer, 409: PROFILE_ID_TAKEN})
    def post(self, request):
        data = _validated(UserCreateInputSerializer, request.data)
        features = data.pop("features", None)
        profile = user_profile_create(**data, features=_features_in(features) if features is not None else None)
        return Response(UserOutputSerializer(profile).data, status=status.HTTP_201_CREATED)


class UserDetailApi(APIView):
    """The profile's owner or staff: read, and replace features. Only staff change external ids."""

    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="users_retrieve", responses=UserOutputSerializer)
    def get(self, request, external_id: str):
        return Response(UserOutputSerializer(_profile_get(external_id=external_id, request=request)).data)

    @extend_schema(operation_id="users_update", request=UserUpdateInputSerializer,
                   responses={200: UserOutputSerializer, 409: PROFILE_ID_TAKEN})
    def put(self, request, external_id: str):
        return self._update(request, external_id)

    @extend_schema(operation_id="users_partial_update", request=UserUpdateInputSerializer,
                   responses={200: UserOutputSerializer, 409: PROFILE_ID_TAKEN})
    def patch(self, request, external_id: str):
        return self._update(request, external_id)

    def _update(self, request, external_id: str):
        profile = _profile_get(external_id=external_id, request=request)
        data = _validated(UserUpdateInputSerializer, request.data)
        if "external_id" in data and data["external_id"] != profile.external_id and not _is_staff(request):
            raise exceptions.PermissionDenied("Only staff may change an external id.")
        features = data.get("features")
        profile = user_profile_update(profile=profile, external_id=data.get("external_id"),
                                      features=_features_in(features) if features is not None else None)
        return Response(UserOutputSerializer(profile).data)


class UserFeedbackListApi(APIView):
    """The profile's owner or staff: current states and events, newest first (superseded history omitted)."""

    pagination_class = CatalogPagination  # read by drf-spectacular: the list answers are paginated

    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="users_feedback_list",
                   parameters=PAGE_PARAMETERS,
                   responses=FeedbackOutputSerializer(many=True))
    def get(self, request, external_id: str):
        profile = _profile_get(external_id=external_id, request=request)
        return _paginated(self, selectors.user_feedback_list(profile=profile).select_related("user"),
                          FeedbackOutputSerializer)


# --------------------------------------------------------------------------------------------
# Feedback
# --------------------------------------------------------------------------------------------

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
            409: OpenApiResponse(description="An idempotency key already names a different event (field errors "
                                             "as for 400); nothing written."),
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
            events = [dict(_validated(FeedbackEventInputSerializer, request.data))]

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
        if foreign and not _is_staff(request):
            raise exceptions.PermissionDenied("Only staff may record feedback for another user.")
        if own is None and any(event.get("user") is None for event in events):
            own = user_profile_get_or_create_for_user(user=request.user)
        return own


def _without_schema(view_class: type[APIView]) -> type[APIView]:
    """The same view under its trailing-slash URL, left out of the OpenAPI schema (the spec has no slashes)."""
    return extend_schema(exclude=True)(type(f"{view_class.__name__}Slash", (view_class,), {}))


ItemListSlashApi = _without_schema(ItemListApi)
ItemDetailSlashApi = _without_schema(ItemDetailApi)
UserListSlashApi = _without_schema(UserListApi)
UserDetailSlashApi = _without_schema(UserDetailApi)
UserFeedbackListSlashApi = _without_schema(UserFeedbackListApi)
FeedbackRecordSlashApi = _without_schema(FeedbackRecordApi)
